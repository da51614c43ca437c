"""Text completeness: does the transcript so far read like a finished turn?

A table of examples (written the way Whisper writes: digits, "a.m.", a full
stop after almost anything), then properties over generated phrasings: the
closed word classes that leave a clause open do so after *any* words.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_asr.completeness import TABLE, UNKNOWN, score

OPENS = [cls for cls, (p, _) in TABLE.items() if p <= 0.2]  # the classes that mark an unfinished clause

EXAMPLES = [
    # (text, finished?)
    ("Could you book me in for", False),
    ("Could you book me in for?", False),  # Whisper's question mark does not finish it
    ("Could you book me in for Thursday at eleven?", True),
    ("Um, Thursday at eleven?", True),
    ("I'd like to", False),
    ("I'd like", False),
    ("I'd like to book a cleaning on Friday at 10 a.m.", True),
    ("Can I also come in on Monday at 2 p.m.?", True),
    ("What are your opening hours?", True),
    ("My number is 555", False),
    ("My number is 555 123", False),
    ("My number is 555-123", False),
    ("my number is five five five, one two three", False),
    ("My number is 555-123-4567.", True),
    ("You can reach me on 555 1234.", True),
    ("The reference is 7392.", True),
    ("The reference number is 7392.", True),  # not a phone number: any length will do
    ("Call me on 555 12", False),
    ("and then the", False),
    ("It's for my, um,", False),
    ("So I was wondering if...", False),
    ("Yes, and", False),
    ("I want to see the dentist because", False),
    ("We're", False),
    ("Um", False),
    ("Uh", False),
    ("Yes.", True),
    ("No.", True),
    ("Okay.", True),
    ("Mm-hmm.", True),
    ("Thanks, that's all.", True),
    ("I think so.", True),
    ("Where?", True),
    ("Is it open at 9?", True),
    ("Sorry, I need to change my appointment to next week.", True),
    ("Hello. I'd like to book an appointment with", False),  # only the last sentence counts
    ("Can I book with Doctor Smith? And", False),
]


@pytest.mark.parametrize("text, finished", EXAMPLES)
def test_examples(text, finished):
    p = score(text)
    assert (p >= 0.5) == finished, (text, p)


def test_nothing_to_read_is_unknown():
    for text in ("", "   ", "...", "?", "—"):
        assert score(text) == UNKNOWN


WORDS = st.sampled_from(
    "please book an appointment tomorrow dentist Friday cleaning morning check hours change need "
    "Sarah price insurance filling today Monday afternoon appointment cancel".split()
)
PHRASE = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)
OPEN_WORD = st.sampled_from(sorted(w for cls in OPENS for w in TABLE[cls][1]))


@given(PHRASE, OPEN_WORD, st.sampled_from(["", ".", "?", ",", "...", " ..."]))
@settings(max_examples=150, deadline=None)
def test_a_closed_class_word_that_opens_a_clause_leaves_any_phrase_unfinished(phrase, word, punct):
    assert score(f"{phrase} {word}{punct}") < 0.5


@given(PHRASE, st.sampled_from([",", "...", " -", ";"]))
@settings(max_examples=200, deadline=None)
def test_a_voice_that_trails_off_is_unfinished(phrase, punct):
    assert score(phrase + punct) < 0.5


@given(PHRASE, st.sampled_from(["um", "uh", "erm"]))
@settings(max_examples=100, deadline=None)
def test_a_trailing_filler_is_unfinished(phrase, filler):
    assert score(f"{phrase}, {filler}") < 0.5 and score(f"{phrase} {filler}.") < 0.5


@given(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=6).map("".join))
def test_a_phone_number_too_short_to_dial_is_unfinished(digits):
    assert score(f"My number is {digits}") < 0.5
    assert score(f"my phone number is {' '.join(digits)}.") < 0.5


@given(st.sampled_from(["555 123 4567", "5551234567", "555-1234", "020 7946 0018"]))
def test_a_whole_phone_number_is_finished(number):
    assert score(f"My number is {number}.") >= 0.5


@given(PHRASE, st.text(max_size=40))
@settings(max_examples=150, deadline=None)
def test_scores_are_probabilities_and_case_does_not_matter(phrase, noise):
    for text in (phrase, noise, phrase + noise):
        p = score(text)
        assert p == UNKNOWN or 0.0 <= p <= 1.0
        if text.upper().lower() == text.lower():  # not "ß" -> "SS": another word
            assert score(text.upper()) == p


@given(PHRASE, st.sampled_from(["Yes.", "Thanks, goodbye.", "What time do you close?", "Could you book me in for"]))
@settings(max_examples=100, deadline=None)
def test_only_the_last_sentence_counts(before, last):
    assert score(f"{before}. {last}") == score(last)
