"""What one caller utterance says: ``hear(text, today) -> Heard``.

A day and a time (``when``), and what the caller wants. Most wants are a
phrase list (``INTENTS``: one pattern per want, read as "any of these words");
the few that need their neighbours are plain code below it: an existing
appointment ("my appointment") is not a new booking, a reschedule names the
old day and the new one ("move my Friday appointment to Monday at 2"), and a
correction ("actually, make that 11") changes what was just arranged.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .when import GREETING_PHRASES, parse_date, parse_period, parse_time, weekday_clash
from .words import normalise


def _any(*phrases: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b")


INTENTS: dict[str, re.Pattern] = {
    "greeting": _any(r"hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening|day)", r"is this (?:the )?(?:dentist|dental|bright smile|clinic)"),
    "book": _any(
        r"appointments?|appt|book|booking|bookings|schedule|reserve|slot|check ?up|checkups?|clean|cleaning|visit",
        r"come in|come by|get in|see (?:the |a |my )?(?:dentist|doctor|hygienist|someone)|consultation|exam|examination",
        r"fit (?:me|us|him|her|them|my \w+) in|squeeze (?:me|us|him|her|them) in",
        r"filling|whitening|crown|extraction|braces|implant",
        r"register|registering|registration|new patients?|sign up|join (?:the|your) (?:practice|clinic|surgery)",
    ),
    # A new patient has no appointment to move or look up.
    "new_patient": _any(r"new patients?|register|registering|registration|never been (?:here|before|to you)|first (?:time|visit) (?:here|with you)"),
    # Verbs that ask for a new booking even next to "my appointment".
    "book_verb": _any(r"book|schedule|make|new|another|get|set up|arrange|reserve"),
    "pain": _any(r"pain|painful|hurts?|hurting|toothache|ache|aching|emergency|urgent|broken|broke|chipped|cracked|swollen|swelling|bleeding|sore|abscess"),
    "asap": _any(
        r"as soon as possible|asap|earliest|soonest|first available|first thing|next available|right away|straight away|urgent|emergency|anytime soon",
        # "how soon can you fit me in?", "when is your next free appointment?"
        r"how soon|how quickly|(?:next|first) (?:free|open|possible)(?: appointment| slot| time| opening)?|(?:next|first) (?:opening|slot|appointment) (?:you have|available)",
    ),
    "hours": _any(r"open|opening hours|opening times|hours|close|closing|shut"),
    "availability": _any(r"available|availability|free|openings?|what times?|which times?|when can|any time|anytime|what do you have|got anything|have anything"),
    "cancel": _any(
        r"cancel|cancell?ing|cancell?ation|call off|scrap|drop my",
        r"(?:can't|cant|cannot|can not|won't|wont|not|unable to)(?: be able to| going to)? (?:make|come|attend) (?:it|my|the|that|in|on|this|\w+day)",
    ),
    "reschedule": _any(
        r"reschedule|re schedule|rebook|re book|postpone|rearrange|push (?:it |that |my \w+ )?back|bring (?:it |that |my \w+ )?forward",
        # "move", but not a caller's own move: "I move here last month", "we're moving house".
        r"move(?! (?:here|there|house|home|away|abroad|out|in|into|from|over here)\b)|change (?:my|the|it|that)|switch|different (?:day|time)|another (?:day|time)",
    ),
    # A question about an existing booking ("when am I booked in?").
    "existing": _any(
        r"(?:my|our) (?:next |upcoming |current |existing )?(?:appointments?|bookings?|visit|check ?up|cleaning|slot)",
        r"am i (?:booked|scheduled|down|in)|i(?:'m| am) (?:booked|scheduled|down for)|have i (?:got|booked)|do i have an? (?:appointment|booking)",
        r"booked in|when do i (?:come|need to come)",
    ),
    "correction": _any(r"actually|make (?:that|it)|change (?:that|it) to|move (?:that|it) to|instead|rather|switch (?:that|it)|on second thought|can we do|could we do|let's do|lets do"),
    "another": _any(r"another|also|second|additional|one more|as well|too|for my (?:son|daughter|wife|husband|partner|kid|child|mum|mom|dad|mother|father|friend)"),
    "bye": _any(r"bye|goodbye|good bye|that's all|that is all|that's it|that is it|nothing else|no more|have a (?:good|nice|great) (?:day|one|evening)|see you|that'll be all|that will be all"),
    # "Can you say that again?": the caller missed the last reply.
    "repeat": _any(
        r"(?:say|repeat|read) (?:that|it|this|those|them|the \w+)(?: again| back)?|say again|come again|one more time|once more",
        r"pardon|what was that|what did you say|what was the last|didn't (?:catch|hear|get) (?:that|it|you|what you said|the \w+)|missed (?:that|it|what you said)",
        r"^(?:sorry|what|huh|eh)$",
    ),
    # "Okay, stop", "hang on": the caller holds the agent, to say something or to think; no answer yet.
    "halt": _any(r"stop|wait|hang on|hold on|hold up|one moment|one sec(?:ond)?|just a (?:moment|sec(?:ond)?|minute)|give me a (?:moment|sec(?:ond)?|minute)"),
    "thanks": _any(r"thanks|thank you|thank u|thx|cheers|appreciate it"),
    "yes": _any(
        r"yes|yeah|yea|yep|yup|ya|sure|ok|okay|alright|all right|fine|perfect|great|sounds good|that works|works for me",
        r"please do|go ahead|book it|book that|do it|that one|correct|absolutely|definitely|of course|lovely|excellent|brilliant|good|that's right",
    ),
    "no": _any(r"no|nope|nah|not|don't|dont|doesn't|doesnt|can't|cant|cannot|won't|wont|neither|rather not"),
}

# Requests the receptionist cannot serve itself: recorded for a call-back.
# (label, phrases); the first that matches names the topic.
CALLBACK_TOPICS: tuple[tuple[str, re.Pattern], ...] = (
    ("wants to speak to a person", _any(
        r"(?:speak|talk) (?:to|with) (?:a |an |the |your )?(?:real |actual )?(?:person|human|someone|somebody|receptionist|dentist|doctor|hygienist|manager|staff|nurse|reception|front desk|owner|people)",
        r"(?:real|actual) person|human being|operator",
    )),
    ("asked to be called back", _any(r"call me back|call back|callback|ring me back|get back to me|have someone call|someone call me|give me a call")),
    ("billing question", _any(r"bill|billing|invoice|payment|pay|charged|charge|refund|receipt")),
    ("insurance question", _any(r"insurance|insurer|insured|coverage|covered|medicaid|medicare")),
    ("prescription", _any(r"prescription|medication|medicine|antibiotics|painkillers|refill")),
    ("results or records", _any(r"results?|x ?rays?|records|referral|letter|report")),
    ("complaint", _any(r"complaint|complain|unhappy|not happy|disappointed|rude")),
    ("price question", _any(r"how much|cost|costs|price|prices|fee|fees|quote")),
)  # fmt: skip

_CHOICE = re.compile(r"\b(?:the )?(first|1st|second|2nd|third|3rd|last|earlier|earliest|later|latest)(?: one| option| slot| time| appointment| please)?\b")
_CHOICE_INDEX = {"first": 0, "1st": 0, "earlier": 0, "earliest": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "last": -1, "later": -1, "latest": -1}
REASONS: tuple[tuple[re.Pattern, str], ...] = (
    (_any(r"pain|painful|hurts?|hurting|toothache|ache|aching|abscess|swollen|swelling|sore"), "tooth pain"),
    (_any(r"broken|broke|chipped|cracked"), "broken tooth"),
    (_any(r"clean|cleaning|hygienist"), "cleaning"),
    (_any(r"check ?up|checkups?|exam|examination"), "check-up"),
    (_any(r"filling"), "filling"),
    (_any(r"whitening"), "whitening"),
    (_any(r"crown"), "crown"),
    (_any(r"extraction"), "extraction"),
    (_any(r"emergency|urgent"), "emergency"),
)

# ---------------------------------------------------------------------------
# Names

_NAME = re.compile(
    r"\b(?:my name is|my name's|the name is|name's|under the name(?: of)?|it's under|booked under|under|this is|it's|i am|i'm)\s+"
    r"([A-Za-z][A-Za-z'-]+(?:\s+[A-Za-z][A-Za-z'-]+)?)",
    re.I,
)
# Words that follow "this is"/"I'm" without being a name.
NOT_NAMES = frozenset(
    """a an the and or but i i'd i'm me my to for from in on at of about calling call ringing phoning here just looking speaking
    wondering trying hoping free available busy fine good great ok okay sorry not no yes so very really in pain hurting
    interested after going gonna want wanting need needing new patient with having dental dentist bright smile about
    still also actually urgent an emergency it this that there available tomorrow today monday tuesday wednesday
    thursday friday saturday sunday morning afternoon evening booked sure please um uh er hmm well name
    thanks thank hello hi hey bye goodbye right correct yeah yep nope under""".split()
)


def name_from(original: str) -> str:
    for m in _NAME.finditer(original):
        words = []
        for word in m.group(1).split():
            if word.lower() in NOT_NAMES:
                break
            words.append(word)
        lead = m.group(0).lower()
        # "This is"/"it's"/"I'm" are names only when capitalised, as Whisper
        # writes names: "This is Maria", not "this is urgent".
        if words and not lead.startswith(("my name", "the name", "name's")) and not words[0][0].isupper():
            continue
        if words:
            return " ".join(w.capitalize() for w in words)
    return ""


def bare_name(original: str) -> str:
    """An answer to "what name is it under?" that is only a name: "John
    Smith.", "Smith, John", "uh, it's Maria"."""
    named = name_from(original)
    if named:
        return named
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", original) if w.lower() not in ("um", "uh", "er", "it's", "its", "mister", "mr", "mrs", "ms", "miss", "doctor", "dr")]
    if 1 <= len(words) <= 3 and not any(w.lower() in NOT_NAMES for w in words):
        return " ".join(w.capitalize() for w in words)
    return ""


