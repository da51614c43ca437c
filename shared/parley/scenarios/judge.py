"""What the agent did in one scenario call, measured and judged.

``judge(scenario, record) -> Result`` is pure: it reads a ``Record`` (what the
caller sent and heard, on its own clock, plus the session's reducer steps seen
on ``parley.obs``) and never touches the network, so it is unit-tested on
records built by hand and can re-judge a saved record.

Everything timed is measured **from the caller's side**:

* *voice-to-voice*: from the last sample of the caller's turn to the first
  audible agent audio the caller heard (``AUDIBLE_DB``);
* *answered mid-turn*: agent audio heard between the start and the end of a
  caller turn that began while the agent was quiet; *into the pause* is how
  long after the caller stopped (for the pause) the agent was heard;
* a *talk-over* is a caller sound that starts while a reply is playing, its
  silences between sentences included (or whose step says what the agent
  must do). Its *run* is the reply that
  was playing. It **stopped** the agent when the reducer flushed that run
  (``FlushPlayback``); otherwise the agent **kept talking**. The *audible
  stop* is from the caller's onset to the end of the last agent audio in the
  stretch that was playing at the onset (a stretch: pieces of audio less than
  ``STRETCH_GAP`` apart), so a pause that resumes counts as a stop too; the
  *pause* heard by a caller whose talk-over did not stop the agent is the
  longest silence inside the reply after the onset.
* *history heard*: for every reply that was cut, the chunks the caller heard
  to the end (the agent audio it heard, against each chunk's length) are the
  chunks the next prompt's history holds.

Words are compared after ``normalise`` (lower case, digits for number words,
"p.m." -> "pm"), on what Whisper heard in the agent's audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from parley import contract

from .line import Seen
from .spec import Scenario, Words

AUDIBLE_DB = -45.0  # a 20 ms frame louder than this (RMS, dBFS) is agent speech the caller hears
STRETCH_GAP = 0.15  # agent audio pieces closer than this are one stretch
PLAYING_WINDOW = 0.1  # agent audio within this before an onset: the agent was talking
CUT_WINDOW = 5.0  # a flush this long after a talk-over ended is still its consequence
CHUNK_SLACK_MS = 120.0  # heard audio this close to a chunk boundary may count either way


# ---------------------------------------------------------------------------
# What was recorded


@dataclass
class Action:
    index: int  # the step's index in the scenario
    kind: str
    start: float  # caller clock: first frame sent (say/sound), or when the step began
    end: float  # last frame sent, or when the step ended
    error: str = ""
    onset: float | None = None  # say/sound: when its first voiced sample was spoken

    @property
    def spoke(self) -> float:
        """When the caller started to make this sound (its onset, else its first frame)."""
        return self.onset if self.onset is not None else self.start


@dataclass
class Record:
    scenario: str
    transport: str
    session: str = ""
    t0: float = 0.0  # caller clock when the call was placed
    wall_minus_mono: float = 0.0  # time.time() - time.monotonic() at t0
    actions: list[Action] = field(default_factory=list)
    frames: list[tuple[float, float, float]] = field(default_factory=list)  # agent audio heard: (start, seconds, dBFS)
    marks: list[dict] = field(default_factory=list)
    steps: list[Seen] = field(default_factory=list)
    transcripts: dict[str, str] = field(default_factory=dict)  # segment -> what Whisper heard
    error: str = ""  # the call could not be carried out as written
    clock: str = ""  # the stack's date is not the one the scenario pins (what to do about it)
    stops: dict[int, float | None] = field(default_factory=dict)  # step -> the caller's ear's audible stop (s)
    ended: float = 0.0

    def to_json(self) -> dict:
        from .line import encode_steps

        d = asdict(self)
        d["steps"] = encode_steps(self.steps)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        from .line import decode_steps

        d = dict(d)
        d["actions"] = [Action(**a) for a in d.get("actions", [])]
        d["stops"] = {int(k): v for k, v in d.get("stops", {}).items()}
        d["frames"] = [tuple(f) for f in d.get("frames", [])]
        d["steps"] = decode_steps(d.get("steps", []))
        return cls(**d)


# ---------------------------------------------------------------------------
# What it means


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    scenario: str
    transport: str
    session: str
    ok: bool
    error: str = ""
    checks: list[Check] = field(default_factory=list)
    v2v_ms: list[float] = field(default_factory=list)
    v2v_stages: list[dict] = field(default_factory=list)  # per answered turn: endpoint, asr, reply (ms)
    mid_turn: list[dict] = field(default_factory=list)  # answers heard inside a caller turn
    early_runs: list[dict] = field(default_factory=list)  # replies the system began inside a caller turn (heard or not)
    pause_turns: int = 0  # caller turns with a mid-turn pause, begun while the agent was quiet
    pause_kinds: list[str] = field(default_factory=list)  # of those turns' pauses: mid-sentence, after-sentence
    overlaps: list[dict] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)
    heard: str = ""
    transcripts: list[str] = field(default_factory=list)  # what the ASR heard the caller say
    timeline: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


# ---------------------------------------------------------------------------
# Caller-side audio


def audible(frames: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
    return [(t, d) for t, d, db in frames if db > AUDIBLE_DB]


def stretches(frames: list[tuple[float, float, float]], gap: float = STRETCH_GAP) -> list[tuple[float, float]]:
    """Agent audio as heard, merged into (start, end) stretches; only stretches with audible sound."""
    out: list[list[float]] = []
    loud: list[bool] = []
    for t, d, db in sorted(frames):
        if out and t - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], t + d)
            loud[-1] = loud[-1] or db > AUDIBLE_DB
        else:
            out.append([t, t + d])
            loud.append(db > AUDIBLE_DB)
    return [(a, b) for (a, b), ok in zip(out, loud) if ok]


def playing_at(frames: list[tuple[float, float, float]], t: float) -> bool:
    """Was a reply playing at ``t``? Its quiet moments count: a caller who
    speaks in the silence between two of the agent's sentences talks over it."""
    return any(s - PLAYING_WINDOW <= t < e + PLAYING_WINDOW for s, e in stretches(frames))


