"""What the caller's words say about the floor (words.py)."""

from __future__ import annotations

import pytest

from parley_orchestrator import words


@pytest.mark.parametrize(
    "text",
    ["", "  ", "(coughs)", "[laughter]", "[Laughter]", "*sigh*", "(clears throat)", "[BLANK_AUDIO]", "♪", "Ah.", "Ahh...", "Oh!",
     "Um.", "Uh", "Hmm.", "Hmmm", "Huh.", "Haha.", "Ha ha ha", "Erm,", "(door slams) ah"],
)  # fmt: skip
def test_sounds(text):
    assert words.hearing(text) == "sound"
    assert words.hearing(text, asked=True) == "sound"


@pytest.mark.parametrize(
    "text",
    ["Mm-hmm.", "mm hmm", "Mmhmm", "mhmm", "Mhm.", "mmm", "Mm.", "Uh-huh.", "uh huh", "Uh huh.", "uhhuh", "Yeah.", "Yeah, yeah.",
     "yep", "Yup.", "Right.", "Right, right.", "Okay.", "OK", "ok.", "Okay, okay.", "Sure.", "I see.", "I see, I see.", "Got it.",
     "Oh, okay.", "All right.", "Alright", "Yes.", "Ah, I see.", "Um, yeah."],
)  # fmt: skip
def test_backchannels_in_their_spellings(text):
    assert words.hearing(text) == "backchannel"


@pytest.mark.parametrize("text", ["Yes.", "Yeah.", "Yep!", "Sure.", "Okay.", "Mm-hmm.", "Uh-huh", "Of course.", "Yes, yes."])
def test_a_yes_to_a_question_is_an_answer(text):
    assert words.hearing(text, asked=True) == "answer"


@pytest.mark.parametrize("text", ["I see.", "Mmm.", "Got it.", "wow"])
def test_listening_noises_do_not_answer_a_question(text):
    assert words.hearing(text, asked=True) == "backchannel"


@pytest.mark.parametrize(
    "text",
    ["Wait.", "No.", "Stop", "Sorry, I need to", "Hold on", "Yes, but on Friday", "Actually", "What?", "Can you repeat that?",
     "Okay, wait", "mm-hmm, and the price?", "hello"],
)  # fmt: skip
def test_words_take_the_floor(text):
    assert words.hearing(text) == "words"
    assert words.hearing(text, asked=True) == "words"


@pytest.mark.parametrize(
    "text,asked,why,kind",
    [
        ("Could you book me in for", "", "ends in 'for'", "clause"),
        ("I'd like to", "", "ends in 'to'", "clause"),
        ("Tuesday and", "", "ends in 'and'", "clause"),
        ("Book me with the", "", "ends in 'the'", "clause"),
        ("Thursday, um", "", "ends in 'um'", "clause"),
        ("Thursday, um...", "", "ends in 'um'", "clause"),
        ("I was thinking,", "", "trails off", "clause"),
        ("So I was going to say...", "", "trails off", "clause"),
        ("I'd like to come in on.", "", "may end in 'on'", "maybe"),
        ("555 201", "phone", "phone number dictated in groups (6 digits so far)", "dictation"),
        ("555-201", "phone", "phone number dictated in groups (6 digits so far)", "dictation"),
        ("five five five", "phone", "phone number dictated in groups (3 digits so far)", "dictation"),
        ("My number is 555", "", "phone number dictated in groups (3 digits so far)", "dictation"),
        ("You can reach me at 5-5-5.", "", "phone number dictated in groups (3 digits so far)", "dictation"),
        ("My membership number is...", "", "a number is about to be dictated (ends in 'is')", "dictation"),
        ("4417", "number", "number being dictated (4 digits so far)", "dictation"),
        ("My number is 077. 9 double low", "", "phone number dictated in groups (5 digits so far)", "dictation"),
        ("The 4th of December", "date", "", ""),
        ("On the twenty-first of December", "date", "", ""),
        ("On December", "date", "date half said (ends in 'december')", "dictation"),
        ("My date of birth is the 4.", "", "date of birth half said (no month yet)", "dictation"),
        ("I was born on the fourth of March.", "", "date of birth half said (no year yet)", "dictation"),
        ("My membership number is B7", "", "number being dictated (1 digits so far)", "dictation"),
        ("The account code is 44 17", "", "number being dictated (4 digits so far)", "dictation"),
        # Complete sentences that are mostly openings: the caller goes on.
        ("Hi there.", "", "a greeting alone", "opening"),
        ("Hello?", "", "a greeting alone", "opening"),
        ("Yes, hello, good morning.", "", "a greeting alone", "opening"),
        ("Hi, this is Priya Shah.", "", "a greeting and an introduction alone", "opening"),
        ("Hiya, it's Tom.", "", "a greeting and an introduction alone", "opening"),
        ("My address is 42.", "", "a house number without its street", "opening"),
        ("We live at one hundred and twelve", "", "a house number without its street", "opening"),
        ("My booking reference is K.", "", "a code begun (1 character(s) so far)", "opening"),
        ("The postcode is S W", "", "a code begun (2 character(s) so far)", "opening"),
        ("The day I'd like is on December.", "", "a month without its day ('on december')", "opening"),
        ("The date I want is December.", "", "a month without its day ('is december')", "opening"),
        ("Could you tell me", "", "'tell me' needs what follows", "opening"),
        ("I was wondering.", "", "'wondering' needs what follows", "opening"),
        ("I'd like to ask", "", "'to ask' needs what follows", "opening"),
    ],
)
def test_unfinished_turns(text, asked, why, kind):
    assert words.unfinished(text, asked) == (why, kind)


