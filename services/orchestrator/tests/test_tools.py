"""The tool registry (msgspec validation, errors that never raise) and the
appointment book on a real SQLite file: double bookings refused with
alternatives, opening hours, idempotent call ids, concurrent bookings of one
slot, bookings keyed by the caller's number, cancel and reschedule (own
bookings only), call-back tasks, and the migration of a first-release file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import msgspec

from parley.clock import Clock
from parley_orchestrator.appointments import default_registry, nearest_free, parse_time_arg
from parley_orchestrator.clinic import CLINIC as THE_CLINIC
from parley_orchestrator.tools import NoArguments, Tool, ToolContext, ToolInputError, ToolRegistry

CLINIC = THE_CLINIC.hours

NOW = dt.datetime(2026, 11, 24, 8, 0)  # a Tuesday morning, before opening
CLOCK = Clock.fixed(NOW)


def run(coro):
    return asyncio.run(coro)


def book(reg: ToolRegistry, call_id: str = "", caller: str = "", **args) -> tuple[bool, dict]:
    ok, result = run(reg.call("book_appointment", json.dumps(args), ToolContext(caller=caller, call_id=call_id)))
    return ok, json.loads(result)


def call(reg: ToolRegistry, name: str, caller: str = "", call_id: str = "", **args) -> dict:
    ok, result = run(reg.call(name, json.dumps(args), ToolContext(caller=caller, call_id=call_id)))
    assert ok, result
    return json.loads(result)


@pytest.fixture
def reg(tmp_path) -> ToolRegistry:
    return default_registry(tmp_path / "book.sqlite3", clock=CLOCK)


# --------------------------------------------------------------- registry


def test_schemas_are_openai_functions(reg):
    schemas = reg.schemas()
    assert [s["function"]["name"] for s in schemas] == [
        "book_appointment", "check_availability", "find_appointments", "cancel_appointment", "reschedule_appointment", "request_callback", "end_call", "send_digits"
    ]  # fmt: skip
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
        ("book_appointment", "[1, 2]", "Expected `object`, got `array`"),
        ("book_appointment", '{"date": "2026-11-25"}', "Object missing required field `time`"),
        ("book_appointment", '{"date": "2026-11-25", "time": 15}', "Expected `str`, got `int` - at `$.time`"),
        ("cancel_appointment", '{"appointment_id": "three"}', "Expected `int`, got `str` - at `$.appointment_id`"),
        ("book_appointment", '{"date": "25/11/2026", "time": "15:00"}', "date must be YYYY-MM-DD"),
        ("book_appointment", '{"date": "2026-11-25", "time": "teatime"}', "time must be HH:MM"),
        ("check_availability", "{}", "Object missing required field `date`"),
        ("request_callback", '{"reason": "  "}', "reason must say what the caller needs"),
    ],
)
def test_bad_calls_come_back_as_errors(reg, name, arguments, needle):
    ok, result = run(reg.call(name, arguments))
    assert ok is False
    assert needle in json.loads(result)["error"]


def test_handler_exception_is_reported_not_raised():
    async def broken(arguments: NoArguments, context: ToolContext) -> dict:
        raise RuntimeError("disk on fire")

    reg = ToolRegistry([Tool("broken", "always fails", NoArguments, broken)])
    ok, result = run(reg.call("broken", ""))
    assert ok is False and "RuntimeError: disk on fire" in json.loads(result)["error"]


def test_registry_refuses_duplicate_names():
    async def h(arguments: NoArguments, context: ToolContext) -> dict:
        return {}

    tool = Tool("t", "d", NoArguments, h)
    with pytest.raises(ValueError):
        ToolRegistry([tool, tool])


class _Args(msgspec.Struct, frozen=True):
    n: int
    s: str = "a"


def test_validation_ignores_unknown_properties_takes_numbers_as_text_and_rejects_bool_as_number():
    got = []

    async def keep(arguments: _Args, context: ToolContext) -> dict:
        got.append(arguments)
        return {}

    reg = ToolRegistry([Tool("t", "d", _Args, keep)])
    assert run(reg.call("t", '{"n": 3, "chatty": "extra"}'))[0] is True
    assert run(reg.call("t", '{"n": "4"}'))[0] is True  # models write numbers as strings
    ok, error = run(reg.call("t", '{"n": true}'))
    assert not ok and "Expected `int`, got `bool`" in error
    assert got == [_Args(n=3), _Args(n=4)]
    params = Tool("t", "d", _Args, keep).parameters()
    assert params["type"] == "object" and params["required"] == ["n"] and set(params["properties"]) == {"n", "s"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_call_never_raises_on_arbitrary_argument_text(text):
    async def echo(arguments: _Args, context: ToolContext) -> dict:
        return msgspec.structs.asdict(arguments)

    reg = ToolRegistry([Tool("echo", "echo", _Args, echo)])
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
    assert CLINIC.describe() == "Monday to Friday, 9 a.m. to 5 p.m., in 30-minute slots"


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
    assert ok and first == {"booked": True, "appointment_id": 1, "date": "2026-11-25", "weekday": "Wednesday", "time": "15:00", "patient_name": "Ann"}
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
    book_rows = default_registry(tmp_path / "book.sqlite3", clock=CLOCK)  # a fresh view of the same file
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
        calls = [reg.call("book_appointment", json.dumps({"date": "2026-11-27", "time": "09:00"}), ToolContext(call_id=f"c{i}")) for i in range(6)]
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
    reg = default_registry(tmp_path / "b.sqlite3", clock=Clock.fixed(dt.datetime(2026, 11, 24, 13, 5)))
    result = json.loads(run(reg.call("check_availability", '{"date": "2026-11-24"}'))[1])
    assert result["free"][0] == "13:30"


# ------------------------------------------------------------ the caller's appointments

ME, OTHER = "+1 (555) 000-9999", "+15550001111"


def test_find_by_the_callers_number_in_any_format_or_by_name(reg):
    book(reg, "a", caller="+15550009999", date="2026-11-27", time="10:00", patient_name="John Smith")
    book(reg, "b", caller=OTHER, date="2026-11-26", time="10:00", patient_name="Ann Lee")
    book(reg, "c", caller="", date="2026-11-23", time="10:00")  # past: never listed (refused anyway)
    mine = call(reg, "find_appointments", caller=ME)
    assert [(a["date"], a["time"]) for a in mine["appointments"]] == [("2026-11-27", "10:00")]
    assert [a["patient_name"] for a in call(reg, "find_appointments", patient_name="smith")["appointments"]] == ["John Smith"]
    assert call(reg, "find_appointments", caller="+15550002222")["appointments"] == []
    assert call(reg, "find_appointments")["needs"] == "patient_name"


def test_cancel_only_the_callers_own_booking_and_rebook_the_slot(reg):
    booked = book(reg, "a", caller=ME, date="2026-11-27", time="10:00", patient_name="John Smith")[1]
    refused = call(reg, "cancel_appointment", caller=OTHER, appointment_id=booked["appointment_id"])
    assert refused == {"cancelled": False, "appointment_id": booked["appointment_id"], "reason": "not_yours"}
    assert call(reg, "cancel_appointment", caller=OTHER, appointment_id=booked["appointment_id"], patient_name="John Smith")["cancelled"] is True
    assert call(reg, "cancel_appointment", caller=ME, appointment_id=booked["appointment_id"])["reason"] == "not_found"
    assert call(reg, "cancel_appointment", caller=ME, appointment_id=999)["reason"] == "not_found"
    again = book(reg, "b", caller=OTHER, date="2026-11-27", time="10:00")[1]
    assert again["booked"] is True  # a cancelled booking frees its slot
    rows = reg._tools["book_appointment"].handler.__self__.appointments(include_cancelled=True)
    assert [(r["phone"], r["cancelled_at"] is not None) for r in rows] == [(ME, True), (OTHER, False)]


def test_reschedule_is_atomic_and_keeps_the_old_slot_when_the_new_one_is_not_free(reg):
    mine = book(reg, "a", caller=ME, date="2026-11-27", time="10:00")[1]["appointment_id"]
    book(reg, "b", caller=OTHER, date="2026-11-30", time="14:00")
    taken = call(reg, "reschedule_appointment", caller=ME, appointment_id=mine, date="2026-11-30", time="14:00")
    assert taken["rescheduled"] is False and taken["reason"] == "taken" and taken["alternatives"][0]["time"] == "14:30"
    closed = call(reg, "reschedule_appointment", caller=ME, appointment_id=mine, date="2026-11-28", time="10:00")
    assert closed["reason"] == "closed" and closed["still_booked"]["date"] == "2026-11-27"
    same = call(reg, "reschedule_appointment", caller=ME, appointment_id=mine, date="2026-11-27", time="10:00")
    assert same["rescheduled"] is True  # its own slot is not "taken"
    moved = call(reg, "reschedule_appointment", caller=ME, appointment_id=mine, date="2026-11-30", time="2:30 PM")
    assert moved["rescheduled"] is True and moved["from"]["time"] == "10:00" and moved["to"] == {"date": "2026-11-30", "weekday": "Monday", "time": "14:30"}
    assert call(reg, "reschedule_appointment", caller=OTHER, appointment_id=mine, date="2026-12-01", time="10:00")["reason"] == "not_yours"
    assert book(reg, "c", caller=OTHER, date="2026-11-27", time="10:00")[1]["booked"] is True  # the old slot is free again


def test_callback_tasks_keep_who_and_why_once_per_call_id(reg):
    first = call(reg, "request_callback", caller=ME, call_id="s/c1", reason="billing question")
    assert first["recorded"] is True and first["phone"] == ME
    assert call(reg, "request_callback", caller=ME, call_id="s/c1", reason="billing question")["callback_id"] == first["callback_id"]
    assert call(reg, "request_callback", reason="insurance")["reason"] == "no_contact"
    spoken = call(reg, "request_callback", reason="insurance", phone="555 123 4567", patient_name="Maria")
    assert spoken["recorded"] is True and spoken["phone"] == "555 123 4567"
    # The model cannot redirect a call-back away from the caller's own line.
    assert call(reg, "request_callback", caller=ME, reason="x", phone="+19999999999")["phone"] == ME
    tasks = reg._tools["book_appointment"].handler.__self__.callbacks()
    assert [(t["reason"], t["status"]) for t in tasks] == [("x", "open"), ("insurance", "open"), ("billing question", "open")]


def test_a_first_release_file_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE appointments (id INTEGER PRIMARY KEY, date TEXT NOT NULL, time TEXT NOT NULL, patient_name TEXT NOT NULL DEFAULT '', "
        "reason TEXT NOT NULL DEFAULT '', call_id TEXT UNIQUE, created_at TEXT NOT NULL, UNIQUE (date, time))"
    )
    conn.execute("INSERT INTO appointments (date, time, patient_name, reason, call_id, created_at) VALUES ('2026-11-27', '10:00', 'Ann', '', 'x', 'then')")
    conn.commit()
    conn.close()
    reg = default_registry(path, clock=CLOCK)
    assert book(reg, "y", date="2026-11-27", time="10:00")[1]["reason"] == "taken"
    ann = call(reg, "find_appointments", patient_name="Ann")["appointments"]
    assert [a["appointment_id"] for a in ann] == [1]
    assert call(reg, "cancel_appointment", appointment_id=1, patient_name="Ann")["cancelled"] is True
    assert book(reg, "z", date="2026-11-27", time="10:00")[1]["booked"] is True


def test_transfer_destination_is_the_deployments_never_the_callers():
    """A caller's params (a browser's query string, a webhook URL) cannot
    point transfers elsewhere; the deployment's default always wins."""
    from parley import contract as c
    from parley_orchestrator.runtime import Runtime

    class _NoNats:
        def jetstream(self):
            return None

    def enriched(defaults: dict, params: dict) -> dict:
        rt = Runtime(nc=_NoNats(), brain=None, tools=None, defaults=defaults)
        return rt._enrich(c.SessionStarted(session="s", at=0.0, params=params)).params

    assert enriched({"transfer_to": "+15550007777"}, {"transfer_to": "+19005550000"})["transfer_to"] == "+15550007777"
    assert "transfer_to" not in enriched({}, {"transfer_to": "+19005550000"})
    # Nor can a caller silence the recording notice, or make the agent say something else in its place.
    assert enriched({"consent_text": "This call may be recorded."}, {"consent_text": ""})["consent_text"] == "This call may be recorded."
    assert "consent_text" not in enriched({}, {"consent_text": "Nothing is recorded."})
    assert enriched({}, {"greeting": "Hi"})["greeting"] == "Hi"