def audible_stop(frames: list[tuple[float, float, float]], onset: float) -> float | None:
    """Seconds from ``onset`` to the end of the stretch of agent audio playing
    then, at the frames' resolution. The runner records the caller's ear's
    own measure (``parley.callers.ear.audible_stop``, 5 ms) in
    ``Record.stops``; this is for records without it."""
    for s, e in stretches(frames):
        if s - PLAYING_WINDOW <= onset < e + PLAYING_WINDOW:
            last = max((ft + d for ft, d in audible(frames) if s <= ft < e), default=e)
            return max(0.0, last - onset)
    return None


def first_audible(frames: list[tuple[float, float, float]], after: float, before: float = float("inf")) -> float | None:
    return next((t for t, d in sorted(audible(frames)) if after <= t < before), None)


def longest_gap(frames: list[tuple[float, float, float]], start: float, end: float) -> float:
    """The longest silence between audible agent frames in [start, end]."""
    ts = sorted((t, d) for t, d in audible(frames) if start <= t <= end)
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(ts, ts[1:])]
    return max(gaps, default=0.0)


# ---------------------------------------------------------------------------
# Words


_NUMBERS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case words and digits: "Three P.M., Tuesday!" -> "3 pm tuesday"."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\b([ap])\s?\.\s?m\b\.?", r"\1m", t)
    t = re.sub(r"(\d)(am|pm|st|nd|rd|th)\b", r"\1 \2", t)
    t = re.sub(r"(\d+) (st|nd|rd|th)\b", r"\1\2", t)
    t = re.sub(r"(\d{1,2}):00\b", r"\1", t)
    t = re.sub(r"[^a-z0-9:' ]+", " ", t)
    return " ".join(_NUMBERS.get(w, w) for w in t.split())


def words_check(words: Words, text: str) -> tuple[bool, str]:
    heard = f" {normalise(text)} "

    def has(w: str) -> bool:
        return f" {normalise(w)} " in heard

    missing = [w for w in words.all if not has(w)]
    any_ok = not words.any or any(has(w) for w in words.any)
    present = [w for w in words.none if has(w)]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if not any_ok:
        problems.append(f"none of {list(words.any)}")
    if present:
        problems.append(f"should not have {present}")
    return not problems, "; ".join(problems)


# ---------------------------------------------------------------------------
# System side


def _cmds(steps: list[Seen], kind: type) -> list[tuple[Seen, object]]:
    return [(s, c) for s in steps for c in s.step.commands if isinstance(c, kind)]