@pytest.mark.parametrize(
    "text,asked",
    [("Book me for Thursday at eleven.", ""), ("I think so.", ""), ("Yes please.", ""), ("555 201 7788", "phone"), ("At 3 pm.", ""),
     ("What are your opening hours?", ""), ("Tomorrow at 10", "date"), ("", ""), ("My date of birth is the 4th of March 1982.", ""), ("Book a cleaning on Friday at 10 am.", ""),
     ("I was born on 4/3/1982", ""), ("I was born in March 1982.", ""), ("Is my birthday discount still valid?", ""),
     ("Yes.", "date"), ("Hi, I'd like to book a cleaning on Friday.", ""), ("Hello, my name is Sam and I need a check-up.", ""),
     ("My address is 42 Elm Street, Springfield.", ""), ("Can I come in December?", ""),
     ("I don't know.", ""), ("My name is John Smith.", ""), ("Can you tell me the opening hours?", "")],
)  # fmt: skip
def test_finished_turns(text, asked):
    assert words.unfinished(text, asked) == ("", "")


@pytest.mark.parametrize(
    "agent,asked",
    [
        ("Sure. What's the best phone number to reach you on?", "phone"),
        ("Could I have your card number, please?", "number"),
        ("And what's the postcode?", "number"),
        ("What day would suit you?", "date"),
        ("When would you like to come in?", "date"),
        ("Friday at ten is free. Shall I book that?", ""),
        ("Your number is noted.", ""),
    ],
)
def test_what_the_agent_asked_for(agent, asked):
    assert words.asked_for(agent) == asked


def test_few_words():
    assert words.few_words("BAM!", 3) and words.few_words("in the moment.", 3) and words.few_words("Thursday.", 1)
    assert not words.few_words("No.", 3) and not words.few_words("Wait, what?", 3) and not words.few_words("4561", 3)
    assert not words.few_words("I need a filling", 3) and not words.few_words("", 3)
    assert words.hearing("Thank you.") == "backchannel"


@pytest.mark.parametrize("text", ["For billing, press 2.", "Please enter your account number followed by the pound key.", "To reach the operator, dial zero.", "Select option three."])
def test_an_automated_menu_asks_for_keys(text):
    assert words.keypad_prompt(text)


@pytest.mark.parametrize("text", ["Thank you for calling Acme Dental Supplies.", "Hello, this is Pat.", "Please hold."])
def test_a_greeting_asks_for_no_keys(text):
    assert not words.keypad_prompt(text)


