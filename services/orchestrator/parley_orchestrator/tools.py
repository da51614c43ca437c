"""The tools an agent may call, and the clinic's appointment book.

``ToolRegistry`` holds tools (name, description, JSON-schema parameters, an
async handler), hands their schemas to the LLM in the OpenAI function format,
and runs a call from the LLM's raw JSON text: it validates the arguments and
never raises — an unknown tool, bad JSON, invalid arguments or a failing
handler all come back as ``(False, '{"error": "..."}')`` for the model to read.

``default_registry(db_path)`` is the demo deployment's set: ``book_appointment``
and ``check_availability`` over a SQLite file (stdlib ``sqlite3`` in a worker
thread). The clinic's opening hours and the search for nearby free slots are
pure functions (``ClinicHours``, ``nearest_free``), tested without a database.

Idempotency: the reducer already executes each call id once, but a booking is
the one effect that must never happen twice, so the appointment row also keeps
the call id (UNIQUE) and a repeated call id returns the original booking.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("parley.orchestrator.tools")

Handler = Callable[..., Awaitable[dict]]


class ToolInputError(ValueError):
    """The arguments were well-formed JSON but made no sense (bad date...)."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of an object
    handler: Handler  # async (arguments: dict[, call_id=str]) -> dict
    # The handler takes ``call_id=`` too (for idempotent effects).
    wants_call_id: bool = False

    def schema(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


# ---------------------------------------------------------------------------
# Argument validation: the subset of JSON schema the tools here use (object,
# required, string/integer/number/boolean, enum). Properties the schema does
# not name are dropped rather than refused: models add chatty extras.

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def validate_arguments(schema: dict, arguments: Any) -> tuple[dict, list[str]]:
    """Return (the arguments the handler gets, the problems found)."""
    if not isinstance(arguments, dict):
        return {}, [f"arguments must be a JSON object, got {type(arguments).__name__}"]
    props: dict = schema.get("properties", {})
    errors: list[str] = []
    clean: dict = {}
    for key in schema.get("required", []):
        if key not in arguments or arguments[key] is None:
            errors.append(f"missing required argument '{key}'")
    for key, value in arguments.items():
        spec = props.get(key)
        if spec is None or value is None:
            continue
        kind = spec.get("type")
        allowed = _JSON_TYPES.get(kind, (object,))
        # bool is an int in Python, never in JSON schema.
        if not isinstance(value, allowed) or (kind in ("integer", "number") and isinstance(value, bool)):
            errors.append(f"argument '{key}' must be of type {kind}")
            continue
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"argument '{key}' must be one of {spec['enum']}")
            continue
        clean[key] = value
    return clean, errors


def _error(message: str) -> str:
    return json.dumps({"error": message})


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} registered twice")
        self._tools[tool.name] = tool

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def schemas(self) -> list[dict]:
        """The tools in the OpenAI ``tools`` format."""
        return [t.schema() for t in self._tools.values()]

    async def call(self, name: str, arguments_json: str, call_id: str = "") -> tuple[bool, str]:
        """Run one call; never raises (except cancellation). ``call_id`` should
        be unique per session and call (e.g. "<session>/<call id>")."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return False, _error(f"unknown tool '{name}' (available: {known})")
        try:
            arguments = json.loads(arguments_json) if arguments_json.strip() else {}
        except (json.JSONDecodeError, AttributeError) as exc:
            return False, _error(f"arguments of {name} are not valid JSON: {exc}")
        clean, problems = validate_arguments(tool.parameters, arguments)
        if problems:
            return False, _error(f"invalid arguments for {name}: " + "; ".join(problems))
        try:
            result = await (tool.handler(clean, call_id=call_id) if tool.wants_call_id else tool.handler(clean))
            return True, json.dumps(result)
        except asyncio.CancelledError:
            raise
        except ToolInputError as exc:
            return False, _error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool failure is reported to the model, not raised
            log.warning("tool failed", extra={"tool": name, "error": repr(exc)})
            return False, _error(f"{name} failed: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------
# The clinic's hours (pure)

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class ClinicHours:
    open_days: frozenset[int] = frozenset(range(5))  # Monday..Friday
    opens: dt.time = dt.time(9, 0)
    closes: dt.time = dt.time(17, 0)
    slot_minutes: int = 30

    def is_open_day(self, day: dt.date) -> bool:
        return day.weekday() in self.open_days

    def slots(self, day: dt.date) -> list[dt.time]:
        """Start times of the day's slots (empty when closed)."""
        if not self.is_open_day(day):
            return []
        out = []
        t = dt.datetime.combine(day, self.opens)
        end = dt.datetime.combine(day, self.closes)
        while t + dt.timedelta(minutes=self.slot_minutes) <= end:
            out.append(t.time())
            t += dt.timedelta(minutes=self.slot_minutes)
        return out

    def within_hours(self, t: dt.time) -> bool:
        return self.opens <= t < self.closes

    def is_slot(self, day: dt.date, t: dt.time) -> bool:
        return t in self.slots(day)

    def describe(self) -> str:
        days = sorted(self.open_days)
        if days == list(range(days[0], days[-1] + 1)) and len(days) > 1:
            span = f"{WEEKDAY_NAMES[days[0]]} to {WEEKDAY_NAMES[days[-1]]}"
        else:
            span = ", ".join(WEEKDAY_NAMES[d] for d in days)
        return f"{span}, {self.opens:%H:%M} to {self.closes:%H:%M}, in {self.slot_minutes}-minute slots"


