"""The built-in demo brain: a rule-based receptionist for Bright Smile Dental,
used when no LLM is configured. It books through real tool calls.

Pure core, thin shell. ``plan_reply(messages, today)`` reads the whole
conversation and returns a ``Plan`` (text to say, and maybe one tool call);
``Receptionist.stream`` only speaks the plan word by word. The core works in
three layers:

* ``normalise`` turns what Whisper wrote into plain lower-case words with
  digits ("Tomorrow at three p.m." -> "tomorrow at 3 pm");
* ``hear`` reads one normalised utterance: a day, a time, and what the caller
  wants (book, yes/no, opening hours, goodbye...);
* ``read_conversation`` folds every user message and tool result, in order,
  into a ``Context`` (the day and time asked for so far, slots offered, what
  was booked), so the details can arrive over several turns. The plan for the
  last message falls out of the same fold.

Dates: "today" and "tomorrow" need the current date; the runtime writes
"Today is YYYY-MM-DD (Weekday)." into the system message and the receptionist
takes it from there, falling back to the local clock. Hours without a.m./p.m.
follow clinic logic: 1 to 7 mean p.m., 8 to 11 a.m. After a tool result the
receptionist only speaks (it never chains tool calls), so it cannot loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Callable, Sequence

from parley.contract import Message

from ..tools import BOOK_APPOINTMENT, CHECK_AVAILABILITY, CLINIC, END_CALL, WEEKDAY_NAMES
from .llm import Done, LLMOutput, Token, ToolCallOut

CLINIC_NAME = "Bright Smile Dental"
GREETING = f"Hello, this is {CLINIC_NAME}. How can I help you today?"
CAN_DO = "I can book a dental appointment: tell me a day and a time."
CLINIC_WEEKDAY = dt.date(2026, 1, 5)  # any Monday: "is this time within opening hours?"

# ---------------------------------------------------------------------------
# Normalising ASR text

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50}
_ORD_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9}
_ORD_BIG = {
    "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
    "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
WEEKDAYS = tuple(d.lower() for d in WEEKDAY_NAMES)
MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "april": 4, "apr": 4, "may": 5, "june": 6,
    "july": 7, "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9, "october": 10, "oct": 10,
    "november": 11, "nov": 11, "december": 12, "dec": 12,
}  # fmt: skip
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
# Words before a number that make it a clock time ("at 3", "around 10").
_TIME_PREPS = {"at", "around", "about", "say", "by", "before", "after", "until", "till", "from", "maybe", "like", "past", "to"}
# "the first one" is a choice among offered slots, not the 1st of the month.
_NOT_A_DAY_NEXT = {"one", "ones", "available", "slot", "time", "thing", "appointment", "option", "opening", "free", "i", "that"}


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _words_to_digits(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        prev = out[-1] if out else ""
        if tok in _TENS:
            value = _TENS[tok]
            if _UNITS.get(nxt, 0) > 0:
                out.append(str(value + _UNITS[nxt]))
                i += 2
            elif nxt in _ORD_UNITS:
                out.append(_ordinal(value + _ORD_UNITS[nxt]))
                i += 2
            else:
                out.append(str(value))
                i += 1
            continue
        if tok in _ORD_BIG or (tok in _ORD_UNITS and _ORD_UNITS[tok] > 3):
            out.append(_ordinal(_ORD_BIG.get(tok) or _ORD_UNITS[tok]))
        elif tok in ("first", "second", "third"):
            # Only a day of the month in a date-like place: "the first of
            # May", "Monday the third" — not "the first one", "just a second".
            datey = prev in ("the", "on") or prev in MONTHS or prev in WEEKDAYS
            out.append(_ordinal(_ORD_UNITS[tok]) if datey and nxt not in _NOT_A_DAY_NEXT else tok)
        elif tok == "one":
            # "one" is mostly "that one", "the earlier one": a number only next
            # to clock words.
            timey = prev in _TIME_PREPS or nxt in ("oclock", "am", "pm", "in", "o", "oh") or nxt in _TEENS or nxt in _TENS
            out.append("1" if timey else tok)
        elif tok in _UNITS or tok in _TEENS:
            out.append(str(_UNITS.get(tok, _TEENS.get(tok))))
        else:
            out.append(tok)
        i += 1
    return out


def normalise(text: str) -> str:
    """Lower-case words and digits, single spaces, no punctuation but ':' and
    apostrophes; 'a.m.'/'p.m.' become 'am'/'pm' and number words digits."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"\b([ap])\s?\.\s?m\b\.?", r"\1m", t)  # a.m. / p. m. / a.m
    t = re.sub(r"\b(\d{1,2})\.(\d{2})(?!\d)", r"\1:\2", t)  # 3.30 -> 3:30
    t = re.sub(r"\bo\s?'?\s?clock\b", " oclock", t)
    t = re.sub(r"(?<=\d)-(?=\d)", "\x00", t)  # keep ISO dates' hyphens
    t = re.sub(r"[^\w:'\x00 ]+", " ", t).replace("\x00", "-")
    t = re.sub(r"(?<![\w'])'|'(?![\w])", " ", t)  # quotes, not "i'd"
    t = re.sub(r"(\d)(am|pm|ish|th|st|nd|rd)\b", r"\1 \2", t)
    t = re.sub(r"\b(\d{1,2}) (st|nd|rd|th)\b", r"\1\2", t)  # ordinals stay glued: "28th"
    t = re.sub(r"\b(\d{1,2}) ish\b", r"\1", t)
    tokens = _words_to_digits(t.split())
    t = " ".join(tokens)
    t = re.sub(r"\b(\d{1,2}) ([ap]) m\b", r"\1 \2m", t)  # "3 p m"
    t = re.sub(r"\b(\d{1,2}) (?:oh|o) (\d)\b", r"\1:0\2", t)  # "ten oh five"
    return t


