"""The clinic's appointment book and front-desk call-back list, and the tools
over them.

SQLite (stdlib ``sqlite3``, one short connection per call, in a worker
thread). Every booking keeps the caller's number, so a caller can later ask
"when is my appointment?", cancel or move it, keyed by the number they call
from or by the name the booking is under. A cancelled booking stays in the
table (``cancelled_at``) and frees its slot: only active bookings are unique
per slot. A request the agent cannot serve becomes a row in ``callbacks`` for
the front desk, listed in the inspector.

The search for free slots is pure (``nearest_free``, ``earliest_free``), and
tested without a database.

Idempotency: the reducer already executes each call id once, but a booking is
the one effect that must never happen twice, so the appointment row also keeps
the call id (UNIQUE) and a repeated call id returns the original booking.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import msgspec

from parley.clock import Clock

from .clinic import CLINIC, WEEKDAY_NAMES, Clinic, ClinicHours
from .tools import END_CALL_TOOL, SEND_DIGITS_TOOL, TRANSFER_CALL_TOOL, Tool, ToolContext, ToolInputError, ToolRegistry

log = logging.getLogger("parley.orchestrator.tools")

BOOK_APPOINTMENT = "book_appointment"
CHECK_AVAILABILITY = "check_availability"
FIND_APPOINTMENTS = "find_appointments"
CANCEL_APPOINTMENT = "cancel_appointment"
RESCHEDULE_APPOINTMENT = "reschedule_appointment"
REQUEST_CALLBACK = "request_callback"

# ---------------------------------------------------------------------------
# Free slots (pure)

Taken = set[tuple[dt.date, dt.time]]


def nearest_free(wanted: dt.datetime, taken: Taken, hours: ClinicHours, now: dt.datetime, n: int = 3, days_around: int = 14) -> list[dt.datetime]:
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


def earliest_free(start: dt.date, taken: Taken, hours: ClinicHours, now: dt.datetime, n: int = 3, days: int = 30) -> list[dt.datetime]:
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


# ---------------------------------------------------------------------------
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
    bad = ToolInputError(f"time must be HH:MM (24-hour), got {value!r}")
    if not m:
        raise bad
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    meridiem = (m.group(3) or "").lower()
    if meridiem and not 1 <= hour <= 12:
        raise bad
    if meridiem == "p" and hour < 12:
        hour += 12
    elif meridiem == "a" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        raise bad
    return dt.time(hour, minute)


def same_number(a: str, b: str) -> bool:
    """Two phone numbers are the same line: equal digits, or equal last ten
    (``+1 555 000 9999`` and ``5550009999``)."""
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    if len(da) < 5 or len(db) < 5:
        return False
    return da == db or (len(da) >= 10 and len(db) >= 10 and da[-10:] == db[-10:])


def name_matches(stored: str, given: str) -> bool:
    """Every word of the name given is in the booking's name ("Smith" finds
    "John Smith"); case and punctuation aside."""
    want = re.findall(r"[a-z']+", given.lower())
    have = set(re.findall(r"[a-z']+", stored.lower()))
    return bool(want) and all(w in have for w in want)


# ---------------------------------------------------------------------------
# Tool arguments: the schema the LLM sees is generated from these.

_Day = Annotated[str, msgspec.Meta(description="The day, YYYY-MM-DD")]
_Time = Annotated[str, msgspec.Meta(description="Start time, HH:MM in 24-hour clock, on a slot boundary")]
_Name = Annotated[Optional[str], msgspec.Meta(description="The patient's name, if the caller gave it")]
_Id = Annotated[int, msgspec.Meta(description="The appointment_id from find_appointments or book_appointment")]


class BookArgs(msgspec.Struct, frozen=True):
    date: _Day
    time: _Time
    patient_name: _Name = None
    reason: Annotated[Optional[str], msgspec.Meta(description="Reason for the visit, if given (check-up, cleaning, pain...)")] = None


class AvailabilityArgs(msgspec.Struct, frozen=True):
    date: _Day


class FindArgs(msgspec.Struct, frozen=True):
    patient_name: Annotated[Optional[str], msgspec.Meta(description="The name the booking is under; needed when the caller's number is unknown")] = None


class CancelArgs(msgspec.Struct, frozen=True):
    appointment_id: _Id
    patient_name: _Name = None


class RescheduleArgs(msgspec.Struct, frozen=True):
    appointment_id: _Id
    date: Annotated[str, msgspec.Meta(description="The new day, YYYY-MM-DD")]
    time: Annotated[str, msgspec.Meta(description="The new start time, HH:MM in 24-hour clock")]
    patient_name: _Name = None


class CallbackArgs(msgspec.Struct, frozen=True):
    reason: Annotated[str, msgspec.Meta(description="What the caller needs, in a short sentence, in their words")]
    patient_name: _Name = None
    phone: Annotated[Optional[str], msgspec.Meta(description="A number to call back, only if the caller gave one")] = None


def _text(value: str | None, limit: int) -> str:
    return (value or "").strip()[:limit]


# ---------------------------------------------------------------------------
# The book (SQLite)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    id INTEGER PRIMARY KEY,
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    patient_name TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    call_id TEXT UNIQUE,
    created_at TEXT NOT NULL,
    cancelled_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS appointments_active_slot ON appointments (date, time) WHERE cancelled_at IS NULL;
CREATE TABLE IF NOT EXISTS callbacks (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    patient_name TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    call_id TEXT UNIQUE
);
"""