def phone_from(norm: str) -> str:
    """A phone number said as digits ("5 5 5 0 1 2 3 4 5 6"), or ""."""
    for run in re.findall(r"(?:\+?\d[\d ]*\d)", norm):
        digits = re.sub(r"\D", "", run)
        if 7 <= len(digits) <= 15:
            return ("+" if run.startswith("+") else "") + digits
    return ""


# ---------------------------------------------------------------------------
# One utterance


@dataclass(frozen=True)
class Heard:
    text: str = ""  # what the caller said, as written
    date: dt.date | None = None
    time: dt.time | None = None
    period: str = ""  # morning | afternoon | evening
    next_week: int = 0  # the week named without a day: 1 "next week", 2 "the week after next"
    # The existing appointment the caller refers to ("my Friday appointment").
    old_date: dt.date | None = None
    old_time: dt.time | None = None
    asap: bool = False
    book: bool = False
    pain: bool = False
    yes: bool = False
    no: bool = False
    bye: bool = False
    thanks: bool = False
    greeting: bool = False
    hours: bool = False
    availability: bool = False
    # A weekday and a day of the month that disagree: (the date of the day of the month, the nearest date on that weekday).
    clash: tuple[dt.date, dt.date] | None = None
    repeat: bool = False  # "sorry, can you say that again?"
    halt: bool = False  # "okay, stop", "hang on": no answer yet
    cancel: bool = False
    reschedule: bool = False
    existing: bool = False  # about an appointment the caller has ("my appointment")
    lookup: bool = False  # "when is my appointment?"
    correction: bool = False  # "actually, make that 11"
    another: bool = False  # "another one", "one for my son too"
    callback: str = ""  # the topic of a request for the front desk
    choice: int | None = None  # index among offered slots: 0, 1, 2, -1 (the last)
    name: str = ""
    reason: str = ""
    phone: str = ""

    @property
    def new_when(self) -> bool:
        return bool(self.date or self.time or self.period or self.asap or self.next_week)


