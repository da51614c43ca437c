"""The clinic's calendar on every day of the week, and in its own time zone.

The receptionist and the real appointment book (SQLite) share one pinned
``Clock``, as in the orchestrator. Every day from Monday 23 to Sunday 29
November 2026, at 9:30 in the morning in New York, a caller asks the same
things; what a correct receptionist says depends on the day (the clinic is
open Monday to Friday, 9 to 5, in half-hour slots), and that is written out
here by hand, day by day. The closed days are checked, not avoided.

Then the time zone: the same instant is another day or hour in UTC than at a
New York clinic, and the book must follow the clinic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from parley.clock import Clock
from parley.contract import Message
from parley_orchestrator.appointments import default_registry

from test_llm_receptionist import Call, booked

NEW_YORK = "America/New_York"
WEEK = {day: dt.date(2026, 11, 23 + i) for i, day in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}


def call_on(day: str, tmp_path, at: dt.time = dt.time(9, 30)) -> tuple[Call, Clock]:
    clock = Clock.fixed(dt.datetime.combine(WEEK[day], at), NEW_YORK)
    registry = default_registry(tmp_path / "appointments.sqlite3", clock=clock)
    today = clock.today()
    # As the runtime writes it from the same clock.
    system = Message(role="system", content=f"You are the receptionist. Today is {today.isoformat()} ({today:%A}).")
    return Call(registry, system=system, clock=clock), clock


TOMORROW_AT_3 = {
    "mon": ("You're booked for tomorrow, Tuesday the 24th, at 3 p.m.", [("2026-11-24", "15:00")]),
    "tue": ("You're booked for tomorrow, Wednesday the 25th, at 3 p.m.", [("2026-11-25", "15:00")]),
    "wed": ("You're booked for tomorrow, Thursday the 26th, at 3 p.m.", [("2026-11-26", "15:00")]),
    "thu": ("You're booked for tomorrow, Friday the 27th, at 3 p.m.", [("2026-11-27", "15:00")]),
    # Saturday is closed: the nearest free slot is the last one today.
    "fri": ("Sorry, we're closed on Saturdays. We're open Monday to Friday, 9 a.m. to 5 p.m. "
            "The nearest free time is today, Friday the 27th, at 4:30 p.m. Shall I book that?", []),
    # Sunday is closed, and Friday's slots have passed: Monday first thing.
    "sat": ("Sorry, we're closed on Sundays. We're open Monday to Friday, 9 a.m. to 5 p.m. "
            "The nearest free time is Monday the 30th at 9 a.m. Shall I book that?", []),
    "sun": ("You're booked for tomorrow, Monday the 30th, at 3 p.m.", [("2026-11-30", "15:00")]),
}  # fmt: skip


@pytest.mark.parametrize("day", WEEK)
def test_tomorrow_at_three_on_every_day_of_the_week(day, tmp_path):
    call, _ = call_on(day, tmp_path)
    reply = asyncio.run(call.say("I'd like to book an appointment tomorrow at three p.m."))
    said, bookings = TOMORROW_AT_3[day]
    assert said in reply, reply
    assert booked(call.registry) == bookings


ARE_YOU_OPEN_TODAY = {
    "mon": "Today, Monday the 23rd, I have 10 a.m., 10:30 a.m. or 11 a.m. free.",
    "tue": "Today, Tuesday the 24th, I have 10 a.m., 10:30 a.m. or 11 a.m. free.",
    "wed": "Today, Wednesday the 25th, I have 10 a.m., 10:30 a.m. or 11 a.m. free.",
    "thu": "Today, Thursday the 26th, I have 10 a.m., 10:30 a.m. or 11 a.m. free.",
    "fri": "Today, Friday the 27th, I have 10 a.m., 10:30 a.m. or 11 a.m. free.",
    "sat": "Sorry, we're closed on Saturdays. We're open Monday to Friday, 9 a.m. to 5 p.m. The nearest free time is Monday the 30th at 9 a.m.",
    "sun": "Sorry, we're closed on Sundays. We're open Monday to Friday, 9 a.m. to 5 p.m. The nearest free time is tomorrow, Monday the 30th, at 9 a.m.",
}  # fmt: skip


@pytest.mark.parametrize("day", WEEK)
def test_are_you_open_today_on_every_day_of_the_week(day, tmp_path):
    call, _ = call_on(day, tmp_path)
    reply = asyncio.run(call.say("Are you open today?"))
    assert ARE_YOU_OPEN_TODAY[day] in reply, reply
    assert booked(call.registry) == []


@pytest.mark.parametrize("day", WEEK)
def test_today_at_three_books_on_open_days_and_says_closed_on_weekends(day, tmp_path):
    call, clock = call_on(day, tmp_path)
    reply = asyncio.run(call.say("Can I come in today at three?"))
    today = clock.today()
    if day in ("sat", "sun"):
        assert f"Sorry, we're closed on {today:%A}s." in reply, reply
        assert "The nearest free time is" in reply and "Monday the 30th" in reply, reply
        assert booked(call.registry) == []
    else:
        assert f"You're booked for today, {today:%A} the {today.day}" in reply, reply
        assert booked(call.registry) == [(today.isoformat(), "15:00")]


@pytest.mark.parametrize("day", WEEK)
def test_a_time_already_past_today_is_refused_on_every_day(day, tmp_path):
    call, clock = call_on(day, tmp_path, at=dt.time(16, 40))
    reply = asyncio.run(call.say("Can I come in today at ten a.m.?"))
    assert booked(call.registry) == []
    if day in ("sat", "sun"):
        assert "closed" in reply, reply
    else:
        assert "Sorry, that time has already passed." in reply, reply


# ------------------------------------------------------------- the time zone


def book(registry, date: str, time: str) -> dict:
    import json

    ok, result = asyncio.run(registry.call("book_appointment", json.dumps({"date": date, "time": time})))
    assert ok, result
    return json.loads(result)


def test_the_book_follows_the_clinics_zone_not_utc(tmp_path):
    # 14:00 UTC is 9 a.m. in New York (EST, UTC-5, in November).
    instant = "2026-11-24T14:00:00+00:00"
    new_york = default_registry(tmp_path / "ny.sqlite3", clock=Clock.fixed(instant, NEW_YORK))
    utc = default_registry(tmp_path / "utc.sqlite3", clock=Clock.fixed(instant, "UTC"))
    # 9:30 at the clinic has not come yet in New York; in UTC it is long past.
    assert book(new_york, "2026-11-24", "09:30")["booked"] is True
    assert book(utc, "2026-11-24", "09:30")["reason"] == "past"


def test_late_evening_in_new_york_is_already_tomorrow_in_utc(tmp_path):
    # Tuesday 22:00 in New York is Wednesday 03:00 in UTC.
    instant = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc)
    clock = Clock.fixed(instant, NEW_YORK)
    assert clock.today() == dt.date(2026, 11, 24) and clock.now().hour == 22
    registry = default_registry(tmp_path / "a.sqlite3", clock=clock)
    call = Call(registry, clock=clock, system=Message(role="system", content="You are the receptionist."))
    reply = asyncio.run(call.say("Tomorrow at three p.m. please."))
    assert "You're booked for tomorrow, Wednesday the 25th, at 3 p.m." in reply, reply
    assert booked(registry) == [("2026-11-25", "15:00")]


def test_an_unpinned_clock_reads_the_instant_in_the_clinics_zone():
    clock = Clock(ZoneInfo(NEW_YORK))
    # A summer instant: daylight saving time (UTC-4) is applied.
    at = clock.local(dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp())
    assert (at.date(), at.hour, at.utcoffset()) == (dt.date(2026, 7, 1), 8, dt.timedelta(hours=-4))
    winter = clock.local(dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp())
    assert winter.hour == 7
