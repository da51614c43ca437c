"""An utterance heard with the caller's words just before it.

Theory of operation. The VAD cuts a caller's turn wherever the voice stops
for 200 ms: at a comma, in a thinking pause. Whisper hears a fragment cut
that way worse than the same words inside their sentence: alone, "I was
wondering if" came out "I was wondering it." and "the eleventh" came out
"D-d-lubbin"; with what came before, it hears them right. So when an
utterance begins soon after the caller's previous words, the worker gives
Whisper the audio of both (the *context* and the utterance) and keeps only
what is new: ``continuation(before, joined)`` finds where the transcript of
the context ends inside the joined transcript (Whisper may write the context
a little differently the second time: "walking" for "booking") and returns
the words after it.

Pure: no I/O, no model. ``None`` means the joined transcript does not
reproduce the context well enough to cut it, or that all it adds is the
context's last words written again (a laugh heard after "Are you open on
Saturdays?" came back "Setterdays?": Whisper's echo, not a word); then, as when nothing new is
left after the cut (Whisper dropped the new words), the worker transcribes
the utterance alone, as without context. The pause between the parts is
shortened to 0.3 s in the joined audio: left whole, Whisper tiny.en loops
on it ("at four at four at four ..."); measured in docs/BENCHMARKS.md 6.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_WORD = re.compile(r"[a-z0-9]+")
# How much of the context the joined transcript must reproduce, as difflib's
# ratio between the context's words and the joined words up to the cut.
MIN_MATCH = 0.6


def _norm(word: str) -> str:
    return "".join(_WORD.findall(word.lower()))


def continuation(before: str, joined: str) -> str | None:
    """The words of ``joined`` after the part that transcribes ``before``:
    "" when nothing new was heard, None when ``joined`` does not start with
    something close enough to ``before`` to tell where the new words begin."""
    context = [w for w in (_norm(x) for x in before.split()) if w]
    raw = [x for x in joined.split() if _norm(x)]
    words = [_norm(x) for x in raw]
    if not context:
        return " ".join(raw)
    best, cut = 0.0, -1
    matcher = SequenceMatcher(autojunk=False)
    matcher.set_seq1(context)
    # Never cut before the first word that matches the context's last word
    # could be: the cut is at least a few words shy of the context's length.
    for j in range(max(1, len(context) // 2), min(len(words), 2 * len(context) + 2) + 1):
        matcher.set_seq2(words[:j])
        ratio = matcher.ratio()
        if ratio > best + 1e-9:
            best, cut = ratio, j
    if cut < 0 or best < MIN_MATCH:
        return None
    if _echo(context, words[cut:]):
        return None
    return " ".join(raw[cut:])


# A wordless sound heard with the context (a laugh after "Are you open on
# Saturdays?") can come back as the context's last word written again
# ("Are you open on Saturdays? Setterdays?"): that is no new word. At most
# this many words, each this close to the context's word in its place.
ECHO_WORDS = 3
ECHO_MATCH = 0.6


def _echo(context: list[str], new: list[str]) -> bool:
    """Whether the new words only repeat the context's last words (Whisper's
    echo of the context over a sound): then the utterance is heard alone,
    where a laugh is nothing and real words are themselves again."""
    if not new or len(new) > min(ECHO_WORDS, len(context)):
        return False
    tail = context[-len(new) :]
    return all(SequenceMatcher(None, a, b, autojunk=False).ratio() >= ECHO_MATCH for a, b in zip(tail, new))