# ---------------------------------------------------------------------------
# Hearing one utterance


@dataclass(frozen=True)
class Heard:
    date: dt.date | None = None
    time: dt.time | None = None
    period: str = ""  # morning | afternoon | evening
    next_week: bool = False
    asap: bool = False
    book: bool = False
    pain: bool = False
    yes: bool = False
    no: bool = False
    bye: bool = False
    thanks: bool = False
    greeting: bool = False
    hours: bool = False
    availability: bool = False
    cancel: bool = False
    choice: int | None = None  # index among offered slots: 0, 1, 2, -1 (the last)
    name: str = ""
    reason: str = ""

    @property
    def new_when(self) -> bool:
        return bool(self.date or self.time or self.period or self.asap or self.next_week)


# "Good morning" greets; it does not ask for a morning slot.
_GREETING_PHRASES = re.compile(r"\b(?:good (?:morning|afternoon|evening|day))\b")
_GREETING = re.compile(r"\b(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening|day))\b")
_BOOK = re.compile(
    r"\b(?:appointments?|appt|book|booking|bookings|schedule|reserve|slot|check ?up|checkups?|clean|cleaning|visit|"
    r"come in|come by|get in|see (?:the |a |my )?(?:dentist|doctor|hygienist|someone)|consultation|exam|examination|"
    r"filling|whitening|crown|extraction|braces|implant)\b"
)
_PAIN = re.compile(r"\b(?:pain|painful|hurts?|hurting|toothache|ache|aching|emergency|urgent|broken|broke|chipped|cracked|swollen|swelling|bleeding|sore|abscess)\b")
_ASAP = re.compile(r"\b(?:as soon as possible|asap|earliest|soonest|first available|first thing|next available|right away|straight away|urgent|emergency|anytime soon)\b")
_HOURS = re.compile(r"\b(?:open|opening hours|opening times|hours|close|closing|shut)\b")
_AVAIL = re.compile(r"\b(?:available|availability|free|openings?|what times?|which times?|when can|any time|anytime|what do you have|got anything|have anything)\b")
_CANCEL = re.compile(r"\b(?:cancel|cancell?ation|reschedule|re schedule|move my|change my|postpone|push back|move the appointment|change the appointment)\b")
_BYE = re.compile(r"\b(?:bye|goodbye|good bye|that's all|that is all|that's it|that is it|nothing else|no more|have a (?:good|nice|great) (?:day|one|evening)|see you|that'll be all|that will be all)\b")
_THANKS = re.compile(r"\b(?:thanks|thank you|thank u|thx|cheers|appreciate it)\b")
_YES = re.compile(
    r"\b(?:yes|yeah|yea|yep|yup|ya|sure|ok|okay|alright|all right|fine|perfect|great|sounds good|that works|works for me|"
    r"please do|go ahead|book it|book that|do it|that one|correct|absolutely|definitely|of course|lovely|excellent|brilliant|good)\b"
)
_NO = re.compile(r"\b(?:no|nope|nah|not|don't|dont|doesn't|doesnt|can't|cant|cannot|won't|wont|neither|rather not)\b")
_CHOICE = re.compile(r"\b(?:the )?(first|1st|second|2nd|third|3rd|last|earlier|earliest|later|latest)(?: one| option| slot| time| please)?\b")
_CHOICE_INDEX = {"first": 0, "1st": 0, "earlier": 0, "earliest": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "last": -1, "later": -1, "latest": -1}
_REASONS = (
    (r"\b(?:pain|painful|hurts?|hurting|toothache|ache|aching|abscess|swollen|swelling|sore)\b", "tooth pain"),
    (r"\b(?:broken|broke|chipped|cracked)\b", "broken tooth"),
    (r"\b(?:clean|cleaning|hygienist)\b", "cleaning"),
    (r"\b(?:check ?up|checkups?|exam|examination)\b", "check-up"),
    (r"\b(?:filling)\b", "filling"),
    (r"\b(?:whitening)\b", "whitening"),
    (r"\b(?:crown)\b", "crown"),
    (r"\b(?:extraction)\b", "extraction"),
    (r"\b(?:emergency|urgent)\b", "emergency"),
)
_NAME = re.compile(
    r"\b(?:my name is|my name's|the name is|name's|this is|it's|i am|i'm)\s+([A-Za-z][A-Za-z'-]+(?:\s+[A-Za-z][A-Za-z'-]+)?)",
    re.I,
)
# Words that follow "this is"/"I'm" without being a name.
_NOT_NAMES = set(
    """a an the and or but i i'd i'm me my to for from in on at of about calling call ringing phoning here just looking speaking
    wondering trying hoping free available busy fine good great ok okay sorry not no yes so very really in pain hurting
    interested after going gonna want wanting need needing new patient with having dental dentist bright smile about
    still also actually urgent an emergency it this that there available tomorrow today monday tuesday wednesday
    thursday friday saturday sunday morning afternoon evening""".split()
)


