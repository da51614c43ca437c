"""Arranging a new booking: the day and time can arrive over several turns,
slots are offered when the one asked for is not free, and "yes" takes the
offer. Also the small talk around it (hours, thanks, goodbye)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from typing import Sequence

from ...appointments import BOOK_APPOINTMENT, CHECK_AVAILABILITY
from ...clinic import CLINIC, WEEKDAY_NAMES
from .intents import Heard
from .plan import CAN_DO, CLINIC_NAME, Appt, Context, Plan, ask_missing, book_plan, check_plan, closed_sentence, goodbye, hours_sentence, refusal_sentence
from .say import say_date, say_list, say_slot, say_time
from .words import normalise, ordinal


def take_offer(ctx: Context, h: Heard, offers: tuple[dt.datetime, ...]) -> tuple[Context, Plan] | None:
    """The caller answers an offer of slots: take one, or refuse them all."""
    if not offers or h.date or h.time:
        return None
    if h.choice is not None or (h.yes and not h.no):
        index = h.choice if h.choice is not None and -len(offers) <= h.choice < len(offers) else 0
        slot = offers[index]
        return replace(ctx, date=slot.date(), time=slot.time(), wants=True), book_plan(ctx, slot.date(), slot.time())
    if h.no and not h.bye:
        return replace(ctx, time=None, date=None, period="", asap=False), Plan(text="No problem. What other day or time would suit you?")
    return None


def wants_booking(ctx: Context, h: Heard) -> bool:
    return bool(h.new_when or h.book or h.pain or (h.availability and ctx.wants) or (h.hours and h.date) or (h.availability and h.date))


def clash_pick(days: tuple[dt.date, ...], h: Heard) -> dt.date | None:
    """The caller's answer to "Did you mean Tuesday the 15th, or Monday the
    14th?": one of the days named, a bare weekday ("Tuesday"), "the first" /
    "the second one", or a yes (the first, the date as numbered)."""
    if h.date in days:
        return h.date
    if h.date is not None:
        if re.search(r"\d", normalise(h.text)):
            return None  # another date altogether ("Monday the 7th")
        return next((d for d in days if d.weekday() == h.date.weekday()), None)
    if h.choice is not None and -len(days) <= h.choice < len(days):
        return days[h.choice]
    if h.yes and not h.no:
        return days[0]
    return None


def ask_which_day(ctx: Context, h: Heard, lead: str = "") -> tuple[Context, Plan] | None:
    """"Monday the 15th" when the 15th is a Tuesday: ask which day is meant,
    naming only days the clinic is open (None: neither is)."""
    assert h.clash is not None
    said, other = h.clash
    days = tuple(d for d in h.clash if CLINIC.hours.is_open_day(d))
    if not days:
        return None
    check = f"Just to check, the {ordinal(said.day)} is a {WEEKDAY_NAMES[said.weekday()]}"
    if said not in days:
        check += f", and we're closed on {WEEKDAY_NAMES[said.weekday()]}s"
    text = f"{check}. Did you mean {say_list([say_date(d, ctx.today) for d in days])}?"
    return replace(ctx, date=None, clash=days), Plan(text=(lead + " " + text).strip())


def arrange(ctx: Context, h: Heard, offers: tuple[dt.datetime, ...], can_check: bool) -> tuple[Context, Plan]:
    """The caller asked for a booking, or gave more of its details."""
    date = h.date or (offers[0].date() if offers and h.time else None) or ctx.date
    # A new day keeps the time asked for before ("Thursday then"); a new
    # part of the day drops it.
    time = h.time or (None if h.period else ctx.time)
    period = h.period or (ctx.period if not h.time else "")
    ctx = replace(ctx, date=date, time=time, period=period, wants=True, asap=h.asap or (h.pain and not date), next_week=0 if date else h.next_week)
    lead = "I'm sorry to hear that." if h.pain and not ctx.booked else ""
    if h.clash is not None and (asked := ask_which_day(ctx, h, lead)) is not None:
        return asked
    if ctx.asap and not time:
        if can_check:
            return ctx, check_plan(date or ctx.today, lead, "Let me find the earliest free time.")
        return ctx, ask_missing(ctx, lead)
    if date and time:
        return ctx, book_plan(ctx, date, time, lead)
    if date:
        if can_check:
            return ctx, check_plan(date, lead)
        return ctx, Plan(text=(lead + f" What time on {say_date(date, ctx.today)} would suit you? {hours_sentence()}").strip())
    if h.next_week:
        week = "the week after next" if h.next_week == 2 else "next week"
        return ctx, Plan(text=(lead + f" Which day {week} would suit you?").strip())
    if h.hours:
        return ctx, Plan(text=f"{hours_sentence()} What day and time would suit you?")
    return ctx, ask_missing(ctx, lead or ("Sure, I can help with that." if h.book and not ctx.time else ""))


def small_talk(ctx: Context, h: Heard, offers: tuple[dt.datetime, ...], can_check: bool) -> tuple[Context, Plan]:
    """Everything that is neither a booking nor an existing appointment."""
    if h.hours:
        return ctx, Plan(text=f"{hours_sentence()} Would you like to book an appointment?")
    if h.availability:
        if can_check:
            return replace(ctx, wants=True, asap=True), check_plan(ctx.today, "", "Let me find the earliest free time.")
        return replace(ctx, wants=True), ask_missing(ctx)
    if h.name:
        follow = "What day and time would suit you?" if ctx.wants else "How can I help you today?"
        return ctx, Plan(text=f"Thank you, {h.name}. {follow}")
    if h.thanks:
        if ctx.served:
            return replace(ctx, wants=False), goodbye(h)
        return ctx, Plan(text="You're welcome. Is there anything else I can help with?")
    if h.no:
        if ctx.served or not ctx.wants:
            # A bare "no" ends the call only when the caller got what they came for.
            return replace(ctx, wants=False), goodbye(h, hang_up=ctx.served)
        return replace(ctx, wants=False, date=None, time=None), Plan(text="No problem. Is there anything else I can help with?")
    if h.yes:
        return replace(ctx, wants=True), ask_missing(ctx, "Great.")
    if h.greeting:
        return ctx, Plan(text=f"Hello! This is {CLINIC_NAME}. How can I help you today? {CAN_DO}")
    return not_understood(replace(ctx, offers=offers))  # keep any offer open: a "yes" next still works


def not_understood(ctx: Context) -> tuple[Context, Plan]:
    ctx = replace(ctx, misses=ctx.misses + 1)
    if ctx.wants:
        return ctx, ask_missing(ctx, "Sorry, I didn't catch that.")
    if ctx.misses >= 2:
        return ctx, Plan(text=f"Sorry, I'm still not getting that. {CAN_DO} Or say goodbye to hang up.")
    return ctx, Plan(text=f"Sorry, I didn't catch that. {CAN_DO}")


# ---------------------------------------------------------------------------
# Tool results


def slot_of(item: object) -> dt.datetime | None:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(item["date"]), dt.time.fromisoformat(item["time"]))  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


def offer(ctx: Context, slots: Sequence[dt.datetime | None], same_day: dt.date | None, ask: str = "Shall I book that?") -> tuple[Context, str]:
    slots = [s for s in slots if s is not None][:3]
    if not slots:
        return replace(ctx, offers=()), " I couldn't find a free time nearby. Which other day would suit you?"
    first = slots[0]
    where = say_time(first.time()) if first.date() == same_day else say_slot(first, ctx.today)
    return replace(ctx, offers=tuple(slots)), f" The nearest free time is {where}. {ask}"


def on_booked(ctx: Context, result: dict) -> tuple[Context, Plan]:
    slot = slot_of(result)
    if result.get("booked") and slot is not None:
        appt = Appt(int(result["appointment_id"]), slot) if isinstance(result.get("appointment_id"), int) else None
        ctx = replace(
            ctx, booked=ctx.booked + (slot,), unannounced=slot, date=None, time=None, period="", asap=False, wants=False,
            offers=(), last=appt or ctx.last, served=True, mine=None if ctx.mine is None else ctx.mine + ((appt,) if appt else ()),
        )  # fmt: skip
        who = f"Thank you, {ctx.name.split()[0]}. " if ctx.name else ""
        return ctx, Plan(text=f"{who}You're booked for {say_slot(slot, ctx.today)}. Is there anything else I can help with?")
    if slot is None:
        return ctx, Plan(text="Sorry, I couldn't book that. What day and time would suit you?")
    why = result.get("reason", "")
    alternatives = [slot_of(a) for a in result.get("alternatives", ()) if isinstance(a, dict)]
    # Keep the time asked for if it can work on another day ("Thursday then"
    # after a taken slot); drop it if it is outside opening hours.
    keep = why in ("taken", "past") or (why == "closed" and CLINIC.hours.is_slot_time(slot.time()))
    ctx, more = offer(replace(ctx, date=slot.date(), time=slot.time() if keep else None), alternatives, slot.date())
    return ctx, Plan(text=refusal_sentence(why, slot, ctx.today) + more)


def on_availability(ctx: Context, result: dict) -> tuple[Context, Plan]:
    try:
        day = dt.date.fromisoformat(result["date"])
    except (KeyError, TypeError, ValueError):
        return ctx, Plan(text="Sorry, I couldn't check that day. What day and time would suit you?")
    free = [dt.datetime.combine(day, t) for t in _times(result.get("free", ()))]
    later = [s for s in (slot_of(a) for a in result.get("next_free", ()) if isinstance(a, dict)) if s is not None]
    ask = "Shall I move it there?" if ctx.task == "reschedule" else "Shall I book that?"
    if ctx.asap:
        ctx = replace(ctx, asap=False)
        if later:
            return replace(ctx, offers=tuple(later[:3])), Plan(text=f"The earliest free time is {say_slot(later[0], ctx.today)}. {ask}")
        return replace(ctx, offers=()), Plan(text="Sorry, I couldn't find a free time soon. Which day would suit you?")
    bounds = {"morning": (dt.time(0), dt.time(12)), "afternoon": (dt.time(12), dt.time(17)), "evening": (dt.time(16), dt.time(23, 59))}
    low, high = bounds.get(ctx.period, (dt.time(0), dt.time(23, 59)))
    fitting = [s for s in free if low <= s.time() < high]
    on = say_date(day, ctx.today)
    if fitting:
        part = f" in the {ctx.period}" if ctx.period else ""
        # "On Friday the 27th I have" / "Tomorrow, Wednesday the 25th, I have"
        lead = f"{on[0].upper()}{on[1:]}{part}," if "," in on else f"On {on}{part}"
        ctx = replace(ctx, date=day, offers=tuple(fitting[:3]))
        times = say_list([say_time(s.time()) for s in fitting[:3]])
        return ctx, Plan(text=f"{lead} I have {times} free. {ask if len(fitting) == 1 else 'Which time suits you?'}")
    if not result.get("open", True):
        text = closed_sentence(day)
        ctx, more = offer(ctx, later, None, ask)
    elif free:
        text = f"Sorry, I have nothing free in the {ctx.period} on {on}."
        ctx, more = offer(ctx, free, day, ask)
    else:
        text = f"Sorry, {on} is fully booked."
        ctx, more = offer(ctx, [s for s in later if s.date() != day], None, ask)
    return ctx, Plan(text=text + more)


def _times(items: object) -> list[dt.time]:
    out = []
    for t in items if isinstance(items, (list, tuple)) else ():
        try:
            out.append(dt.time.fromisoformat(t))
        except (TypeError, ValueError):
            pass
    return out


BOOKING_RESULTS = {BOOK_APPOINTMENT: on_booked, CHECK_AVAILABILITY: on_availability}
