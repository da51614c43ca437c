"""spoken(): the text rewrites for Piper, as a table of examples and as properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_tts.spoken import ordinal, spoken

EXAMPLES = [
    # Titles before a name: no mid-name sentence break.
    ("Dr. Smith will see you at 3:30 PM.", "Doctor Smith will see you at 3:30 PM."),
    ("Mr. and Mrs. Jones live on Main St.", "Mister and Missus Jones live on Main Street."),
    ("Ask Ms. Lee or Prof. Ortiz.", "Ask Miz Lee or Professor Ortiz."),
    # Saint / Street, Doctor / Drive.
    ("Visit St. Louis and 5th St. today.", "Visit Saint Louis and 5th Street today."),
    ("Meet me at Baker St. on Monday.", "Meet me at Baker Street on Monday."),
    ("Go to 12 Elm Dr. now, ask the Dr. and Dr. Who.", "Go to 12 Elm Drive now, ask the Doctor and Doctor Who."),
    ("It is approx. 3 km, vs. 5 km, etc.", "It is approximately 3 km, versus 5 km, et cetera."),
    # Times.
    ("Your appointment is at 10:00 a.m.", "Your appointment is at 10 a.m."),
    ("Come at 10:00.", "Come at 10 o'clock."),
    ("At 9:05 PM or 14:45.", "At 9 oh 5 PM or 14:45."),
    ("At 12:00pm sharp.", "At 12 pm sharp."),
    # Money.
    ("It costs $4.50.", "It costs 4 dollars and 50 cents."),
    ("Your total is $1,250.99 today.", "Your total is 1,250 dollars and 99 cents today."),
    ("Only $1, not $0.50 or $2.00.", "Only 1 dollar, not 50 cents or 2 dollars."),
    ("A $3 million deal, $1.5 billion too.", "A 3 million dollars deal, 1.5 billion dollars too."),
    ("That's $0.01.", "That's 1 cent."),
    # Dates.
    ("On Jan. 5th at noon.", "On January 5th at noon."),
    ("Due Sept 2 and Dec. 31.", "Due September 2nd and December 31st."),
    ("Born 12/03/2024 and 2024-12-03.", "Born December 3rd, 2024 and December 3rd, 2024."),
    ("Not a date: 13/40/2024.", "Not a date: 13/40/2024."),
    ("March 2024 stays.", "March 2024 stays."),
    # Phone numbers: digit by digit.
    ("Call 555-1234.", "Call 5 5 5, 1 2 3 4."),
    ("Call (555) 123-4567 or 555-123-4567.", "Call 5 5 5, 1 2 3, 4 5 6 7 or 5 5 5, 1 2 3, 4 5 6 7."),
    # Left alone.
    ("Hello there, how can I help?", "Hello there, how can I help?"),
    ("e.g. 50% off, 5th in line.", "e.g. 50% off, 5th in line."),
    ("I spoke to Jan.", "I spoke to Jan."),
    ("", ""),
]


@pytest.mark.parametrize("text, said", EXAMPLES)
def test_examples(text, said):
    assert spoken(text) == said


@pytest.mark.parametrize("n, said", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (31, "31st"), (111, "111th")])
def test_ordinal(n, said):
    assert ordinal(n) == said


# Text made of the pieces the rules look for, glued in any order.
TOKENS = st.one_of(
    st.sampled_from(
        ["Dr.", "St.", "Mr.", "Mrs.", "Ms.", "Prof.", "Ave.", "etc.", "vs.", "approx.", "Jan.", "Sept", "May", "December",
         "Smith", "Main", "the", "at", "on", "a.m.", "PM", "pm", "o'clock", ".", ",", "?", "-", "/", ":", "$", "(", ")"]
    ),  # fmt: skip
    st.from_regex(r"\A\d{1,4}\Z"),
    st.from_regex(r"\A\d{1,2}:\d{2}\Z"),
    st.from_regex(r"\A\$\d{1,7}(\.\d{1,2})?\Z"),
    st.from_regex(r"\A\d{1,2}/\d{1,2}/\d{4}\Z"),
    st.from_regex(r"\A\d{3}-\d{3,4}\Z"),
)
SEPARATORS = st.sampled_from([" ", "", "  ", "\n"])
TEXT = st.lists(st.tuples(TOKENS, SEPARATORS), max_size=12).map(lambda parts: "".join(t + s for t, s in parts))


@settings(max_examples=400)
@given(TEXT)
def test_idempotent(text):
    once = spoken(text)
    assert spoken(once) == once


@settings(max_examples=200)
@given(TEXT)
def test_no_dollar_sign_before_a_number_and_no_round_hour_is_left(text):
    said = spoken(text)
    assert not re.search(r"(?<!\w)\$\d", said)
    assert not re.search(r"\b([01]?\d|2[0-3]):00\b", said)


@given(st.text(alphabet="abcdfghijklmnopqruwyz ,;!?'", max_size=80))
def test_plain_words_are_untouched(text):
    assert spoken(text) == text