def _name_from(original: str) -> str:
    for m in _NAME.finditer(original):
        words = []
        for word in m.group(1).split():
            if word.lower() in _NOT_NAMES:
                break
            words.append(word)
        lead = m.group(0).lower()
        # "This is"/"it's"/"I'm" are names only when capitalised, as Whisper
        # writes names: "This is Maria", not "this is urgent".
        if words and not lead.startswith(("my name", "the name", "name's")) and not words[0][0].isupper():
            continue
        if words:
            return " ".join(w.capitalize() for w in words)
    return ""


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


def _weekday(name: str, qualifier: str, next_week: bool, today: dt.date) -> dt.date:
    wd = WEEKDAYS.index(name)
    if next_week:  # "Monday next week": that weekday in the following calendar week
        return today - dt.timedelta(days=today.weekday()) + dt.timedelta(days=7 + wd)
    ahead = (wd - today.weekday()) % 7
    if ahead == 0 and qualifier != "this":
        ahead = 7  # "Tuesday" said on a Tuesday means next week; "today" means today
    return today + dt.timedelta(days=ahead)


_MONTH_RX = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY_RX = "|".join(WEEKDAYS)
_NOT_CLOCK_AFTER = r"(?!\s*(?::|am\b|pm\b|oclock\b|\d))"


def parse_date(norm: str, today: dt.date, in_next_week: bool = False) -> tuple[dt.date | None, bool, str]:
    """(the date mentioned last, whether "next week" was said without a day,
    the text with the date phrases blanked out so their numbers are not read
    as times). ``in_next_week``: the caller said "next week" earlier, so a
    bare weekday now means that week's."""
    found: list[tuple[int, dt.date]] = []
    spans: list[tuple[int, int]] = []
    next_week = bool(re.search(r"\bnext week\b|\bweek after next\b", norm))

    def take(m: re.Match, date: dt.date | None, blank: bool = True) -> None:
        if blank:
            spans.append(m.span())
        if date is not None:
            found.append((m.start(), date))

    for m in re.finditer(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", norm):
        try:
            take(m, dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))))
        except ValueError:
            take(m, None)
    for m in re.finditer(r"\b(?:the )?day after (?:tomorrow|tomorow|tommorow|tommorrow)\b", norm):
        take(m, today + dt.timedelta(days=2))
    for m in re.finditer(r"\b(?:tomorrow|tomorow|tommorow|tommorrow|tmrw|tomorrows|to morrow)\b", norm):
        if not any(a <= m.start() < b for a, b in spans):
            take(m, today + dt.timedelta(days=1))
    for m in re.finditer(r"\b(?:today|tonight|this (?:morning|afternoon|evening))\b", norm):
        take(m, today, blank=False)  # "10 this morning" keeps its clock words
    for m in re.finditer(rf"\b({_MONTH_RX}) (?:the )?(\d{{1,2}})(?:st|nd|rd|th)?\b{_NOT_CLOCK_AFTER}", norm):
        take(m, _month_day(MONTHS[m.group(1)], int(m.group(2)), today))
    for m in re.finditer(rf"\b(?:the )?(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MONTH_RX})\b", norm):
        if m.group(2) == "may" and not re.search(r"\d(?:st|nd|rd|th)|of may", m.group(0)):
            continue  # "3 may work" is not the 3rd of May
        take(m, _month_day(MONTHS[m.group(2)], int(m.group(1)), today))
    for m in re.finditer(r"\b(?:the )?(\d{1,2})(?:st|nd|rd|th)\b", norm):
        if not any(a <= m.start() < b for a, b in spans) and 1 <= int(m.group(1)) <= 31:
            take(m, _day_of_month(int(m.group(1)), today))
    weekday_rx = rf"\b(?:(next|this|coming|on) )?(?:the )?(?:({_WEEKDAY_RX})s?)\b(?: (next week|after next))?"
    for m in re.finditer(weekday_rx, norm):
        qualifier = m.group(1) or ""
        after = m.group(3) or ""
        date = _weekday(m.group(2), qualifier, (next_week and "next week" in norm) or in_next_week, today)
        if after == "after next":
            date += dt.timedelta(days=7)
        take(m, date)
    for m in re.finditer(r"\b(?:this |the |next )?weekend\b", norm):
        take(m, today + dt.timedelta(days=(5 - today.weekday()) % 7 or 7))
    for m in re.finditer(r"\bin (\d{1,2}) days?\b", norm):
        take(m, today + dt.timedelta(days=int(m.group(1))))
    for m in re.finditer(r"\bin a week(?:'s time)?\b|\ba week from (?:today|now)\b", norm):
        take(m, today + dt.timedelta(days=7))
    blanked = norm
    for a, b in spans:
        blanked = blanked[:a] + " " * (b - a) + blanked[b:]
    if not found:
        return None, next_week, blanked
    date = max(found)[1]  # the one said last: "tomorrow, no, Thursday"
    return date, next_week and date is None, blanked


