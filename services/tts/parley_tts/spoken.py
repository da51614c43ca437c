"""Text as the voice should say it: the few rewrites Piper (espeak) gets wrong.

One pure function, ``spoken(text)``, applied to each chunk before synthesis.
Every rule here fixes something heard (transcribed back with Whisper) from the
joe-medium voice; what espeak already says well ("3:30 PM", "5th", "50%",
"e.g.", "Main St." at a sentence end) is left alone.

* Titles and address words: espeak ends a sentence at "Dr." / "Mrs." (a pause
  in the middle of a name) and reads "St." before a name as "saint" but
  "Baker St. on" as "sent". "Dr."/"St." before a capitalized word are a title
  (Doctor, Saint); otherwise an address (Drive after a capitalized word or a
  number, Street).
* Times: "10:00" was "ten zero zero", "9:05" "nine zero five" ("3:30" was fine).
* Money: "$4.50" was "dollar four point five zero".
* Dates: "12/03/2024" was "twelve slash zero three slash ..."; "Jan. 5" was a
  sentence end plus "jan".
* Phone numbers: "555-1234" was "five hundred fifty-five dash one thousand ...".

Rules run in the order of ``RULES``. Each matches only at word boundaries, and
none matches what an earlier one wrote ("Jan. 1 o'clock" stays, "Jan. $1"
does not become "January 1st dollar"), so ``spoken`` is idempotent; a property
test checks that on text glued from the pieces the rules look for.
"""

from __future__ import annotations

import re
from typing import Callable

MONTHS = (
    "January February March April May June July August September October November December"
).split()
_MONTH_ABBREVIATIONS = {m[:3]: m for m in MONTHS if m != "May"} | {"Sept": "September"}

# Abbreviation -> what to say. Titles before a name drop their period; the
# others keep it when they end the text or a sentence, so the pause stays.
TITLES = {"Dr": "Doctor", "St": "Saint", "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor"}
WORDS = {
    "Dr": "Drive",  # only after a capitalized word or a number; else Doctor
    "St": "Street",
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Prof": "Professor",
    "Ave": "Avenue",
    "Blvd": "Boulevard",
    "Rd": "Road",
    "Apt": "apartment",
    "Jr": "Junior",
    "Sr": "Senior",
    "approx": "approximately",
    "etc": "et cetera",
    "vs": "versus",
}


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def _say_digits(*groups: str) -> str:
    return ", ".join(" ".join(g) for g in groups)


def _phone(m: re.Match) -> str:
    return _say_digits(*m.groups())


def _date(month: int, day: int, year: str) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{MONTHS[month - 1]} {ordinal(day)}, {year}"


def _us_date(m: re.Match) -> str:
    return _date(int(m["m"]), int(m["d"]), m["y"]) or m[0]


def _iso_date(m: re.Match) -> str:
    return _date(int(m["m"]), int(m["d"]), m["y"]) or m[0]


def _month_day(m: re.Match) -> str:
    name = m["month"].rstrip(".")
    month = _MONTH_ABBREVIATIONS.get(name, name)
    return f"{month} {ordinal(int(m['day']))}"


def _money(m: re.Match) -> str:
    dollars, cents, scale = m["dollars"], m["cents"], m["scale"]
    if scale:
        amount = f"{dollars}.{cents}" if cents else dollars
        return f"{amount} {scale} dollars"
    parts = []
    if dollars.replace(",", "") not in ("0", "") or not cents or int(cents) == 0:
        parts.append(f"{dollars} dollar{'' if dollars == '1' else 's'}")
    if cents and int(cents):
        parts.append(f"{int(cents)} cent{'' if int(cents) == 1 else 's'}")
    return " and ".join(parts)


def _time(m: re.Match) -> str:
    hour, minute, ampm = int(m["h"]), m["m"], (m["ampm"] or "").strip()
    if minute == "00":
        return f"{hour} {ampm}" if ampm else f"{hour} o'clock"
    if minute.startswith("0"):
        return f"{hour} oh {minute[1]}" + (f" {ampm}" if ampm else "")
    return m[0]  # "3:30 PM" already sounds right


def _abbreviation(m: re.Match) -> str:
    word, after = m["word"], m.string[m.end() :]
    before_name = re.match(r"\s+[A-Z]", after) is not None
    if before_name and word in TITLES:
        return TITLES[word]
    said = WORDS[word]
    if word == "Dr":
        previous = re.search(r"(\S+)\s+$", m.string[: m.start()])
        if previous is None or not (previous[1][0].isupper() or previous[1][0].isdigit()):
            said = "Doctor"  # "call the Dr." rather than "Elm Dr."
    # Keep the period where it ended the text or a sentence, so the pause stays.
    return said + "." if (not after.strip() or before_name) else said


_ABBREVIATION_KEYS = sorted(set(TITLES) | set(WORDS), key=len, reverse=True)

Rule = tuple[re.Pattern[str], Callable[[re.Match], str]]

RULES: tuple[Rule, ...] = (
    # (555) 123-4567, 555-123-4567, 555-1234
    (re.compile(r"\((\d{3})\)\s*(\d{3})-(\d{4})\b"), _phone),
    (re.compile(r"(?<![\d-])\b(\d{3})-(\d{3})-(\d{4})\b(?!-\d)"), _phone),
    (re.compile(r"(?<![\d-])\b(\d{3})-(\d{4})\b(?!-\d)"), _phone),
    # 12/03/2024 (US order) and 2024-12-03
    (re.compile(r"\b(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})\b"), _us_date),
    (re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\b"), _iso_date),
    # 10:00, 9:05 a.m., 14:45
    (
        re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?:(?P<ampm>\s*[AaPp]\.?[Mm]\b\.?)|(?!\w))"),
        _time,
    ),
    # Jan. 5, January 5 -> January 5th
    (
        re.compile(
            r"\b(?P<month>(?:" + "|".join(MONTHS) + r")|(?:" + "|".join(_MONTH_ABBREVIATIONS) + r")\.?)"
            r"\s+(?P<day>[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\b(?![:\d]|\s*(?:\d|o'clock|oh\b|[AaPp]\.?[Mm]\b|dollars?\b|cents?\b))"
        ),
        _month_day,
    ),
    # $4.50, $1,250, $3 million
    (
        re.compile(
            r"(?<!\w)\$+(?P<dollars>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<cents>\d{1,2}))?(?!\d)"
            r"(?:\s+(?P<scale>thousand|million|billion|trillion)\b)?"
        ),
        _money,
    ),
    # Dr. Smith, Mrs. Jones, Baker St., approx.
    (re.compile(r"\b(?P<word>" + "|".join(_ABBREVIATION_KEYS) + r")\.(?=\s|$)"), _abbreviation),
)


def spoken(text: str) -> str:
    """``text`` rewritten so that Piper says it the way a person would."""
    for pattern, say in RULES:
        text = pattern.sub(say, text)
    return text
