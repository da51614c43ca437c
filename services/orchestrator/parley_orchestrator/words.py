"""What the caller's words say about the floor, for the reducer's judgements.

Pure functions over transcript text, like ``chunking.py``: no state, no
thresholds (those are the reducer's policy). Two questions:

* While the agent speaks, is this a *sound* (empty, "(coughs)", "[laughter]",
  "ah"), a *backchannel* ("mm-hmm", "uh huh", "yeah", "okay", "I see"), or
  *words* that take the floor ("wait", "no", "sorry, I need to...")?
  ``hearing(text)``.
* When the caller pauses, does the text say the turn is unfinished: a clause
  that ends in "to", "and", "the", "um"; digits dictated in groups after the
  agent asked for a number; a date half said? ``unfinished(text, asked)``.

Matching is on normalised tokens: lower case, punctuation dropped, a hyphen
joins ("uh-huh" is "uhhuh"), and letters repeated for length are folded
("mmmm", "hmmm", "yeahhh"), so spelling variants of one sound meet.
"""

from __future__ import annotations

import re

_TAGS = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|<[^>]*>|♪+")
_TOKEN = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def _fold(token: str) -> str:
    """One spelling per sound: hyphens join, runs of one letter collapse."""
    token = token.replace("-", "").strip("'")
    return re.sub(r"([a-z])\1+", r"\1", token)


def tokens(text: str) -> list[str]:
    """Normalised words of ``text``, sound tags ("(coughs)") removed."""
    return [t for t in (_fold(m) for m in _TOKEN.findall(_TAGS.sub(" ", text.lower()))) if t]


def _phrases(*items: str) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(_fold(t) for t in item.split()) for item in items)


# Sounds that carry no words: hesitations, reactions, laughter.
NON_LEXICAL = _phrases(
    "ah", "ahh", "aah", "oh", "ooh", "uh", "um", "umm", "er", "erm", "eh", "hm", "hmm", "huh",
    "ha", "haha", "hahaha", "heh", "hehe", "ahem", "phew", "whoa", "ow", "ouch", "pfft", "tsk", "psst",
)  # fmt: skip
# Listening noises and acknowledgements: the caller lets the agent go on.
BACKCHANNELS = _phrases(
    "mm-hmm", "mhm", "mmhmm", "mm hmm", "mm", "mmm", "uh-huh", "uh huh", "uhhuh", "um-hum", "uh hum",
    "yeah", "yea", "yes", "yep", "yup", "ya", "right", "alright", "all right", "okay", "ok", "k",
    "sure", "i see", "got it", "gotcha", "i know", "true", "exactly", "cool", "great", "wow", "oh okay",
    "oh right", "oh i see", "ah okay", "ah i see", "uh okay", "fine", "good", "nice", "of course",
    "thank you", "thanks", "thank you very much", "perfect", "lovely", "awesome",
)  # fmt: skip
# Single words that take the floor however short they are; any other lone
# word in a very short sound is more likely a noise the recogniser turned
# into a word (Whisper hears "BAM!" in a hum). See ``lone_word``.
TAKE_FLOOR = frozenset(
    _fold(w)  # folded like the tokens they meet ("actually" is "actualy")
    for w in """no nope nah wait stop sorry hey hello what pardon excuse actually but cancel help
    repeat again operator human person agent hold hang""".split()
)
# Of those, the ones that also answer a yes/no question ("Shall I book that?").
ANSWERS = _phrases(
    "yeah", "yea", "yes", "yep", "yup", "ya", "right", "alright", "all right", "okay", "ok", "k",
    "sure", "of course", "fine", "good", "great", "cool", "mm-hmm", "mhm", "mmhmm", "mm hmm", "uh-huh",
    "uh huh", "uhhuh", "exactly", "true", "oh okay", "ah okay", "uh okay",
)  # fmt: skip

_ALL = NON_LEXICAL | BACKCHANNELS
_LONGEST = max(len(p) for p in _ALL)