def tool_calls(steps: list[Seen]) -> list[dict]:
    """Tools the agent called, in order: executed ones (CallTool) and end_call."""
    out = []
    for s in steps:
        for c in s.step.commands:
            if isinstance(c, contract.CallTool):
                out.append({"name": c.name, "arguments": _args(c.arguments), "run": c.run, "seen": s.at})
        e = s.step.event
        if isinstance(e, contract.LLMToolCall) and e.name == "end_call" and not s.step.dropped:
            out.append({"name": e.name, "arguments": _args(e.arguments), "run": e.run, "seen": s.at})
    return out


def _args(raw: str) -> dict:
    try:
        v = json.loads(raw) if raw else {}
    except ValueError:
        return {"_raw": raw}
    return v if isinstance(v, dict) else {"_value": v}


def _matches(expected: dict, actual: dict) -> bool:
    return all(k in actual and str(actual[k]).strip().lower() == str(v).strip().lower() for k, v in expected.items())


def run_playing(steps: list[Seen], t: float) -> int | None:
    """The reply the caller was hearing at ``t``: the newest run whose audio had started."""
    runs = [c.run for s, c in _cmds(steps, contract.Synthesize) if s.at <= t + 0.05]
    started = [s.step.event.run for s in steps if isinstance(s.step.event, contract.TTSChunkStarted) and s.at <= t + 0.05 and not s.step.dropped]
    return max(started or runs, default=None)


# ---------------------------------------------------------------------------
# The judgement


def _pause_in(turn, before: list) -> str:
    """The kind of the caller's pause a moment fell in: the first of the turn's
    pauses after the last sound the caller had made by then."""
    if not before:
        return ""
    later = [k for p, k in zip(turn.mid_pauses, turn.pause_kinds, strict=True) if p > before[-1].index]
    return later[0] if later else ""


