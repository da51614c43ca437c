"""Scenario files: what a caller does and what the agent must do, as data.

A scenario file is YAML (docs/SCENARIOS.md is the reference)::

    now: 2026-12-01T09:30          # pin the clinic's clock (a Tuesday)
    defaults:
      voice: piper                 # piper | espeak:VOICE (espeak-ng -v VOICE)
      transports: [pcm, twilio]
      params: {greeting: ""}       # session parameters
    scenarios:
      - name: pause-before-the-day
        steps:
          - say: Could you book me in for
          - pause: 1.2
          - say: um, Thursday at eleven?
        expect:
          answered: true
          answered_mid_turn: false
          tools: [{name: book_appointment, arguments: {time: "11:00"}}]

``load(text)`` parses and validates a file into ``Suite`` (frozen
dataclasses); every error names where it is (``scenarios[3].steps[1].wait``)
and what was expected, and nothing is half-loaded. ``Scenario.turns()``
groups the steps into caller turns: a turn is a run of say/sound/pause/dtmf
steps; a ``wait`` ends it. A pause between two things the caller *says* in
the same turn is a *mid-turn pause*: the caller has not finished.

This module is pure (no audio, no I/O) so that the format is tested on its own.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any

TRANSPORTS = ("pcm", "twilio")
ENGINES = ("piper", "espeak")
# Non-speech sounds the sox engine synthesizes (see sounds.py).
SOUNDS = (
    "cough",
    "cough-twice",
    "throat-clear",
    "breath",
    "sigh",
    "sniff",
    "laugh",
    "chuckle",
    "hum-mm-hmm",
    "hum-uh-huh",
    "keyboard",
    "door",
    "knock",
    "cup",
    "baby-cry",
    "tv",
)
NOISES = ("white", "pink", "brown", "hum", "babble")
POINTS = {"early": 0.15, "mid": 0.5, "late": 0.8}  # fraction of the reply heard
OUTCOMES = ("stops", "keeps_talking")
WORD_KEYS = ("all", "any", "none")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where and why."""


# ---------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Audio:
    """How a sound is rendered: voice and variants applied to it."""

    voice: str = "piper"  # "piper" or "espeak:VOICE"
    speed: float = 1.0  # tempo, pitch kept (sox tempo)
    pitch: float = 0.0  # semitones
    gain: float = 0.0  # dB
    noise: str = ""  # "KIND@SNR_DB", e.g. "pink@15"
    phone: bool = False  # telephone band (300-3400 Hz) through 8 kHz μ-law

    @property
    def engine(self) -> str:
        return self.voice.split(":", 1)[0]


@dataclass(frozen=True)
class Words:
    """Words Whisper must hear: all of ``all``, one of ``any``, none of ``none``."""

    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    none: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.all or self.any or self.none)


@dataclass(frozen=True)
class Step:
    kind: str  # say | sound | pause | dtmf | wait | hangup
    text: str = ""  # say: the words; sound: the kind; dtmf: the digits
    seconds: float = 0.0  # pause / wait N seconds
    until: str = ""  # wait: "quiet" | "seconds" | "agent_audio" | "point"
    point: str = ""  # wait until: early | mid | late
    audio: Audio = Audio()
    expect: str = ""  # on a talk-over: stops | keeps_talking
    heard: Words = Words()  # on a wait: words heard in the agent's audio during it
    where: str = ""

    @property
    def audible(self) -> bool:
        return self.kind in ("say", "sound")

    def label(self) -> str:
        if self.kind == "say":
            return f"say {self.text!r}"
        if self.kind == "sound":
            return f"sound {self.text}"
        if self.kind == "pause":
            return f"pause {self.seconds:g}s"
        if self.kind == "dtmf":
            return f"dtmf {self.text}"
        if self.kind == "wait":
            if self.until == "seconds":
                return f"wait {self.seconds:g}s"
            if self.until == "agent_audio":
                return f"wait for {self.seconds:g}s of agent audio"
            if self.until == "point":
                return f"wait until {self.point} in the answer"
            return "wait until quiet"
        return self.kind


@dataclass(frozen=True)
class ToolExpect:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)  # subset match


@dataclass(frozen=True)
class Expect:
    answered: bool | None = None  # the agent spoke after the caller's last turn
    answered_mid_turn: bool | None = None  # agent audio began inside a caller turn (a pause)
    tools: tuple[ToolExpect, ...] | None = None  # in this order (others may come between); () = none
    no_tools: tuple[str, ...] = ()  # never called
    heard: Words = Words()  # everything the caller heard after its first step
    interrupted: bool | None = None  # some reply was cut (history holds an interrupted reply)
    history_heard: bool | None = None  # every cut reply's history is what the caller heard
    ended: bool | None = None  # the agent hung up