def few_words(text: str, most: int) -> bool:
    """At most ``most`` words, none of which takes the floor by itself (nor a
    number): what a recogniser makes of a hum ("BAM!", "in the moment")."""
    ws = tokens(text)
    # Lone hum letters ("and H and M") are no words: they do not count.
    return 0 < len(ws) and word_count(text) <= most and not any(w in TAKE_FLOOR or w.isdigit() for w in ws)


def word_count(text: str) -> int:
    """Words in ``text``, lone hum letters (what a recogniser spells out for a hum) and hums not counted."""
    return sum(1 for w in tokens(text) if not (len(w) == 1 and w in _HUM_LETTERS and w != "a") and not hum(w))


# A hum or a laugh by its form, however the recogniser spelled it (folded:
# "Hmmm" is "hm", "Emm" "em", "mm-hmm-hmm" "mhmhm", "uhm", "ehm", "hahahah"):
# a closed mouth's m, with h between the beats and at most one e/u vowel
# before the first, or two or more h-vowel beats. Whisper writes hums in
# spellings no list can hold ("Mmmmm", "Emm", "Hmhm"); a word of that form
# ("hum", "hem") is a hum too, and "mum", "him", "home" are not of it.
_HUM_FORM = re.compile(r"h?[eu]?h?m(?:h?m)*h?|(?:h[aei]){2,}h?")


def hum(token: str) -> bool:
    """Whether a normalised token (``tokens``) is a hum or a laugh by its form."""
    return token not in TAKE_FLOOR and _HUM_FORM.fullmatch(token) is not None


def _phrases_of(words: list[str]) -> list[tuple[str, ...]] | None:
    """``words`` as a sequence of known sounds and backchannels (longest
    match first), or None if any word is neither."""
    out, i = [], 0
    while i < len(words):
        if hum(words[i]) and (words[i],) not in _ALL:
            out.append(("mhm",) if "mhm" in words[i] else ("hm",))  # spelled some other way: "mm-hmm-hmm" agrees, "hmmm" is a sound
            i += 1
            continue
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            if tuple(words[i : i + n]) in _ALL:
                out.append(tuple(words[i : i + n]))
                i += n
                break
        else:
            return None
    return out


# What a recogniser spells out when it hears a hum and no word.
_HUM_LETTERS = frozenset("mhnuaeo")


def _degenerate(said: list[str]) -> bool:
    """What Whisper writes for a hum, not words: mostly lone hum letters
    ("M. A. M.", "and H. M. H. M"), or one or two tokens looped ("i'm i'm
    i'm i'm"). Never when a word that takes the floor is there ("no no no")."""
    if len(said) < 2 or any(w in TAKE_FLOOR for w in said):
        return False
    letters = [w for w in said if len(w) == 1]
    if len(letters) >= 2 and len(letters) >= 0.6 * len(said) and set(letters) <= _HUM_LETTERS:
        return True
    return len(said) >= 4 and len(set(said)) <= 0.5 * len(said)


def looped(text: str) -> bool:
    """Whether ``text`` is what a recogniser writes when it hears no word:
    lone hum letters or a token looped ("Say, say, say, say, say." for a fast
    "Hey, hey." through the phone). ``hearing`` calls it a backchannel; it is
    no evidence of which words were said."""
    return _degenerate(tokens(text))


def _letters_joined(words: list[str]) -> list[str]:
    """Runs of lone letters as one word: a recogniser spells a hum out
    ("M H M", "M. M. M.") where it hears no word."""
    out: list[str] = []
    for w in words:
        if len(w) == 1 and w not in ("a", "i") and out and out[-1].isalpha() and len(out[-1]) < 4:
            out[-1] = _fold(out[-1] + w)
        else:
            out.append(w)
    return out


def hearing(text: str, asked: bool = False) -> str:
    """"sound", "backchannel", "answer" (a backchannel that answers the
    question the agent asked: ``asked``) or "words"."""
    said = tokens(text)
    phrases = _phrases_of(said)
    if phrases is None and _degenerate(said):
        return "backchannel"  # a hum spelled out or looped: "M. A. M. M.", "and H. M. H. M", "i'm i'm i'm i'm"
    if phrases is None and any(len(w) == 1 for w in said):
        phrases = _phrases_of(_letters_joined(said))
    if phrases is None:
        return "words"
    if not any(p in BACKCHANNELS for p in phrases):
        return "sound"
    if asked and any(p in ANSWERS for p in phrases):
        return "answer"
    return "backchannel"


