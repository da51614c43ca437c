"""The caller's existing appointments: "when am I booked in?", cancel, move,
"actually make that 11"; and call-backs for what the receptionist cannot do.

Every flow here works the same way: look the caller's appointments up once
(``find_appointments``: by the number they call from, or by the name they
give when asked), pick the one meant (the only one, the one on the day named,
or ask "which one?"), then act with one tool call and say what the book
confirmed. Nothing is promised before the tool result says it was done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from parley.contract import TRANSFER_CALL

from ...appointments import CANCEL_APPOINTMENT, FIND_APPOINTMENTS, REQUEST_CALLBACK, RESCHEDULE_APPOINTMENT
from .booking import offer, slot_of
from .intents import Heard, bare_name
from .plan import Appt, Context, Plan, check_plan, refusal_sentence
from .say import on_day, say_list, say_phone, say_slot, say_time

ANYTHING_ELSE = "Is there anything else I can help with?"
_VERB = {"cancel": "cancel", "reschedule": "move", "lookup": "check"}


def _args(ctx: Context, **more) -> dict:
    return {**more, **({"patient_name": ctx.name} if ctx.name else {})}


def _say_appts(appts: tuple[Appt, ...], today: dt.date) -> str:
    return say_list([say_slot(a.at, today) for a in appts], "and")


# ---------------------------------------------------------------------------
# The caller's turn


def start(ctx: Context, h: Heard, task: str) -> tuple[Context, Plan]:
    """The caller asks about, cancels or moves an existing appointment."""
    ctx = replace(ctx, task=task, old_date=h.old_date, old_time=h.old_time, target=None, choices=(), wants=False, offers=())
    if task == "reschedule":
        ctx = replace(ctx, date=h.date, time=h.time, period=h.period)
    return resolve(ctx)


def correct(ctx: Context, h: Heard) -> tuple[Context, Plan]:
    """"Actually, make that 11": move what this call just booked or moved."""
    assert ctx.last is not None
    ctx = replace(ctx, task="reschedule", target=ctx.last, date=h.date or ctx.last.at.date(), time=h.time or ctx.last.at.time())
    return act(ctx)


def answer(ctx: Context, h: Heard, offers: tuple[dt.datetime, ...]) -> tuple[Context, Plan] | None:
    """A reply to a question this flow asked (a name, "which one?", "when
    to?", "shall I move it there?", "who should call you back?"); None if it
    is not one."""
    if ctx.need_name and (name := h.name or bare_name(h.text)):
        return resolve(replace(ctx, name=name, need_name=False, mine=None))
    if ctx.need_contact and (h.name or h.phone or bare_name(h.text)):
        ctx = replace(ctx, name=h.name or bare_name(h.text) or ctx.name, phone=h.phone or ctx.phone, need_contact=False)
        return record_callback(ctx)
    if ctx.choices and ctx.task in ("cancel", "reschedule"):
        picked = _pick(ctx.choices, h)
        if picked is not None:
            return act(replace(ctx, target=picked, choices=()))
        if h.no and not (h.date or h.time):
            return replace(ctx, task="", choices=()), Plan(text=f"No problem. {ANYTHING_ELSE}")
    if ctx.task == "reschedule" and ctx.target is not None and offers and not (h.date or h.time):
        if h.choice is not None or (h.yes and not h.no):
            slot = offers[h.choice if h.choice is not None and -len(offers) <= h.choice < len(offers) else 0]
            return act(replace(ctx, date=slot.date(), time=slot.time()))
        if h.no:
            return ctx, Plan(text="No problem. When would you like to move it to instead?")
    if ctx.task == "reschedule" and ctx.target is not None and (h.date or h.time):
        return act(replace(ctx, date=h.date or ctx.date or ctx.target.at.date(), time=h.time or ctx.time))
    return None


def _pick(choices: tuple[Appt, ...], h: Heard) -> Appt | None:
    day, time = h.old_date or h.date, h.old_time or h.time
    if day or time:
        hits = [a for a in choices if (not day or a.at.date() == day) and (not time or a.at.time() == time)]
        return hits[0] if len(hits) == 1 else None
    if h.choice is not None and -len(choices) <= h.choice < len(choices):
        return choices[h.choice]
    if len(choices) == 1 and h.yes:
        return choices[0]
    return None


WANTS_A_PERSON = "wants to speak to a person"


def put_through(ctx: Context, h: Heard) -> tuple[Context, Plan]:
    """Transfer to a person (the line has somewhere to transfer to): they
    first hear who is calling and what about."""
    who = ctx.name or "A caller"
    done = f" Booked this call: {say_list([say_slot(b, ctx.today) for b in ctx.booked], 'and')}." if ctx.booked else ""
    summary = f'{who} asked to speak to a person: "{h.text[:300]}".{done}'
    return replace(ctx, task="", wants=False, offers=()), Plan(text="Of course. I'm putting you through to a colleague now, one moment.", tool=TRANSFER_CALL, arguments={"summary": summary})


def ask_callback(ctx: Context, h: Heard) -> tuple[Context, Plan]:
    ctx = replace(ctx, task="callback", callback=f'{h.callback}: "{h.text[:300]}"', wants=False, offers=())
    return record_callback(ctx, "I can't help with that myself, so I'll ask the front desk to call you back.")


def record_callback(ctx: Context, lead: str = "One moment.") -> tuple[Context, Plan]:
    args = _args(ctx, reason=ctx.callback)
    if ctx.phone:
        args["phone"] = ctx.phone
    return ctx, Plan(text=lead, tool=REQUEST_CALLBACK, arguments=args)


# ---------------------------------------------------------------------------
# Deciding with what is known


def resolve(ctx: Context) -> tuple[Context, Plan]:
    """Pick the appointment the task is about, look them up first, or ask."""
    if ctx.mine is None:
        return ctx, Plan(text="Let me look that up.", tool=FIND_APPOINTMENTS, arguments=_args(ctx))
    if not ctx.mine:
        return _none_found(ctx)
    if ctx.task == "lookup":
        return _tell(ctx)
    hits = tuple(a for a in ctx.mine if (not ctx.old_date or a.at.date() == ctx.old_date) and (not ctx.old_time or a.at.time() == ctx.old_time))
    verb = _VERB[ctx.task]
    if len(hits) == 1:
        return act(replace(ctx, target=hits[0]))
    if hits:
        return replace(ctx, choices=hits), Plan(text=f"You have {len(hits)} appointments: {_say_appts(hits, ctx.today)}. Which one would you like to {verb}?")
    said = on_day(ctx.old_date, ctx.today) if ctx.old_date else ""
    said = f"{said} at {say_time(ctx.old_time)}".strip() if ctx.old_time else said
    which = "Is that the one you mean?" if len(ctx.mine) == 1 else f"Which one would you like to {verb}?"
    return replace(ctx, choices=ctx.mine), Plan(text=f"I don't see an appointment {said}. You're booked for {_say_appts(ctx.mine, ctx.today)}. {which}")


def _none_found(ctx: Context) -> tuple[Context, Plan]:
    if not ctx.name:
        return replace(ctx, need_name=True), Plan(text="I can't find an upcoming appointment for the number you're calling from. What name is the booking under?")
    return replace(ctx, task="", wants=True), Plan(text=f"I can't find an upcoming appointment under {ctx.name}. Would you like to book one?")


def _tell(ctx: Context) -> tuple[Context, Plan]:
    assert ctx.mine
    ctx = replace(ctx, task="", served=True)
    if len(ctx.mine) == 1:
        return ctx, Plan(text=f"You're booked for {say_slot(ctx.mine[0].at, ctx.today)}. {ANYTHING_ELSE}")
    return ctx, Plan(text=f"You have {len(ctx.mine)} appointments: {_say_appts(ctx.mine, ctx.today)}. {ANYTHING_ELSE}")


def act(ctx: Context) -> tuple[Context, Plan]:
    """Cancel or move ``ctx.target``, or ask when to move it to."""
    target = ctx.target
    assert target is not None
    if ctx.task == "cancel":
        return ctx, Plan(text="", tool=CANCEL_APPOINTMENT, arguments=_args(ctx, appointment_id=target.id))
    day = ctx.date or (target.at.date() if ctx.time else None)
    if day and ctx.time:
        args = _args(ctx, appointment_id=target.id, date=day.isoformat(), time=f"{ctx.time:%H:%M}")
        return ctx, Plan(text="", tool=RESCHEDULE_APPOINTMENT, arguments=args)
    when = say_slot(target.at, ctx.today)
    if day:
        return replace(ctx, date=day), check_plan(day)
    return ctx, Plan(text=f"You're booked for {when}. When would you like to move it to?")


# ---------------------------------------------------------------------------
# Tool results


def on_found(ctx: Context, result: dict) -> tuple[Context, Plan]:
    if result.get("needs") == "patient_name":
        return replace(ctx, mine=(), need_name=True), Plan(text="Can I have the name the booking is under?")
    mine = tuple(Appt(a["appointment_id"], s) for a in result.get("appointments", ()) if isinstance(a, dict) and (s := slot_of(a)) and isinstance(a.get("appointment_id"), int))
    ctx = replace(ctx, mine=mine)
    if ctx.task not in _VERB:  # a look-up nobody in this call asked for: say what it found
        return _tell(ctx) if mine else _none_found(replace(ctx, task="lookup"))
    return resolve(ctx)


def on_cancelled(ctx: Context, result: dict) -> tuple[Context, Plan]:
    slot = slot_of(result)
    if result.get("cancelled") and slot is not None:
        gone = result.get("appointment_id")
        mine = tuple(a for a in ctx.mine or () if a.id != gone)
        last = None if ctx.last and ctx.last.id == gone else ctx.last
        ctx = replace(ctx, task="", target=None, mine=mine, last=last, served=True, wants=True, date=None, time=None)
        return ctx, Plan(text=f"I've cancelled your appointment on {say_slot(slot, ctx.today)}. Would you like to book a new time?")
    return _refused(ctx, result.get("reason", ""))


def on_rescheduled(ctx: Context, result: dict) -> tuple[Context, Plan]:
    new, old = slot_of(result.get("to")), slot_of(result.get("from"))
    if result.get("rescheduled") and new is not None:
        moved = Appt(int(result.get("appointment_id", 0)), new)
        mine = tuple(moved if a.id == moved.id else a for a in ctx.mine) if ctx.mine is not None else None
        ctx = replace(ctx, task="", target=None, mine=mine, last=moved, served=True, date=None, time=None, offers=())
        was = f" from {say_slot(old, ctx.today)}" if old else ""
        return ctx, Plan(text=f"Done. I've moved your appointment{was} to {say_slot(new, ctx.today)}. {ANYTHING_ELSE}")
    why = result.get("reason", "")
    asked = slot_of(result)
    if why in ("not_found", "not_yours", "past") or asked is None:
        return _refused(ctx, why)
    alternatives = [slot_of(a) for a in result.get("alternatives", ()) if isinstance(a, dict)]
    ctx, more = offer(replace(ctx, date=None, time=None), alternatives, asked.date(), "Shall I move it there?")
    return ctx, Plan(text=refusal_sentence(why, asked, ctx.today) + more)


def _refused(ctx: Context, why: str) -> tuple[Context, Plan]:
    ctx = replace(ctx, target=None, mine=None)
    if why == "not_yours":
        return replace(ctx, need_name=True), Plan(text="Sorry, I can only change a booking made from this number or under your name. What name is the booking under?")
    if why == "past":
        return replace(ctx, task=""), Plan(text=f"That appointment has already passed. {ANYTHING_ELSE}")
    return replace(ctx, task=""), Plan(text=f"Sorry, I couldn't find that appointment any more. {ANYTHING_ELSE}")


def on_callback(ctx: Context, result: dict) -> tuple[Context, Plan]:
    if result.get("recorded"):
        phone = str(result.get("phone") or "")
        at = f" on the number {say_phone(phone)}" if phone else ""
        ctx = replace(ctx, task="", callback="", served=True)
        return ctx, Plan(text=f"I've asked the front desk to call you back{at}. {ANYTHING_ELSE}")
    return replace(ctx, need_contact=True), Plan(text="So the front desk can call you back, what's your name and the best number to reach you?")


EXISTING_RESULTS = {
    FIND_APPOINTMENTS: on_found,
    CANCEL_APPOINTMENT: on_cancelled,
    RESCHEDULE_APPOINTMENT: on_rescheduled,
    REQUEST_CALLBACK: on_callback,
}