_OLD_MARKER = re.compile(r"\b(?:appointments?|booking|one|visit|slot|check ?up|cleaning)\b")
_NEW_MARKER = re.compile(r"\b(?:to|till|until|for|into|onto|instead)\b")


def _when(norm: str, today: dt.date, in_next_week: int) -> tuple[dt.date | None, dt.time | None, str, int]:
    date, next_week, blanked = parse_date(norm, today, in_next_week)
    period = parse_period(norm)
    return date, parse_time(blanked, period), period, next_week


def _old_and_new(norm: str, today: dt.date, in_next_week: int) -> tuple[tuple, tuple]:
    """For a move: ((old date, old time), (new date, new time, period, next
    week)). "move my Friday appointment to Monday at 2": the words before a
    "to" (or "for", "instead"...) name the old one when they hold a day or time."""
    for m in reversed(list(_NEW_MARKER.finditer(norm))):
        left, right = norm[: m.start()], norm[m.end() :]
        old, new = _when(left, today, in_next_week), _when(right, today, in_next_week)
        if (new[0] or new[1] or new[2] or new[3]) and (old[0] or old[1]):
            return (old[0], old[1]), new
        if new[0] or new[1]:
            return (None, None), new
    date, time, period, next_week = _when(norm, today, in_next_week)
    if (date or time) and _said_as_old(norm, today, in_next_week):
        return (date, time), (None, None, "", False)
    return (None, None), (date, time, period, next_week)


