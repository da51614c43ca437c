"""Days and clock times in a normalised utterance.

Both parsers are tables of patterns, tried in order; a later pattern never
reads words an earlier one already took ("the day after tomorrow" is not also
"tomorrow"; "December 1st" is not also "the 1st"). When an utterance names
several, the one said last wins: "tomorrow, no, Thursday".

Hours without a.m./p.m. follow clinic logic: 1 to 7 mean p.m., 8 to 11 a.m.,
unless a part of the day was said ("9 in the morning", "tomorrow afternoon at 3").
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable, Optional

from .words import MONTHS, WEEKDAYS

# ---------------------------------------------------------------------------
# Days


def _day_of_month(day: int, today: dt.date) -> dt.date | None:
    """The next date (today or later) with this day of the month."""
    year, month = today.year, today.month
    for _ in range(13):
        try:
            candidate = dt.date(year, month, day)
        except ValueError:
            candidate = None
        if candidate and candidate >= today:
            return candidate
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return None


def _month_day(month: int, day: int, today: dt.date) -> dt.date | None:
    for year in (today.year, today.year + 1):
        try:
            candidate = dt.date(year, month, day)
        except ValueError:
            return None
        if candidate >= today:
            return candidate
    return None


def _weekday(name: str, qualifier: str, next_week: int, today: dt.date) -> dt.date:
    wd = WEEKDAYS.index(name)
    if next_week:  # "Monday next week" (1), "Monday the week after next" (2): that weekday in that calendar week
        return today - dt.timedelta(days=today.weekday()) + dt.timedelta(days=7 * next_week + wd)
    ahead = (wd - today.weekday()) % 7
    if ahead == 0 and qualifier != "this":
        ahead = 7  # "Tuesday" said on a Tuesday means next week; "today" means today
    return today + dt.timedelta(days=ahead)


def _iso(m: re.Match, d: "_DateCtx") -> dt.date | None:
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _of_may(m: re.Match, d: "_DateCtx") -> dt.date | None | bool:
    if m.group(2) == "may" and not re.search(r"\d(?:st|nd|rd|th)|of may", m.group(0)):
        return False  # "3 may work" is not the 3rd of May
    return _month_day(MONTHS[m.group(2)], int(m.group(1)), d.today)


def _weekday_and_day(m: re.Match, d: "_DateCtx") -> dt.date | None | bool:
    """"Monday the 14th", "Monday the 14" (Whisper often writes the day of the
    month without its suffix), "Monday the 14th of December", "Monday December
    14th": the day of the month names the date. Without "the", a suffix or a
    month ("Monday 10") the number is a clock time, not this rule's."""
    day, month = int(m.group("day") or m.group("day2")), m.group("month") or m.group("month2")
    if not (m.group("the") or m.group("suffix") or month) or not 1 <= day <= 31:
        return False
    return _month_day(MONTHS[month], day, d.today) if month else _day_of_month(day, d.today)


# After "the N": a clock time follows ("the 14 at 11:30"), so N is the day.
_CLOCK_NEXT = re.compile(r" at \d")


def _the_day(m: re.Match, d: "_DateCtx") -> dt.date | None | bool:
    """A day of the month written without its suffix: "on the 14", "the 21",
    "the 9 at 10". "The 9" alone may be a time picked from those offered ("I'll
    take the 9"), so a number that can be an hour needs "on" before it or a
    clock time after it."""
    day = int(m.group(2))
    if not 1 <= day <= 31:
        return False
    if m.group(1) or day >= 13 or _CLOCK_NEXT.match(m.string, m.end()):
        return _day_of_month(day, d.today)
    return False


def _weeks_ahead(m: re.Match, d: "_DateCtx") -> dt.date | bool:
    count = {"a": 1, "a couple of": 2}.get(m.group(1)) or int(m.group(1))
    weeks = count * (2 if m.group(2).startswith("fortnight") else 1)
    said = m.group(0)
    if not said.startswith("in ") and not re.search(r"time|from|today", said):
        return False  # "2 weeks" alone: a length, not a date ("a week off", "2 weeks ago")
    return d.today + dt.timedelta(days=7 * weeks)