CLINIC = ClinicHours()


def nearest_free(
    wanted: dt.datetime,
    taken: set[tuple[dt.date, dt.time]],
    hours: ClinicHours,
    now: dt.datetime,
    n: int = 3,
    days_around: int = 14,
) -> list[dt.datetime]:
    """The ``n`` free future slots closest to ``wanted``; on a tie the later
    one first (a caller who asked for 3 p.m. is likelier free at 3:30 than 2:30)."""
    first_day = max(now.date(), wanted.date() - dt.timedelta(days=days_around))
    candidates = []
    for i in range((wanted.date() + dt.timedelta(days=days_around) - first_day).days + 1):
        day = first_day + dt.timedelta(days=i)
        for t in hours.slots(day):
            at = dt.datetime.combine(day, t)
            if at > now and (day, t) not in taken:
                candidates.append(at)
    candidates.sort(key=lambda at: (abs((at - wanted).total_seconds()), -at.timestamp()))
    return candidates[:n]


def earliest_free(
    start: dt.date,
    taken: set[tuple[dt.date, dt.time]],
    hours: ClinicHours,
    now: dt.datetime,
    n: int = 3,
    days: int = 30,
) -> list[dt.datetime]:
    out = []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        for t in hours.slots(day):
            at = dt.datetime.combine(day, t)
            if at > now and (day, t) not in taken:
                out.append(at)
                if len(out) == n:
                    return out
    return out


def slot_json(at: dt.datetime) -> dict:
    return {"date": at.date().isoformat(), "weekday": WEEKDAY_NAMES[at.weekday()], "time": f"{at:%H:%M}"}


# Lenient parsing of the tools' date/time arguments: LLMs write "15:00",
# "3:00 PM", "15:00:00" and occasionally "2026-11-25T15:00".
_TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?(?::\d{2})?\s*([ap])?\.?\s*m?\.?\s*$", re.I)


def parse_date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ToolInputError(f"date must be YYYY-MM-DD, got {value!r}") from None


def parse_time_arg(value: str) -> dt.time:
    text = value.strip()
    if "T" in text:
        text = text.split("T", 1)[1]
    m = _TIME.match(text)
    if not m:
        raise ToolInputError(f"time must be HH:MM (24-hour), got {value!r}")
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    meridiem = (m.group(3) or "").lower()
    if meridiem and not 1 <= hour <= 12:
        raise ToolInputError(f"time must be HH:MM (24-hour), got {value!r}")
    if meridiem == "p" and hour < 12:
        hour += 12
    elif meridiem == "a" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        raise ToolInputError(f"time must be HH:MM (24-hour), got {value!r}")
    return dt.time(hour, minute)