# long: one scenario's verdict: every check reads the same record (steps, frames, turns), in the order the report lists them; a test tool, not the product
def judge(scenario: Scenario, record: Record) -> Result:
    res = Result(scenario.name, record.transport, record.session, ok=False, error=record.error, tags=list(scenario.tags))
    steps = record.steps
    frames = record.frames
    acts = {a.index: a for a in record.actions}
    res.seconds = (record.ended or (record.actions[-1].end if record.actions else record.t0)) - record.t0
    res.tools = [{k: v for k, v in t.items() if k != "seen"} for t in tool_calls(steps)]
    res.heard = record.transcripts.get("after_first", "")
    res.transcripts = [s.step.event.text for s in steps if isinstance(s.step.event, contract.TranscriptFinal) and not s.step.dropped]
    res.timeline = timeline(scenario, record)
    checks = res.checks

    turns = scenario.turns()
    done = [t for t in turns if all(i in acts for i in t.steps)]
    turn_spans = []
    for turn in done:
        loud = [acts[i] for i in turn.steps if scenario.steps[i].audible]
        first = acts[turn.steps[0]]
        start = loud[0].spoke if loud else first.start
        end = loud[-1].end if loud else acts[turn.steps[-1]].end
        turn_spans.append((turn, start, end, playing_at(frames, start)))

    # Answers inside a caller turn, and voice-to-voice.
    for k, (turn, start, end, over) in enumerate(turn_spans):
        if over:
            continue
        loud = [acts[i] for i in turn.steps if scenario.steps[i].audible]
        onset = first_audible(frames, start + 0.02, end)
        if turn.mid_pauses:
            res.pause_turns += 1
            res.pause_kinds = sorted({*res.pause_kinds, *turn.pause_kinds})
        for s, c in _cmds(steps, contract.StartLLM):
            if c.step == 0 and start < s.at < end:
                before = [a for a in loud if a.end <= s.at]
                res.early_runs.append({"turn": turn.index, "run": c.run, "into_pause_ms": round((s.at - before[-1].end) * 1000) if before else 0, "pause_turn": bool(turn.mid_pauses), "kind": _pause_in(turn, before)})
        if onset is not None:
            before = [a for a in loud if a.end <= onset]
            after_stop = onset - before[-1].end if before else 0.0
            res.mid_turn.append({"turn": turn.index, "onset": onset - record.t0, "into_pause_ms": round(after_stop * 1000), "pause_turn": bool(turn.mid_pauses), "kind": _pause_in(turn, before)})
            continue
        if loud and scenario.steps[loud[-1].index].kind == "say":
            nxt = turn_spans[k + 1][1] if k + 1 < len(turn_spans) else float("inf")
            answer = first_audible(frames, end, nxt)
            if answer is not None:
                res.v2v_ms.append(round((answer - end) * 1000, 1))
                res.v2v_stages.append(_stages(steps, record.wall_minus_mono, start, end, answer))

    # Talk-overs.
    for i, step in enumerate(scenario.steps):
        a = acts.get(i)
        if a is None or not step.audible or i == 0:
            continue
        onset = a.spoke
        over = playing_at(frames, onset)
        if not over and not step.expect:
            continue
        o: dict = {"step": i, "label": step.label(), "expect": step.expect, "kind": _overlap_kind(step), "onset": round(onset - record.t0, 3)}
        if not over:
            o["outcome"] = "not_over"
            res.overlaps.append(o)
            checks.append(Check(f"step {i} talks over the agent", False, f"the agent was not talking when {step.label()} began"))
            continue
        run = run_playing(steps, onset)
        o["run"] = run
        flush = next((s for s, c in _cmds(steps, contract.FlushPlayback) if c.run == run and onset - 0.1 <= s.at <= a.end + CUT_WINDOW), None)
        pause = next((s for s, c in _cmds(steps, contract.PausePlayback) if c.run == run and onset - 0.1 <= s.at <= a.end + CUT_WINDOW), None)
        resume = next((s for s, c in _cmds(steps, contract.ResumePlayback) if c.run == run and pause is not None and s.at >= pause.at), None)
        stop = record.stops[i] if i in record.stops else audible_stop(frames, onset)
        o["outcome"] = "stops" if flush is not None else "keeps_talking"
        o["stop_ms"] = round(stop * 1000) if stop is not None else None
        o["paused"] = pause is not None
        o["resumed"] = resume is not None
        if flush is not None:
            o["flush_ms"] = round((flush.at - onset) * 1000)
        else:
            later = [t for t, d in audible(frames) if a.end <= t <= a.end + 3.0]
            o["continued"] = bool(later)
            o["gap_ms"] = round(longest_gap(frames, onset - 0.1, a.end + 3.0) * 1000)
        if step.expect:
            ok = o["outcome"] == step.expect
            what = "stopped" if o["outcome"] == "stops" else "kept talking"
            detail = f"the agent {what} (run {run}); audible stop {o['stop_ms']} ms after the caller's onset" if o["outcome"] == "stops" else f"the agent {what} (run {run}; longest gap heard {o.get('gap_ms')} ms)"
            checks.append(Check(f"step {i} {step.label()}: agent {step.expect}", ok, detail))
        res.overlaps.append(o)

    # Words heard at waits.
    for i, step in enumerate(scenario.steps):
        if step.kind == "wait" and step.heard and i in acts:
            text = record.transcripts.get(f"wait{i}", "")
            ok, why = words_check(step.heard, text)
            checks.append(Check(f"step {i} heard", ok, f"{why or 'ok'}; heard {text!r}"))

    e = scenario.expect
    last_end = turn_spans[-1][2] if turn_spans else record.t0
    if e.answered is not None:
        answer = first_audible(frames, last_end)
        got = answer is not None
        checks.append(Check("answered" if e.answered else "not answered", got == e.answered, f"first agent audio {answer - last_end:.2f} s after the caller's last sound" if got else "no agent audio after the caller's last sound"))
    if e.answered_mid_turn is not None:
        got = bool(res.mid_turn)
        detail = "; ".join(f"turn {m['turn']}: agent heard {m['into_pause_ms']} ms after the caller paused" for m in res.mid_turn) or "the agent waited for every turn to end"
        checks.append(Check("answered mid-turn" if e.answered_mid_turn else "never answered mid-turn", got == e.answered_mid_turn, detail))
    if e.tools is not None:
        ok, detail = _tools_check(e.tools, res.tools)
        checks.append(Check("tools", ok, detail))
    for name in e.no_tools:
        called = [t for t in res.tools if t["name"] == name]
        checks.append(Check(f"no {name}", not called, f"called {called}" if called else "not called"))
    if e.heard:
        ok, why = words_check(e.heard, res.heard)
        checks.append(Check("heard", ok, f"{why or 'ok'}; heard {res.heard!r}"))
    if e.interrupted is not None:
        cut = [c.run for _, c in _cmds(steps, contract.FlushPlayback)]
        checks.append(Check("a reply was cut" if e.interrupted else "no reply was cut", bool(cut) == e.interrupted, f"flushed runs {cut}" if cut else "no flush"))
    if e.history_heard is not None:
        for check in history_checks(record, res.overlaps):
            checks.append(check)
    if e.ended is not None:
        ended = bool(_cmds(steps, contract.EndSession))
        checks.append(Check("agent hung up" if e.ended else "agent did not hang up", ended == e.ended, "EndSession sent" if ended else "no EndSession"))
    if record.clock:
        checks.append(Check("clock pinned", False, record.clock))
    if record.error:
        checks.append(Check("call carried out", False, record.error))
    res.ok = not record.error and all(c.ok for c in checks)
    return res


