"""Normalising what the ASR wrote: plain lower-case words with digits.

"Tomorrow at three p.m." -> "tomorrow at 3 pm"; "the twenty-eighth" ->
"the 28th". Number words become digits only where they are numbers: "one" is
mostly "that one", and "first" mostly "the first one", so each is read with
its neighbours. Everything after this works on the normalised text.
"""

from __future__ import annotations

import re

from ...clinic import WEEKDAY_NAMES

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


def ordinal(n: int) -> str:
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
                out.append(ordinal(value + _ORD_UNITS[nxt]))
                i += 2
            else:
                out.append(str(value))
                i += 1
            continue
        if tok in _ORD_BIG or (tok in _ORD_UNITS and _ORD_UNITS[tok] > 3):
            out.append(ordinal(_ORD_BIG.get(tok) or _ORD_UNITS[tok]))
        elif tok in ("first", "second", "third"):
            # Only a day of the month in a date-like place: "the first of
            # May", "Monday the third" — not "the first one", "just a second".
            datey = prev in ("the", "on") or prev in MONTHS or prev in WEEKDAYS
            out.append(ordinal(_ORD_UNITS[tok]) if datey and nxt not in _NOT_A_DAY_NEXT else tok)
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
    tokens = _words_to_digits(t.split())
    t = " ".join(tokens)
    t = re.sub(r"\b(\d{1,2}) ish\b", r"\1", t)  # "3ish", "ten-ish"
    t = re.sub(r"\b(\d{1,2}) ([ap]) m\b", r"\1 \2m", t)  # "3 p m"
    t = re.sub(r"\b(\d{1,2}) (?:oh|o) (\d)\b", r"\1:0\2", t)  # "ten oh five"
    return t
