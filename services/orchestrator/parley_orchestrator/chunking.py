"""Where the reducer cuts streamed LLM text into chunks for TTS.

Pure functions, no state: ``next_chunk(text, ...)`` looks at the text that has
accumulated and returns the longest prefix that should be spoken now (or
nothing yet). Rules, in order:

* A chunk ends at a sentence end: ``.``, ``!`` or ``?`` (plus closing quotes)
  followed by white space. A period inside a number ("3.30", "$4.50"), after a
  known abbreviation ("Dr.", "e.g.", "St.") or after a single initial is not a
  sentence end. "a.m."/"p.m." end a sentence only before a capital letter.
* The first chunk of a run may end earlier, at a clause boundary (``,`` ``;``
  ``:`` or a dash followed by space), once it is at least ``first_min`` long:
  the caller hears something sooner.
* A sentence shorter than ``min_len`` waits to be joined with the next one
  (Piper's prosody suffers on fragments), unless the text is final.
* Nothing runs past ``max_len``: a long sentence is cut at the last space
  before it.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ave blvd rd ft no vs etc approx dept est
    inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mon tue
    tues wed thu thur thurs fri sat sun e.g i.e a.m p.m u.s""".split()
)

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"(?:[,;:](?!\d)|\s[-\u2013\u2014])(?=\s)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")


def _is_sentence_end(text: str, end: int) -> bool:
    """Is the punctuation run ending at ``end`` (exclusive) a real sentence end?"""
    punct_start = end
    while punct_start > 0 and text[punct_start - 1] in ".!?\"')]":
        punct_start -= 1
    punct = text[punct_start:end]
    if "!" in punct or "?" in punct or "..." in punct:
        return True
    before = text[:punct_start]
    # "3." followed by a digit never reaches here (no white space follows), but
    # a trailing "No. 5" or "$4." mid-number is guarded by the lookahead too.
    m = _WORD_BEFORE.search(before)
    if not m:
        return True  # after a digit or symbol: "at 3." ends a sentence
    word = m.group(1).lower().rstrip(".")
    if word in ("a.m", "p.m", "am", "pm") and "." in m.group(1) + punct:
        following = text[end:].lstrip()
        return bool(following) and following[0].isupper()
    if word in ABBREVIATIONS:
        return False
    if len(word) == 1 and m.group(1).isupper():
        return False  # an initial: "J. Smith"
    return True


def _cut_at_space(text: str, limit: int) -> int:
    cut = text.rfind(" ", 0, limit + 1)
    return cut if cut > 0 else limit


def next_chunk(text: str, *, first: bool, final: bool, first_min: int, min_len: int, max_len: int) -> int:
    """Length of the prefix of ``text`` to send to TTS now; 0 means wait.

    ``first``: no chunk of this run was sent yet. ``final``: the LLM is done,
    so everything left goes (in pieces no longer than ``max_len``).
    """
    if not text.strip():
        return len(text) if final and text else 0
    best = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end > max_len:
            break
        if not _is_sentence_end(text, end):
            continue
        if first or end >= min_len:
            return _take(text, end)
        best = end  # too short alone: keep looking for a longer boundary
    if first:
        for m in _CLAUSE_END.finditer(text):
            end = m.end()
            if end > max_len:
                break
            if end >= first_min:
                return _take(text, end)
    if final:
        return len(text) if len(text) <= max_len else _take(text, _cut_at_space(text, max_len))
    if len(text) > max_len:
        return _take(text, best or _cut_at_space(text, max_len))
    return 0


def _take(text: str, end: int) -> int:
    """Include the white space after a boundary, so the next chunk starts clean."""
    while end < len(text) and text[end].isspace():
        end += 1
    return end