def parse_period(norm: str) -> str:
    t = _GREETING_PHRASES.sub(" ", norm)
    hits = [(m.start(), m.group(1)) for m in re.finditer(r"\b(morning|afternoon|evening|tonight|night|lunchtime)\b", t)]
    if not hits:
        return ""
    word = max(hits)[1]
    return {"tonight": "evening", "night": "evening", "lunchtime": "afternoon"}.get(word, word)


_QUANTITY = r"(?!\s*(?:st|nd|rd|th|days?|weeks?|months?|years?|people|persons?|kids|children|teeth|tooth|appointments?|of us|minutes?|mins?|hours?|times|more|x\b|-)\b)"
_FILLERS = {"um", "uh", "er", "erm", "hmm", "mm", "well", "so", "yes", "yeah", "ok", "okay", "please", "maybe", "perhaps",
            "how", "about", "what", "then", "instead", "at", "around", "lets", "let's", "say", "the", "is", "fine", "for",
            "me", "works", "that", "would", "be", "great", "good", "could", "do", "you", "i", "can", "come", "oclock", "pm", "am", "and", "sure"}  # fmt: skip


def parse_time(norm: str, period: str = "") -> dt.time | None:
    """The clock time mentioned last in a normalised utterance (dates blanked),
    or None. Never raises."""
    t = _GREETING_PHRASES.sub(lambda m: " " * len(m.group(0)), norm)
    found: list[tuple[int, int, int, str]] = []  # (position, hour, minute, am|pm|"")
    used: list[tuple[int, int]] = []

    def free(m: re.Match) -> bool:
        return not any(a < m.end() and m.start() < b for a, b in used)

    def add(m: re.Match, hour: int, minute: int, meridiem: str | None) -> None:
        used.append(m.span())
        found.append((m.start(), hour, minute, meridiem or ""))

    mer = r"(?:\s*(am|pm))?"
    for m in re.finditer(rf"\b(\d{{1,2}}):(\d{{2}}){mer}", t):
        add(m, int(m.group(1)), int(m.group(2)), m.group(3))
    patterns: list[tuple[str, Callable[[re.Match], tuple[int, int]]]] = [
        (rf"\bhalf past (\d{{1,2}}){mer}", lambda m: (int(m.group(1)), 30)),
        (rf"\b(?:a )?quarter past (\d{{1,2}}){mer}", lambda m: (int(m.group(1)), 15)),
        (rf"\b(?:a )?quarter to (\d{{1,2}}){mer}", lambda m: (int(m.group(1)) - 1, 45)),
        (rf"\b(\d{{1,2}}) (?:minutes )?past (\d{{1,2}}){mer}", lambda m: (int(m.group(2)), int(m.group(1)))),
        (rf"\b(5|10|20|25) (?:minutes )?to (\d{{1,2}}){mer}", lambda m: (int(m.group(2)) - 1, 60 - int(m.group(1)))),
        (rf"\bhalf (\d{{1,2}})\b{_QUANTITY}{mer}", lambda m: (int(m.group(1)), 30)),
        (rf"\b(\d{{1,2}}) ([0-5]\d)\b{_QUANTITY}{mer}", lambda m: (int(m.group(1)), int(m.group(2)))),
    ]
    for pattern, hm in patterns:
        for m in re.finditer(pattern, t):
            if free(m):
                hour, minute = hm(m)
                add(m, hour, minute, m.group(m.re.groups))
    # 24-hour clock said or written military style: "1500 hours", "fifteen hundred".
    for m in re.finditer(r"\b(?:(?<=at )|(?<=for )|(?<=around ))([01]\d|2[0-3])([0-5]\d)\b|\b([01]?\d|2[0-3])([0-5]\d) hours\b|\b(\d{1,2}) hundred(?: hours)?\b", t):
        if free(m):
            hour = m.group(1) or m.group(3) or m.group(5)
            add(m, int(hour), int(m.group(2) or m.group(4) or 0), None)
    for m in re.finditer(r"\b(\d{1,2}) ?(am|pm)\b", t):
        if free(m):
            add(m, int(m.group(1)), 0, m.group(2))
    for m in re.finditer(rf"\b(\d{{1,2}}) oclock{mer}", t):
        if free(m):
            add(m, int(m.group(1)), 0, m.group(2))
    for m in re.finditer(r"\b(?:12 )?(?:noon|midday)\b", t):
        if free(m):
            add(m, 12, 0, "pm")
    for m in re.finditer(r"\bmidnight\b", t):
        if free(m):
            add(m, 0, 0, "am")
    for m in re.finditer(r"\b(\d{1,2}) (?:in the|this) (morning|afternoon|evening)\b", t):
        if free(m):
            add(m, int(m.group(1)), 0, "am" if m.group(2) == "morning" else "pm")
    # A bare hour after a clock word or a day: "at 3", "around 10", "Monday 10".
    bare = rf"\b(at|around|about|say|by|before|after|until|till|from|like|maybe|for|{_WEEKDAY_RX}|morning|afternoon|evening)\s+(?:about |around )?(\d{{1,2}})\b{_QUANTITY}"
    for m in re.finditer(bare, t):
        if free(m):
            hour = int(m.group(2))
            shift = {"after": 30, "before": -30}.get(m.group(1), 0)
            found.append((m.start(), hour, 0, "~" + str(shift) if shift else ""))
            used.append(m.span())
    if not found:
        # An answer of a few words with one number in it: "3", "3 please",
        # "how about 4", "yes 2 is fine".
        words = t.split()
        numbers = [w for w in words if re.fullmatch(r"\d{1,2}", w)]
        if len(numbers) == 1 and len([w for w in words if w not in _FILLERS]) <= 1:
            m = re.search(rf"\b{numbers[0]}\b{_QUANTITY}", t)
            if m and 1 <= int(numbers[0]) <= 12:
                found.append((m.start(), int(numbers[0]), 0, ""))
    if not found:
        return None
    _, hour, minute, meridiem = max(found)
    shift = 0
    if meridiem.startswith("~"):
        shift, meridiem = int(meridiem[1:]), ""
    when = _clock(hour, minute, meridiem, period)
    if when is None:
        return None
    if shift:
        when = (dt.datetime.combine(dt.date(2000, 1, 3), when) + dt.timedelta(minutes=shift)).time()
    return when