@dataclass(frozen=True)
class Turn:
    index: int
    steps: tuple[int, ...]  # indices into Scenario.steps
    mid_pauses: tuple[int, ...]  # pause steps between two say steps of this turn
    # Per mid pause, what the script says before it: "mid-sentence" (its last
    # words end no sentence: "for Tuesday," / "I was hoping to, er,") or
    # "after-sentence" (they end one: "Do you offer whitening?" then more).
    pause_kinds: tuple[str, ...] = ()


def pause_kind(said_before: str) -> str:
    """How a caller's pause sits in its speech, by the scenario's script: after
    words that end a sentence (". ? !"), or inside one (a comma, no mark, or
    trailing off "...")."""
    end = said_before.rstrip(" \"'”’)")
    return "after-sentence" if end.endswith((".", "?", "!")) and not end.endswith(("...", "…")) else "mid-sentence"


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    expect: Expect = Expect()
    about: str = ""
    tags: tuple[str, ...] = ()
    transports: tuple[str, ...] = TRANSPORTS
    params: dict[str, str] = field(default_factory=dict)
    now: str = ""  # ISO date-time the clinic's clock is pinned to ("" = not pinned)
    where: str = ""

    def turns(self) -> tuple[Turn, ...]:
        out: list[Turn] = []
        current: list[int] = []

        def close() -> None:
            if current:
                spoken = [i for i in current if self.steps[i].kind == "say"]
                mids = tuple(i for i in current if self.steps[i].kind == "pause" and spoken and spoken[0] < i < spoken[-1])
                kinds = tuple(pause_kind(self.steps[max(j for j in spoken if j < i)].text) for i in mids)
                out.append(Turn(len(out), tuple(current), mids, kinds))
                current.clear()

        for i, s in enumerate(self.steps):
            if s.kind in ("wait", "hangup"):
                close()
            else:
                current.append(i)
        close()
        return tuple(out)


@dataclass(frozen=True)
class Suite:
    scenarios: tuple[Scenario, ...]
    source: str = ""

    def select(self, names: tuple[str, ...] = (), tags: tuple[str, ...] = ()) -> tuple[Scenario, ...]:
        out = self.scenarios
        if names:
            out = tuple(s for s in out if any(n == s.name or (n.endswith("*") and s.name.startswith(n[:-1])) for n in names))
        if tags:
            out = tuple(s for s in out if set(tags) & set(s.tags))
        return out


# ---------------------------------------------------------------------------
# Parsing


def _fail(where: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{where}: {msg}" if where else msg)


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping, got {type(value).__name__}")
    return value


def _keys(m: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in m if k not in allowed]
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: {', '.join(allowed)}")


def _number(value: Any, where: str, *, low: float = 0.0, high: float = 3600.0, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"expected a number, got {value!r}")
    v = float(value)
    if not (low <= v <= high) or (positive and v <= 0):
        raise _fail(where, f"{v:g} is out of range ({'>' if positive else '>='} {low:g}, <= {high:g})")
    return v


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise _fail(where, f"expected text, got {value!r}")
    text = str(value).strip()
    if not text:
        raise _fail(where, "empty text")
    return text


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"expected true or false, got {value!r}")
    return value


def _words(value: Any, where: str) -> Words:
    if isinstance(value, (str, list)):
        value = {"all": value}
    m = _mapping(value, where)
    _keys(m, WORD_KEYS, where)

    def seq(k: str) -> tuple[str, ...]:
        v = m.get(k, [])
        v = [v] if isinstance(v, (str, int)) else v
        if not isinstance(v, list):
            raise _fail(f"{where}.{k}", "expected a word or a list of words")
        return tuple(_text(x, f"{where}.{k}[{i}]").lower() for i, x in enumerate(v))

    return Words(all=seq("all"), any=seq("any"), none=seq("none"))


_NOISE_RX = re.compile(r"^([a-z]+)@(-?\d+(?:\.\d+)?)$")


def _voice(value: Any, where: str) -> str:
    voice = _text(value, where)
    engine, _, name = voice.partition(":")
    if engine not in ENGINES:
        raise _fail(where, f"unknown engine {engine!r}; use one of {', '.join(ENGINES)} (e.g. piper, espeak:en-gb)")
    if engine == "espeak" and not re.fullmatch(r"[A-Za-z0-9_+\-]+", name or "x"):
        raise _fail(where, f"bad espeak voice name {name!r}")
    if engine == "piper" and name not in ("", "joe"):
        raise _fail(where, f"the only Piper voice installed is joe (piper or piper:joe), not {name!r}")
    return voice if name or engine == "piper" else "espeak:en-us"


