"""The conversation, folded: every user message and tool result, in order,
into a ``Context``; the plan for the last message falls out of the same fold.

``step_user`` routes one caller utterance to its flow, in order of
precedence: an answer to a question the receptionist asked, a correction of
what this call just arranged, an existing appointment (cancel, move, look
up), a request for the front desk, a new booking, small talk.
``step_tool`` reads one tool result. The receptionist is stateless between
turns: the conversation is the state, so a replayed conversation gets the
same replies.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import replace
from typing import Collection, Sequence

import msgspec

from parley.contract import END_CALL, TRANSFER_CALL, Message

from ...appointments import BOOK_APPOINTMENT, CHECK_AVAILABILITY, REQUEST_CALLBACK
from . import booking, existing
from .intents import Heard, hear
from .plan import GREETING, Context, Plan, goodbye
from .say import say_slot

_TODAY_RX = re.compile(r"\btoday(?:'s date)?\s*(?:is|:)?\s*(\d{4}-\d{2}-\d{2})", re.I)


def today_from(messages: Sequence[Message], fallback: dt.date) -> dt.date:
    for m in messages:
        if m.role == "system":
            found = _TODAY_RX.search(m.content)
            if found:
                try:
                    return dt.date.fromisoformat(found.group(1))
                except ValueError:
                    pass
    return fallback


def step_user(ctx: Context, h: Heard, *, can_check: bool = True, can_transfer: bool = False) -> tuple[Context, Plan]:
    """One caller utterance: the new context and what to reply."""
    ctx = replace(ctx, name=h.name or ctx.name, reason=h.reason or ctx.reason, phone=h.phone or ctx.phone)
    offers, ctx = ctx.offers, replace(ctx, offers=())
    clash, ctx = ctx.clash, replace(ctx, clash=())
    if clash and (pick := booking.clash_pick(clash, h)) is not None:
        h = replace(h, date=pick, clash=None, next_week=0)  # the day meant, with whatever else was said
    misses = ctx.misses
    new, plan = _route(ctx, h, offers, can_check, can_transfer)
    if new.misses == misses:  # understood: the count of misses starts again
        new = replace(new, misses=0)
    return new, plan


def _route(ctx: Context, h: Heard, offers: tuple[dt.datetime, ...], can_check: bool, can_transfer: bool) -> tuple[Context, Plan]:
    if (answered := existing.answer(ctx, h, offers)) is not None:
        return answered
    changes_last = ctx.last is not None and (h.date or h.time) and not (h.cancel or h.old_date or h.old_time or h.existing)
    if changes_last and (h.correction or h.reschedule) and not h.another:
        return existing.correct(ctx, h)
    if h.cancel:
        return existing.start(ctx, h, "cancel")
    if h.reschedule and (h.existing or h.old_date or h.old_time or not ctx.wants):
        return existing.start(ctx, h, "reschedule")
    if h.lookup:
        return existing.start(ctx, h, "lookup")
    if h.callback == existing.WANTS_A_PERSON and can_transfer:
        return existing.put_through(ctx, h)
    if h.callback and not (h.date or h.time):
        return existing.ask_callback(ctx, h)
    if (taken := booking.take_offer(ctx, h, offers)) is not None:
        return taken
    if h.bye and not h.new_when and not h.book:
        return replace(ctx, wants=False), goodbye(h)
    if booking.wants_booking(ctx, h):
        return booking.arrange(ctx, h, offers, can_check)
    return booking.small_talk(ctx, h, offers, can_check)


_RESULTS = {**booking.BOOKING_RESULTS, **existing.EXISTING_RESULTS}


def step_tool(ctx: Context, name: str, result: object) -> tuple[Context, Plan]:
    """A tool result: the new context and what to say about it."""
    if not isinstance(result, dict) or "error" in result:
        if name == REQUEST_CALLBACK:
            return replace(ctx, task=""), Plan(text="Sorry, I couldn't note that down just now. Please call again during opening hours.")
        if name in (BOOK_APPOINTMENT, CHECK_AVAILABILITY):
            return ctx, Plan(text="Sorry, I couldn't get to the appointment book just now. Could you say the day and time again?")
        return replace(ctx, task="", target=None), Plan(text="Sorry, I couldn't get to the appointment book just now. Could you try again in a moment?")
    handler = _RESULTS.get(name)
    if handler is None:
        return ctx, Plan(text="Done. Is there anything else I can help with?")
    return handler(ctx, result)


def read_conversation(messages: Sequence[Message], today: dt.date, *, can_check: bool = True, can_transfer: bool = False) -> tuple[Context, Context, Plan]:
    """Fold the whole conversation: (the context before the last message, the
    context after it, the reply to it)."""
    ctx = before = Context(today=today_from(messages, today))
    plan = Plan(text=GREETING)
    calls: dict[str, str] = {}
    for m in one_turn_per_caller_run(messages):
        before = ctx
        if m.role == "user":
            h = hear(m.content, ctx.today, ctx.next_week)
            if _only_holds(h):
                # "Okay, stop." / "Hang on.": the caller has more to say; what was offered stays open.
                plan = Plan(text="Sure, take your time.")
                continue
            if _asks_to_repeat(h) and plan.text:
                # The last reply again, nothing else changed (an offer stays open);
                # never its tool call: a booking is made once.
                plan = Plan(text=plan.text)
                continue
            ctx, plan = step_user(ctx, h, can_check=can_check, can_transfer=can_transfer)
        elif m.role == "assistant":
            for c in m.tool_calls:
                calls[c.call_id] = c.name
            if ctx.unannounced and "booked" in m.content:
                ctx = replace(ctx, unannounced=None)
        elif m.role == "tool":
            try:
                result = json.loads(m.content) if m.content else {}
            except json.JSONDecodeError:
                result = {"error": m.content}
            ctx, plan = step_tool(ctx, m.name or calls.get(m.tool_call_id, ""), result)
    return before, ctx, plan


def _asks_to_repeat(h: Heard) -> bool:
    """Only a request to hear the last reply again: "Sorry, can you say that
    again?", "Pardon?", not "Sorry, can you say that again, and book Friday"."""
    return h.repeat and not (h.new_when or h.cancel or h.reschedule or h.lookup or h.callback or h.name or h.phone or h.bye or h.yes or h.no or h.choice is not None)