def _clock(hour: int, minute: int, meridiem: str, period: str) -> dt.time | None:
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


def hear(text: str, today: dt.date, in_next_week: bool = False) -> Heard:
    """What one caller utterance says. Never raises."""
    norm = normalise(text)
    date, next_week, blanked = parse_date(norm, today, in_next_week)
    period = parse_period(norm)
    when = parse_time(blanked, period)
    words = norm.split()
    plain = _GREETING_PHRASES.sub(" ", norm)  # "good morning" is not a "good"
    yes = bool(_YES.search(plain)) and not _NO.search(plain)
    no = bool(_NO.search(norm)) and not re.search(r"\bno problem\b", norm)
    bye = bool(_BYE.search(norm))
    thanks = bool(_THANKS.search(norm))
    choice = None
    m = _CHOICE.search(norm)
    if m and (len(words) <= 4 or m.group(0).endswith(("one", "option", "slot"))):
        choice = _CHOICE_INDEX[m.group(1)]
    reason = next((label for rx, label in _REASONS if re.search(rx, norm)), "")
    return Heard(
        date=date,
        time=when,
        period=period if not when else "",
        next_week=next_week,
        asap=bool(_ASAP.search(norm)),
        book=bool(_BOOK.search(norm)),
        pain=bool(_PAIN.search(norm)),
        yes=yes,
        no=no,
        bye=bye,
        thanks=thanks,
        greeting=bool(_GREETING.search(norm)) or bool(re.search(r"\bis this (?:the )?(?:dentist|dental|bright smile|clinic)\b", norm)),
        hours=bool(_HOURS.search(norm)),
        availability=bool(_AVAIL.search(norm)),
        cancel=bool(_CANCEL.search(norm)),
        choice=choice,
        name=_name_from(text),
        reason=reason,
    )


# ---------------------------------------------------------------------------
# Saying dates and times (for TTS: "3 p.m.", "3:30 p.m.", "Wednesday the 25th")


def say_time(t: dt.time) -> str:
    if t.hour == 12 and t.minute == 0:
        return "noon"
    hour = t.hour % 12 or 12
    suffix = "a.m." if t.hour < 12 else "p.m."
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


def say_date(d: dt.date, today: dt.date) -> str:
    text = f"{WEEKDAY_NAMES[d.weekday()]} the {_ordinal(d.day)}"
    if (d.year, d.month) != (today.year, today.month):
        text += f" of {MONTH_NAMES[d.month - 1]}"
    if d == today:
        return f"today, {text}"
    if d == today + dt.timedelta(days=1):
        return f"tomorrow, {text}"
    return text


def say_slot(at: dt.datetime, today: dt.date) -> str:
    day = say_date(at.date(), today)
    # "tomorrow, Wednesday the 25th, at 3 p.m.": the comma closes the aside.
    return f"{day}{',' if ',' in day else ''} at {say_time(at.time())}"


def _open_days() -> str:
    days = sorted(CLINIC.open_days)
    return f"{WEEKDAY_NAMES[days[0]]} to {WEEKDAY_NAMES[days[-1]]}"


