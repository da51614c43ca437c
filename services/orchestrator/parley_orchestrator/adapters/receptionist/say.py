"""Saying dates and times for TTS: "3 p.m.", "3:30 p.m.", "Wednesday the 25th"."""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from ...clinic import WEEKDAY_NAMES, spoken_time
from .words import MONTH_NAMES, ordinal

say_time = spoken_time


def say_date(d: dt.date, today: dt.date) -> str:
    text = f"{WEEKDAY_NAMES[d.weekday()]} the {ordinal(d.day)}"
    if (d.year, d.month) != (today.year, today.month):
        text += f" of {MONTH_NAMES[d.month - 1]}"
    if d == today:
        return f"today, {text}"
    if d == today + dt.timedelta(days=1):
        return f"tomorrow, {text}"
    return text


def on_day(d: dt.date, today: dt.date) -> str:
    """"on Friday the 27th", "tomorrow, Wednesday the 25th"."""
    text = say_date(d, today)
    return text if text.startswith(("today", "tomorrow")) else f"on {text}"


def say_slot(at: dt.datetime, today: dt.date) -> str:
    day = say_date(at.date(), today)
    # "tomorrow, Wednesday the 25th, at 3 p.m.": the comma closes the aside.
    return f"{day}{',' if ',' in day else ''} at {say_time(at.time())}"


def say_list(items: Sequence[str], joiner: str = "or") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {joiner} " + items[-1]


def say_phone(number: str) -> str:
    """The end of a number, as a receptionist reads it back: "ending in 9 9 9 9"."""
    digits = [c for c in number if c.isdigit()]
    return "ending in " + " ".join(digits[-4:]) if len(digits) >= 4 else "you gave"
