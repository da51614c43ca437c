"""The clinic's clock: what day and hour it is where the business is.

Calendar time ("today", "tomorrow", opening hours, "that slot has passed")
enters Parley here and nowhere else. A ``Clock`` is a time zone plus, for test
stacks and demos, an optional pinned instant; it is read once from the
environment and passed to whatever needs it (the orchestrator's runtime, the
demo receptionist, the appointment book). Nothing else calls
``datetime.now()`` or ``date.today()``.

Settings:

* ``PARLEY_TIMEZONE``: the IANA zone the clinic works in
  ("America/New_York"). Default: the machine's (``TZ``, else
  ``/etc/localtime``). A container is usually UTC, so set it there.
* ``PARLEY_NOW``: pin the clock at an ISO 8601 instant
  ("2026-11-28T09:30:00"; without an offset it is wall time in the clinic's
  zone). The calendar then stands still at that instant, so a test that says
  "tomorrow" knows which day that is. Unset in production.

Event timestamps (the ``at`` of every event) are not calendar time: they stay
the real wall clock, for latency figures and timers. ``Clock.local(at)`` turns
one into the clinic's calendar time (the pin, when pinned).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIMEZONE_ENV = "PARLEY_TIMEZONE"
NOW_ENV = "PARLEY_NOW"

_LOCALTIME = Path("/etc/localtime")


def zone_named(name: str, variable: str = TIMEZONE_ENV) -> ZoneInfo:
    """The IANA zone ``name``, or a ValueError naming the variable it came from."""
    try:
        if not name or name != name.strip() or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{variable} must be an IANA time zone name like America/New_York or Europe/Paris, not {name!r}") from None


def machine_zone(env: Mapping[str, str] | None = None, localtime: Path = _LOCALTIME) -> dt.tzinfo:
    """The machine's time zone, as the C library would pick it: ``TZ``, then
    /etc/localtime (named when it links into a zoneinfo tree), else UTC."""
    env = os.environ if env is None else env
    tz = env.get("TZ", "").removeprefix(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # a POSIX rule string ("EST5EDT,M3.2.0,M11.1.0"): fall through to the file
    try:
        target = localtime.resolve(strict=True)
    except OSError:
        return dt.timezone.utc
    parts = target.parts
    if "zoneinfo" in parts:
        key = "/".join(parts[parts.index("zoneinfo") + 1 :])
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open(target, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return dt.timezone.utc


def parse_now(text: str, zone: dt.tzinfo, variable: str = NOW_ENV) -> dt.datetime:
    """An ISO 8601 instant; without an offset, wall time in ``zone``."""
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{variable} must be an ISO 8601 date and time like 2026-11-28T09:30:00, not {text!r}") from None
    return at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)


@dataclass(frozen=True)
class Clock:
    zone: dt.tzinfo
    pinned: dt.datetime | None = None  # aware, in ``zone``; the calendar stands still here

    def __post_init__(self) -> None:
        if self.pinned is not None:
            if self.pinned.tzinfo is None:
                raise ValueError("a pinned instant needs a time zone (a naive one is ambiguous)")
            object.__setattr__(self, "pinned", self.pinned.astimezone(self.zone))

    # -- construction
    @classmethod
    def system(cls) -> "Clock":
        """The machine's zone, not pinned."""
        return cls(machine_zone())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Clock":
        env = os.environ if env is None else env
        name = env.get(TIMEZONE_ENV, "")
        zone = zone_named(name) if name else machine_zone(env)
        now = env.get(NOW_ENV, "")
        return cls(zone, parse_now(now, zone) if now.strip() else None)

    @classmethod
    def fixed(cls, at: str | dt.datetime, zone: str | dt.tzinfo = "UTC") -> "Clock":
        """A pinned clock (tests): ``at`` as in PARLEY_NOW, or a datetime
        (naive: wall time in ``zone``)."""
        tz = zone_named(zone, "zone") if isinstance(zone, str) else zone
        if isinstance(at, str):
            return cls(tz, parse_now(at, tz, "at"))
        return cls(tz, at.replace(tzinfo=tz) if at.tzinfo is None else at)

    # -- reading
    def local(self, ts: float) -> dt.datetime:
        """The wall-clock timestamp ``ts`` as the clinic's time (aware)."""
        return self.pinned if self.pinned is not None else dt.datetime.fromtimestamp(ts, self.zone)

    def now(self) -> dt.datetime:
        """The clinic's current time (aware)."""
        return self.local(time.time())

    def today(self) -> dt.date:
        return self.now().date()

    def wall(self) -> dt.datetime:
        """The clinic's wall-clock time, naive: what its opening hours and
        appointment slots (naive dates and times at the clinic) compare with."""
        return self.now().replace(tzinfo=None)

    @property
    def zone_name(self) -> str:
        return getattr(self.zone, "key", None) or str(self.zone)

    def describe(self) -> str:
        """One line for logs: the zone, and the pin if any."""
        pin = f", pinned at {self.pinned.isoformat(timespec='seconds')} ({self.pinned:%A})" if self.pinned else ""
        return f"{self.zone_name}{pin}"