AUDIO_KEYS = ("voice", "speed", "pitch", "gain", "noise", "phone")


def _audio(m: dict, base: Audio, where: str) -> Audio:
    a = base
    if "voice" in m:
        a = replace(a, voice=_voice(m["voice"], f"{where}.voice"))
    if "speed" in m:
        a = replace(a, speed=_number(m["speed"], f"{where}.speed", low=0.5, high=2.0))
    if "pitch" in m:
        v = m["pitch"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -12 <= v <= 12:
            raise _fail(f"{where}.pitch", f"expected semitones between -12 and 12, got {v!r}")
        a = replace(a, pitch=float(v))
    if "gain" in m:
        v = m["gain"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -40 <= v <= 20:
            raise _fail(f"{where}.gain", f"expected dB between -40 and 20, got {v!r}")
        a = replace(a, gain=float(v))
    if "noise" in m:
        raw = m["noise"]
        if raw in (None, "", False):
            a = replace(a, noise="")
        else:
            found = _NOISE_RX.match(str(raw).strip())
            if not found or found.group(1) not in NOISES:
                raise _fail(f"{where}.noise", f"expected KIND@SNR (dB) with KIND one of {', '.join(NOISES)}, e.g. pink@15; got {raw!r}")
            a = replace(a, noise=f"{found.group(1)}@{float(found.group(2)):g}")
    if "phone" in m:
        a = replace(a, phone=_bool(m["phone"], f"{where}.phone"))
    return a


STEP_KINDS = ("say", "sound", "pause", "dtmf", "wait", "hangup")


# long: one YAML step -> Step: a table of step kinds, each with its own fields checked and named in its error
def _step(raw: Any, base: Audio, where: str) -> Step:
    if raw == "hangup":
        return Step(kind="hangup", where=where)
    m = _mapping(raw, where)
    kinds = [k for k in STEP_KINDS if k in m]
    if len(kinds) != 1:
        raise _fail(where, f"a step has exactly one of {', '.join(STEP_KINDS)}; got {sorted(map(str, m)) or 'none'}")
    kind = kinds[0]
    value = m[kind]
    w = f"{where}.{kind}"
    if kind in ("say", "sound"):
        _keys(m, (kind, *AUDIO_KEYS, "expect"), where)
        audio = _audio(m, base, where)
        text = _text(value, w)
        if kind == "sound":
            text = text.lower()
            if text not in SOUNDS:
                raise _fail(w, f"unknown sound {text!r}; known: {', '.join(SOUNDS)}")
            if "voice" in m:
                raise _fail(f"{where}.voice", "a sound is synthesized with sox; it has no voice")
            audio = replace(audio, voice="sox", speed=audio.speed)
        expect = ""
        if "expect" in m:
            expect = m["expect"]
            if isinstance(expect, dict):
                _keys(expect, ("agent",), f"{where}.expect")
                expect = expect.get("agent")
            if expect not in OUTCOMES:
                raise _fail(f"{where}.expect", f"expected one of {', '.join(OUTCOMES)} (what the agent does when this talks over it), got {expect!r}")
        return Step(kind=kind, text=text, audio=audio, expect=expect, where=where)
    if kind == "pause":
        _keys(m, ("pause",), where)
        return Step(kind="pause", seconds=_number(value, w, high=120, positive=True), where=where)
    if kind == "dtmf":
        _keys(m, ("dtmf",), where)
        digits = str(value).strip() if not isinstance(value, bool) else ""
        if not digits or not re.fullmatch(r"[0-9*#]+", digits):
            raise _fail(w, f"expected digits 0-9, * or #, got {value!r}")
        return Step(kind="dtmf", text=digits, where=where)
    if kind == "hangup":
        _keys(m, ("hangup",), where)
        return Step(kind="hangup", where=where)
    # wait
    _keys(m, ("wait", "heard"), where)
    heard = _words(m["heard"], f"{where}.heard") if "heard" in m else Words()
    if value == "quiet" or value is None:
        return Step(kind="wait", until="quiet", heard=heard, where=where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Step(kind="wait", until="seconds", seconds=_number(value, w, high=300, positive=True), heard=heard, where=where)
    if isinstance(value, dict):
        _keys(value, ("agent_audio", "agent"), w)
        if len(value) != 1:
            raise _fail(w, "give one of agent_audio: SECONDS or agent: early|mid|late")
        if "agent_audio" in value:
            return Step(kind="wait", until="agent_audio", seconds=_number(value["agent_audio"], f"{w}.agent_audio", high=60), heard=heard, where=where)
        point = value["agent"]
        if point not in POINTS:
            raise _fail(f"{w}.agent", f"expected one of {', '.join(POINTS)}, got {point!r}")
        return Step(kind="wait", until="point", point=point, heard=heard, where=where)
    raise _fail(w, f"expected quiet, SECONDS, {{agent_audio: SECONDS}} or {{agent: early|mid|late}}; got {value!r}")


def _tools(value: Any, where: str) -> tuple[ToolExpect, ...]:
    if not isinstance(value, list):
        raise _fail(where, "expected a list of {name, arguments} (or [] for no tool call)")
    out = []
    for i, t in enumerate(value):
        w = f"{where}[{i}]"
        if isinstance(t, str):
            t = {"name": t}
        t = _mapping(t, w)
        _keys(t, ("name", "arguments"), w)
        args = _mapping(t.get("arguments", {}), f"{w}.arguments")
        out.append(ToolExpect(name=_text(t.get("name"), f"{w}.name"), arguments={str(k): _plain(v) for k, v in args.items()}))
    return tuple(out)


def _plain(v: Any) -> Any:
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return v


EXPECT_KEYS = ("answered", "answered_mid_turn", "tools", "no_tools", "heard", "interrupted", "history_heard", "ended")


def _expect(raw: Any, where: str) -> Expect:
    m = _mapping(raw, where)
    _keys(m, EXPECT_KEYS, where)
    e = Expect()
    for key in ("answered", "answered_mid_turn", "interrupted", "history_heard", "ended"):
        if key in m:
            e = replace(e, **{key: _bool(m[key], f"{where}.{key}")})
    if "tools" in m:
        e = replace(e, tools=_tools(m["tools"], f"{where}.tools"))
    if "no_tools" in m:
        v = m["no_tools"]
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list):
            raise _fail(f"{where}.no_tools", "expected a tool name or a list of names")
        e = replace(e, no_tools=tuple(_text(x, f"{where}.no_tools[{i}]") for i, x in enumerate(v)))
    if "heard" in m:
        e = replace(e, heard=_words(m["heard"], f"{where}.heard"))
    return e


def _now(value: Any, where: str) -> str:
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(9, 30)).isoformat()
    try:
        return dt.datetime.fromisoformat(str(value)).replace(microsecond=0).isoformat()
    except ValueError:
        raise _fail(where, f"expected an ISO date-time like 2026-12-01T09:30, got {value!r}") from None


def _transports(value: Any, where: str) -> tuple[str, ...]:
    v = [value] if isinstance(value, str) else value
    if not isinstance(v, list) or not v or any(t not in TRANSPORTS for t in v):
        raise _fail(where, f"expected a list drawn from {', '.join(TRANSPORTS)}, got {value!r}")
    return tuple(dict.fromkeys(v))


def _params(value: Any, where: str) -> dict[str, str]:
    m = _mapping(value, where)
    out = {}
    for k, v in m.items():
        if isinstance(v, (dict, list)) or v is None:
            raise _fail(f"{where}.{k}", f"a session parameter is text, a number or true/false, not {v!r}")
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


_NAME_RX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
SCENARIO_KEYS = ("name", "about", "tags", "steps", "expect", "transports", "params", "now", "audio", "variants")
DEFAULT_KEYS = ("voice", "transports", "params", "audio", "tags")


# long: one YAML scenario -> Scenario: each top-level key checked and named in its error
def _scenario(raw: Any, defaults: dict, where: str) -> list[Scenario]:
    m = _mapping(raw, where)
    _keys(m, SCENARIO_KEYS, where)
    name = _text(m.get("name"), f"{where}.name")
    if not _NAME_RX.match(name):
        raise _fail(f"{where}.name", f"{name!r}: use letters, digits, '-', '_' or '.', at most 80")
    base = defaults["audio"]
    if "audio" in m:
        a = _mapping(m["audio"], f"{where}.audio")
        _keys(a, AUDIO_KEYS, f"{where}.audio")
        base = _audio(a, base, f"{where}.audio")
    steps_raw = m.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _fail(f"{where}.steps", "expected a non-empty list of steps")
    tags = m.get("tags", [])
    tags = [tags] if isinstance(tags, str) else tags
    if not isinstance(tags, list):
        raise _fail(f"{where}.tags", "expected a list of tags")
    transports = _transports(m["transports"], f"{where}.transports") if "transports" in m else defaults["transports"]
    params = {**defaults["params"], **(_params(m["params"], f"{where}.params") if "params" in m else {})}
    now = _now(m["now"], f"{where}.now") if "now" in m else defaults["now"]
    expect = _expect(m["expect"], f"{where}.expect") if "expect" in m else Expect()
    variants = m.get("variants", [{}])
    if not isinstance(variants, list) or not variants:
        raise _fail(f"{where}.variants", "expected a list of audio settings, e.g. [{speed: 1.3}, {noise: pink@10}]")
    out = []
    for k, variant in enumerate(variants):
        vw = f"{where}.variants[{k}]"
        v = _mapping(variant, vw)
        _keys(v, (*AUDIO_KEYS, "name"), vw)
        audio = _audio(v, base, vw)
        steps = tuple(_step(s, audio, f"{where}.steps[{i}]") for i, s in enumerate(steps_raw))
        if not any(s.audible or s.kind == "dtmf" for s in steps):
            raise _fail(f"{where}.steps", "the caller never makes a sound")
        suffix = str(v.get("name") or _variant_name(v)) if len(variants) > 1 else ""
        full = f"{name}.{suffix}" if suffix else name
        if suffix and not _NAME_RX.match(full):
            raise _fail(f"{vw}.name", f"{full!r} is not a usable name")
        for i, s in enumerate(steps):
            if s.expect and i == 0:
                raise _fail(s.where, "the first step cannot talk over the agent: wait for it first")
        out.append(
            Scenario(
                name=full,
                steps=steps,
                expect=expect,
                about=str(m.get("about", "")).strip(),
                tags=tuple(dict.fromkeys([*defaults["tags"], *(str(t) for t in tags)])),
                transports=transports,
                params=params,
                now=now,
                where=where,
            )
        )
    return out


def _variant_name(v: dict) -> str:
    parts = []
    for k in AUDIO_KEYS:
        if k in v:
            val = v[k]
            parts.append(k if val is True else f"{k}{val}".replace("@", "at").replace(":", "-"))
    return "-".join(parts) or "plain"


def _yaml_loader():
    """A safe loader with YAML 1.2's plain scalars: ``yes``, ``no``, ``on``
    and ``off`` stay words (a caller says "yes"), ``11:00`` stays a time
    rather than the sexagesimal 660, dates stay text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {}
    rules = (
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", "-+0123456789"),
        ("tag:yaml.org,2002:float", r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    )
    for tag, rx, first in rules:
        Loader.add_implicit_resolver(tag, re.compile(rx), list(first))
    return Loader


def load(text: str, source: str = "") -> Suite:
    """Parse and validate a scenario file."""
    import yaml

    try:
        doc = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source or 'scenario file'}: not valid YAML: {exc}") from None
    if isinstance(doc, list):
        doc = {"scenarios": doc}
    top = _mapping(doc, source)
    _keys(top, ("now", "defaults", "scenarios", "suite", "about"), source)
    d = _mapping(top.get("defaults", {}), "defaults")
    _keys(d, DEFAULT_KEYS, "defaults")
    audio = Audio()
    if "voice" in d:
        audio = replace(audio, voice=_voice(d["voice"], "defaults.voice"))
    if "audio" in d:
        a = _mapping(d["audio"], "defaults.audio")
        _keys(a, AUDIO_KEYS, "defaults.audio")
        audio = _audio(a, audio, "defaults.audio")
    tags = d.get("tags", [])
    defaults = {
        "audio": audio,
        "transports": _transports(d["transports"], "defaults.transports") if "transports" in d else TRANSPORTS,
        "params": _params(d["params"], "defaults.params") if "params" in d else {},
        "now": _now(top["now"], "now") if "now" in top else "",
        "tags": [tags] if isinstance(tags, str) else list(tags),
    }
    raw = top.get("scenarios")
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "expected 'scenarios:' with a non-empty list")
    scenarios: list[Scenario] = []
    for i, s in enumerate(raw):
        scenarios.extend(_scenario(s, defaults, f"scenarios[{i}]"))
    seen: set[str] = set()
    for s in scenarios:
        if s.name in seen:
            raise _fail(s.where, f"duplicate scenario name {s.name!r}")
        seen.add(s.name)
    return Suite(scenarios=tuple(scenarios), source=source)


def load_path(path) -> Suite:
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(f"{p}: {exc.strerror or exc}") from None
    return load(text, str(p))
