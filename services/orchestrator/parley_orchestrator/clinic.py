"""The demo deployment's clinic, as data: its name and opening hours.

Every sentence that states a fact about the clinic (the LLM's system prompt,
the tools' descriptions, the built-in receptionist's replies) is written from
this one ``Clinic``, so changing the hours here changes all of them.

Times are spoken the way TTS reads them best ("9 a.m.", "3:30 p.m.", "noon");
``spoken_time`` is that one formatter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Things a caller can say to the clinic's front desk, one for each thing it
# does (the page lists them as "Things to say" while this clinic answers).
CALLER_EXAMPLES = (
    "I'd like to book an appointment tomorrow at three p.m.",
    "What are your opening hours?",
    "Can I move my appointment to Friday morning?",
    "I need to cancel my appointment.",
    "Can someone call me back about my bill?",
)

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def spoken_time(t: dt.time) -> str:
    if t.hour == 12 and t.minute == 0:
        return "noon"
    hour = t.hour % 12 or 12
    suffix = "a.m." if t.hour < 12 else "p.m."
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


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

    def is_slot_time(self, t: dt.time) -> bool:
        """Whether ``t`` starts a slot on an open day (whatever the day)."""
        if not self.open_days:
            return False
        monday = dt.date(2026, 1, 5)  # any week: every open day has the same slots
        return self.is_slot(monday + dt.timedelta(days=min(self.open_days)), t)

    def open_days_text(self) -> str:
        """"Monday to Friday", or "Monday, Wednesday and Friday"."""
        days = sorted(self.open_days)
        if not days:
            return "no day"
        if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
            return f"{WEEKDAY_NAMES[days[0]]} to {WEEKDAY_NAMES[days[-1]]}"
        names = [WEEKDAY_NAMES[d] for d in days]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def hours_text(self) -> str:
        """"9 a.m. to 5 p.m."."""
        return f"{spoken_time(self.opens)} to {spoken_time(self.closes)}"

    def describe(self) -> str:
        return f"{self.open_days_text()}, {self.hours_text()}, in {self.slot_minutes}-minute slots"


@dataclass(frozen=True)
class Clinic:
    name: str = "Bright Smile Dental"
    kind: str = "dental clinic"
    hours: ClinicHours = ClinicHours()

    def describe(self) -> str:
        return f"{self.name}, a {self.kind}, open {self.hours.describe()}"


CLINIC = Clinic()
