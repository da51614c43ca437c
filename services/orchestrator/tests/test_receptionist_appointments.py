"""The receptionist with the caller's existing appointments: look-up, cancel,
move, corrections, call-backs. Whole calls through the real brain stream and
the real tools on SQLite, with the caller's number in the tool context as the
runtime puts it there; each test checks what was said and what the book holds.

Today is Tuesday 2026-11-24; the tools' clock is 8 a.m. that day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from parley_orchestrator.appointments import default_registry
from parley_orchestrator.tools import ToolContext

from test_llm_receptionist import TOOLS_CLOCK, Call

ME = "+15550009999"
SOMEONE_ELSE = "+15550001111"


@pytest.fixture
def registry(tmp_path):
    return default_registry(tmp_path / "appointments.sqlite3", clock=TOOLS_CLOCK)


def seed(registry, caller: str, date: str, time: str, name: str = "") -> int:
    args = {"date": date, "time": time, **({"patient_name": name} if name else {})}
    ok, result = asyncio.run(registry.call("book_appointment", json.dumps(args), ToolContext(caller=caller, call_id=f"seed-{date}-{time}")))
    assert ok, result
    return json.loads(result)["appointment_id"]


def book_of(registry):
    return registry._tools["book_appointment"].handler.__self__


def active(registry) -> list[tuple[str, str, str]]:
    return [(a["date"], a["time"], a["phone"]) for a in book_of(registry).appointments()]


def talk(registry, turns: list[str], caller: str = ME) -> list[str]:
    call = Call(registry, caller=caller)

    async def main():
        for turn in turns:
            await call.say(turn)

    asyncio.run(main())
    return call.replies


def test_bookings_keep_the_callers_number(registry):
    replies = talk(registry, ["Can I book a cleaning on Friday at 10?"])
    assert "You're booked for Friday the 27th at 10 a.m." in replies[-1]
    assert active(registry) == [("2026-11-27", "10:00", ME)]


@pytest.mark.parametrize(
    "request_",
    ["I need to cancel my appointment.", "Sorry, wait, I need to cancel my appointment instead.", "I won't be able to make it on Friday, please cancel.",
     "Hi, can you cancel my Friday appointment?", "I'd like to cancel the appointment I have at 10"],
)  # fmt: skip
def test_cancel_the_only_appointment(registry, request_):
    seed(registry, ME, "2026-11-27", "10:00")
    replies = talk(registry, [request_])
    assert "I've cancelled your appointment on Friday the 27th at 10 a.m." in replies[-1], replies
    assert active(registry) == []


def test_book_cancel_and_rebook_the_same_slot_in_one_call(registry):
    replies = talk(registry, ["I'd like an appointment on Friday at ten a.m.", "Actually, I need to cancel that appointment.", "Yes please, Friday at 10 again."])
    assert "You're booked for Friday the 27th at 10 a.m." in replies[0]
    assert "I've cancelled your appointment on Friday the 27th at 10 a.m." in replies[1]
    assert "You're booked for Friday the 27th at 10 a.m." in replies[2]
    rows = book_of(registry).appointments(include_cancelled=True)
    assert [(r["date"], r["time"], r["cancelled_at"] is not None) for r in rows] == [("2026-11-27", "10:00", True), ("2026-11-27", "10:00", False)]


def test_a_caller_with_two_bookings_is_asked_which_one(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    seed(registry, ME, "2026-11-30", "14:00")
    replies = talk(registry, ["I need to cancel my appointment", "the Monday one"])
    assert "You have 2 appointments: Friday the 27th at 10 a.m. and Monday the 30th at 2 p.m. Which one would you like to cancel?" in replies[0]
    assert "I've cancelled your appointment on Monday the 30th at 2 p.m." in replies[1]
    assert active(registry) == [("2026-11-27", "10:00", ME)]


@pytest.mark.parametrize("question", ["When is my appointment?", "When am I booked in?", "Do I have an appointment?", "Hi, I'm calling about my appointment."])
def test_when_is_my_appointment(registry, question):
    seed(registry, ME, "2026-11-27", "10:00")
    seed(registry, SOMEONE_ELSE, "2026-11-26", "09:00")
    replies = talk(registry, [question])
    assert "You're booked for Friday the 27th at 10 a.m." in replies[-1], replies


def test_when_are_my_appointments_with_two(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    seed(registry, ME, "2026-12-02", "09:30")
    replies = talk(registry, ["when am I booked in"])
    assert "You have 2 appointments: Friday the 27th at 10 a.m. and Wednesday the 2nd of December at 9:30 a.m." in replies[-1]


def test_a_caller_with_none_is_asked_for_the_name_and_found_by_it(registry):
    seed(registry, SOMEONE_ELSE, "2026-11-27", "10:00", name="John Smith")
    replies = talk(registry, ["When is my appointment?", "John Smith."])
    assert "What name is the booking under?" in replies[0]
    assert "You're booked for Friday the 27th at 10 a.m." in replies[1]


def test_no_booking_under_the_number_or_the_name(registry):
    replies = talk(registry, ["I want to cancel my appointment", "It's under Maria Lopez", "yes", "Thursday at 11"])
    assert "What name is the booking under?" in replies[0]
    assert "I can't find an upcoming appointment under Maria Lopez. Would you like to book one?" in replies[1]
    assert "What day and time would suit you?" in replies[2]
    assert "You're booked for Thursday the 26th at 11 a.m." in replies[3]


def test_someone_elses_booking_is_not_touched(registry):
    seed(registry, SOMEONE_ELSE, "2026-11-27", "10:00", name="Ann Lee")
    replies = talk(registry, ["Cancel my Friday appointment please"])
    assert "What name is the booking under?" in replies[-1]
    assert active(registry) == [("2026-11-27", "10:00", SOMEONE_ELSE)]


@pytest.mark.parametrize(
    ("request_", "moved_to"),
    [("Can I move my Friday appointment to Monday at 2?", "Monday the 30th at 2 p.m."),
     ("I need to reschedule my appointment to Thursday at 11", "Thursday the 26th at 11 a.m."),
     ("Could I change my appointment from Friday to Monday at 9:30?", "Monday the 30th at 9:30 a.m."),
     ("Can we push my appointment back to 3?", "Friday the 27th at 3 p.m.")],
)  # fmt: skip
def test_move_an_appointment(registry, request_, moved_to):
    seed(registry, ME, "2026-11-27", "10:00")
    replies = talk(registry, [request_])
    assert f"I've moved your appointment from Friday the 27th at 10 a.m. to {moved_to}" in replies[-1], replies
    (row,) = book_of(registry).appointments()
    assert row["phone"] == ME


def test_move_asks_when_to(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    replies = talk(registry, ["I need to reschedule my appointment", "Monday at 2 please"])
    assert "You're booked for Friday the 27th at 10 a.m. When would you like to move it to?" in replies[0]
    assert "to Monday the 30th at 2 p.m." in replies[1]
    assert active(registry) == [("2026-11-30", "14:00", ME)]


def test_move_into_a_slot_taken_by_someone_else_offers_the_nearest(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    seed(registry, SOMEONE_ELSE, "2026-11-30", "14:00")
    replies = talk(registry, ["Can I move my appointment to Monday at 2?", "yes"])
    assert "Monday the 30th at 2 p.m. is already taken. The nearest free time is 2:30 p.m. Shall I move it there?" in replies[0], replies
    assert "to Monday the 30th at 2:30 p.m." in replies[1]
    assert sorted(active(registry)) == [("2026-11-30", "14:00", SOMEONE_ELSE), ("2026-11-30", "14:30", ME)]


def test_move_into_a_closed_day_keeps_the_old_slot(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    replies = talk(registry, ["Could I move my appointment to Saturday at 10?", "no"])
    assert "Sorry, we're closed on Saturdays." in replies[0] and "Shall I move it there?" in replies[0]
    assert "When would you like to move it to instead?" in replies[1]
    assert active(registry) == [("2026-11-27", "10:00", ME)]


@pytest.mark.parametrize("correction", ["Actually, make that 11.", "actually can we do 11 instead", "Sorry, could you change it to 11?"])
def test_actually_make_that_11(registry, correction):
    replies = talk(registry, ["Can I book Friday at 10?", correction])
    assert "You're booked for Friday the 27th at 10 a.m." in replies[0]
    assert "I've moved your appointment from Friday the 27th at 10 a.m. to Friday the 27th at 11 a.m." in replies[1], replies
    assert active(registry) == [("2026-11-27", "11:00", ME)]


def test_another_booking_is_not_a_correction(registry):
    talk(registry, ["Can I book Friday at 10?", "And another one on Monday at 2 for my son"])
    assert sorted(active(registry)) == [("2026-11-27", "10:00", ME), ("2026-11-30", "14:00", ME)]


@pytest.mark.parametrize(
    ("request_", "topic"),
    [("Can I speak to a real person please?", "wants to speak to a person"), ("I have a question about my bill", "billing question"),
     ("Does my insurance cover a crown?", "insurance question"), ("Could the dentist call me back about my X-ray results?", "asked to be called back")],
)  # fmt: skip
def test_what_it_cannot_do_becomes_a_callback_task(registry, request_, topic):
    replies = talk(registry, [request_])
    assert "I've asked the front desk to call you back on the number ending in 9 9 9 9." in replies[-1], replies
    (task,) = book_of(registry).callbacks()
    assert task["phone"] == ME and task["reason"].startswith(topic) and request_ in task["reason"] and task["status"] == "open"


def test_a_callback_without_a_number_asks_who_to_call(registry):
    replies = talk(registry, ["I'd like to talk to someone about my bill", "It's Maria Lopez, 555 123 4567"], caller="")
    assert "what's your name and the best number to reach you?" in replies[0]
    assert "call you back on the number ending in 4 5 6 7" in replies[1]
    (task,) = book_of(registry).callbacks()
    assert (task["patient_name"], task["phone"]) == ("Maria Lopez", "5551234567")


def test_nothing_is_promised_when_the_task_cannot_be_recorded(registry):
    from parley_orchestrator.tools import ToolRegistry

    only_booking = ToolRegistry([t for name, t in registry._tools.items() if name != "request_callback"])
    call = Call(only_booking, caller=ME)
    asyncio.run(call.say("Can I speak to the manager?"))
    assert "call you back" not in call.replies[-1] and "can't" in call.replies[-1]


def test_reschedule_then_goodbye_ends_the_call(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    replies = talk(registry, ["Can I move my appointment to Thursday at 11?", "No, that's all, thanks."])
    assert "Goodbye!" in replies[-1]


def test_cancelling_frees_the_slot_for_someone_else(registry):
    seed(registry, ME, "2026-11-27", "10:00")
    talk(registry, ["Please cancel my appointment"])
    replies = talk(registry, ["Friday at 10 please"], caller=SOMEONE_ELSE)
    assert "You're booked for Friday the 27th at 10 a.m." in replies[-1]
    assert active(registry) == [("2026-11-27", "10:00", SOMEONE_ELSE)]


def test_the_days_are_today_relative(registry):
    """The brain reads today's date from the system message, as the runtime writes it."""
    seed(registry, ME, "2026-11-25", "15:00")
    assert "You're booked for tomorrow, Wednesday the 25th, at 3 p.m." in talk(registry, ["when's my appointment"])[-1]
    assert dt.date(2026, 11, 25).weekday() == 2