def _weekday_week(m: re.Match, d: "_DateCtx") -> dt.date:
    name = m.group(2) or m.group(4)
    return _weekday(name, m.group(1) or "", False, d.today) + dt.timedelta(days=7)


def _weekday_rule(m: re.Match, d: "_DateCtx") -> dt.date:
    date = _weekday(m.group(2), m.group(1) or "", d.next_week, d.today)
    return date + dt.timedelta(days=7) if m.group(3) == "after next" else date


def weeks_named(norm: str) -> int:
    """The calendar week a caller names: 1 for "next week", 2 for "the week
    after next", 0 for neither."""
    if re.search(r"\bweek after next\b", norm):
        return 2
    return 1 if re.search(r"\bnext week\b", norm) else 0


class _DateCtx:
    def __init__(self, norm: str, today: dt.date, in_next_week: int):
        self.today = today
        self.next_week = weeks_named(norm) or in_next_week


_MONTH_RX = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY_RX = "|".join(WEEKDAYS)
_NOT_CLOCK_AFTER = r"(?!\s*(?::|am\b|pm\b|oclock\b|\d))"
_TOMORROW = r"(?:tomorrow|tomorow|tommorow|tommorrow|tmrw|tomorrows|to morrow)"
_NOT_A_COUNT = r"(?!\s*(?:of us|of them|people|persons?|kids|children|teeth|tooth|appointments?|minutes?|mins?|hours?|days?|weeks?|months?|years?)\b)"
_WEEKDAY_AND_DAY = (
    rf"\b(?:(?:next|this|coming|on) )?(?P<wd>{_WEEKDAY_RX}) (?:"
    rf"(?P<the>the )?(?P<day>\d{{1,2}})(?P<suffix>st|nd|rd|th)?(?: (?:of )?(?P<month>{_MONTH_RX}))?"
    rf"|(?P<month2>{_MONTH_RX}) (?:the )?(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?"
    rf")\b{_NOT_CLOCK_AFTER}"
)