@pytest.mark.parametrize("text", ["M H M", "M. M. M.", "M. A. M. M. M. M.", "MM", "mm mm mm mm", "U H H U H", "and H. M. H. M. H. M", "And i'm i'm i'm i'm i'm i"])
def test_a_hum_spelled_out_by_the_recogniser_is_a_backchannel(text):
    assert words.hearing(text) == "backchannel"


@pytest.mark.parametrize("text", ["J O H N", "B. R. O. W. N.", "Hang on.", "Actually,", "Hello?"])
def test_spelling_and_floor_words_are_words(text):
    assert words.hearing(text) == "words"
    assert not words.few_words(text, 3) or len(words.tokens(text)) > 3 or not any(w in words.TAKE_FLOOR for w in words.tokens(text))


@pytest.mark.parametrize("text", ["Hang on.", "Actually,", "Hello?", "Hold on", "No no no"])
def test_floor_words_match_however_they_are_spelled(text):
    assert any(w in words.TAKE_FLOOR for w in words.tokens(text))


@pytest.mark.parametrize("text", ["No no no no.", "Wait, wait, wait, wait.", "I I I need to change it", "A B C D"])
def test_repeated_words_with_a_floor_word_or_real_words_stay_words(text):
    assert words.hearing(text) == "words"


def test_lone_hum_letters_do_not_count_as_words():
    assert words.few_words("and H and M.", 3) and words.word_count("and H and M.") == 2
    assert not words.few_words("book me in for Friday", 3)


def test_answering_the_phone_with_hello_ends_that_turn():
    """On a call Parley placed, the other end's "Hello?" is all it says before
    waiting for the caller: a greeting opens only a caller's turn."""
    assert words.unfinished("Hello?", "", greeting_opens=False) == ("", "")
    assert words.unfinished("Hello?", "")[1] == "opening"
    assert words.unfinished("My address is 42", "", greeting_opens=False)[1] == "opening"


@pytest.mark.parametrize("text", ["Emm...", "Em.", "Uhm.", "Ehm", "Hmmmmm!", "Hum.", "Hahahah.", "Heheh", "Em, em."])
def test_hums_and_laughs_are_sounds_by_their_form(text):
    assert words.hearing(text) == "sound"
    assert words.word_count(text) == 0


@pytest.mark.parametrize("text", ["Mm-hmm-hmm.", "Mmhmhm", "Hmhm.", "Hmhm, yeah."])
def test_an_agreeing_hum_in_any_spelling_is_a_backchannel(text):
    assert words.hearing(text) == "backchannel"


@pytest.mark.parametrize("text", ["Mum.", "Mom?", "Him.", "Home.", "Them.", "Me.", "Ham.", "Hm, what?", "Em, wait.", "Hmm, no."])
def test_words_near_a_hums_form_stay_words(text):
    assert words.hearing(text) == "words"


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a cleaning.", "I want to reschedule my check-up.", "I need to see somebody soon.",
        "I have to cancel tomorrow's cleaning.", "I was hoping to see the hygienist.", "I'm calling about my bill.",
        "Book me in for Friday.", "So, cancel my appointment.", "Are you open on Saturdays?", "What are your opening hours.",
        "Hi. Could you put me in for Tuesday.", "My tooth hurts. Can you see me today.", "Is it possible to come Monday.",
        "Yes, please.", "I was wondering whether you open late.",
    ],
)
def test_words_that_ask_for_something(text):
    assert words.requests(text) and not words.asks_nothing(text)


@pytest.mark.parametrize(
    "text",
    [
        "My appointment was on the third of March.", "It hurts when I drink something cold.", "I've chipped a front tooth.",
        "You can email me at tom dot barker.", "I have a question about my insurance.", "I'm a new patient.",
        "Thanks for picking up so quickly.", "Hi, thank you for calling me back.", "Well... let me have a think.",
        "I hope you're well.",
    ],
)
def test_words_that_ask_for_nothing(text):
    assert not words.requests(text) and words.asks_nothing(text)


@pytest.mark.parametrize("text", ["Thanks, bye!", "Yes.", "Okay.", "Mm-hmm.", "Hi there.", "", "(coughs)"])
def test_answers_goodbyes_greetings_and_sounds_neither_ask_nor_are_held_as_asking_nothing(text):
    assert not words.asks_nothing(text)