def say_list(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


# ---------------------------------------------------------------------------
# The conversation, folded


@dataclass(frozen=True)
class Plan:
    """What to do with this turn: say ``text``, then maybe call one tool."""

    text: str
    tool: str = ""
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    today: dt.date
    date: dt.date | None = None  # the day asked for, not yet booked
    time: dt.time | None = None  # the time asked for, not yet booked
    period: str = ""
    next_week: bool = False  # "next week" said, the day not yet
    asap: bool = False
    wants: bool = False  # a booking is being arranged
    offers: tuple[dt.datetime, ...] = ()  # slots proposed; "yes" takes the first
    name: str = ""
    reason: str = ""
    booked: tuple[dt.datetime, ...] = ()
    unannounced: dt.datetime | None = None  # booked, but the caller never heard it


_TODAY_RX = re.compile(r"\btoday(?:'s date)?\s*(?:is|:)?\s*(\d{4}-\d{2}-\d{2})", re.I)


def today_from(messages: Sequence[Message], fallback: dt.date) -> dt.date:
    for m in messages:
        if m.role == "system":
            found = _TODAY_RX.search(m.content)
            if found:
                try:
                    return dt.date.fromisoformat(found.group(1))
                except ValueError:
                    pass
    return fallback


def _book(ctx: Context, day: dt.date, at: dt.time, lead: str = "") -> Plan:
    args: dict = {"date": day.isoformat(), "time": f"{at:%H:%M}"}
    if ctx.name:
        args["patient_name"] = ctx.name
    if ctx.reason:
        args["reason"] = ctx.reason
    return Plan(text=(lead + " One moment.").strip(), tool=BOOK_APPOINTMENT, arguments=args)


def _check(day: dt.date, lead: str = "", say: str = "Let me check.") -> Plan:
    return Plan(text=(lead + " " + say).strip(), tool=CHECK_AVAILABILITY, arguments={"date": day.isoformat()})


def _goodbye(h: Heard, hang_up: bool = True) -> Plan:
    """Say goodbye; with ``hang_up`` the call ends once the caller has heard it."""
    welcome = "You're welcome. " if h.thanks else ""
    return Plan(text=f"{welcome}Thank you for calling {CLINIC_NAME}. Goodbye!", tool=END_CALL if hang_up else "")


def _ask_missing(ctx: Context, lead: str = "") -> Plan:
    if ctx.time and not ctx.date:
        text = f"Which day would you like to come in at {say_time(ctx.time)}?"
    elif ctx.period and not ctx.date:
        text = f"Which day would you like to come in, in the {ctx.period}?"
    else:
        text = "What day and time would suit you?"
    return Plan(text=(lead + " " + text).strip())


def step_user(ctx: Context, h: Heard, *, can_check: bool = True) -> tuple[Context, Plan]:
    """One caller utterance: the new context and what to reply."""
    ctx = replace(ctx, name=h.name or ctx.name, reason=h.reason or ctx.reason)
    offers, ctx = ctx.offers, replace(ctx, offers=())
    hours = f"We're open {_open_days()}, from {say_time(CLINIC.opens)} to {say_time(CLINIC.closes)}."

    if h.cancel:
        return replace(ctx, wants=False), Plan(
            text="I can't change existing appointments myself, but I'll pass your request on to the front desk and they'll call you back. Is there anything else?"
        )
    if offers and not h.date and not h.time:
        if h.choice is not None or (h.yes and not h.no):
            index = h.choice if h.choice is not None and -len(offers) <= h.choice < len(offers) else 0
            slot = offers[index]
            return replace(ctx, date=slot.date(), time=slot.time(), wants=True), _book(ctx, slot.date(), slot.time())
        if h.no and not h.bye:
            return replace(ctx, time=None, date=None, period="", asap=False), Plan(text="No problem. What other day or time would suit you?")
    if h.bye and not h.new_when and not h.book:
        return replace(ctx, wants=False), _goodbye(h)

    wants_now = h.new_when or h.book or h.pain or (h.availability and ctx.wants)
    if wants_now or (h.hours and h.date) or (h.availability and h.date):
        date = h.date or (offers[0].date() if offers and h.time else None) or ctx.date
        # A new day keeps the time asked for before ("Thursday then"); a new
        # part of the day drops it.
        time = h.time or (None if h.period else ctx.time)
        period = h.period or (ctx.period if not h.time else "")
        ctx = replace(ctx, date=date, time=time, period=period, wants=True, asap=h.asap or (h.pain and not date), next_week=h.next_week and not date)
        lead = "I'm sorry to hear that." if h.pain and not ctx.booked else ""
        if ctx.asap and not time:
            if can_check:
                return ctx, _check(date or ctx.today, lead, "Let me find the earliest free time.")
            return ctx, _ask_missing(ctx, lead)
        if date and time:
            return ctx, _book(ctx, date, time, lead)
        if date:
            if can_check:
                return ctx, _check(date, lead)
            return ctx, Plan(text=(lead + f" What time on {say_date(date, ctx.today)} would suit you? {hours}").strip())
        if h.next_week:
            return ctx, Plan(text=(lead + " Which day next week would suit you?").strip())
        if h.hours:
            return ctx, Plan(text=f"{hours} What day and time would suit you?")
        return ctx, _ask_missing(ctx, lead or ("Sure, I can help with that." if h.book and not ctx.time else ""))
    if h.hours:
        return ctx, Plan(text=f"{hours} Would you like to book an appointment?")
    if h.availability:
        if can_check:
            return replace(ctx, wants=True, asap=True), _check(ctx.today, "", "Let me find the earliest free time.")
        return replace(ctx, wants=True), _ask_missing(ctx)
    if h.name:
        follow = "What day and time would suit you?" if ctx.wants else "How can I help you today?"
        return ctx, Plan(text=f"Thank you, {h.name}. {follow}")
    if h.thanks:
        if ctx.booked:
            return replace(ctx, wants=False), _goodbye(h)
        return ctx, Plan(text="You're welcome. Is there anything else I can help with?")
    if h.no:
        if ctx.booked or not ctx.wants:
            # A bare "no" ends the call only when the caller got what they came for.
            return replace(ctx, wants=False), _goodbye(h, hang_up=ctx.booked)
        return replace(ctx, wants=False, date=None, time=None), Plan(text="No problem. Is there anything else I can help with?")
    if h.yes:
        return replace(ctx, wants=True), _ask_missing(ctx, "Great.")
    if h.greeting:
        return ctx, Plan(text=f"Hello! This is {CLINIC_NAME}. How can I help you today? I can book you an appointment.")
    # Not understood: keep any offer open, so a "yes" next still works.
    ctx = replace(ctx, offers=offers)
    if ctx.wants:
        return ctx, _ask_missing(ctx, "Sorry, I didn't catch that.")
    return ctx, Plan(text=f"Sorry, I didn't catch that. {CAN_DO}")


def _slot(item: dict) -> dt.datetime | None:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(item["date"]), dt.time.fromisoformat(item["time"]))
    except (KeyError, TypeError, ValueError):
        return None