def answer_first(text: str) -> bool:
    """Whether ``text`` opens with a word that answers a yes/no question
    ("Yes, please.", "Sure, go ahead.", "Okay, book it."): said over such a
    question, the rest goes with the answer."""
    said = tokens(text)
    return any(tuple(said[:n]) in ANSWERS for n in range(1, min(len(said), _LONGEST) + 1))


# A clause that ends in one of these is not finished ...
TRAILING = frozenset(
    """a an the to and or but because cause if than with without for from of at into onto as
    my your our their his her its some any um uh er erm i i'm i'd i'll we we're let's
    is are was were am be been like""".split()
)
# ... and one that ends in one of these usually is not ("come in on", "around"),
# but may be ("can I come in"): a text signal that says complete wins.
TRAILING_WEAK = frozenset("on in around about until till between next by".split())
_DIGIT_WORDS = {"zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "double", "triple"}
_MONTHS = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip
_ORDINAL = re.compile(r"\d+(st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\w+teenth|\w*tieth|\w+-?(first|second|third)")
_PHONE_ASK = re.compile(r"\b(phone|number|mobile|cell|contact)\b")
_PHONE_SAY = re.compile(r"\b(phone|number|mobile|cell|reach me|call me|text me|contact me)\b")
_NUMBER_ASK = re.compile(r"\b(digits?|code|zip|postcode|account|card|reference|membership|policy|insurance id|date of birth)\b")
_DATE_ASK = re.compile(r"\b(date|day|when|birthday|born)\b")
# A date of birth is whole only with its day, month and year. A number the
# caller announces ("my membership number is") is dictated until it ends.
_BIRTH = re.compile(r"\b(date of birth|birth ?date|birthday|born|dob|d o b)\b")
_YEAR = re.compile(r"(1[89]|20)\d\d")
_NUMBER_SAY = re.compile(r"\b(digits?|code|zip|postcode|account|card|reference|membership|policy|insurance id|booking number|order number)\b")


def asked_for(agent_text: str) -> str:
    """What the agent's last words asked the caller to dictate: "phone",
    "number", "date", or ""."""
    text = agent_text.lower()
    if "?" not in text and not re.search(r"\b(tell me|give me|say|spell|read)\b", text):
        return ""
    if _NUMBER_ASK.search(text):
        return "number"
    if _PHONE_ASK.search(text):
        return "phone"
    if _DATE_ASK.search(text):
        return "date"
    return ""


def _has_digit(word: str) -> bool:
    return any(c.isdigit() for c in word)  # "4", "b7": a code's groups


def _digits(words: list[str]) -> int:
    count = 0
    for w in words:
        if _has_digit(w):
            count += sum(c.isdigit() for c in w)
        elif w in _DIGIT_WORDS:
            count += 1
    return count


def _birth_date_missing(words: list[str], said: str) -> str:
    """After "my date of birth is" (or "I was born on") and the first part of
    the date: the part still missing ("month", "year"), or ""."""
    m = _BIRTH.search(said)
    if not m:
        return ""
    after = said[m.end() :].split()
    years = [w for w in after if _YEAR.fullmatch(w)]
    days = [w for w in after if (w.isdigit() and w not in years) or _ORDINAL.fullmatch(w)]
    months = [w for w in after if w in _MONTHS]
    if not (years or days or months):
        return ""  # not begun: "my date of birth is" is unfinished anyway
    if not months and len(days) < 2:  # "4 3 1982" (from 4/3/1982) has its month
        return "month"
    return "" if years else "year"


def unfinished(text: str, asked: str = "", greeting_opens: bool = True) -> tuple[str, str]:
    """Why ``text`` is not a finished turn, and how sure that is: ("", "")
    when nothing says so; otherwise (reason, kind) with kind "dictation" (a
    number or date being said in groups: the longest wait), "clause" (it
    ends in a word that needs more), "maybe" (a word that usually needs
    more: a text signal may overrule it) or "opening" (it reads complete,
    but as the opening callers go on from: ``opening``). ``asked``: what
    the agent asked for (``asked_for``); ``greeting_opens``: a greeting
    alone opens a turn (a caller's; not someone answering the phone)."""
    raw = text.rstrip()
    words = tokens(raw)
    if not words:
        return "", ""
    last, said = words[-1], " ".join(words)
    number_talk = asked in ("phone", "number") or _PHONE_SAY.search(said) or _NUMBER_ASK.search(said)
    birth = _birth_date_missing(words, said)
    if birth:
        return f"date of birth half said (no {birth} yet)", "dictation"
    if any(_has_digit(w) or w in _DIGIT_WORDS - {"o", "oh"} for w in words[-3:]):
        n = _digits(words)
        if asked == "number" or (asked != "phone" and _NUMBER_SAY.search(said)):
            return f"number being dictated ({n} digits so far)", "dictation"
        if (asked == "phone" or _PHONE_SAY.search(said)) and n < 10:
            return f"phone number dictated in groups ({n} digits so far)", "dictation"
    if last in ("am", "pm") and len(words) > 1 and _has_digit(words[-2]):
        return "", ""  # "at 10 am": a time, not "I am"
    if last in TRAILING:
        if number_talk and last in ("is", "at", "on", "to"):
            return f"a number is about to be dictated (ends in '{last}')", "dictation"
        return f"ends in '{last}'", "clause"
    if last in _MONTHS and asked == "date" and not any(_ORDINAL.fullmatch(w) or w.isdigit() for w in words):
        return f"date half said (ends in '{last}')", "dictation"
    if raw.endswith((",", "-", "...", "…")):
        return "trails off", "clause"
    if last in TRAILING_WEAK:
        return f"may end in '{last}'", "maybe"
    why = opening(words, asked, greeting_opens)
    return (why, "opening") if why else ("", "")


# Greetings and introductions: what a caller says before the request.
# (Vocabulary is folded like the tokens it meets: "hello" is "helo".)
_GREETING = frozenset(_fold(w) for w in "hi hello hey hiya morning afternoon evening".split())
_GREETING_FILLER = frozenset(_fold(w) for w in "there good yes yeah yep oh um uh er erm so well okay ok right and".split()) | _GREETING
_INTRO = tuple(tuple(_fold(w) for w in p.split()) for p in ("this is", "it's", "its", "it is", "my name is", "i'm", "i am"))
# Number words, as a recogniser may write a house number ("forty-two" is "fortytwo").
_NUMBER_WORD = re.compile(r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|and)+")


def _folded_re(*phrases: str) -> str:
    return "|".join(" ".join(_fold(w) for w in p.split()) for p in phrases)


# The slot named, then its value: a value shorter than the slot needs is
# only its start ("my address is 42" + "Elm Street"; "the reference is K" + "4 7").
_ADDRESS = re.compile(rf"\b({_folded_re('address', 'i live at', 'we live at', 'she lives at', 'he lives at', 'located at')})\b")
_SLOT_IS = re.compile(
    rf"\b({_folded_re('digits', 'digit', 'code', 'zip', 'postcode', 'account', 'card', 'reference', 'membership', 'policy', 'number', 'id')})"
    r"\b( number)? (is|was|it's)\b"
)
# A verb whose complement is still to come ("could you tell me ... if", "I was wondering ... whether").
_NEEDS_COMPLEMENT = tuple((p, tuple(_fold(w) for w in p.split())) for p in ("tell me", "tell us", "let me know", "wondering", "wonder", "to ask", "to know", "ask you"))


def _greeting_alone(words: list[str]) -> str:
    """"Hi there.", "Hello, good morning, this is Sam.": a greeting, maybe
    with a short introduction, and nothing else."""
    if not (words[0] in _GREETING or (len(words) > 1 and words[1] in _GREETING and words[0] in _GREETING_FILLER)):
        return ""
    rest = list(words)
    while rest and rest[0] in _GREETING_FILLER:
        rest.pop(0)
    if not rest:
        return "a greeting alone"
    for intro in _INTRO:
        if tuple(rest[: len(intro)]) == intro and 0 < len(rest) - len(intro) <= 2:
            return "a greeting and an introduction alone"
    return ""


def opening(words: list[str], asked: str = "", greeting_opens: bool = True) -> str:
    """Why the words, which read like a finished sentence, are probably only
    the opening of the caller's turn (a pause, then the rest), or "":

    * a greeting or an introduction alone ("Hi there.", "Hi, this is Sam.");
    * a value shorter than the slot it fills: a house number with no street
      after "my address is", one to three characters after "the reference
      is", a month with no day after "is" or "on" ("the date is December");
    * a verb that needs its complement at the end ("Could you tell me",
      "I was wondering").

    Each is what people say before a pause as often as at the end of a turn,
    so the agent waits longer, not as long as for an unfinished clause."""
    if not words:
        return ""
    said = " ".join(words)
    greeting = _greeting_alone(words) if greeting_opens else ""
    if greeting:
        return greeting
    address = _ADDRESS.search(said)
    if address:
        after = said[address.end():].split()
        if after and after[0] in ("is", "at", "s"):
            after = after[1:]
        if after and all(_has_digit(w) or _NUMBER_WORD.fullmatch(w) for w in after):
            return "a house number without its street"
    slot = None
    for slot in _SLOT_IS.finditer(said):
        pass
    if slot is not None and asked != "phone":
        after = said[slot.end():].split()
        if after and len("".join(after)) <= 3 and all(len(w) <= 2 for w in after):
            return f"a code begun ({len(''.join(after))} character(s) so far)"
    if words[-1] in _MONTHS and len(words) > 1 and words[-2] in ("is", "on") and not any(_ORDINAL.fullmatch(w) or w.isdigit() for w in words):
        return f"a month without its day ('{words[-2]} {words[-1]}')"
    for phrase, verb in _NEEDS_COMPLEMENT:
        if tuple(words[-len(verb):]) == verb:
            return f"'{phrase}' needs what follows"
    return ""


# Words a whole short turn starts with: an answer or a goodbye ("Yes, book
# it.", "No, that's too early.", "Thanks, bye.").
_WHOLE_START = frozenset(_fold(w) for w in "yes yeah yep yup no nope nah okay ok sure right thanks thank bye goodbye".split())
_SENTENCE_CLOSED = re.compile(r"[.!?][\"')\]]*$")


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")  # a close, then a capital
_ABBREVIATION = re.compile(r"(?:\b(?:dr|mr|mrs|ms|st|mt|no|vs|jr|sr)|\b[a-z]\.[a-z])\.$", re.IGNORECASE)  # "Dr. Smith", "10 a.m. Friday"


def _sentences(raw: str) -> list[str]:
    out: list[str] = []
    for part in _SENTENCE_END.split(raw):
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


_TOKEN_ANY_CASE = re.compile(_TOKEN.pattern, re.IGNORECASE)


def last_sentence(text: str) -> str:
    """The last sentence the recogniser wrote (its last one with words), and
    without a greeting in front ("Hi, yes, I was wondering it." is "I was
    wondering it."): a turn's first words may be a greeting or a whole
    sentence, and what the caller may go on from is what came last."""
    raw = _TAGS.sub(" ", text).strip()
    last = next((part for part in reversed(_sentences(raw)) if tokens(part)), "")
    said = tokens(last)
    if said and (said[0] in _GREETING or (len(said) > 1 and said[1] in _GREETING and said[0] in _GREETING_FILLER)):
        lead = 0
        while lead < len(said) and said[lead] in _GREETING_FILLER:
            lead += 1
        if lead == len(said):
            return ""  # a greeting alone: ``opening``'s case
        for _ in range(lead):  # cut the raw text after the greeting's last word
            last = _TOKEN_ANY_CASE.split(last, 1)[1].lstrip(" ,;:-")
    return last.strip()


def whole_by_form(text: str) -> bool:
    """Whether the turn's last sentence (``last_sentence``) is whole by its
    form however short: an answer, a goodbye or a backchannel ("Yes,
    please.", "Nope.", "Bye!", "Mm-hmm."), or no words at all."""
    raw = last_sentence(text)
    said = tokens(raw)
    return not said or said[0] in _WHOLE_START or hearing(raw) != "words"


# A sentence that opens with one of these asks (Whisper does not always write
# the "?": "What are your opening hours.", "When your earliest appointment.").
_ASKS = frozenset(
    _fold(w)
    for w in """what what's whats when when's whens where where's which who who's whom whose why how how's
    do does did don't doesn't didn't can can't could couldn't would wouldn't will won't is isn't are aren't
    am was wasn't were weren't have haven't has hasn't had should shall may might must any anything""".split()
)


_LEAD_FILLER = frozenset(_fold(w) for w in "so um uh er erm well and oh also but then".split())


def statement(text: str) -> bool:
    """Whether the turn's last sentence (``last_sentence``) states or asks
    for something by saying it ("I'd like to come on the 21st.", "I need to
    cancel.", "Put me down for ten thirty."), rather than asking a question
    (a "?", or a question word or an auxiliary first) or being whole by its
    form (an answer, a goodbye, a backchannel). A caller's turn that starts
    with a statement often goes on: the statement sets up the request ("I
    have a question about my insurance. ... Do you take Delta Dental?")."""
    raw = last_sentence(text)
    said = tokens(raw)
    lead = next((i for i, w in enumerate(said) if w not in _LEAD_FILLER), len(said))  # "So, um, what time ...": asks
    return lead < len(said) and not raw.rstrip("\"') ").endswith("?") and said[lead] not in _ASKS and not whole_by_form(text)


# What makes words a request: a want or a need said ("I'd like", "I need
# to", "I have to", "I'm hoping to"), the reason for the call ("I'm calling
# about", "ringing to"), a "please", a "can you" / "could I" anywhere (Whisper
# drops a question's "?" and capital), or an order ("Book me in for ...").
_WANT = frozenset(_fold(w) for w in "want wants wanted wanting wanna need needs needed needing hoping gotta please pls".split())
_WANT_PAIRS = frozenset(
    tuple(_fold(w) for w in p.split())
    for p in """i'd like|id like|we'd like|would like|i'd love|would love|have to|has to|had to|got to|looking to|looking for
    trying to|calling to|calling about|calling for|calling regarding|calling because|ringing to|ringing about|ringing for
    phoning to|phoning about|can you|could you|would you|will you|can i|could i|may i|can we|could we|i wonder|wondering if
    wondering whether|wondering about|let me know|is it possible|any chance""".replace("\n", "|").split("|")
    if p.strip()
)
_ORDER = frozenset(_fold(w) for w in """book cancel move reschedule change check tell give send put make help call get sign add
    squeeze fit confirm schedule arrange find""".split())


def _asks(sentence: str) -> bool:
    """Whether one sentence is a question by its form: a "?", or a question
    word or an auxiliary first after fillers ("So, um, do you ...")."""
    said = tokens(sentence)
    lead = next((i for i, w in enumerate(said) if w not in _LEAD_FILLER and w not in _GREETING_FILLER), len(said))
    return sentence.rstrip("\"') ").endswith("?") or (lead < len(said) and said[lead] in _ASKS)


def requests(text: str) -> bool:
    """Whether the caller's words ask the agent for anything: a question (in
    any sentence, by its form), a want or a need said, the reason for the
    call, or an order. "My crown came loose." or "I have a question about my
    insurance." or "Thanks for picking up." ask for nothing yet: a caller who
    has asked for nothing has not given the agent anything to answer."""
    raw = _TAGS.sub(" ", text).strip()
    said = tokens(raw)
    if any(w in _WANT for w in said) or any(tuple(said[i : i + n]) in _WANT_PAIRS for n in (2, 3) for i in range(len(said))):
        return True
    for sentence in _sentences(raw):
        if not tokens(sentence):
            continue
        if _asks(sentence):
            return True
        first = [w for w in tokens(sentence) if w not in _LEAD_FILLER and w not in _GREETING_FILLER]
        if first and first[0] in _ORDER:
            return True
    return False


_GOODBYE = frozenset(_fold(w) for w in "bye goodbye byebye cheerio".split())


def thanks(text: str) -> bool:
    """Whether the turn's last sentence is a thanks ("Thanks for picking up so
    quickly.", "Hi, thank you for calling me back."), with no goodbye in the
    turn ("Thanks, bye!" ends a call)."""
    said = tokens(last_sentence(text))
    lead = next((i for i, w in enumerate(said) if w not in _LEAD_FILLER and w not in _GREETING_FILLER), len(said))
    return lead < len(said) and said[lead] in ("thanks", "thank", "cheers") and not _GOODBYE & set(tokens(text))


def asks_nothing(text: str) -> bool:
    """Whether the turn states something (``statement``) or thanks, and asks
    for nothing anywhere in it (``requests``): what a caller says before the
    request ("My appointment was on the third of March.", "It hurts when I
    drink something cold.", "Thanks for picking up so quickly."), not an
    answer, a goodbye, a backchannel or a question."""
    return bool(tokens(text)) and not requests(text) and (statement(text) or thanks(text))


# Questions a "yes" or an "okay" does not answer: they ask which, what, when...
# ("Which time suits you?"); "what about ...?" and "how about ...?" propose.
_WH = frozenset(_fold(w) for w in "what what's whats which when when's where where's who who's whom whose why how how's".split())


def yes_no_question(question: str) -> bool:
    """Whether a question the agent asks is one a yes, an okay or an mm-hmm
    answers ("Shall I book that?", "Would you like 9 a.m.?", "How about
    Tuesday?"), not one that asks for something else ("Which time suits
    you?", "What's your name?"). Judged on its first word after fillers."""
    said = tokens(question)
    lead = next((i for i, w in enumerate(said) if w not in _LEAD_FILLER and w not in ("okay", "ok", "right", "great", "so")), len(said))
    if lead == len(said) or said[lead] not in _WH:
        return True
    return said[lead : lead + 2] in (["what", "about"], ["how", "about"])


# The agent's invitations to talk that leave the caller's turn open ("How can
# I help?", "Is there anything else I can help with?"): what follows is not a
# short answer to them.
_OPEN_PROMPT = re.compile(r"\b(help|assist|anything else|do for you|can i do|what brings you)\b")


def asks_for_an_answer(agent_text: str) -> bool:
    """Whether the agent's last words end with a question that a caller
    answers (a choice, a yes/no, a detail: "Which time suits you?", "Shall
    I book that?"), not an open invitation to talk ("How can I help?")."""
    sentences = [part for part in _sentences(_TAGS.sub(" ", agent_text).strip()) if tokens(part)]
    last = sentences[-1].rstrip("\"') ") if sentences else ""
    return last.endswith("?") and not _OPEN_PROMPT.search(last.lower())


def may_go_on(text: str, most: int) -> str:
    """Why a caller's first words, which read complete, may still be only
    the start of the turn, or "". Judged on the turn's last sentence without
    a greeting in front (``last_sentence``: "Hi, yes. I was wondering it."):
    at most ``most`` words ("I'd like to earn", a fragment Whisper
    finished), or no sentence end written after them (the recogniser heard
    no close: "I'm looking to both"). Not a question (a "?" closes it), nor
    an answer, a goodbye or a backchannel ("Yes, please.", "Nope.", "Bye!",
    "Mm-hmm."): those are whole turns however short."""
    raw = last_sentence(text)
    said = tokens(raw)
    if raw.endswith("?") or whole_by_form(text):
        return ""
    count = sum(1 for w in said if (w,) not in NON_LEXICAL)  # "Um, I'm looking to vote.": a hesitation is no word
    if count <= most:
        return f"only {count} word(s)" + (" in its last sentence" if tokens(text) != said else "")
    if not _SENTENCE_CLOSED.search(raw):
        return "no sentence end heard"
    return ""


# An automated line reading out its menu: "for billing, press 2", "dial 0
# for the operator", "please enter your account number".
_KEYPAD_PROMPT = re.compile(r"\b(press|dial|enter|push|select|option|key in|touch tone)\b")


def keypad_prompt(text: str) -> bool:
    """Whether ``text`` asks for keys (an IVR menu or prompt)."""
    return bool(_KEYPAD_PROMPT.search(_TAGS.sub(" ", text.lower())))
