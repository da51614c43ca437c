"""The receptionist's memory of a call (``Context``) and what it decides to do
with a turn (``Plan``), plus the small plans every flow shares."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from parley.contract import END_CALL

from ...appointments import BOOK_APPOINTMENT, CHECK_AVAILABILITY
from ...clinic import CLINIC, WEEKDAY_NAMES
from .intents import Heard
from .say import say_slot, say_time

CLINIC_NAME = CLINIC.name
GREETING = f"Hello, this is {CLINIC_NAME}. How can I help you today?"
CAN_DO = "I can book, move or cancel an appointment, tell you when you're booked, or ask the front desk to call you back."


@dataclass(frozen=True)
class Plan:
    """What to do with this turn: say ``text``, then maybe call one tool."""

    text: str
    tool: str = ""
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Appt:
    """One of the caller's appointments, as the book reported it."""

    id: int
    at: dt.datetime


@dataclass(frozen=True)
class Context:
    today: dt.date
    # A new booking being arranged.
    date: dt.date | None = None  # the day asked for, not yet booked
    time: dt.time | None = None  # the time asked for, not yet booked
    period: str = ""
    next_week: int = 0  # "next week" (1) or "the week after next" (2) said, the day not yet
    asap: bool = False
    wants: bool = False  # a booking is being arranged
    offers: tuple[dt.datetime, ...] = ()  # slots proposed; "yes" takes the first
    clash: tuple[dt.date, ...] = ()  # "Did you mean Tuesday the 15th, or Monday the 14th?": the two days asked about
    name: str = ""
    reason: str = ""
    phone: str = ""  # a number the caller said (for a call-back)
    booked: tuple[dt.datetime, ...] = ()
    unannounced: dt.datetime | None = None  # booked, but the caller never heard it
    # The caller's existing appointments.
    task: str = ""  # cancel | reschedule | lookup | callback: what is being done about them
    mine: tuple[Appt, ...] | None = None  # their upcoming appointments, once looked up
    choices: tuple[Appt, ...] = ()  # appointments offered to pick from ("which one?")
    target: Appt | None = None  # the appointment being cancelled or moved
    old_date: dt.date | None = None  # "my Friday appointment": which one is meant
    old_time: dt.time | None = None
    need_name: bool = False  # asked for the name the booking is under
    last: Appt | None = None  # the appointment this call booked or moved last ("make that 11")
    callback: str = ""  # the request to record for the front desk
    need_contact: bool = False  # asked who to call back
    served: bool = False  # the caller got something done (a "no" then ends the call)
    misses: int = 0  # turns in a row not understood


def book_plan(ctx: Context, day: dt.date, at: dt.time, lead: str = "") -> Plan:
    args: dict = {"date": day.isoformat(), "time": f"{at:%H:%M}"}
    if ctx.name:
        args["patient_name"] = ctx.name
    if ctx.reason:
        args["reason"] = ctx.reason
    return Plan(text=(lead + " One moment.").strip(), tool=BOOK_APPOINTMENT, arguments=args)


def check_plan(day: dt.date, lead: str = "", say: str = "Let me check.") -> Plan:
    return Plan(text=(lead + " " + say).strip(), tool=CHECK_AVAILABILITY, arguments={"date": day.isoformat()})


def goodbye(h: Heard, hang_up: bool = True) -> Plan:
    """Say goodbye; with ``hang_up`` the call ends once the caller has heard it."""
    welcome = "You're welcome. " if h.thanks else ""
    return Plan(text=f"{welcome}Thank you for calling {CLINIC_NAME}. Goodbye!", tool=END_CALL if hang_up else "")


def ask_missing(ctx: Context, lead: str = "") -> Plan:
    if ctx.time and not ctx.date:
        text = f"Which day would you like to come in at {say_time(ctx.time)}?"
    elif ctx.period and not ctx.date:
        text = f"Which day would you like to come in, in the {ctx.period}?"
    else:
        text = "What day and time would suit you?"
    return Plan(text=(lead + " " + text).strip())


def hours_sentence() -> str:
    return f"We're open {CLINIC.hours.open_days_text()}, from {CLINIC.hours.hours_text()}."


def closed_sentence(day: dt.date) -> str:
    return f"Sorry, we're closed on {WEEKDAY_NAMES[day.weekday()]}s. We're open {CLINIC.hours.open_days_text()}, {CLINIC.hours.hours_text()}."


def refusal_sentence(why: str, slot: dt.datetime, today: dt.date) -> str:
    """Why a slot could not be booked or moved to, as the book said."""
    if why == "taken":
        return f"Sorry, {say_slot(slot, today)} is already taken."
    if why == "past":
        return "Sorry, that time has already passed."
    if why == "not_a_slot":
        grid = {30: ", on the hour or the half hour", 60: ", on the hour"}.get(CLINIC.hours.slot_minutes, "")
        return f"We book in {CLINIC.hours.slot_minutes}-minute slots{grid}."
    if not CLINIC.hours.is_open_day(slot.date()):
        return closed_sentence(slot.date())
    return f"Sorry, we're only open from {CLINIC.hours.hours_text()}."