def _said_as_old(norm: str, today: dt.date, in_next_week: int) -> bool:
    """"my Friday appointment", "the 10 o'clock one", "from Friday"."""
    for m in _OLD_MARKER.finditer(norm):
        before = " ".join(norm[: m.start()].split()[-3:])
        if any(_when(before, today, in_next_week)[:2]):
            return True
    _, sep, after = norm.partition(" from ")
    return bool(sep) and any(_when(after, today, in_next_week)[:2])


# long: the receptionist's reading of one utterance: each concern (time, day, name, yes/no, intent) is a call into its own module; this is their order
def hear(text: str, today: dt.date, in_next_week: int = 0) -> Heard:
    """What one caller utterance says. Never raises."""
    norm = normalise(text)
    plain = GREETING_PHRASES.sub(" ", norm)  # "good morning" is not a "good"
    said = {name: bool(rx.search(plain if name == "yes" else norm)) for name, rx in INTENTS.items()}
    cancel = said["cancel"]
    reschedule = said["reschedule"] and not cancel and not said["new_patient"]
    existing = said["existing"] and not said["book_verb"] and not said["new_patient"]
    if reschedule or cancel:
        (old_date, old_time), (date, time, period, next_week) = _old_and_new(norm, today, in_next_week)
        if cancel:  # every day named is the one to cancel
            old_date, old_time, date, time, period, next_week = date or old_date, time or old_time, None, None, "", 0
    else:
        date, time, period, next_week = _when(norm, today, in_next_week)
        old_date = old_time = None
    words = norm.split()
    choice = None
    m = _CHOICE.search(norm)
    if m and (len(words) <= 4 or m.group(0).endswith(("one", "option", "slot", "appointment"))):
        choice = _CHOICE_INDEX[m.group(1)]
    callback = next((label for label, rx in CALLBACK_TOPICS if rx.search(norm)), "")
    return Heard(
        text=text.strip(),
        date=date,
        time=time,
        period=period if not time else "",
        next_week=0 if date else next_week,
        old_date=old_date,
        old_time=old_time,
        asap=said["asap"],
        book=said["book"] and not existing and not cancel and not reschedule,
        pain=said["pain"],
        yes=said["yes"] and not said["no"] and not said["halt"],  # "okay, stop" is no yes
        no=said["no"] and not re.search(r"\bno problem\b", norm),
        bye=said["bye"],
        thanks=said["thanks"],
        greeting=said["greeting"],
        hours=said["hours"],
        availability=said["availability"],
        repeat=said["repeat"] and len(words) <= 10,
        halt=said["halt"],
        clash=clash if date is not None and (clash := weekday_clash(norm, today)) and clash[0] == date else None,
        cancel=cancel,
        reschedule=reschedule,
        existing=existing,
        lookup=existing and not cancel and not reschedule,
        correction=said["correction"],
        another=said["another"],
        callback=callback,
        choice=choice,
        name=name_from(text),
        reason=next((label for rx, label in REASONS if rx.search(norm)), ""),
        phone=phone_from(norm),
    )