def _stages(steps: list[Seen], offset: float, start: float, end: float, answer: float) -> dict:
    """Where one answer's time went: caller's end -> VAD stop -> final transcript -> first audio heard (ms)."""
    stop = next((s.step.event for s in reversed(steps) if isinstance(s.step.event, contract.SpeechStopped) and start <= s.step.event.at - offset <= answer), None)
    final = next((s.step.event for s in steps if isinstance(s.step.event, contract.TranscriptFinal) and stop is not None and s.step.event.at >= stop.at and s.step.event.at - offset <= answer), None)
    out: dict = {"total": round((answer - end) * 1000)}
    if stop is not None:
        out["endpoint"] = round((stop.at - offset - end) * 1000)
        if final is not None:
            out["asr"] = round((final.at - stop.at) * 1000)
            out["reply"] = round((answer - (final.at - offset)) * 1000)
    return out


def _overlap_kind(step) -> str:
    if step.kind == "sound":
        return "noise"
    return "speech"


def _tools_check(expected, actual: list[dict]) -> tuple[bool, str]:
    got = ", ".join(f"{t['name']}({json.dumps(t['arguments'], sort_keys=True)})" for t in actual) or "none"
    if not expected:
        calls = [t for t in actual if t["name"] != "end_call"]
        return not calls, f"called: {got}"
    k = 0
    for t in actual:
        if k < len(expected) and t["name"] == expected[k].name and _matches(expected[k].arguments, t["arguments"]):
            k += 1
    if k == len(expected):
        return True, f"called: {got}"
    want = expected[k]
    return False, f"no {want.name}({json.dumps(want.arguments, sort_keys=True)}) in order; called: {got}"