# ---------------------------------------------------------------------------
# The appointment book (SQLite, one short connection per call in a thread)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    id INTEGER PRIMARY KEY,
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    patient_name TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    call_id TEXT UNIQUE,
    created_at TEXT NOT NULL,
    UNIQUE (date, time)
)
"""


@dataclass
class AppointmentBook:
    path: Path
    hours: ClinicHours = CLINIC
    clock: Callable[[], dt.datetime] = dt.datetime.now  # local time, like the clinic
    _ready: bool = field(default=False, init=False)

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        if not self._ready:
            conn.execute(_SCHEMA)
            self._ready = True
        return conn

    def _taken(self, conn: sqlite3.Connection, first: dt.date, last: dt.date) -> set[tuple[dt.date, dt.time]]:
        rows = conn.execute("SELECT date, time FROM appointments WHERE date BETWEEN ? AND ?", (first.isoformat(), last.isoformat()))
        return {(dt.date.fromisoformat(d), dt.time.fromisoformat(t)) for d, t in rows}

    # -- book_appointment
    async def book(self, arguments: dict, call_id: str = "") -> dict:
        day = parse_date_arg(arguments["date"])
        at = parse_time_arg(arguments["time"])
        name = str(arguments.get("patient_name", "")).strip()[:200]
        reason = str(arguments.get("reason", "")).strip()[:500]
        return await asyncio.to_thread(self._book, day, at, name, reason, call_id or None)

    def _book(self, day: dt.date, at: dt.time, name: str, reason: str, call_id: str | None) -> dict:
        wanted = dt.datetime.combine(day, at)
        now = self.clock()
        asked = {"date": day.isoformat(), "weekday": WEEKDAY_NAMES[day.weekday()], "time": f"{at:%H:%M}"}
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time: check-then-insert is atomic
            if call_id is not None:
                row = conn.execute("SELECT date, time, patient_name FROM appointments WHERE call_id = ?", (call_id,)).fetchone()
                if row is not None:
                    if (row[0], row[1]) == (asked["date"], asked["time"]):
                        conn.execute("COMMIT")
                        return {"booked": True, **asked, "patient_name": row[2]}
                    # Same id, different request: an id collision, not a retry.
                    log.warning("call id reused for a different booking", extra={"call_id": call_id})
                    call_id = None
            taken = self._taken(conn, wanted.date() - dt.timedelta(days=15), wanted.date() + dt.timedelta(days=15))
            refusal = None
            if not self.hours.is_open_day(day) or not self.hours.within_hours(at):
                refusal = "closed"
            elif not self.hours.is_slot(day, at):
                refusal = "not_a_slot"
            elif wanted <= now:
                refusal = "past"
            elif (day, at) in taken:
                refusal = "taken"
            if refusal is None:
                try:
                    conn.execute(
                        "INSERT INTO appointments (date, time, patient_name, reason, call_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (asked["date"], asked["time"], name, reason, call_id, now.isoformat(timespec="seconds")),
                    )
                    conn.execute("COMMIT")
                    return {"booked": True, **asked, "patient_name": name}
                except sqlite3.IntegrityError:
                    refusal = "taken"
                    taken.add((day, at))
            conn.execute("ROLLBACK")
            alternatives = [slot_json(a) for a in nearest_free(wanted, taken, self.hours, now)]
            return {"booked": False, "reason": refusal, **asked, "opening_hours": self.hours.describe(), "alternatives": alternatives}
        finally:
            conn.close()

    # -- check_availability
    async def availability(self, arguments: dict) -> dict:
        day = parse_date_arg(arguments["date"])
        return await asyncio.to_thread(self._availability, day)

    def _availability(self, day: dt.date) -> dict:
        now = self.clock()
        conn = self._connect()
        try:
            taken = self._taken(conn, day, day + dt.timedelta(days=31))
        finally:
            conn.close()
        free = [f"{t:%H:%M}" for t in self.hours.slots(day) if dt.datetime.combine(day, t) > now and (day, t) not in taken]
        start = max(day, now.date())
        return {
            "date": day.isoformat(),
            "weekday": WEEKDAY_NAMES[day.weekday()],
            "open": self.hours.is_open_day(day),
            "opening_hours": self.hours.describe(),
            "free": free,
            "next_free": [slot_json(a) for a in earliest_free(start, taken, self.hours, now)],
        }

    def appointments(self) -> list[dict]:
        """Every booking, for tests and the CLI."""
        conn = self._connect()
        try:
            rows = conn.execute("SELECT date, time, patient_name, reason, call_id FROM appointments ORDER BY date, time").fetchall()
        finally:
            conn.close()
        return [dict(zip(("date", "time", "patient_name", "reason", "call_id"), r)) for r in rows]


BOOK_APPOINTMENT = "book_appointment"
CHECK_AVAILABILITY = "check_availability"


def appointment_tools(book: AppointmentBook) -> list[Tool]:
    hours = book.hours.describe()
    return [
        Tool(
            name=BOOK_APPOINTMENT,
            description=(
                f"Book a dental appointment. The clinic is open {hours}. "
                "Returns booked=true, or booked=false with a reason (taken, closed, not_a_slot, past) and the nearest free alternatives."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "date": {"type": "string", "description": "Day of the appointment, YYYY-MM-DD"},
                    "time": {"type": "string", "description": "Start time, HH:MM in 24-hour clock, on the hour or half hour"},
                    "patient_name": {"type": "string", "description": "The patient's name, if given"},
                    "reason": {"type": "string", "description": "Reason for the visit, if given (check-up, cleaning, pain...)"},
                },
                "required": ["date", "time"],
            },
            handler=book.book,
            wants_call_id=True,
        ),
        Tool(
            name=CHECK_AVAILABILITY,
            description="List the free appointment times on a day (HH:MM), and the earliest free slots from that day on.",
            parameters={
                "type": "object",
                "properties": {"date": {"type": "string", "description": "The day, YYYY-MM-DD"}},
                "required": ["date"],
            },
            handler=book.availability,
        ),
    ]


END_CALL = "end_call"


async def _end_call_not_run_here(arguments: dict) -> dict:
    # The reducer handles end_call itself (the call ends once the goodbye has
    # been heard); the runtime never executes it.
    return {"ok": True}


END_CALL_TOOL = Tool(
    name=END_CALL,
    description=(
        "Hang up. Call it in the same turn as your goodbye, after saying it: the call ends once the caller "
        "has heard your whole reply. If the caller interrupts, the call goes on."
    ),
    parameters={"type": "object", "properties": {}},
    handler=_end_call_not_run_here,
)


def default_registry(db_path: str | Path, clock: Callable[[], dt.datetime] = dt.datetime.now, hours: ClinicHours = CLINIC) -> ToolRegistry:
    return ToolRegistry([*appointment_tools(AppointmentBook(Path(db_path), hours=hours, clock=clock)), END_CALL_TOOL])
