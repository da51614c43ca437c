"""Which session parameters a caller's side may set, and within what ranges.

A session's parameters reach the orchestrator in ``SessionStarted.params``
and override the deployment's policy (``reducer.Policy``) for that call.
Whoever can open a session can send them: a browser URL, a WebRTC offer, a
backend minting a token (``POST /api/sessions``), a Twilio webhook URL, an
outbound call request. So the catalogue below is the complete list of
what any of them may set, each with its type and its widest range; the
deployment narrows it with ``PARLEY_SESSION_PARAMS`` (the gateway enforces
it at every entry point, with an explicit error naming the parameter).

What a session may NEVER set is simply absent: the system prompt, the tools,
the limits that bound a call's cost (``max_call``, ``max_tool_steps``,
timeouts), where calls are transferred and the consent text. They come from
the orchestrator's configuration (``PARLEY_POLICY_<FIELD>``,
``PARLEY_TRANSFER_TO``...), never from a URL. The orchestrator drops any
other key it is sent (``RESERVED`` aside), counted and logged, in case a
gateway of another release lets one through.

``PARLEY_SESSION_PARAMS``:

* unset or ``all``: the whole catalogue, at its own ranges;
* ``none``: no parameters at all;
* a comma list of names, each optionally narrowed, e.g.
  ``greeting=..120,reprompt_after=5..30,preemptive``: numbers take
  ``low..high``, text its length ``..max``, either bound may be left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Mapping

ENV = "PARLEY_SESSION_PARAMS"


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # str, float, int or bool
    low: float = 0.0  # numbers: the smallest value; text: the shortest
    high: float = 0.0  # numbers: the largest value; text: the longest
    doc: str = ""
    pattern: str = ""  # text: a regular expression the whole value must match
    blank_ok: bool = True  # text: may be only spaces (False: the agent would say nothing)

    def parse(self, raw: str) -> str:
        """The value as given, once it is valid; ValueError saying what is wrong."""
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        if self.kind is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                return raw
            raise ValueError(f"must be true or false, not {raw[:40]!r}")
        if self.kind in (int, float):
            try:
                value = int(raw) if self.kind is int else float(raw)
            except ValueError:
                raise ValueError(f"must be a {'whole ' if self.kind is int else ''}number, not {raw[:40]!r}") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"must be a finite number, not {raw[:40]!r}")
            if not self.low <= value <= self.high:
                raise ValueError(f"must be from {_num(self.low)} to {_num(self.high)}, not {raw[:40]!r}")
            return raw
        if not self.low <= len(raw) <= self.high:
            raise ValueError(f"must be {int(self.low)} to {int(self.high)} characters long, not {len(raw)}")
        if any(ord(c) < 32 and c not in "\t" for c in raw):
            raise ValueError("must not hold control characters")
        if not self.blank_ok and not raw.strip():
            raise ValueError("must say something (not only spaces)")
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise ValueError(f"must match {self.pattern}")
        return raw

    def describe(self) -> str:
        if self.kind is bool:
            return f"{self.name} (true/false)"
        if self.kind is str:
            return f"{self.name} (text, {int(self.low)}..{int(self.high)} chars)"
        return f"{self.name} ({self.kind.__name__} {_num(self.low)}..{_num(self.high)})"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_TEXT = 300
# Keypad groups, comma separated: each 1 to 32 of 0-9 * # w (w a half-second
# pause), with at least one key that is not a pause; or nothing.
_GROUP = r"(?=[0-9*#w]{1,32}(?:,|$))w*[0-9*#][0-9*#w]*"
_IVR = rf"(?:{_GROUP}(?:,{_GROUP})*)?"
_LABEL = r"[A-Za-z0-9_.:-]+"

CATALOGUE: dict[str, Param] = {
    p.name: p
    for p in (
        # What the agent says of its own accord.
        Param("greeting", str, 0, _TEXT, "said first, when the call starts (empty: wait for the caller)"),
        Param("reprompt_after", float, 2, 120, "seconds of silence before the agent asks if the caller is there"),
        Param("reprompt_text", str, 1, _TEXT, "what it asks", blank_ok=False),
        Param("max_reprompts", int, 0, 10, "re-prompts in a row before it says goodbye and hangs up"),
        Param("goodbye_text", str, 1, _TEXT, "what it says then", blank_ok=False),
        Param("voicemail_message", str, 0, 1000, "outbound calls: left on an answering machine after the beep"),
        # Turn-taking (reducer.Policy documents each).
        Param("turn_silence", float, 0.05, 3, "seconds of silence that end a complete turn"),
        Param("turn_silence_unknown", float, 0.05, 3, "the same without an end-of-turn signal"),
        Param("turn_wait_unfinished", float, 0, 10, "seconds to wait on a turn that sounds unfinished"),
        Param("turn_wait_dictation", float, 0, 10, "seconds to wait while a number is dictated"),
        Param("turn_wait_continued", float, 0, 10, "seconds of silence before the answer to a complete-looking turn after a mid-turn pause is heard (prepared sooner, held)"),
        Param("turn_wait_opening", float, 0, 10, "seconds of silence before the answer to a turn that reads complete but as an opening (a greeting alone, 'tell me') is heard (prepared sooner, held)"),
        Param("turn_pause_min", float, 0, 10, "seconds of silence inside a turn that count as a pause"),
        Param("eot_weight", float, 0, 10, "weight of the acoustic end-of-turn signal"),
        Param("complete_weight", float, 0, 10, "weight of the text completeness signal"),
        Param("turn_threshold", float, 0, 1, "score at which a turn is complete"),
        Param("resume_timeout", float, 0.1, 10, "seconds after a sound before paused speech resumes"),
        Param("hold_max", float, 0.5, 30, "seconds of wordless sound before the agent talks over it"),
        Param("question_window", float, 0, 10, "seconds after a question in which a yes answers it"),
        Param("noise_sound", float, 0, 3, "a few words in less sound than this are a noise mis-heard"),
        Param("noise_words", int, 0, 10, "at most this many words (none of no/wait/stop...)"),
        Param("background_db", float, 0, 60, "a voice this many dB under the caller's own turns does not take the floor (0: off)"),
        Param("onset_hold", float, 0, 3, "seconds a voice onset pauses the agent without speech following (0: onsets ignored)"),
        Param("resume_on_partial", bool, doc="a sound whose partial shows no words resumes when it stops"),
        Param("preemptive", bool, doc="start the LLM on the partial transcript"),
        # Keypad.
        Param("dtmf_wait", float, 0, 30, "seconds between keys that end a keypad entry (0: each key is a turn)"),
        Param("dtmf_terminator", str, 0, 1, "the key that ends a keypad entry", pattern=r"[0-9*#]?"),
        # Outbound calls through an automated menu: keypad groups, one per menu read out ("1,3").
        Param("ivr_path", str, 0, 200, "keys pressed at each automated menu on a call Parley placed (groups of up to 32 keys, w a pause)", pattern=_IVR),
        # Providers: which of the deployment's configured providers hear and speak this call
        # (e.g. asr=whisper keeps a caller's audio on the deployment's own machines).
        Param("asr", str, 0, 16, "who hears this call, among the deployment's providers: whisper, deepgram, openai", pattern=r"(whisper|deepgram|openai)?"),
        Param("tts", str, 0, 16, "who speaks on this call, among the deployment's providers: piper, cartesia, elevenlabs, openai", pattern=r"(piper|cartesia|elevenlabs|openai)?"),
        # Recording, where the deployment records on request (PARLEY_RECORDINGS=opt-in).
        Param("recording", bool, doc="on: record this call (the consent sentence is the deployment's)"),
        # Labels: no effect on the agent; tools find their sessions by them.
        Param("scenario_call", str, 1, 64, "label (parley scenarios)", pattern=_LABEL),
        Param("bench_call", str, 1, 64, "label (make bench)", pattern=_LABEL),
        Param("bench_stop", str, 1, 64, "label (make bench)", pattern=_LABEL),
        Param("test_call", str, 1, 64, "label (tests)", pattern=_LABEL),
    )
}

# Set by the gateway itself, never taken from a caller: who is on the line,
# which session an outbound call was placed in, that it was placed, and that
# a Twilio stream comes back to its call after keys were pressed.
RESERVED = ("caller", "session", "direction", "rejoin")

# Asked for often enough to deserve their own answer.
_WHY_NOT = {
    "system_prompt": "the system prompt comes from the deployment (PARLEY_POLICY_SYSTEM_PROMPT on the orchestrator), never from a session",
    "tools": "the tools come from the deployment, never from a session",
    "max_call": "call limits come from the deployment (PARLEY_POLICY_MAX_CALL), never from a session",
    "max_tool_steps": "call limits come from the deployment, never from a session",
    "transfer_to": "where calls are transferred is the deployment's to say (PARLEY_TRANSFER_TO)",
    "consent_text": "the recording consent text is the deployment's (PARLEY_POLICY_CONSENT_TEXT)",
}


class ParamError(ValueError):
    """One or more parameters refused; ``str()`` says which and why."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Allowed:
    """The parameters this deployment lets sessions set."""

    params: Mapping[str, Param]

    @classmethod
    def everything(cls) -> "Allowed":
        return cls(dict(CATALOGUE))

    @classmethod
    def parse(cls, spec: str) -> "Allowed":
        spec = spec.strip()
        if spec in ("", "all"):
            return cls.everything()
        if spec == "none":
            return cls({})
        out: dict[str, Param] = {}
        for item in filter(None, (i.strip() for i in spec.split(","))):
            name, _, bounds = item.partition("=")
            name = name.strip()
            if name not in CATALOGUE:
                why = _WHY_NOT.get(name, f"known: {', '.join(CATALOGUE)}")
                raise ValueError(f"{name!r} cannot be a session parameter: {why}")
            p = CATALOGUE[name]
            if bounds:
                if p.kind is bool or ".." not in bounds:
                    raise ValueError(f"{item!r}: a range is LOW..HIGH (numbers) or ..MAX (text length)")
                lo_s, _, hi_s = bounds.partition("..")
                try:
                    lo = float(lo_s) if lo_s.strip() else p.low
                    hi = float(hi_s) if hi_s.strip() else p.high
                except ValueError:
                    raise ValueError(f"{item!r}: the bounds must be numbers") from None
                if not p.low <= lo <= hi <= p.high:
                    raise ValueError(f"{item!r}: the range must lie within {_num(p.low)}..{_num(p.high)}")
                p = replace(p, low=lo, high=hi)
            out[name] = p
        return cls(out)

    def validate(self, params: Mapping[str, str]) -> dict[str, str]:
        """The parameters, once all are valid; ParamError naming every one refused."""
        out: dict[str, str] = {}
        problems: list[str] = []
        for name, raw in params.items():
            p = self.params.get(name)
            if p is None:
                if name in _WHY_NOT:
                    problems.append(f"parameter {name!r} refused: {_WHY_NOT[name]}")
                elif name in CATALOGUE:
                    problems.append(f"parameter {name!r} is not allowed by this deployment ({ENV})")
                else:
                    shown = ", ".join(self.params) or "none"
                    problems.append(f"unknown parameter {str(name)[:40]!r} (allowed here: {shown})")
                continue
            try:
                out[name] = p.parse(raw)
            except ValueError as exc:
                problems.append(f"parameter {name!r} {exc}")
        if problems:
            raise ParamError(problems)
        return out

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params.values()]

    def __str__(self) -> str:
        """As PARLEY_SESSION_PARAMS would say it (``parley config``)."""
        if dict(self.params) == CATALOGUE:
            return "all"
        if not self.params:
            return "none"
        return ",".join(n if p == CATALOGUE[n] else f"{n}={_num(p.low)}..{_num(p.high)}" for n, p in self.params.items())


def from_command_line(items: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` options (``parley talk``, ``parley call``) as
    parameters; raises ValueError naming an item that is not NAME=VALUE. What
    each may hold is checked where the session is minted (the gateway)."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, not {item!r}")
        params[name] = value
    return params


def accepted_by_orchestrator(name: str) -> bool:
    """What the orchestrator takes from SessionStarted.params (anything else
    is dropped there too): the catalogue and the gateway's own keys."""
    return name in CATALOGUE or name in RESERVED
