"""The tool registry (validation, errors that never raise) and the appointment
book on a real SQLite file: double bookings refused with alternatives,
opening hours, idempotent call ids, concurrent bookings of one slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_orchestrator.tools import (
    CLINIC,
    Tool,
    ToolInputError,
    ToolRegistry,
    default_registry,
    nearest_free,
    parse_time_arg,
    validate_arguments,
)

NOW = dt.datetime(2026, 11, 24, 8, 0)  # a Tuesday morning, before opening


def clock() -> dt.datetime:
    return NOW


def run(coro):
    return asyncio.run(coro)


def book(reg: ToolRegistry, call_id: str = "", **args) -> tuple[bool, dict]:
    ok, result = run(reg.call("book_appointment", json.dumps(args), call_id=call_id))
    return ok, json.loads(result)


@pytest.fixture
def reg(tmp_path) -> ToolRegistry:
    return default_registry(tmp_path / "book.sqlite3", clock=clock)


# --------------------------------------------------------------- registry


def test_schemas_are_openai_functions(reg):
    schemas = reg.schemas()
    assert [s["function"]["name"] for s in schemas] == ["book_appointment", "check_availability", "end_call"]
    for s in schemas:
        assert s["type"] == "function"
        params = s["function"]["parameters"]
        assert params["type"] == "object" and set(params.get("required", [])) <= set(params["properties"])
        assert s["function"]["description"]


@pytest.mark.parametrize(
    ("name", "arguments", "needle"),
    [
        ("no_such_tool", "{}", "unknown tool 'no_such_tool'"),
        ("book_appointment", "{not json", "not valid JSON"),
        ("book_appointment", "[1, 2]", "must be a JSON object"),
        ("book_appointment", '{"date": "2026-11-25"}', "missing required argument 'time'"),
        ("book_appointment", '{"date": "2026-11-25", "time": 15}', "'time' must be of type string"),
        ("book_appointment", '{"date": "25/11/2026", "time": "15:00"}', "date must be YYYY-MM-DD"),
        ("book_appointment", '{"date": "2026-11-25", "time": "teatime"}', "time must be HH:MM"),
        ("check_availability", "{}", "missing required argument 'date'"),
    ],
)
def test_bad_calls_come_back_as_errors(reg, name, arguments, needle):
    ok, result = run(reg.call(name, arguments))
    assert ok is False
    assert needle in json.loads(result)["error"]


def test_handler_exception_is_reported_not_raised():
    async def broken(arguments: dict) -> dict:
        raise RuntimeError("disk on fire")

    reg = ToolRegistry([Tool("broken", "always fails", {"type": "object", "properties": {}}, broken)])
    ok, result = run(reg.call("broken", ""))
    assert ok is False and "RuntimeError: disk on fire" in json.loads(result)["error"]


def test_registry_refuses_duplicate_names():
    async def h(arguments: dict) -> dict:
        return {}

    tool = Tool("t", "d", {"type": "object"}, h)
    with pytest.raises(ValueError):
        ToolRegistry([tool, tool])


def test_validation_drops_unknown_properties_and_rejects_bool_as_number():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "enum": ["a", "b"]}}, "required": ["n"]}
    assert validate_arguments(schema, {"n": 3, "chatty": "extra"}) == ({"n": 3}, [])
    assert validate_arguments(schema, {"n": True})[1] == ["argument 'n' must be of type integer"]
    assert validate_arguments(schema, {"n": 1, "s": "c"})[1] == ["argument 's' must be one of ['a', 'b']"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_call_never_raises_on_arbitrary_argument_text(text):
    async def echo(arguments: dict) -> dict:
        return arguments

    reg = ToolRegistry([Tool("echo", "echo", {"type": "object", "properties": {"x": {"type": "string"}}}, echo)])
    ok, result = run(reg.call("echo", text))
    assert isinstance(ok, bool)
    json.loads(result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15:00", dt.time(15)), ("9:30", dt.time(9, 30)), ("15:00:00", dt.time(15)), ("3:00 PM", dt.time(15)),
     ("3 pm", dt.time(15)), ("12:00 am", dt.time(0)), ("2026-11-25T10:30", dt.time(10, 30)), ("3p.m.", dt.time(15))],
)  # fmt: skip
def test_time_argument_formats(text, expected):
    assert parse_time_arg(text) == expected


@pytest.mark.parametrize("text", ["25:00", "13 pm", "noonish", "", "10:75"])
def test_time_argument_rejects(text):
    with pytest.raises(ToolInputError):
        parse_time_arg(text)


# ------------------------------------------------------------ clinic hours


def test_clinic_slots():
    slots = CLINIC.slots(dt.date(2026, 11, 24))
    assert slots[0] == dt.time(9) and slots[-1] == dt.time(16, 30) and len(slots) == 16
    assert CLINIC.slots(dt.date(2026, 11, 28)) == []  # Saturday
    assert CLINIC.describe() == "Monday to Friday, 09:00 to 17:00, in 30-minute slots"


def test_nearest_free_prefers_the_later_slot_on_a_tie_and_skips_taken_and_past():
    day = dt.date(2026, 11, 25)
    taken = {(day, dt.time(15))}
    got = nearest_free(dt.datetime.combine(day, dt.time(15)), taken, CLINIC, NOW, n=3)
    assert [a.time() for a in got] == [dt.time(15, 30), dt.time(14, 30), dt.time(16)]
    # Saturday morning: Friday afternoon is nearer than Monday morning.
    sat = nearest_free(dt.datetime(2026, 11, 28, 10), set(), CLINIC, NOW, n=1)
    assert sat == [dt.datetime(2026, 11, 27, 16, 30)]
    # Nothing before now.
    late = nearest_free(dt.datetime(2026, 11, 24, 9), set(), CLINIC, dt.datetime(2026, 11, 24, 12, 10), n=1)
    assert late == [dt.datetime(2026, 11, 24, 12, 30)]


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)), st.data())
def test_nearest_free_only_offers_free_future_slots_in_hours(wanted, data):
    days = [wanted.date() + dt.timedelta(days=i) for i in range(-3, 4)]
    window = [(d, t) for d in days for t in CLINIC.slots(d)]
    taken = set(data.draw(st.lists(st.sampled_from(window), max_size=40)))
    got = nearest_free(wanted, taken, CLINIC, NOW)
    for at in got:
        assert at > NOW and (at.date(), at.time()) not in taken and CLINIC.is_slot(at.date(), at.time())
    distances = [abs((at - wanted).total_seconds()) for at in got]
    assert distances == sorted(distances)


# ------------------------------------------------------------ booking


def test_books_then_refuses_the_same_slot_with_alternatives(reg):
    ok, first = book(reg, "s1/c1", date="2026-11-25", time="15:00", patient_name="Ann")
    assert ok and first == {"booked": True, "date": "2026-11-25", "weekday": "Wednesday", "time": "15:00", "patient_name": "Ann"}
    ok, second = book(reg, "s2/c1", date="2026-11-25", time="15:00")
    assert ok and second["booked"] is False and second["reason"] == "taken"
    alts = second["alternatives"]
    assert alts[0] == {"date": "2026-11-25", "weekday": "Wednesday", "time": "15:30"}
    assert all((a["date"], a["time"]) != ("2026-11-25", "15:00") for a in alts)
    # The alternative really is free.
    ok, third = book(reg, "s2/c2", date=alts[0]["date"], time=alts[0]["time"])
    assert third["booked"] is True


def test_same_call_id_returns_the_original_booking_once(reg, tmp_path):
    ok, first = book(reg, "sess/call_1", date="2026-11-26", time="10:00")
    ok, again = book(reg, "sess/call_1", date="2026-11-26", time="10:00")
    assert first == again and again["booked"] is True
    book_rows = default_registry(tmp_path / "book.sqlite3", clock=clock)  # a fresh view of the same file
    ok, other = book(book_rows, "sess/call_2", date="2026-11-26", time="10:00")
    assert other["reason"] == "taken"


def test_reused_call_id_for_another_slot_is_not_mistaken_for_a_retry(reg):
    book(reg, "dup", date="2026-11-26", time="10:00")
    ok, other = book(reg, "dup", date="2026-11-26", time="11:00")
    assert other["booked"] is True and other["time"] == "11:00"


@pytest.mark.parametrize(
    ("date", "time", "reason"),
    [("2026-11-28", "10:00", "closed"), ("2026-11-25", "19:00", "closed"), ("2026-11-25", "08:30", "closed"),
     ("2026-11-25", "17:00", "closed"), ("2026-11-25", "15:15", "not_a_slot"), ("2026-11-23", "10:00", "past")],
)  # fmt: skip
def test_refusals(reg, date, time, reason):
    ok, result = book(reg, date=date, time=time)
    assert ok and result["booked"] is False and result["reason"] == reason
    for a in result["alternatives"]:
        at = dt.datetime.fromisoformat(f"{a['date']}T{a['time']}")
        assert at > NOW and CLINIC.is_slot(at.date(), at.time())


def test_lenient_time_formats_book_the_same_slot(reg):
    assert book(reg, date="2026-11-25", time="3:00 PM")[1]["booked"] is True
    assert book(reg, date="2026-11-25", time="15:00:00")[1]["reason"] == "taken"


def test_concurrent_bookings_of_one_slot_book_it_once(reg):
    async def main():
        calls = [reg.call("book_appointment", json.dumps({"date": "2026-11-27", "time": "09:00"}), call_id=f"c{i}") for i in range(6)]
        return await asyncio.gather(*calls)

    results = [json.loads(r) for ok, r in run(main())]
    assert sum(r["booked"] for r in results) == 1
    assert all(r["reason"] == "taken" for r in results if not r["booked"])


def test_check_availability(reg):
    book(reg, date="2026-11-25", time="09:00")
    ok, raw = run(reg.call("check_availability", '{"date": "2026-11-25"}'))
    result = json.loads(raw)
    assert ok and result["open"] is True and result["weekday"] == "Wednesday"
    assert result["free"][:2] == ["09:30", "10:00"] and "09:00" not in result["free"]
    assert result["next_free"][0] == {"date": "2026-11-25", "weekday": "Wednesday", "time": "09:30"}
    ok, raw = run(reg.call("check_availability", '{"date": "2026-11-29"}'))  # Sunday
    sunday = json.loads(raw)
    assert sunday["open"] is False and sunday["free"] == []
    assert sunday["next_free"][0] == {"date": "2026-11-30", "weekday": "Monday", "time": "09:00"}


def test_availability_today_leaves_out_past_slots(tmp_path):
    reg = default_registry(tmp_path / "b.sqlite3", clock=lambda: dt.datetime(2026, 11, 24, 13, 5))
    result = json.loads(run(reg.call("check_availability", '{"date": "2026-11-24"}'))[1])
    assert result["free"][0] == "13:30"
