"""What the transcript says about the end of the turn: P(complete) from text.

Theory of operation. A caller who stops after "Could you book me in for" has
not finished, and the words show it: English marks an unfinished clause with
*closed-class* words at its end (conjunctions, prepositions, articles and
possessives, subject pronouns, auxiliaries, fillers) and with the shape of
what is being dictated (a phone number of six digits). Closed classes are
small and stable, so rules over them carry to phrasings we have never seen;
open-class words (nouns, verbs, adjectives) at the end say little, and get a
"probably complete" prior.

``score(text)`` reads only the last sentence of the text, finds its last
word, and looks it up in ``TABLE`` (word class -> P(complete)). A few
two-word rules refine it (a pronoun before "want"/"need", "and then"), the
final punctuation Whisper wrote adjusts it (an ellipsis or a trailing comma
mean it heard the voice trail off; a question mark is weak evidence of a
finished question), and a trailing run of digits is checked against the
length of what it seems to be (a phone number after "my number is").

The values are hand-set priors, ordered by how reliably each class marks an
unfinished clause in speech (a trailing article almost always does; a
trailing "in" is often a particle: "come in"). They are not learned; their
separation on a corpus of complete and cut-off sentences is measured in
services/asr/BENCHMARKS.md. Pure: no I/O, no clock; -1 means "nothing to read".
"""

from __future__ import annotations

import re

UNKNOWN = -1.0
DEFAULT = 0.85  # an open-class last word: probably complete

# Word class -> (P(complete) when the text ends with it, words).
TABLE: dict[str, tuple[float, frozenset[str]]] = {
    "article": (0.04, frozenset("a an the".split())),
    "possessive": (0.06, frozenset("my your our their its whose".split())),
    "conjunction": (0.06, frozenset("and or but nor because cause 'cause plus whereas unless although".split())),
    "preposition": (0.08, frozenset("to for of at with from into onto towards toward between than via per until till about".split())),
    "filler": (0.12, frozenset("um umm uh uhh er erm ah hmm mm eh".split())),
    "subject": (0.1, frozenset("i we they he she".split())),
    "pronoun_aux": (
        0.1,
        frozenset(
            "i'm i'll i'd i've we're we'll we'd we've you're you'll you'd you've they're they'll they'd they've "
            "he's he'll he'd she's she'll she'd there's it's that's it'll".split()
        ),
    ),
    "subordinator": (0.2, frozenset("if when while whether since which who whom where".split())),
    "auxiliary": (
        0.35,
        frozenset("is are was were am be been being have has had do does did can could will would shall should may might must gonna wanna gotta".split()),
    ),
    "particle": (0.4, frozenset("in on by up off out over through around after before down under near like so".split())),
    "determiner": (0.45, frozenset("this that these those some any each every another his her what".split())),
    "negation": (0.45, frozenset("not".split())),
    "answer": (
        0.95,
        frozenset(
            "yes yeah yep yup no nope okay ok sure right correct exactly perfect great fine thanks "
            "bye goodbye hello hi please mm-hmm uh-huh mhm alright".split()
        ),
    ),
}
CLASS_OF: dict[str, str] = {w: cls for cls, (_, words) in TABLE.items() for w in words}

# A last word that needs an object when a subject comes right before it: "I want", "we need".
WANTING = frozenset("want need like love prefer mean think guess wonder".split())
SUBJECTS = TABLE["subject"][1] | frozenset("you i'd we'd you'd they'd".split())
# "I think so", "I hope so": "so" closes the clause after these.
SO_CLOSES = frozenset("think hope guess believe suppose said say do did".split())
# "and then", "or so": a conjunction before these keeps the clause open.
OPEN_AFTER_CONJUNCTION = frozenset("then also maybe".split())
CONJUNCTIONS = TABLE["conjunction"][1]

# What a digit string may be, from the words just before it, and how many digits finish it.
# "my number is", "call me on": a phone number; "the reference number is": not one.
PHONE_CUES = frozenset("phone cell mobile call reach text contact".split())
OWNERS = frozenset("my your our his her their".split())
PHONE_LENGTHS = frozenset({7, 10, 11})
DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip

TRAILING_OFF = 0.3  # cap after an ellipsis or a trailing comma/dash
QUESTION_BONUS = 0.1

_SENTENCE_END = re.compile(r"[.?!]+(?=\s+\S)")
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|'cause")
_TIME_SUFFIX = re.compile(r"(\d\s?)([ap])\.\s?m\.?")


def normalise(text: str) -> str:
    t = text.strip().lower().replace("’", "'").replace("‘", "'").replace("…", "...")
    t = _TIME_SUFFIX.sub(r"\1\2m", t)  # "10 a.m." -> "10 am": the dots are not sentence ends
    return t


def last_sentence(text: str) -> str:
    parts = _SENTENCE_END.split(text)
    return parts[-1] if parts else text


def tokens(sentence: str) -> list[str]:
    return _TOKEN.findall(sentence)


def score(text: str) -> float:
    """P(the text is a finished turn), or -1 if there are no words in it."""
    t = normalise(text)
    words = tokens(t)
    if not words:
        return UNKNOWN
    sentence = last_sentence(t)
    sent_words = tokens(sentence) or words
    p = _word_score(sent_words, words)
    ending = sentence.rstrip()
    if ending.endswith("...") or ending[-1:] in ",;:-—":
        p = min(p, TRAILING_OFF)
    elif ending.endswith("?") and p < 1.0:
        p = min(1.0, p + QUESTION_BONUS)
    return round(p, 3)


def _word_score(sent: list[str], all_words: list[str]) -> float:
    last = sent[-1]
    before = sent[-2] if len(sent) > 1 else ""
    digits = _trailing_digits(all_words)
    if digits:
        return _digits_score(digits, all_words)
    if last in ("am", "pm") and before[-1:].isdigit():
        return DEFAULT  # "at 10 am": a time, not "I am"
    if len(sent) == 1 and last in TABLE["answer"][1]:
        return TABLE["answer"][0]
    if last in WANTING and before in SUBJECTS:
        return 0.12
    if last == "so" and before in SO_CLOSES:
        return DEFAULT
    if last in OPEN_AFTER_CONJUNCTION and before in CONJUNCTIONS:
        return 0.1
    if last in TABLE["subordinator"][1] and len(sent) == 1:
        return DEFAULT  # "Where?", "When?", "So?": a whole question
    cls = CLASS_OF.get(last)
    if cls is None:
        return DEFAULT
    return TABLE[cls][0]


def _trailing_digits(words: list[str]) -> tuple[int, int] | None:
    """(digits at the end of the text, index of the first word of that run), or None."""
    count = 0
    i = len(words)
    while i > 0:
        w = words[i - 1]
        chars = w.replace("-", "")
        if chars.isdigit():
            count += len(chars)
        elif w in DIGIT_WORDS:
            count += 1
        elif w == "double" and count:  # "double five"
            count += 1
        else:
            break
        i -= 1
    return (count, i) if count else None


def _digits_score(digits: tuple[int, int], words: list[str]) -> float:
    count, first = digits
    before = words[max(0, first - 4) : first]
    owned_number = any(w == "number" and i > 0 and before[i - 1] in OWNERS for i, w in enumerate(before))
    if owned_number or set(before) & PHONE_CUES:
        if count in PHONE_LENGTHS or count > 11:
            return 0.8
        return 0.1 if count < 7 else 0.3
    return DEFAULT