def _offer(ctx: Context, slots: Sequence[dt.datetime], same_day: dt.date | None) -> tuple[Context, str]:
    slots = [s for s in slots if s is not None][:3]
    if not slots:
        return replace(ctx, offers=()), " I couldn't find a free time nearby. Which other day would suit you?"
    first = slots[0]
    where = say_time(first.time()) if first.date() == same_day else say_slot(first, ctx.today)
    return replace(ctx, offers=tuple(slots)), f" The nearest free time is {where}. Shall I book that?"


def step_tool(ctx: Context, name: str, result: object) -> tuple[Context, Plan]:
    """A tool result: the new context and what to say about it."""
    if not isinstance(result, dict) or "error" in result:
        return ctx, Plan(text="Sorry, I couldn't get to the appointment book just now. Could you say the day and time again?")
    if name == BOOK_APPOINTMENT:
        slot = _slot(result)
        if result.get("booked") and slot is not None:
            ctx = replace(
                ctx, booked=ctx.booked + (slot,), unannounced=slot, date=None, time=None, period="", asap=False, wants=False, offers=()
            )
            who = f"Thank you, {ctx.name.split()[0]}. " if ctx.name else ""
            return ctx, Plan(text=f"{who}You're booked for {say_slot(slot, ctx.today)}. Is there anything else I can help with?")
        why = result.get("reason", "")
        alternatives = [_slot(a) for a in result.get("alternatives", ()) if isinstance(a, dict)]
        if slot is None:
            return ctx, Plan(text="Sorry, I couldn't book that. What day and time would suit you?")
        when = say_slot(slot, ctx.today)
        if why == "taken":
            text = f"Sorry, {when} is already taken."
        elif why == "past":
            text = "Sorry, that time has already passed."
        elif why == "not_a_slot":
            text = "We book in half-hour slots, on the hour or the half hour."
        elif not CLINIC.is_open_day(slot.date()):
            text = f"Sorry, we're closed on {WEEKDAY_NAMES[slot.weekday()]}s. We're open {_open_days()}, {say_time(CLINIC.opens)} to {say_time(CLINIC.closes)}."
        else:
            text = f"Sorry, we're only open from {say_time(CLINIC.opens)} to {say_time(CLINIC.closes)}."
        # Keep the time asked for if it can work on another day ("Thursday
        # then" after a taken slot); drop it if it is outside opening hours.
        keep = why in ("taken", "past") or (why == "closed" and CLINIC.is_slot(CLINIC_WEEKDAY, slot.time()))
        ctx, offer = _offer(replace(ctx, date=slot.date(), time=slot.time() if keep else None), alternatives, slot.date())
        return ctx, Plan(text=text + offer)
    if name == CHECK_AVAILABILITY:
        try:
            day = dt.date.fromisoformat(result["date"])
        except (KeyError, TypeError, ValueError):
            return ctx, Plan(text="Sorry, I couldn't check that day. What day and time would suit you?")
        free = [dt.datetime.combine(day, dt.time.fromisoformat(t)) for t in result.get("free", ()) if isinstance(t, str)]
        later = [s for s in (_slot(a) for a in result.get("next_free", ()) if isinstance(a, dict)) if s is not None]
        if ctx.asap:
            ctx = replace(ctx, asap=False)
            if later:
                return replace(ctx, offers=tuple(later[:3])), Plan(text=f"The earliest free time is {say_slot(later[0], ctx.today)}. Shall I book that?")
            return replace(ctx, offers=()), Plan(text="Sorry, I couldn't find a free time soon. Which day would suit you?")
        bounds = {"morning": (dt.time(0), dt.time(12)), "afternoon": (dt.time(12), dt.time(17)), "evening": (dt.time(16), dt.time(23, 59))}
        low, high = bounds.get(ctx.period, (dt.time(0), dt.time(23, 59)))
        fitting = [s for s in free if low <= s.time() < high]
        on = say_date(day, ctx.today)
        if fitting:
            part = f" in the {ctx.period}" if ctx.period else ""
            # "On Friday the 27th I have" / "Tomorrow, Wednesday the 25th, I have"
            lead = f"{on[0].upper()}{on[1:]}{part}," if "," in on else f"On {on}{part}"
            ctx = replace(ctx, date=day, offers=tuple(fitting[:3]))
            times = say_list([say_time(s.time()) for s in fitting[:3]])
            ask = "Shall I book that?" if len(fitting) == 1 else "Which time suits you?"
            return ctx, Plan(text=f"{lead} I have {times} free. {ask}")
        if not result.get("open", True):
            text = f"Sorry, we're closed on {WEEKDAY_NAMES[day.weekday()]}s. We're open {_open_days()}, {say_time(CLINIC.opens)} to {say_time(CLINIC.closes)}."
            ctx, offer = _offer(ctx, later, None)
        elif free:
            text = f"Sorry, I have nothing free in the {ctx.period} on {on}."
            ctx, offer = _offer(ctx, free, day)
        else:
            text = f"Sorry, {on} is fully booked."
            ctx, offer = _offer(ctx, [s for s in later if s.date() != day], None)
        return ctx, Plan(text=text + offer)
    return ctx, Plan(text="Done. Is there anything else I can help with?")