def test_send_digits_reached_by_the_registry_says_it_is_for_placed_calls_only(reg):
    # On calls Parley placed the reducer presses the keys itself; the registry
    # only ever sees the call on a call that came in.
    ok, result = run(reg.call("send_digits", '{"digits": "1"}', ToolContext()))
    assert ok and "calls you placed" in json.loads(result)["error"]


def test_the_clinic_declares_which_tools_only_read(tmp_path):
    """RULES 25: look-ups run while a held answer waits; anything that
    changes the book (or the call) waits for the answer to be heard. An
    unknown tool is never taken to only read."""
    reg = default_registry(tmp_path / "book.sqlite3")
    reading = {name for name in reg.names() if reg.reads_only(name)}
    assert reading == {"check_availability", "find_appointments"}
    assert not reg.reads_only("no_such_tool")


def test_a_tool_call_event_carries_its_declaration(tmp_path):
    """The orchestrator, not the model, says whether a call only reads."""
    from parley.contract import LLMToolCall
    from parley_orchestrator.adapters.llm import ToolCallOut
    from parley_orchestrator.runtime import _llm_event

    reg = default_registry(tmp_path / "book.sqlite3")
    for name, reads in (("check_availability", True), ("book_appointment", False), ("end_call", False)):
        ev = _llm_event(ToolCallOut(call_id="c", name=name, arguments="{}"), "s", 1, 0, 0, 0, reg.reads_only)
        assert isinstance(ev, LLMToolCall) and ev.reads_only is reads
    assert _llm_event(ToolCallOut(call_id="c", name="check_availability", arguments="{}"), "s", 1, 0, 0, 0).reads_only is False
