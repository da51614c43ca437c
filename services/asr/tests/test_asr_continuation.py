"""continuation.py: the new words of an utterance Whisper heard with the caller's words before it."""

from __future__ import annotations

import pytest

from parley_asr.continuation import continuation


@pytest.mark.parametrize(
    "before,joined,new",
    [
        ("Hi, yes.", "Hi, yes, I was wondering if you have anything next Monday.", "I was wondering if you have anything next Monday."),
        ("The date I want is December.", "The date I want is December, the 11th.", "the 11th."),
        # Written a little differently the second time: the cut still falls after it.
        ("My address is 42.", "My address is 42 Elm Street,", "Elm Street,"),
        ("Could you book me in for", "Could you book me in for, um, Thursday at 11?", "um, Thursday at 11?"),
        ("I'd like to earn", "I'd like to, uh, book a filling for Friday at two.", "uh, book a filling for Friday at two."),  # "earn" was the "uh"
        # Numbers said twice over are kept.
        ("one two", "one two one two three", "one two three"),
        ("Hi, yes.", "Hi, yes.", ""),  # nothing new heard
        ("", "Anything on Monday?", "Anything on Monday?"),
    ],
)
def test_the_new_words_are_what_follows_the_context(before, joined, new):
    assert continuation(before, joined) == new


@pytest.mark.parametrize(
    "before,joined",
    [
        ("Hi, yes.", "Something else entirely here."),
        ("My walking reference in case.", "My booking reference is K, 4, 7."),  # too different to tell where it ends
        ("What time do you open?", ""),
        # Whisper's echo of the context's last words over a laugh (live, barge4/barge5): no new words.
        ("Are you open on Saturday?", "Are you open on Saturday? Saturdays?"),
        ("Are you open on Saturdays?", "Are you open on Saturdays? Setterdays?"),
        ("What are your hours on Friday?", "What are your hours on Friday? On Friday."),
    ],
)
def test_a_context_the_joined_words_do_not_reproduce_gives_no_cut(before, joined):
    assert continuation(before, joined) is None


@pytest.mark.parametrize(
    "before,joined,new",
    [
        # A new word, not the last one again. (One spelled close to it, "Sunday?" after "Saturday?", is taken
        # for an echo: the worker then hears the utterance alone, where real words come out as themselves.)
        ("Are you open on Saturday?", "Are you open on Saturday? Monday?", "Monday?"),
        ("I'd like Friday.", "I'd like Friday. Friday at ten.", "Friday at ten."),  # more than the echo
        ("one two", "one two one two three", "one two three"),
    ],
)
def test_words_beyond_an_echo_of_the_context_are_kept(before, joined, new):
    assert continuation(before, joined) == new