def _only_holds(h: Heard) -> bool:
    """Only a hold ("Okay, stop.", "Yes, hang on."), nothing asked or answered."""
    return h.halt and not (h.new_when or h.book or h.cancel or h.reschedule or h.lookup or h.callback or h.name or h.phone or h.bye or h.no or h.choice is not None or h.repeat or h.hours or h.availability or h.correction)


def one_turn_per_caller_run(messages: Sequence[Message]) -> list[Message]:
    """Consecutive caller messages, with nothing of the agent heard between
    them (an answer cut off before any of it played leaves none), are one
    turn to the caller: "Hello?" then "Who is this?" is read as "Hello? Who
    is this?", not as a greeting followed by an unclear request."""
    out: list[Message] = []
    for m in messages:
        if m.role == "user" and out and out[-1].role == "user":
            out[-1] = msgspec.structs.replace(out[-1], content=f"{out[-1].content.rstrip()} {m.content.lstrip()}".strip())
        else:
            out.append(m)
    return out


def plan_reply(messages: Sequence[Message], today: dt.date, *, tools: Collection[str] | None = None) -> Plan:
    """The reply to the conversation's last message. ``tools``: the names of
    the tools this deployment offers (None: all of them)."""
    can = (lambda name: True) if tools is None else (lambda name: name in tools)
    before, ctx, plan = read_conversation(messages, today, can_check=can(CHECK_AVAILABILITY), can_transfer=tools is not None and TRANSFER_CALL in tools)
    last = messages[-1] if messages else None
    if last is not None and last.role == "user" and before.unannounced and say_slot(before.unannounced, ctx.today) not in plan.text:
        # A booking made during a reply the caller cut off: say it now.
        plan = replace(plan, text=f"Just so you know, you're booked for {say_slot(before.unannounced, ctx.today)}. {plan.text}")
    if plan.tool == END_CALL and not can(END_CALL):
        plan = replace(plan, tool="")
    if plan.tool and not can(plan.tool):
        return Plan(text=_CANNOT.get(plan.tool, "Sorry, I can't do that right now.") + " Please call back later.")
    if last is not None and last.role not in ("user", "tool"):
        return Plan(text="How can I help you today?")
    # "... at 3 p.m.." -> "... at 3 p.m."
    return replace(plan, text=re.sub(r"\.\.(?=\s|$)", ".", plan.text).strip())


_CANNOT = {
    BOOK_APPOINTMENT: "Sorry, I can't book appointments right now.",
    REQUEST_CALLBACK: "Sorry, I can't take messages for the front desk right now.",
}