def read_conversation(messages: Sequence[Message], today: dt.date, *, can_check: bool = True) -> tuple[Context, Context, Plan]:
    """Fold the whole conversation: (the context before the last message, the
    context after it, the reply to it)."""
    ctx = before = Context(today=today_from(messages, today))
    plan = Plan(text=GREETING)
    calls: dict[str, str] = {}
    for m in messages:
        before = ctx
        if m.role == "user":
            ctx, plan = step_user(ctx, hear(m.content, ctx.today, ctx.next_week), can_check=can_check)
        elif m.role == "assistant":
            for c in m.tool_calls:
                calls[c.call_id] = c.name
            if ctx.unannounced and "booked" in m.content:
                ctx = replace(ctx, unannounced=None)
        elif m.role == "tool":
            try:
                result = json.loads(m.content) if m.content else {}
            except json.JSONDecodeError:
                result = {"error": m.content}
            ctx, plan = step_tool(ctx, m.name or calls.get(m.tool_call_id, ""), result)
    return before, ctx, plan


def plan_reply(messages: Sequence[Message], today: dt.date, *, can_book: bool = True, can_check: bool = True, can_end: bool = True) -> Plan:
    """The reply to the conversation's last message."""
    before, ctx, plan = read_conversation(messages, today, can_check=can_check)
    last = messages[-1] if messages else None
    if last is not None and last.role == "user" and before.unannounced:
        # A booking made during a reply the caller cut off: say it now.
        plan = replace(plan, text=f"Just so you know, you're booked for {say_slot(before.unannounced, ctx.today)}. {plan.text}")
    if plan.tool == END_CALL and not can_end:
        plan = replace(plan, tool="")
    if plan.tool == BOOK_APPOINTMENT and not can_book:
        return Plan(text="Sorry, I can't book appointments right now. Please call back later.")
    if last is not None and last.role not in ("user", "tool"):
        return Plan(text="How can I help you today?")
    # "... at 3 p.m.." -> "... at 3 p.m."
    return replace(plan, text=re.sub(r"\.\.(?=\s|$)", ".", plan.text))


# ---------------------------------------------------------------------------
# The brain


class Receptionist:
    name = "Built-in demo receptionist (rule-based, no LLM)"
    greeting = GREETING

    def __init__(self, clock: Callable[[], dt.date] = dt.date.today):
        self.clock = clock

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[LLMOutput]:
        names = {t.get("function", {}).get("name") for t in tools}
        plan = plan_reply(messages, self.clock(), can_book=BOOK_APPOINTMENT in names, can_check=CHECK_AVAILABILITY in names, can_end=END_CALL in names)
        for word in re.findall(r"\S+\s*", plan.text):
            yield Token(text=word)
            await asyncio.sleep(0)  # a real stream: let other tasks run between tokens
        if plan.tool:
            yield ToolCallOut(call_id=f"call_{uuid.uuid4().hex[:16]}", name=plan.tool, arguments=json.dumps(plan.arguments))
            yield Done(finish_reason="tool_calls")
        else:
            yield Done(finish_reason="stop")