# long: one check over every cut reply, its bookkeeping kept together
def history_checks(record: Record, overlaps: list[dict]) -> list[Check]:
    """For each cut reply: the chunks the caller heard whole == the chunks the next prompt holds."""
    steps = record.steps
    out = []
    chunks: dict[int, dict[int, str]] = {}
    step_of: dict[tuple[int, int], int] = {}  # (run, chunk) -> the LLM step that said it
    lengths: dict[tuple[int, int], int] = {}
    llm_step: dict[int, int] = {}
    for s in steps:
        for c in s.step.commands:
            if isinstance(c, contract.StartLLM):
                llm_step[c.run] = c.step
            elif isinstance(c, contract.Synthesize):
                chunks.setdefault(c.run, {})[c.chunk] = c.text
                step_of[(c.run, c.chunk)] = llm_step.get(c.run, 0)
        e = s.step.event
        if isinstance(e, contract.TTSChunkDone) and not s.step.dropped:
            lengths[(e.run, e.chunk)] = e.audio_ms
    for o in overlaps:
        if o.get("outcome") != "stops" or o.get("run") is None:
            continue
        run = o["run"]
        onset = record.t0 + o["onset"]
        first = min((s.at for s in steps if isinstance(s.step.event, contract.TTSChunkStarted) and s.step.event.run == run), default=None)
        if first is None:
            continue
        stop = onset + (o["stop_ms"] or 0) / 1000
        heard_ms = sum(d for t, d, _ in record.frames if first - 0.05 <= t < stop) * 1000
        texts = [chunks.get(run, {}).get(k, "") for k in sorted(chunks.get(run, {}))]
        bounds, total = [], 0.0
        for k in range(len(texts)):
            total += lengths.get((run, k), 0)
            bounds.append(total)
        whole = sum(1 for b in bounds if b <= heard_ms + CHUNK_SLACK_MS / 2)
        near = {whole} | {k for k in (whole - 1, whole + 1) if 0 <= k <= len(texts) and any(abs(b - heard_ms) <= CHUNK_SLACK_MS for b in bounds)}
        later = next((c for _, c in _cmds(steps, contract.StartLLM) if c.run > run), None)
        if later is None:
            continue  # nothing was generated after the cut: no prompt to check
        cut_msgs = [m.content for m in later.messages if m.role == "assistant" and m.interrupted]
        held = cut_msgs[-1] if cut_msgs else ""
        # History keeps one assistant message per LLM step (what came before
        # a tool call is a message of its own) and marks the last one with
        # heard text as interrupted: the chunks heard whole of the step of the
        # last chunk heard whole.
        keys = sorted(chunks.get(run, {}))

        def heard_of_step(k: int) -> str:
            if k == 0 or not keys:
                return ""
            last_step = step_of.get((run, keys[k - 1]), 0)
            return " ".join(texts[j] for j in range(k) if texts[j] and step_of.get((run, keys[j]), 0) == last_step).strip()

        options = {heard_of_step(k) for k in near}
        ok = held.strip() in options or (not held and "" in options)
        out.append(
            Check(
                f"history of cut run {run} is what was heard",
                ok,
                f"caller heard {heard_ms:.0f} ms = {whole} of {len(texts)} chunks whole; history holds {held!r}",
            )
        )
    return out


# ---------------------------------------------------------------------------
# The timeline (for humans reading a failure)

_SHOWN = (
    contract.SpeechOnset,
    contract.SpeechStarted,
    contract.SpeechStopped,
    contract.TranscriptFinal,
    contract.TimerFired,
    contract.Dtmf,
    contract.SessionEnded,
)


def timeline(scenario: Scenario, record: Record) -> list[str]:
    rows: list[tuple[float, str]] = []
    for a in record.actions:
        step = scenario.steps[a.index]
        if step.audible:
            rows.append((a.start, f"caller   {step.label()} ({a.end - a.start:.2f} s)"))
        elif step.kind in ("pause", "wait", "dtmf", "hangup"):
            rows.append((a.start, f"caller   {step.label()}"))
    for s, e in stretches(record.frames):
        rows.append((s, f"heard    agent audio starts ({e - s:.2f} s, until {e - record.t0:+.2f})"))
    off = record.wall_minus_mono
    for s in record.steps:
        e = s.step.event
        at = e.at - off if e.at else s.at
        if isinstance(e, _SHOWN) and not s.step.dropped:
            extra = ""
            if isinstance(e, contract.TranscriptFinal):
                extra = f" {e.text!r}" + (f" complete={e.complete:.2f}" if getattr(e, "complete", -1) >= 0 else "")
            elif isinstance(e, contract.SpeechStopped) and getattr(e, "eot", -1) >= 0:
                extra = f" eot={e.eot:.2f}"
            elif isinstance(e, contract.TimerFired):
                extra = f" {e.name}"
            rows.append((at, f"system   {type(e).__name__}{extra} -> {s.step.state_to}"))
        for c in s.step.commands:
            if isinstance(c, contract.StartLLM) and c.step == 0:
                rows.append((at, f"system   StartLLM run {c.run}"))
            elif isinstance(c, (contract.PausePlayback, contract.ResumePlayback, contract.FlushPlayback)):
                rows.append((at, f"system   {type(c).__name__} run {c.run} (on {type(e).__name__})"))
            elif isinstance(c, contract.CallTool):
                rows.append((at, f"system   CallTool {c.name} {c.arguments}"))
            elif isinstance(c, contract.Synthesize):
                rows.append((at, f"system   Synthesize run {c.run}.{c.chunk} {c.text!r}"))
            elif isinstance(c, contract.EndSession):
                rows.append((at, f"system   EndSession {c.reason!r}"))
    rows.sort(key=lambda r: r[0])
    return [f"{t - record.t0:+7.2f}  {what}" for t, what in rows]