# The first release's table: UNIQUE (date, time) over every row, no phone.
_MIGRATE_V1 = """
ALTER TABLE appointments RENAME TO appointments_v1;
{schema}
INSERT INTO appointments (id, date, time, patient_name, reason, call_id, created_at)
    SELECT id, date, time, patient_name, reason, call_id, created_at FROM appointments_v1;
DROP TABLE appointments_v1;
"""

_APPOINTMENT_COLUMNS = "id, date, time, patient_name, reason, phone, cancelled_at"


@dataclass(frozen=True)
class Booking:
    id: int
    at: dt.datetime
    patient_name: str
    reason: str
    phone: str
    cancelled: bool

    @classmethod
    def from_row(cls, row: tuple) -> "Booking":
        id_, date, time, name, reason, phone, cancelled_at = row
        return cls(id_, dt.datetime.combine(dt.date.fromisoformat(date), dt.time.fromisoformat(time)), name, reason, phone, cancelled_at is not None)

    def json(self) -> dict:
        out = {"appointment_id": self.id, **slot_json(self.at)}
        if self.patient_name:
            out["patient_name"] = self.patient_name
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class AppointmentBook:
    path: Path
    clinic: Clinic = CLINIC
    clock: Clock = field(default_factory=Clock.system)  # the clinic's zone, maybe pinned
    _ready: bool = field(default=False, init=False)

    @property
    def hours(self) -> ClinicHours:
        return self.clinic.hours

    # ------------------------------------------------------------ storage
    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        if not self._ready:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(appointments)")}
            if columns and "phone" not in columns:
                conn.executescript("BEGIN IMMEDIATE;" + _MIGRATE_V1.format(schema=_SCHEMA) + "COMMIT;")
                log.info("appointment book migrated (phone, cancelled_at)", extra={"path": str(self.path)})
            conn.executescript(_SCHEMA)
            self._ready = True
        return conn

    async def _run(self, fn, *args):
        """``fn(conn, now, *args)`` in a worker thread, in one write transaction."""
        return await asyncio.to_thread(self._transaction, fn, *args)

    def _transaction(self, fn, *args):
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time: check-then-write is atomic
            try:
                out = fn(conn, self.clock.wall(), *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out
        finally:
            conn.close()

    def _taken(self, conn: sqlite3.Connection, first: dt.date, last: dt.date, but: int | None = None) -> Taken:
        rows = conn.execute(
            "SELECT date, time FROM appointments WHERE cancelled_at IS NULL AND date BETWEEN ? AND ? AND id IS NOT ?",
            (first.isoformat(), last.isoformat(), but),
        )
        return {(dt.date.fromisoformat(d), dt.time.fromisoformat(t)) for d, t in rows}

    def _booking(self, conn: sqlite3.Connection, appointment_id: int) -> Booking | None:
        row = conn.execute(f"SELECT {_APPOINTMENT_COLUMNS} FROM appointments WHERE id = ?", (appointment_id,)).fetchone()
        return Booking.from_row(row) if row else None

    def _refusal(self, wanted: dt.datetime, now: dt.datetime, taken: Taken) -> str:
        """Why ``wanted`` cannot be booked ("" if it can)."""
        day, at = wanted.date(), wanted.time()
        if not self.hours.is_open_day(day) or not self.hours.within_hours(at):
            return "closed"
        if not self.hours.is_slot(day, at):
            return "not_a_slot"
        if wanted <= now:
            return "past"
        return "taken" if (day, at) in taken else ""

    def _alternatives(self, wanted: dt.datetime, now: dt.datetime, taken: Taken) -> list[dict]:
        return [slot_json(a) for a in nearest_free(wanted, taken, self.hours, now)]

    # ------------------------------------------------------------ book_appointment
    async def book(self, args: BookArgs, ctx: ToolContext) -> dict:
        wanted = dt.datetime.combine(parse_date_arg(args.date), parse_time_arg(args.time))
        return await self._run(self._book, wanted, _text(args.patient_name, 200), _text(args.reason, 500), ctx)

    def _book(self, conn, now: dt.datetime, wanted: dt.datetime, name: str, reason: str, ctx: ToolContext) -> dict:
        asked = slot_json(wanted)
        call_id = ctx.call_id or None
        if call_id is not None:
            row = conn.execute("SELECT id, date, time, patient_name FROM appointments WHERE call_id = ?", (call_id,)).fetchone()
            if row is not None and (row[1], row[2]) == (asked["date"], asked["time"]):
                return {"booked": True, "appointment_id": row[0], **asked, "patient_name": row[3]}
            if row is not None:  # same id, different request: an id collision, not a retry
                log.warning("call id reused for a different booking", extra={"call_id": call_id})
                call_id = None
        taken = self._taken(conn, wanted.date() - dt.timedelta(days=15), wanted.date() + dt.timedelta(days=15))
        refusal = self._refusal(wanted, now, taken)
        if not refusal:
            try:
                cur = conn.execute(
                    "INSERT INTO appointments (date, time, patient_name, reason, phone, call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (asked["date"], asked["time"], name, reason, ctx.caller, call_id, now.isoformat(timespec="seconds")),
                )
                return {"booked": True, "appointment_id": cur.lastrowid, **asked, "patient_name": name}
            except sqlite3.IntegrityError:
                refusal = "taken"
                taken.add((wanted.date(), wanted.time()))
        return {"booked": False, "reason": refusal, **asked, "opening_hours": self.hours.describe(), "alternatives": self._alternatives(wanted, now, taken)}

    # ------------------------------------------------------------ check_availability
    async def availability(self, args: AvailabilityArgs, ctx: ToolContext) -> dict:
        return await self._run(self._availability, parse_date_arg(args.date))

    def _availability(self, conn, now: dt.datetime, day: dt.date) -> dict:
        taken = self._taken(conn, day, day + dt.timedelta(days=31))
        free = [f"{t:%H:%M}" for t in self.hours.slots(day) if dt.datetime.combine(day, t) > now and (day, t) not in taken]
        return {
            "date": day.isoformat(),
            "weekday": WEEKDAY_NAMES[day.weekday()],
            "open": self.hours.is_open_day(day),
            "opening_hours": self.hours.describe(),
            "free": free,
            "next_free": [slot_json(a) for a in earliest_free(max(day, now.date()), taken, self.hours, now)],
        }

    # ------------------------------------------------------------ find_appointments
    async def find(self, args: FindArgs, ctx: ToolContext) -> dict:
        return await self._run(self._find, _text(args.patient_name, 200), ctx.caller)

    def _find(self, conn, now: dt.datetime, name: str, caller: str) -> dict:
        if not name and not caller:
            return {"appointments": [], "needs": "patient_name", "note": "The caller's number is unknown: ask for the name the booking is under."}
        rows = conn.execute(
            f"SELECT {_APPOINTMENT_COLUMNS} FROM appointments WHERE cancelled_at IS NULL AND date >= ? ORDER BY date, time",
            (now.date().isoformat(),),
        ).fetchall()
        found = [
            b
            for b in map(Booking.from_row, rows)
            if b.at > now and ((caller and same_number(b.phone, caller)) or (name and name_matches(b.patient_name, name)))
        ]
        searched = (["the caller's number"] if caller else []) + ([f"the name {name!r}"] if name else [])
        return {"appointments": [b.json() for b in found[:10]], "searched_by": " and ".join(searched)}

    def _owned(self, booking: Booking | None, name: str, caller: str, now: dt.datetime) -> str:
        """Why this caller may not change ``booking`` ("" if they may)."""
        if booking is None or booking.cancelled:
            return "not_found"
        if not ((caller and same_number(booking.phone, caller)) or (name and name_matches(booking.patient_name, name))):
            return "not_yours"
        return "past" if booking.at <= now else ""

    # ------------------------------------------------------------ cancel_appointment
    async def cancel(self, args: CancelArgs, ctx: ToolContext) -> dict:
        return await self._run(self._cancel, args.appointment_id, _text(args.patient_name, 200), ctx.caller)

    def _cancel(self, conn, now: dt.datetime, appointment_id: int, name: str, caller: str) -> dict:
        booking = self._booking(conn, appointment_id)
        refusal = self._owned(booking, name, caller, now)
        if refusal:
            return {"cancelled": False, "appointment_id": appointment_id, "reason": refusal}
        conn.execute("UPDATE appointments SET cancelled_at = ? WHERE id = ?", (now.isoformat(timespec="seconds"), appointment_id))
        return {"cancelled": True, **booking.json()}

    # ------------------------------------------------------------ reschedule_appointment
    async def reschedule(self, args: RescheduleArgs, ctx: ToolContext) -> dict:
        wanted = dt.datetime.combine(parse_date_arg(args.date), parse_time_arg(args.time))
        return await self._run(self._reschedule, args.appointment_id, wanted, _text(args.patient_name, 200), ctx.caller)

    def _reschedule(self, conn, now: dt.datetime, appointment_id: int, wanted: dt.datetime, name: str, caller: str) -> dict:
        booking = self._booking(conn, appointment_id)
        refusal = self._owned(booking, name, caller, now)
        if refusal:
            return {"rescheduled": False, "appointment_id": appointment_id, "reason": refusal}
        asked = slot_json(wanted)
        taken = self._taken(conn, wanted.date() - dt.timedelta(days=15), wanted.date() + dt.timedelta(days=15), but=appointment_id)
        refusal = self._refusal(wanted, now, taken)
        if not refusal:
            try:
                conn.execute("UPDATE appointments SET date = ?, time = ? WHERE id = ?", (asked["date"], asked["time"], appointment_id))
                return {"rescheduled": True, "appointment_id": appointment_id, "from": slot_json(booking.at), "to": asked}
            except sqlite3.IntegrityError:
                refusal = "taken"
                taken.add((wanted.date(), wanted.time()))
        return {
            "rescheduled": False,
            "appointment_id": appointment_id,
            "reason": refusal,
            "still_booked": slot_json(booking.at),
            **asked,
            "opening_hours": self.hours.describe(),
            "alternatives": self._alternatives(wanted, now, taken),
        }

    # ------------------------------------------------------------ request_callback
    async def request_callback(self, args: CallbackArgs, ctx: ToolContext) -> dict:
        reason = _text(args.reason, 500)
        if not reason:
            raise ToolInputError("reason must say what the caller needs")
        phone = ctx.caller or _text(args.phone, 40)
        return await self._run(self._request_callback, reason, _text(args.patient_name, 200), phone, ctx)

    def _request_callback(self, conn, now: dt.datetime, reason: str, name: str, phone: str, ctx: ToolContext) -> dict:
        if not name and not phone:
            return {"recorded": False, "reason": "no_contact", "note": "Ask for the caller's name and a number to call back."}
        row = conn.execute("SELECT id FROM callbacks WHERE call_id = ?", (ctx.call_id,)).fetchone() if ctx.call_id else None
        if row is None:
            row = conn.execute(
                "INSERT INTO callbacks (created_at, session, phone, patient_name, reason, call_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (now.isoformat(timespec="seconds"), ctx.session, phone, name, reason, ctx.call_id or None),
            ).fetchone()
        log.info("call-back task recorded", extra={"session_id": ctx.session, "callback_id": row[0]})
        return {"recorded": True, "callback_id": row[0], "phone": phone, "patient_name": name}

    # ------------------------------------------------------------ listings (tests, CLI, inspector)
    def appointments(self, include_cancelled: bool = False) -> list[dict]:
        conn = self._connect()
        try:
            where = "" if include_cancelled else "WHERE cancelled_at IS NULL"
            rows = conn.execute(
                f"SELECT id, date, time, patient_name, reason, phone, call_id, cancelled_at FROM appointments {where} ORDER BY date, time, id"
            ).fetchall()
        finally:
            conn.close()
        keys = ("id", "date", "time", "patient_name", "reason", "phone", "call_id", "cancelled_at")
        return [dict(zip(keys, r)) for r in rows]

    def callbacks(self, limit: int = 200) -> list[dict]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, created_at, session, phone, patient_name, reason, status FROM callbacks ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        finally:
            conn.close()
        keys = ("id", "created_at", "session", "phone", "patient_name", "reason", "status")
        return [dict(zip(keys, r)) for r in rows]


# long: the appointment tools' declarations (name, description, argument types), one table
def appointment_tools(book: AppointmentBook) -> list[Tool]:
    hours = book.hours.describe()
    refusals = "a reason (taken, closed, not_a_slot, past) and the nearest free alternatives"
    return [
        Tool(
            BOOK_APPOINTMENT,
            f"Book an appointment at {book.clinic.name}, open {hours}. The caller's phone number is saved with it. "
            f"Returns booked=true with an appointment_id, or booked=false with {refusals}.",
            BookArgs,
            book.book,
        ),
        Tool(
            CHECK_AVAILABILITY,
            "List the free appointment times on a day (HH:MM), and the earliest free slots from that day on.",
            AvailabilityArgs,
            book.availability,
            reads_only=True,
        ),
        Tool(
            FIND_APPOINTMENTS,
            "The caller's upcoming appointments, found by the number they are calling from, or by the name the booking is under "
            "(ask for it when nothing is found by number or the number is unknown). Use before cancelling or moving an appointment, "
            "or when asked 'when is my appointment?'.",
            FindArgs,
            book.find,
            reads_only=True,
        ),
        Tool(
            CANCEL_APPOINTMENT,
            "Cancel one of the caller's appointments (appointment_id from find_appointments). Only the caller's own bookings "
            "(same phone number, or the name it is under). Returns cancelled=true, or cancelled=false with a reason (not_found, not_yours, past).",
            CancelArgs,
            book.cancel,
        ),
        Tool(
            RESCHEDULE_APPOINTMENT,
            "Move one of the caller's appointments to a new day and time, in one step (the old slot is kept if the new one is not free). "
            f"Returns rescheduled=true, or rescheduled=false with {refusals}.",
            RescheduleArgs,
            book.reschedule,
        ),
        Tool(
            REQUEST_CALLBACK,
            "Record a task for the front desk to call the caller back, for anything you cannot do yourself (questions about bills, "
            "insurance, results, prescriptions, speaking to a person). Never promise a call-back without recording it here.",
            CallbackArgs,
            book.request_callback,
        ),
    ]


def registry_for(book: AppointmentBook, transfer: bool = False) -> ToolRegistry:
    """The demo clinic's tools over ``book``, ``end_call``, and
    ``transfer_call`` when the line has somewhere to transfer to."""
    return ToolRegistry([*appointment_tools(book), END_CALL_TOOL, SEND_DIGITS_TOOL, *([TRANSFER_CALL_TOOL] if transfer else [])])


def default_registry(db_path: str | Path, *, clock: Clock | None = None, clinic: Clinic = CLINIC) -> ToolRegistry:
    return registry_for(AppointmentBook(Path(db_path), clinic=clinic, clock=clock or Clock.system()))