# (pattern, the date it names (None: a date-like phrase naming no valid date;
# False: not a date after all), blank its words so its numbers are no clock time)
DateRule = tuple[str, Callable[[re.Match, _DateCtx], Optional[dt.date] | bool], bool]
DATE_RULES: tuple[DateRule, ...] = (
    (r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", _iso, True),
    (rf"\b(?:the )?day after {_TOMORROW}\b", lambda m, d: d.today + dt.timedelta(days=2), True),
    # Weeks ahead: "in 2 weeks", "2 weeks from today", "in a fortnight", "3 weeks today".
    (r"\b(?:in )?(a|1|2|3|4|5|6|a couple of) (weeks?|fortnights?)(?: s)?(?: time| from (?:today|now)| today)?\b", _weeks_ahead, True),
    # British: "Monday week", "a week on Monday", "a week from Monday": that weekday, a week later.
    (rf"\b(?:(next|this|coming|on) )?({_WEEKDAY_RX}) week\b|\ba week (?:on |from |come )?()({_WEEKDAY_RX})\b", _weekday_week, True),
    (rf"\b{_TOMORROW}\b", lambda m, d: d.today + dt.timedelta(days=1), True),
    (r"\b(?:today|tonight|this (?:morning|afternoon|evening))\b", lambda m, d: d.today, False),  # "10 this morning" keeps its clock words
    (_WEEKDAY_AND_DAY, _weekday_and_day, True),
    (rf"\b({_MONTH_RX}) (?:the )?(\d{{1,2}})(?:st|nd|rd|th)?\b{_NOT_CLOCK_AFTER}", lambda m, d: _month_day(MONTHS[m.group(1)], int(m.group(2)), d.today), True),
    (rf"\b(?:the )?(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MONTH_RX})\b", _of_may, True),
    (r"\b(?:the )?(\d{1,2})(?:st|nd|rd|th)\b", lambda m, d: _day_of_month(int(m.group(1)), d.today) if 1 <= int(m.group(1)) <= 31 else False, True),
    (rf"\b(?:(on) )?the (\d{{1,2}})\b{_NOT_CLOCK_AFTER}{_NOT_A_COUNT}", _the_day, True),
    # "14 at 11:30": a number no clock hour can be, before a clock time.
    (r"\b(1[3-9]|2\d|3[01])\b(?= at \d)", lambda m, d: _day_of_month(int(m.group(1)), d.today), True),
    (rf"\b(?:(next|this|coming|on) )?(?:the )?(?:({_WEEKDAY_RX})s?)\b(?: (next week|after next))?", _weekday_rule, True),
    (r"\b(?:this |the |next )?weekend\b", lambda m, d: d.today + dt.timedelta(days=(5 - d.today.weekday()) % 7 or 7), True),
    (r"\bin (\d{1,2}) days?\b", lambda m, d: d.today + dt.timedelta(days=int(m.group(1))), True),
    (r"\bin a week(?:'s time)?\b|\ba week from (?:today|now)\b", lambda m, d: d.today + dt.timedelta(days=7), True),
)
_DATE_RULES = tuple((re.compile(p), fn, blank) for p, fn, blank in DATE_RULES)


def parse_date(norm: str, today: dt.date, in_next_week: int = 0) -> tuple[dt.date | None, int, str]:
    """(the date mentioned last, whether "next week" was said without a day,
    the text with the date phrases blanked out so their numbers are not read
    as times). The week is 1 for "next week", 2 for "the week after next".
    ``in_next_week``: the week the caller named earlier, so a bare weekday
    now means that week's."""
    found = find_dates(norm, today, in_next_week)
    blanked = norm
    for _, (a, b), blank, _ in found:
        if blank:
            blanked = blanked[:a] + " " * (b - a) + blanked[b:]
    dates = [(a, date) for a, _, _, date in found if date is not None]
    next_week = weeks_named(norm)
    if not dates:
        return None, next_week, blanked
    return max(dates)[1], 0, blanked


def find_dates(norm: str, today: dt.date, in_next_week: int = 0) -> list[tuple[int, tuple[int, int], bool, dt.date | None]]:
    """Every date phrase: (start, span, blanked, date or None)."""
    ctx = _DateCtx(norm, today, in_next_week)
    taken: list[tuple[int, int]] = []
    out = []
    for rx, fn, blank in _DATE_RULES:
        for m in rx.finditer(norm):
            if any(a <= m.start() < b for a, b in taken):
                continue
            date = fn(m, ctx)
            if date is False:
                continue
            if blank:
                taken.append(m.span())
            out.append((m.start(), m.span(), blank, date))
    return out


_WEEKDAY_AND_DAY_RX = re.compile(_WEEKDAY_AND_DAY)


def weekday_clash(norm: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """A weekday said with a day of the month it does not fall on ("Monday the
    15th" when the 15th is a Tuesday): (the date of that day of the month, the
    date with that weekday nearest to it, today or later). None when they agree."""
    for m in _WEEKDAY_AND_DAY_RX.finditer(norm):
        date = _weekday_and_day(m, _DateCtx(norm, today, 0))
        if not isinstance(date, dt.date):
            continue
        wd = WEEKDAYS.index(m.group("wd"))
        if date.weekday() == wd:
            continue
        before = date - dt.timedelta(days=(date.weekday() - wd) % 7)
        after = before + dt.timedelta(days=7)
        nearer = before if (date - before) <= (after - date) and before >= today else after
        return date, nearer
    return None


def parse_period(norm: str) -> str:
    t = GREETING_PHRASES.sub(" ", norm)
    hits = [(m.start(), m.group(1)) for m in re.finditer(r"\b(morning|afternoon|evening|tonight|night|lunchtime)\b", t)]
    if not hits:
        return ""
    word = max(hits)[1]
    return {"tonight": "evening", "night": "evening", "lunchtime": "afternoon"}.get(word, word)


# "Good morning" greets; it does not ask for a morning slot.
GREETING_PHRASES = re.compile(r"\b(?:good (?:morning|afternoon|evening|day))\b")

# ---------------------------------------------------------------------------
# Clock times

_QUANTITY = r"(?!\s*(?:st|nd|rd|th|days?|weeks?|months?|years?|people|persons?|kids|children|teeth|tooth|appointments?|of us|minutes?|mins?|hours?|times|more|x\b|-)\b)"
_FILLERS = {"um", "uh", "er", "erm", "hmm", "mm", "well", "so", "yes", "yeah", "ok", "okay", "please", "maybe", "perhaps",
            "how", "about", "what", "then", "instead", "at", "around", "lets", "let's", "say", "the", "is", "fine", "for",
            "me", "works", "that", "would", "be", "great", "good", "could", "do", "you", "i", "can", "come", "oclock", "pm", "am", "and", "sure",
            "actually", "make", "it", "change", "to", "rather", "no", "sorry", "we", "us", "instead", "wait", "stop", "hang", "hold", "on", "oh"}  # fmt: skip
_MER = r"(?:\s*(am|pm))?"


def _g(i: int) -> Callable[[re.Match], int]:
    return lambda m: int(m.group(i))


# (pattern, hour, minute, fixed meridiem or None to read the pattern's last
# group). A bare hour is read from the last matching row only when no other
# clock phrase is in the utterance.
ClockRule = tuple[str, Callable[[re.Match], int], Callable[[re.Match], int], Optional[str]]
CLOCK_RULES: tuple[ClockRule, ...] = (
    (rf"\b(\d{{1,2}}):(\d{{2}}){_MER}", _g(1), _g(2), None),
    (rf"\bhalf past (\d{{1,2}}){_MER}", _g(1), lambda m: 30, None),
    (rf"\b(?:a )?quarter (?:past|after) (\d{{1,2}}){_MER}", _g(1), lambda m: 15, None),
    (rf"\b(?:a )?quarter to (\d{{1,2}}){_MER}", lambda m: int(m.group(1)) - 1, lambda m: 45, None),
    (rf"\b(\d{{1,2}}) (?:minutes )?past (\d{{1,2}}){_MER}", _g(2), _g(1), None),
    (rf"\b(5|10|20|25) (?:minutes )?after (\d{{1,2}}){_MER}", _g(2), _g(1), None),  # US: "10 after 3" is 3:10
    (rf"\b(5|10|20|25) (?:minutes )?to (\d{{1,2}}){_MER}", lambda m: int(m.group(2)) - 1, lambda m: 60 - int(m.group(1)), None),
    (rf"\bhalf (\d{{1,2}})\b{_QUANTITY}{_MER}", _g(1), lambda m: 30, None),
    (rf"\b(\d{{1,2}}) ([0-5]\d)\b{_QUANTITY}{_MER}", _g(1), _g(2), None),
    # 24-hour clock said or written military style: "1500 hours", "fifteen hundred".
    (r"\b(?:(?<=at )|(?<=for )|(?<=around ))([01]\d|2[0-3])([0-5]\d)\b", _g(1), _g(2), ""),
    (r"\b([01]?\d|2[0-3])([0-5]\d) hours\b", _g(1), _g(2), ""),
    (r"\b(\d{1,2}) hundred(?: hours)?\b", _g(1), lambda m: 0, ""),
    (r"\b(\d{1,2}) ?(am|pm)\b", _g(1), lambda m: 0, None),
    (rf"\b(\d{{1,2}}) oclock{_MER}", _g(1), lambda m: 0, None),
    (r"\b(?:12 )?(?:noon|midday)\b", lambda m: 12, lambda m: 0, "pm"),
    (r"\bmidnight\b", lambda m: 0, lambda m: 0, "am"),
    (r"\b(\d{1,2}) (?:in the|this) (morning|afternoon|evening)\b", _g(1), lambda m: 0, "period"),
)
_CLOCK_RULES = tuple((re.compile(p), h, mi, mer) for p, h, mi, mer in CLOCK_RULES)
# A bare hour after a clock word or a day: "at 3", "around 10", "Monday 10";
# "after 3" means 3:30, "before 3" 2:30.
_BARE = re.compile(
    rf"\b(at|around|about|say|by|before|after|until|till|from|like|maybe|for|to|{_WEEKDAY_RX}|morning|afternoon|evening)\s+(?:about |around )?(\d{{1,2}})\b{_QUANTITY}"
)
_SHIFT = {"after": 30, "before": -30}


def parse_time(norm: str, period: str = "") -> dt.time | None:
    """The clock time mentioned last in a normalised utterance (dates blanked),
    or None. Never raises."""
    t = GREETING_PHRASES.sub(lambda m: " " * len(m.group(0)), norm)
    used: list[tuple[int, int]] = []
    found = _clock_phrases(t, used)
    found += _bare_hours(t, used)
    found = found or _lone_number(t)
    if not found:
        return None
    _, hour, minute, meridiem, shift = max(found)
    when = clock(hour, minute, meridiem, period)
    if when is None or not shift:
        return when
    return (dt.datetime.combine(dt.date(2000, 1, 3), when) + dt.timedelta(minutes=shift)).time()


Found = list[tuple[int, int, int, str, int]]  # (position, hour, minute, am|pm|"", shift in minutes)


def _overlaps(m: re.Match, used: list[tuple[int, int]]) -> bool:
    return any(a < m.end() and m.start() < b for a, b in used)


def _clock_phrases(t: str, used: list[tuple[int, int]]) -> Found:
    found: Found = []
    for rx, hour, minute, meridiem in _CLOCK_RULES:
        for m in rx.finditer(t):
            if _overlaps(m, used):
                continue
            if meridiem == "period":
                mer = "am" if m.group(2) == "morning" else "pm"
            else:
                mer = m.group(m.re.groups) if meridiem is None else meridiem
            used.append(m.span())
            found.append((m.start(), hour(m), minute(m), mer or "", 0))
    return found


def _bare_hours(t: str, used: list[tuple[int, int]]) -> Found:
    return [(m.start(), int(m.group(2)), 0, "", _SHIFT.get(m.group(1), 0)) for m in _BARE.finditer(t) if not _overlaps(m, used)]


def _lone_number(t: str) -> Found:
    """An answer of a few words with one number in it: "3", "3 please",
    "how about 4", "yes 2 is fine"."""
    words = t.split()
    numbers = [w for w in words if re.fullmatch(r"\d{1,2}", w)]
    if len(numbers) != 1 or len([w for w in words if w not in _FILLERS]) > 1 or not 1 <= int(numbers[0]) <= 12:
        return []
    m = re.search(rf"\b{numbers[0]}\b{_QUANTITY}", t)
    return [(m.start(), int(numbers[0]), 0, "", 0)] if m else []


def clock(hour: int, minute: int, meridiem: str, period: str) -> dt.time | None:
    """A time of day from what was said; None if it is no valid time."""
    if not (0 <= minute <= 59 and 0 <= hour <= 23):
        return None
    if meridiem == "am":
        if hour > 12:
            return None
        hour = 0 if hour == 12 else hour
    elif meridiem == "pm":
        if hour == 0:
            return None
        hour = hour + 12 if hour < 12 else hour
    elif hour == 0 or hour >= 13 or period == "morning":
        pass  # 24-hour clock, or said to be in the morning
    elif period in ("afternoon", "evening"):
        hour = hour + 12 if hour < 12 else hour
    elif hour <= 7:
        hour += 12  # clinic hours: "at 3" is 3 p.m.
    return dt.time(hour, minute)
