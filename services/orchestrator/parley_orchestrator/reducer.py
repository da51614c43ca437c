"""The reducer: every decision Parley makes about a conversation, in one file.

Theory of operation
-------------------
``reduce(state, event) -> (state, commands, outcome)`` is a pure function. It
does no I/O, reads no clock (time is ``event.at``), draws no random numbers and
mutates nothing: ``SessionState`` and everything in it is frozen. The runtime
feeds it every event of a session, in order, persists the new state (JetStream
KV, compare-and-set), logs the step, and executes the commands. Replaying the
logged events through ``reduce`` therefore yields the same commands, bit for
bit (``replay.py``).

The conversation is in one *phase* at a time:

    Idle -> Listening <-> Transcribing -> Generating <-> AwaitingTool
                                              |
                                           Speaking <-> Paused
    Paused --words--> Interrupted -> Listening      (barge-in)
    Generating --final transcript differs--> Cancelled -> Generating
    (any) --SessionEnded / EndSession--> Ended

``TRANSITIONS`` below is the table of (phase, event type) -> handler, with the
phases each handler may lead to; ``docs/state-diagram.md`` is generated from it
(``python -m parley_orchestrator.diagram``) and a test fails if they differ.
An event with no row for the current phase is *rejected*: the state stays as
it is and the outcome says so.

Runs. Every reply is a *run* with an id counted per session (``next_run``).
Provider events (LLM, TTS, playback) carry the run id; an event of a run that
is not the active run is *stale*: it changes nothing and emits nothing. There
is at most one active run. A run ends as *done* (everything it said was heard)
or *cancelled* (barge-in, superseded, timed out, session over); either way its
history is committed then, holding only what the caller heard.

Tool results are the one exception to run scoping: a tool that ran is a fact
of the world, so its result is kept even when the run that asked for it is
gone, and it goes to the next generation. A tool call is executed at most once
per session for the same name and arguments.

Timers are commands (``StartTimer``) whose firing comes back as an event
(``TimerFired``) with the token it was started with; a token that no longer
matches is stale.

LLM streams are numbered. Each ``StartLLM`` names an *attempt*, and every
output of that stream carries the attempt and its position (``seq``). Output
of an older attempt is stale; a position already seen is a *duplicate*
(dropped); a position skipped is a *gap*: output was lost, so the step is
restarted as a new attempt. A restarted attempt (after a gap, or a
``Takeover``: the replica that ran the stream died) must first say again what
the step already said (``Run.echo``); past that, its tokens go on as usual.
If it says something else, the step ends with what was already cut into
chunks (the caller may have heard it), and the rest is dropped.
"""

from __future__ import annotations

import re
from typing import Callable

import msgspec

from parley.contract import (
    AnyCommand,
    AnyEvent,
    CallTool,
    CancelLLM,
    CancelTimer,
    CancelTTS,
    Dropped,
    Dtmf,
    EndSession,
    FlushPlayback,
    LLMDone,
    LLMError,
    LLMEvent,
    LLMToken,
    LLMToolCall,
    Message,
    PausePlayback,
    Phase,
    PlaybackProgress,
    ResumePlayback,
    RunEvent,
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    StartLLM,
    Takeover,
    StartTimer,
    Synthesize,
    TimerFired,
    ToolCallItem,
    ToolResult,
    TranscriptFinal,
    TranscriptPartial,
    TTSChunkDone,
    TTSChunkStarted,
    TTSError,
)

from .chunking import next_chunk

# ---------------------------------------------------------------------------
# Phases (the enum is in the contract: steps record them)

IDLE = Phase.IDLE
LISTENING = Phase.LISTENING
TRANSCRIBING = Phase.TRANSCRIBING
GENERATING = Phase.GENERATING
AWAITING_TOOL = Phase.AWAITING_TOOL
SPEAKING = Phase.SPEAKING
PAUSED = Phase.PAUSED  # the caller made a sound while the agent had the floor
INTERRUPTED = Phase.INTERRUPTED  # transient: barge-in confirmed, run cancelled
CANCELLED = Phase.CANCELLED  # transient: run superseded or timed out
ENDED = Phase.ENDED

PHASES = tuple(Phase)
AGENT_HAS_FLOOR = (GENERATING, AWAITING_TOOL, SPEAKING)

# The version of the reducer's decisions, recorded in every step: bump it when
# the same events would now lead to different commands (replay then reports a
# log recorded under other rules as such, not as nondeterminism).
RULES = 1

# The one tool the reducer handles itself (see on_llm_tool_call).
END_CALL = "end_call"

# ---------------------------------------------------------------------------
# Policy: the knobs of one session. Defaults here; SessionStarted.params may
# override any of them by name (see ``policy_from_params``).


class Policy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    system_prompt: str = "You are a helpful voice assistant. Keep replies short: they are spoken."
    greeting: str = ""
    # Endpointing: wait this long after SpeechStopped before answering, so a
    # caller who pauses mid-thought is not cut off. The ASR's own VAD already
    # waited for its silence window; 0 answers as soon as the final arrives.
    endpoint_delay: float = 0.0
    # False interruptions. Sound while the agent has the floor pauses playback.
    # It becomes a barge-in when words arrive or the sound lasts
    # ``interrupt_min_speech``; if it stops without words, playback resumes
    # after at most ``resume_timeout``. LiveKit uses 0.5 s and 2 s; we take a
    # shorter resume (a cough should not leave a 2 s hole) and the same
    # minimum, which Silero's onset already delays by ~0.1-0.2 s.
    interrupt_min_speech: float = 0.5
    resume_timeout: float = 1.5
    # Silence: re-prompt after this long with nothing said, end the call after
    # ``max_reprompts`` re-prompts in a row.
    reprompt_after: float = 10.0
    reprompt_text: str = "Are you still there?"
    max_reprompts: int = 2
    goodbye_text: str = "I haven't heard from you, so I'll hang up now. Goodbye!"
    max_call: float = 1800.0
    llm_first_token_timeout: float = 6.0
    tts_first_audio_timeout: float = 4.0
    fallback_text: str = "Sorry, I'm having trouble right now. Could you say that again?"
    # A run that finished synthesizing but whose playback is never reported
    # ends anyway this long after its audio should have finished (never stuck
    # "speaking" in silence).
    playback_grace: float = 3.0
    # A final transcript that never comes (an ASR worker died) must not leave
    # the turn waiting forever: go on without it after this long.
    final_timeout: float = 6.0
    max_tool_steps: int = 4
    first_chunk_min: int = 12
    chunk_min: int = 24
    chunk_max: int = 220
    # Start the LLM on SpeechStopped with the latest partial, before the final
    # transcript; a final that differs materially cancels it and starts over.
    preemptive: bool = False


def policy_from_params(params: dict[str, str]) -> tuple[Policy, tuple[str, ...]]:
    """Build the policy from string parameters; returns the keys it could not use."""
    defaults = Policy()
    values: dict[str, object] = {}
    bad: list[str] = []
    for key, raw in params.items():
        if key not in Policy.__struct_fields__:
            continue
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                values[key] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif kind is int:
                values[key] = int(raw)
            elif kind is float:
                value = float(raw)
                if not value >= 0 or value == float("inf"):
                    raise ValueError(raw)
                values[key] = value
            else:
                values[key] = raw
        except ValueError:
            bad.append(key)
    return msgspec.structs.replace(defaults, **values), tuple(bad)


# ---------------------------------------------------------------------------
# State


class ToolRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool call the session executed (or is executing)."""

    call_id: str
    name: str
    arguments: str
    run: int
    result: str | None = None  # None while running
    ok: bool = True
    committed: bool = False  # its call/result pair is in history already


class Run(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    user_text: str = ""  # the user turn this run answers
    utterance: int = -1  # the caller's last utterance of that turn (-1: the agent's own turn)
    started_at: float = 0.0  # when the turn began: the caller's speech start, or the run's start
    scripted: bool = False  # fixed text (greeting, re-prompt, fallback): no LLM
    end_after: str = ""  # a goodbye: the session ends, for this reason, once it was heard
    confirmed: bool = True  # False: preemptive, chunks wait for the final
    step: int = 0  # LLM request number within the run (tool continuation)
    llm_active: bool = False
    got_token: bool = False  # in this step
    pending: str = ""  # LLM text not yet cut into chunks
    chunks: tuple[str, ...] = ()
    chunk_steps: tuple[int, ...] = ()  # the LLM step each chunk came from
    sent: int = 0  # chunks handed to TTS
    audio_ms: tuple[int, ...] = ()  # per chunk, -1 until TTS is done with it
    tts_started: bool = False
    audio_started: bool = False
    played: int = 0  # chunks the caller heard to the end, in order
    step_text: tuple[str, ...] = ()  # full text generated by each finished step
    step_calls: tuple[tuple[ToolCallItem, ...], ...] = ()  # tool calls per step
    calls: tuple[ToolCallItem, ...] = ()  # tool calls of the current step
    waiting: tuple[str, ...] = ()  # call ids of this step without a result
    results: tuple[tuple[str, str, str], ...] = ()  # (call_id, name, result)
    tool_steps: int = 0
    continue_due: bool = False  # tool step finished: the LLM goes on when results are in
    attempt: int = 0  # the LLM stream whose output counts (see "LLM streams are numbered")
    llm_seq: int = 0  # the position expected next from that stream
    received: str = ""  # the text the current step's LLM produced so far
    echo: str = ""  # what a restarted attempt must say again before it goes on
    hold: bool = False  # playback paused for a possible interruption
    hold_phase: str = ""  # phase to return to when the hold resolves


class SessionState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    session: str = ""
    phase: Phase = Phase.IDLE
    caller: str = ""  # the caller's number, when the transport knows it
    policy: Policy = Policy()
    started_at: float = 0.0
    history: tuple[Message, ...] = ()
    next_run: int = 1
    run: Run | None = None
    # The user's turn in progress.
    user_speaking: bool = False
    utterance: int = -1  # last SpeechStarted's utterance id
    awaiting_finals: tuple[int, ...] = ()  # utterances stopped, final not yet in
    user_text: str = ""  # finals gathered for the next turn
    partial: str = ""  # latest partial of the current utterance
    endpoint_due: bool = False  # endpoint timer running
    speech_started_at: float = 0.0
    reprompts: int = 0
    timers: tuple[tuple[str, int], ...] = ()  # running timers (name, token)
    next_token: int = 1
    tools: tuple[ToolRecord, ...] = ()


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a step did, for the log: the phase path and why nothing happened."""

    path: tuple[Phase, ...]  # phases visited, first = before, last = after
    dropped: Dropped = ""
    note: str = ""

    def text(self) -> str:
        """The step's note for the log, naming the transient phases passed
        through ("via Interrupted")."""
        via = self.path[1:-1]
        parts = [f"via {' > '.join(via)}"] if via else []
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


Result = tuple[SessionState, list[AnyCommand], Outcome]

_replace = msgspec.structs.replace

# ---------------------------------------------------------------------------
# The entry point


def reduce(state: SessionState, event: AnyEvent) -> Result:
    """Consume one event. Never raises: a failure inside a handler is reported
    as a rejected event and the state is left as it was."""
    try:
        return _reduce(state, event)
    except Exception as exc:  # noqa: BLE001 - robustness is the contract here
        return state, [], Outcome(path=(state.phase,), dropped="rejected", note=f"internal error: {exc!r}")


def _reduce(state: SessionState, event: AnyEvent) -> Result:
    if state.session and event.session != state.session:
        return _rejected(state, "event of another session")
    # A tool result is scoped by its call id instead (on_tool_result): a tool
    # that ran is a fact even when the run that asked for it is gone.
    if isinstance(event, RunEvent) and not isinstance(event, ToolResult) and (state.run is None or event.run != state.run.id):
        return state, [], Outcome(path=(state.phase,), dropped="stale", note=f"run {event.run} is not active")
    if isinstance(event, TimerFired) and (event.name, event.token) not in state.timers:
        return state, [], Outcome(path=(state.phase,), dropped="stale", note=f"timer {event.name}#{event.token}")
    handler = _HANDLERS.get((state.phase, type(event)))
    if handler is None:
        return _rejected(state, f"{type(event).__name__} not valid in {state.phase}")
    t = _Tx(state, event)
    if isinstance(event, LLMEvent):
        out_of_order = _llm_order(t, event)
        if out_of_order is not None:
            return out_of_order
    handler(t, event)
    return t.result()


def _llm_order(t: "_Tx", e: LLMEvent) -> Result | None:
    """Attempt and position of an LLM output (see the header). None: in
    order, go on (the position is counted); otherwise the step's result."""
    run = t.s.run
    assert run is not None
    if e.attempt != run.attempt:
        return t.s, [], Outcome(path=(t.s.phase,), dropped="stale", note=f"attempt {e.attempt} is not current")
    if e.seq < 0:
        return None  # an unnumbered producer: order as delivered
    if e.seq < run.llm_seq:
        return t.s, [], Outcome(path=(t.s.phase,), dropped="duplicate", note=f"LLM output {e.seq} seen already")
    if e.seq > run.llm_seq:
        _restart_llm(t, f"gap: LLM output {run.llm_seq} never came (got {e.seq})")
        return t.result()
    t.set_run(llm_seq=run.llm_seq + 1)
    return None


def _rejected(state: SessionState, why: str) -> Result:
    return state, [], Outcome(path=(state.phase,), dropped="rejected", note=why)


class _Tx:
    """The working copy of one step: handlers replace ``s`` and append
    commands. Local to ``reduce``; nothing outside ever sees it mutate."""

    def __init__(self, state: SessionState, event: AnyEvent):
        self.s = state
        self.at = event.at
        self.cmds: list[AnyCommand] = []
        self.path: list[str] = [state.phase]
        self.note = ""

    # --- state helpers
    def set(self, **changes) -> None:
        self.s = _replace(self.s, **changes)

    def set_run(self, **changes) -> None:
        assert self.s.run is not None
        self.s = _replace(self.s, run=_replace(self.s.run, **changes))

    def go(self, phase: str) -> None:
        if phase != self.path[-1]:
            self.path.append(phase)
        self.s = _replace(self.s, phase=phase)

    def settle(self, phase: str) -> None:
        """Move the run to ``phase``, or, while playback is held, remember it
        as the phase to return to."""
        if self.s.phase == PAUSED and self.s.run is not None:
            self.set_run(hold_phase=phase)
        else:
            self.go(phase)

    def emit(self, *cmds: AnyCommand) -> None:
        self.cmds.extend(cmds)

    # --- timers: at most one timer of each name runs at a time
    def start_timer(self, name: str, delay: float) -> None:
        self.cancel_timer(name)
        token = self.s.next_token
        self.set(next_token=token + 1, timers=self.s.timers + ((name, token),))
        self.emit(StartTimer(session=self.s.session, name=name, token=token, delay=round(max(delay, 0.0), 3)))

    def cancel_timer(self, name: str) -> None:
        for timer_name, token in self.s.timers:
            if timer_name == name:
                self.emit(CancelTimer(session=self.s.session, name=name, token=token))
        self.set(timers=tuple(t for t in self.s.timers if t[0] != name))

    def fired(self, name: str) -> None:
        self.set(timers=tuple(t for t in self.s.timers if t[0] != name))

    def result(self) -> Result:
        return self.s, self.cmds, Outcome(path=tuple(self.path), note=self.note)


# ---------------------------------------------------------------------------
# Session lifetime


def on_session_started(t: _Tx, e: SessionStarted) -> None:
    policy, bad = policy_from_params(e.params)
    t.set(session=e.session, caller=e.caller, policy=policy, started_at=e.at)
    if bad:
        t.note = f"ignored invalid params: {', '.join(bad)}"
    t.go(LISTENING)
    t.start_timer("max_call", policy.max_call)
    if policy.greeting:
        _start_scripted(t, policy.greeting)
    else:
        t.start_timer("reprompt", policy.reprompt_after)


def on_session_ended(t: _Tx, e: SessionEnded) -> None:
    _end(t, e.reason, tell_gateway=False)


def _end(t: _Tx, reason: str, tell_gateway: bool) -> None:
    if t.s.run is not None:
        _cancel_run(t, CANCELLED)
    for name, _ in t.s.timers:
        t.cancel_timer(name)
    if tell_gateway:
        t.emit(EndSession(session=t.s.session, reason=reason))
    t.note = reason
    t.go(ENDED)


# ---------------------------------------------------------------------------
# The caller's turn: speech, transcripts, endpointing


def on_speech_started(t: _Tx, e: SpeechStarted) -> None:
    t.set(user_speaking=True, utterance=e.utterance, partial="", speech_started_at=e.at, reprompts=0)
    t.cancel_timer("reprompt")
    t.cancel_timer("endpoint")
    t.set(endpoint_due=False)
    phase = t.s.phase
    if phase in AGENT_HAS_FLOOR:
        # Maybe a barge-in, maybe a cough: hold the audio and find out.
        run = t.s.run
        assert run is not None
        if run.confirmed is False:
            # A preemptive run answers a turn that is still going on.
            _cancel_run(t, CANCELLED)
            t.go(LISTENING)
            return
        t.set_run(hold=True, hold_phase=phase)
        t.emit(PausePlayback(session=t.s.session, run=run.id))
        t.start_timer("interrupt", t.s.policy.interrupt_min_speech)
        t.cancel_timer("resume")
        t.go(PAUSED)
    elif phase == PAUSED:
        t.cancel_timer("resume")
        t.start_timer("interrupt", t.s.policy.interrupt_min_speech)
    elif phase == TRANSCRIBING:
        t.go(LISTENING)  # the caller goes on: same turn


def on_speech_stopped(t: _Tx, e: SpeechStopped) -> None:
    t.set(user_speaking=False, awaiting_finals=t.s.awaiting_finals + (e.utterance,))
    t.start_timer("final", t.s.policy.final_timeout)
    if t.s.phase in AGENT_HAS_FLOOR:
        return  # the end of a sound that began before this run: its final decides
    if t.s.phase == PAUSED:
        # Short sound, no words yet: wait a little for a transcript.
        t.cancel_timer("interrupt")
        t.start_timer("resume", t.s.policy.resume_timeout)
        return
    t.go(TRANSCRIBING)
    if t.s.policy.endpoint_delay > 0:
        t.set(endpoint_due=True)
        t.start_timer("endpoint", t.s.policy.endpoint_delay)
    if t.s.policy.preemptive and t.s.run is None and (t.s.user_text + " " + t.s.partial).strip():
        _start_run(t, _join(t.s.user_text, t.s.partial), confirmed=False)


def on_partial(t: _Tx, e: TranscriptPartial) -> None:
    t.set(partial=e.text)
    if t.s.phase == PAUSED and _has_words(e.text):
        _barge_in(t)


def on_final(t: _Tx, e: TranscriptFinal) -> None:
    finals = tuple(u for u in t.s.awaiting_finals if u != e.utterance)
    t.set(awaiting_finals=finals, partial="")
    if not finals:
        t.cancel_timer("final")
    if t.s.phase == PAUSED:
        if _has_words(e.text):
            _barge_in(t)
            t.set(user_text=_join(t.s.user_text, e.text.strip()))
            if not t.s.user_speaking:
                _maybe_answer(t)
        elif not t.s.user_speaking:
            _resume(t)
        return
    run = t.s.run
    if run is not None and run.confirmed and t.s.phase in AGENT_HAS_FLOOR and _has_words(e.text):
        # Words that came after the hold resolved (a slow transcript): still
        # the caller taking the floor.
        _barge_in(t)
        run = None
    t.set(user_text=_join(t.s.user_text, e.text.strip()))
    if run is not None and not run.confirmed:
        if _same_words(run.user_text, t.s.user_text) and not t.s.awaiting_finals:
            # The preemptive guess was right: release what it has produced.
            t.set_run(confirmed=True, user_text=t.s.user_text)
            t.set(user_text="")
            _pump_chunks(t)
            t.go(_floor_phase(t.s.run))
            return
        _cancel_run(t, CANCELLED)
    _maybe_answer(t)


def on_dtmf(t: _Tx, e: Dtmf) -> None:
    # A key press is an unambiguous turn: it interrupts and is answered at once.
    if t.s.phase == PAUSED or t.s.phase in AGENT_HAS_FLOOR:
        _barge_in(t)
    t.set(user_text=_join(t.s.user_text, f"(pressed {e.digit} on the keypad)"), reprompts=0)
    t.cancel_timer("reprompt")
    _maybe_answer(t)


def _maybe_answer(t: _Tx) -> None:
    """Start a run for the gathered turn once the caller is really done."""
    s = t.s
    if s.user_speaking or s.awaiting_finals or s.endpoint_due or s.run is not None:
        if not (s.user_speaking or s.run is not None):
            t.go(TRANSCRIBING)
        return
    if not s.user_text.strip():
        t.go(LISTENING)  # a sound without words: nothing to answer
        t.start_timer("reprompt", s.policy.reprompt_after)
        return
    text = s.user_text
    t.set(user_text="")
    _start_run(t, text, confirmed=True)


_NON_WORDS = re.compile(r"[^a-z0-9']+")
BACKCHANNELS = frozenset(
    "uh huh uh-huh mm hmm mhm mm-hmm hm um ah oh okay ok right yeah yep yes sure i see".split()
)


def _words(text: str) -> list[str]:
    return [w for w in _NON_WORDS.split(text.lower()) if w]


def _has_words(text: str) -> bool:
    """Words that take the floor: anything but a backchannel ("uh-huh")."""
    return any(w not in BACKCHANNELS for w in _words(text))


def _same_words(a: str, b: str) -> bool:
    return _words(a) == _words(b)


def _join(a: str, b: str) -> str:
    return f"{a} {b}".strip() if a and b else (a or b)


def on_final_timer(t: _Tx, e: TimerFired) -> None:
    t.note = f"no final transcript for utterance(s) {list(t.s.awaiting_finals)}: going on without"
    t.set(awaiting_finals=())
    if t.s.phase in (LISTENING, TRANSCRIBING) and not t.s.user_speaking:
        _maybe_answer(t)


def on_endpoint_timer(t: _Tx, e: TimerFired) -> None:
    t.set(endpoint_due=False)
    _maybe_answer(t)


def on_reprompt_timer(t: _Tx, e: TimerFired) -> None:
    if t.s.reprompts >= t.s.policy.max_reprompts:
        _start_scripted(t, t.s.policy.goodbye_text, then_end="caller silent")
        return
    t.set(reprompts=t.s.reprompts + 1)
    _start_scripted(t, t.s.policy.reprompt_text)


def on_max_call_timer(t: _Tx, e: TimerFired) -> None:
    _end(t, "max call duration reached", tell_gateway=True)


# ---------------------------------------------------------------------------
# Runs: starting, generating, chunking


def _start_run(t: _Tx, user_text: str, confirmed: bool) -> None:
    run_id = t.s.next_run
    run = Run(id=run_id, user_text=user_text, confirmed=confirmed, utterance=t.s.utterance, started_at=t.s.speech_started_at or t.at)
    t.set(next_run=run_id + 1, run=run)
    t.cancel_timer("reprompt")
    t.go(GENERATING)
    _start_llm(t)


def _start_scripted(t: _Tx, text: str, then_end: str = "") -> None:
    """A run that speaks fixed text: greeting, re-prompt, fallback, goodbye."""
    run_id = t.s.next_run
    run = Run(id=run_id, scripted=True, pending=text, end_after=then_end, started_at=t.at)
    t.set(next_run=run_id + 1, run=run)
    t.cancel_timer("reprompt")
    t.go(GENERATING)
    _pump_chunks(t, final=True)


def _start_llm(t: _Tx) -> None:
    run = t.s.run
    assert run is not None
    t.set_run(llm_active=True, got_token=False, llm_seq=0, received="", echo="")
    t.emit(StartLLM(session=t.s.session, run=run.id, step=run.step, messages=_prompt(t.s), attempt=run.attempt))
    t.start_timer("llm_first_token", t.s.policy.llm_first_token_timeout)


def _restart_llm(t: _Tx, why: str) -> None:
    """Run the current step again as a new attempt (the old stream is lost or
    untrusted); it must first repeat what the step already received."""
    run = t.s.run
    assert run is not None
    t.note = why
    if not run.llm_active:
        return
    t.emit(CancelLLM(session=t.s.session, run=run.id, attempt=run.attempt))
    # Tool calls of the lost attempt are asked again by the new one; a call
    # that already runs is found by name and arguments, never run twice.
    t.set_run(attempt=run.attempt + 1, llm_seq=0, got_token=False, echo=run.received, calls=(), waiting=())
    t.emit(StartLLM(session=t.s.session, run=run.id, step=run.step, messages=_prompt(t.s), attempt=run.attempt + 1))
    t.start_timer("llm_first_token", t.s.policy.llm_first_token_timeout)


def on_takeover(t: _Tx, e: Takeover) -> None:
    """A new owner: the LLM stream and the tool calls died with the old one."""
    _restart_llm(t, f"taken over by {e.owner}")
    for rec in t.s.tools:
        if rec.result is None:
            # Tools are idempotent by call id (the registry's contract).
            t.emit(CallTool(session=t.s.session, run=rec.run, call_id=rec.call_id, name=rec.name, arguments=rec.arguments))


def _echo(echo: str, text: str) -> tuple[str, str] | None:
    """Match a restarted attempt's token against what it must repeat:
    (new text past the echo, echo left), or None when it said something else."""
    if echo.startswith(text):
        return "", echo[len(text) :]
    if text.startswith(echo):
        return text[len(echo) :], ""
    return None


def _prompt(s: SessionState) -> tuple[Message, ...]:
    """What the LLM sees: system, committed history, this run's turn so far."""
    run = s.run
    assert run is not None
    msgs = [Message(role="system", content=s.policy.system_prompt), *s.history]
    msgs += _late_tool_pairs(s)
    if run.user_text:
        msgs.append(Message(role="user", content=run.user_text))
    results = {call_id: (name, result) for call_id, name, result in run.results}
    for text, calls in zip(run.step_text, run.step_calls):
        msgs.append(Message(role="assistant", content=text, tool_calls=calls))
        for call in calls:
            name, result = results.get(call.call_id, (call.name, '{"error": "no result"}'))
            msgs.append(Message(role="tool", tool_call_id=call.call_id, name=name, content=result))
    return tuple(msgs)


def _late_tool_pairs(s: SessionState) -> list[Message]:
    """Results of tools from earlier, cancelled runs that arrived after the
    run ended: the next generation sees them (never dropped, never re-run)."""
    out: list[Message] = []
    for rec in s.tools:
        if rec.result is not None and not rec.committed and (s.run is None or rec.run != s.run.id):
            out += _tool_pair(rec)
    return out


def _tool_pair(rec: ToolRecord) -> list[Message]:
    call = ToolCallItem(call_id=rec.call_id, name=rec.name, arguments=rec.arguments)
    return [
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id=rec.call_id, name=rec.name, content=rec.result or ""),
    ]


def on_llm_token(t: _Tx, e: LLMToken) -> None:
    run = t.s.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        t.note = f"token of step {e.step} ignored"
        return
    if not run.got_token:
        t.cancel_timer("llm_first_token")
    text = e.text
    if run.echo:
        matched = _echo(run.echo, text)
        if matched is None:
            _diverged(t)
            return
        text, echo = matched
        t.set_run(echo=echo)
    t.set_run(got_token=True, pending=t.s.run.pending + text, received=t.s.run.received + text)
    _pump_chunks(t)


def _diverged(t: _Tx) -> None:
    """A restarted attempt said something else than the lost one: end the step
    with what was cut into chunks already, drop the rest."""
    run = t.s.run
    assert run is not None
    t.emit(CancelLLM(session=t.s.session, run=run.id, attempt=run.attempt))
    t.set_run(pending="", echo="", got_token=True)
    _step_done(t)
    t.note = "restarted LLM said something else: the reply ends with what was already said"


def _pump_chunks(t: _Tx, final: bool = False) -> None:
    """Cut what can be cut from the pending text into numbered chunks, and send
    chunks to TTS once the run is confirmed."""
    run = t.s.run
    assert run is not None
    p = t.s.policy
    pending, chunks, steps = run.pending, list(run.chunks), list(run.chunk_steps)
    while pending:
        n = next_chunk(pending, first=not chunks, final=final, first_min=p.first_chunk_min, min_len=p.chunk_min, max_len=p.chunk_max)
        if n == 0:
            break
        text = pending[:n].strip()
        pending = pending[n:]
        if text:
            chunks.append(text)
            steps.append(run.step)
    t.set_run(pending=pending, chunks=tuple(chunks), chunk_steps=tuple(steps), audio_ms=run.audio_ms + (-1,) * (len(chunks) - len(run.chunks)))
    run = t.s.run
    if not run.confirmed:
        return
    if run.sent < len(run.chunks) and run.sent == 0 and not run.tts_started:
        t.start_timer("tts_first_audio", p.tts_first_audio_timeout)
    for i in range(run.sent, len(run.chunks)):
        t.emit(Synthesize(session=t.s.session, run=run.id, chunk=i, text=run.chunks[i]))
    t.set_run(sent=len(run.chunks))
    _maybe_finish(t)


def on_llm_tool_call(t: _Tx, e: LLMToolCall) -> None:
    run = t.s.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        t.note = f"tool call of step {e.step} ignored"
        return
    if e.name == END_CALL:
        # Not executed now: the call ends once this reply has been heard in
        # full. A reply that is interrupted, or a run that is cancelled, never
        # hangs up on the caller.
        t.set_run(end_after="agent ended the call")
        t.note = "end_call: the call ends after this reply is heard"
        return
    if run.tool_steps >= t.s.policy.max_tool_steps:
        t.note = f"tool call {e.name} refused: {run.tool_steps} tool steps already"
        return
    call = ToolCallItem(call_id=e.call_id, name=e.name, arguments=e.arguments)
    t.set_run(calls=run.calls + (call,))
    same = next((r for r in t.s.tools if r.name == e.name and _same_args(r.arguments, e.arguments)), None)
    if same is None:
        rec = ToolRecord(call_id=e.call_id, name=e.name, arguments=e.arguments, run=run.id)
        t.set(tools=t.s.tools + (rec,))
        t.set_run(waiting=t.s.run.waiting + (e.call_id,))
        t.emit(CallTool(session=t.s.session, run=run.id, call_id=e.call_id, name=e.name, arguments=e.arguments))
    elif same.result is not None:
        # Already ran: reuse its result, never run it twice.
        t.note = f"tool {e.name} already ran as {same.call_id}; result reused"
        t.set_run(results=t.s.run.results + ((e.call_id, e.name, same.result),))
        _commit_tool(t, same.call_id)
    else:
        # Still running for an earlier run: wait for that execution.
        t.note = f"tool {e.name} already running as {same.call_id}; waiting for it"
        t.set_run(waiting=t.s.run.waiting + (same.call_id,))
        t.set(tools=tuple(_replace(r, run=run.id) if r.call_id == same.call_id else r for r in t.s.tools))
        t.set_run(calls=tuple(_replace(c, call_id=same.call_id) if c.call_id == e.call_id else c for c in t.s.run.calls))


def _same_args(a: str, b: str) -> bool:
    try:
        return msgspec.json.decode(a) == msgspec.json.decode(b)
    except msgspec.DecodeError:
        return a.strip() == b.strip()


def _commit_tool(t: _Tx, call_id: str) -> None:
    t.set(tools=tuple(_replace(r, committed=True) if r.call_id == call_id else r for r in t.s.tools))


def on_llm_done(t: _Tx, e: LLMDone) -> None:
    run = t.s.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        t.note = f"done of step {e.step} ignored"
        return
    if run.echo:
        # The restarted attempt ended before repeating everything: keep what
        # was said; what was received but not cut yet is said too.
        t.set_run(echo="")
    _step_done(t)


def _step_done(t: _Tx) -> None:
    run = t.s.run
    assert run is not None
    t.cancel_timer("llm_first_token")
    step_text = _join(_text_of_step(run, run.step), run.pending.strip())
    t.set_run(
        llm_active=False,
        step_text=run.step_text + (step_text,),
        step_calls=run.step_calls + (run.calls,),
        calls=(),
        tool_steps=run.tool_steps + (1 if run.calls else 0),
        continue_due=bool(run.calls),
    )
    # Speak what came before a tool call while the tool runs.
    _pump_chunks(t, final=True)
    if t.s.run is None or not t.s.run.continue_due:
        return
    if t.s.run.waiting:
        t.settle(AWAITING_TOOL)
    elif t.s.phase != PAUSED:
        _continue_after_tools(t)  # every result was known already (reused)


def _text_of_step(run: Run, step: int) -> str:
    return " ".join(c for c, s in zip(run.chunks, run.chunk_steps) if s == step)


def on_tool_result(t: _Tx, e: ToolResult) -> None:
    rec = next((r for r in t.s.tools if r.call_id == e.call_id), None)
    if rec is None or rec.result is not None:
        t.note = f"no outstanding tool call {e.call_id}"
        return
    result = e.result if e.ok else msgspec.json.encode({"error": e.result}).decode()
    t.set(tools=tuple(_replace(r, result=result, ok=e.ok) if r.call_id == e.call_id else r for r in t.s.tools))
    run = t.s.run
    if run is None:
        t.set(history=t.s.history + tuple(_tool_pair(_replace(rec, result=result))))
        _commit_tool(t, e.call_id)
        t.note = f"late result of {e.name} kept in history"
        return
    if e.call_id not in run.waiting:
        t.note = f"result of {e.name} kept for the next generation"
        return
    name = next((c.name for c in run.step_calls[-1] if c.call_id == e.call_id), e.name) if run.step_calls else e.name
    t.set_run(waiting=tuple(w for w in run.waiting if w != e.call_id), results=run.results + ((e.call_id, name, result),))
    _commit_tool(t, e.call_id)
    if not t.s.run.waiting and t.s.run.continue_due and t.s.phase != PAUSED:
        _continue_after_tools(t)  # during a hold: continues on resume


def _continue_after_tools(t: _Tx) -> None:
    run = t.s.run
    assert run is not None and run.continue_due
    t.set_run(step=run.step + 1, continue_due=False)
    t.go(_floor_phase(t.s.run))
    _start_llm(t)


def on_llm_error(t: _Tx, e: LLMError) -> None:
    if e.step != t.s.run.step:  # type: ignore[union-attr]
        t.note = f"error of step {e.step} ignored"
        return
    t.note = f"LLM error: {e.message}"
    _fallback(t)


def on_llm_timeout(t: _Tx, e: TimerFired) -> None:
    t.note = "LLM first token timed out"
    _fallback(t)


def on_tts_timeout(t: _Tx, e: TimerFired) -> None:
    t.note = "TTS first audio timed out"
    _fallback(t)


def _fallback(t: _Tx) -> None:
    """Give up on this run and say so, in a run of its own (the failing run's
    TTS output, if it ever comes, is stale by then)."""
    run = t.s.run
    scripted_failed = run is not None and run.scripted
    if run is not None:
        _cancel_run(t, CANCELLED)
    if scripted_failed:
        t.go(LISTENING)  # TTS itself is failing: saying so would fail too
        t.start_timer("reprompt", t.s.policy.reprompt_after)
        return
    _start_scripted(t, t.s.policy.fallback_text)


# ---------------------------------------------------------------------------
# Audio: TTS progress and what the caller actually heard


def on_tts_started(t: _Tx, e: TTSChunkStarted) -> None:
    if not t.s.run.tts_started:  # type: ignore[union-attr]
        t.cancel_timer("tts_first_audio")
    t.set_run(tts_started=True)


def on_tts_done(t: _Tx, e: TTSChunkDone) -> None:
    _chunk_audio(t, e.chunk, e.audio_ms)


def on_tts_error(t: _Tx, e: TTSError) -> None:
    t.note = f"TTS error on chunk {e.chunk}: {e.message}"
    _chunk_audio(t, e.chunk, 0)


def _chunk_audio(t: _Tx, chunk: int, audio_ms: int) -> None:
    run = t.s.run
    assert run is not None
    if not 0 <= chunk < len(run.audio_ms):
        t.note = f"chunk {chunk} unknown"
        return
    if run.audio_ms[chunk] >= 0:
        t.note = f"chunk {chunk} was already reported done"
        return
    audio = list(run.audio_ms)
    audio[chunk] = audio_ms
    t.set_run(audio_ms=tuple(audio))
    if audio_ms == 0 and chunk == run.played:
        # Nothing to play for this chunk: it is "heard" as far as order goes.
        _advance_played(t, chunk)
    _maybe_finish(t)


def on_playback(t: _Tx, e: PlaybackProgress) -> None:
    run = t.s.run
    assert run is not None
    if not run.audio_started:
        t.set_run(audio_started=True)
        t.settle(_floor_phase(t.s.run))
    if e.finished and e.chunk >= run.played:
        _advance_played(t, e.chunk + 1)
    _maybe_finish(t)


def _advance_played(t: _Tx, upto: int) -> None:
    """Chunks are heard in order; a chunk TTS produced no audio for (error)
    is passed over, and kept out of history."""
    run = t.s.run
    assert run is not None
    played = max(run.played, min(upto, len(run.chunks)))
    while played < len(run.chunks) and run.audio_ms[played] == 0:
        played += 1
    t.set_run(played=played)


def _maybe_finish(t: _Tx) -> None:
    """A run is done when the LLM is done, no tool is pending, every chunk was
    synthesized and the caller heard it all."""
    run = t.s.run
    if run is None or not run.confirmed or run.llm_active or run.waiting or run.continue_due or run.pending or run.hold:
        return
    if run.sent < len(run.chunks):
        return
    if run.played >= len(run.chunks) and (run.scripted or run.step_text):
        end_after = run.end_after
        _commit_run(t, interrupted=False)
        t.cancel_timer("playback")
        t.cancel_timer("tts_first_audio")
        if end_after:
            _end(t, end_after, tell_gateway=True)
            return
        t.go(LISTENING)
        if t.s.user_text and not t.s.user_speaking and not t.s.awaiting_finals:
            _maybe_answer(t)
        elif not t.s.user_speaking and not t.s.awaiting_finals:
            t.start_timer("reprompt", t.s.policy.reprompt_after)
        return
    if all(ms >= 0 for ms in run.audio_ms) and run.audio_ms and (run.scripted or run.step_text):
        # Everything is synthesized; if playback never reports, do not stay
        # "speaking" in silence forever.
        remaining = sum(run.audio_ms[run.played :]) / 1000.0
        t.start_timer("playback", remaining + t.s.policy.playback_grace)


def on_playback_timer(t: _Tx, e: TimerFired) -> None:
    t.note = "playback never confirmed; run closed with what was heard"
    _cancel_run(t, CANCELLED)
    t.go(LISTENING)
    t.start_timer("reprompt", t.s.policy.reprompt_after)


# ---------------------------------------------------------------------------
# Interruptions


def on_interrupt_timer(t: _Tx, e: TimerFired) -> None:
    if t.s.user_speaking:
        t.note = "speech outlasted the minimum: barge-in"
        _barge_in(t)


def on_resume_timer(t: _Tx, e: TimerFired) -> None:
    t.note = "no words: false interruption, resuming"
    _resume(t)


def _resume(t: _Tx) -> None:
    run = t.s.run
    assert run is not None
    t.cancel_timer("interrupt")
    t.cancel_timer("resume")
    t.set_run(hold=False, hold_phase="")
    t.emit(ResumePlayback(session=t.s.session, run=run.id))
    t.go(_floor_phase(t.s.run))
    if t.s.run.continue_due and not t.s.run.waiting:
        _continue_after_tools(t)  # a tool result came during the hold
        return
    _maybe_finish(t)


def _barge_in(t: _Tx) -> None:
    """The caller takes the floor: cancel the run in one step."""
    t.cancel_timer("interrupt")
    t.cancel_timer("resume")
    _cancel_run(t, INTERRUPTED)
    t.go(LISTENING)


def _cancel_run(t: _Tx, via: str) -> None:
    """Cancel the active run: LLM, TTS and playback together; commit what was
    heard. ``via`` is the transient phase recorded in the step's path."""
    run = t.s.run
    assert run is not None
    sid = t.s.session
    t.emit(CancelLLM(session=sid, run=run.id), CancelTTS(session=sid, run=run.id), FlushPlayback(session=sid, run=run.id))
    for name in ("llm_first_token", "tts_first_audio", "playback", "interrupt", "resume"):
        t.cancel_timer(name)
    if run.confirmed:
        _commit_run(t, interrupted=True)
    else:
        t.set(run=None)
    t.go(via)


def _commit_run(t: _Tx, interrupted: bool) -> None:
    """Move the run into history, keeping only the assistant text the caller
    heard; tool calls that completed are kept with their results."""
    run = t.s.run
    assert run is not None
    heard = [i for i in range(run.played) if run.audio_ms[i] != 0]
    heard_chunks = [run.chunks[i] for i in heard]
    heard_steps = [run.chunk_steps[i] for i in heard]
    results = {call_id: (name, result) for call_id, name, result in run.results}
    msgs: list[Message] = []
    if run.user_text:
        msgs.append(Message(role="user", content=run.user_text))
    n_steps = max(len(run.step_calls), (max(run.chunk_steps) + 1) if run.chunk_steps else 0)
    if run.scripted:
        n_steps = 1
    truncated = interrupted and run.played < len(run.chunks) or interrupted and (run.pending or run.llm_active)
    last_with_text = -1
    for step in range(n_steps):
        text = " ".join(c for c, s in zip(heard_chunks, heard_steps) if s == step)
        calls = tuple(c for c in (run.step_calls[step] if step < len(run.step_calls) else ()) if c.call_id in results)
        if not text and not calls:
            continue
        msgs.append(Message(role="assistant", content=text, tool_calls=calls))
        if text:
            last_with_text = len(msgs) - 1
        for c in calls:
            name, result = results[c.call_id]
            msgs.append(Message(role="tool", tool_call_id=c.call_id, name=name, content=result))
    if truncated and last_with_text >= 0:
        msgs[last_with_text] = _replace(msgs[last_with_text], interrupted=True)
    elif truncated and run.played == 0 and run.user_text:
        t.note = (t.note + "; " if t.note else "") + "interrupted before any audio was heard"
    t.set(history=t.s.history + tuple(msgs) + tuple(_late_tool_pairs(t.s)), run=None)
    for rec in t.s.tools:
        if rec.result is not None and not rec.committed:
            _commit_tool(t, rec.call_id)


def _floor_phase(run: Run | None) -> str:
    if run is None:
        return LISTENING
    if run.waiting and not run.llm_active:
        return AWAITING_TOOL
    return SPEAKING if run.audio_started else GENERATING


# ---------------------------------------------------------------------------
# The transition table: (phase, event type) -> handler, and where the handler
# can lead from there. A target "A>B" passes through the transient phase A
# (the run is cancelled there) and lands in B; "=" stays in the same phase.
# docs/state-diagram.md is drawn from this table, and a property test checks
# that every transition the reducer makes is one the table declares.


class Row(msgspec.Struct, frozen=True):
    phases: tuple[str, ...]
    event: type
    handler: Callable[[_Tx, AnyEvent], None]
    leads_to: tuple[str, ...]
    when: str = ""  # the label on the diagram's edge


def _timer(name: str, fn: Callable[[_Tx, TimerFired], None]) -> Callable[[_Tx, TimerFired], None]:
    fn.timer_name = name  # type: ignore[attr-defined]
    return fn


def on_spent_timer(t: _Tx, e: TimerFired) -> None:
    """A timer whose purpose passed with the phase it was set in."""
    t.note = f"timer {e.name} not applicable in {t.s.phase}"


LIVE = (LISTENING, TRANSCRIBING, GENERATING, AWAITING_TOOL, SPEAKING, PAUSED)
USER = (LISTENING, TRANSCRIBING)
FLOOR = AGENT_HAS_FLOOR
HELD = FLOOR + (PAUSED,)
STREAMING = (GENERATING, SPEAKING)  # an LLM step may be streaming
# Where a run's end can lead: back to listening, straight into the next turn
# the caller already finished, or (a goodbye was said) the end.
RUN_ENDS = (LISTENING, GENERATING, ENDED)
BARGE_IN = (f"{INTERRUPTED}>{LISTENING}", f"{INTERRUPTED}>{TRANSCRIBING}", f"{INTERRUPTED}>{GENERATING}")
FALLBACK = (f"{CANCELLED}>{GENERATING}", f"{CANCELLED}>{LISTENING}")
ENDS = (f"{CANCELLED}>{ENDED}",)

TRANSITIONS: tuple[Row, ...] = (
    # -- the session
    Row((IDLE,), SessionStarted, on_session_started, (LISTENING, GENERATING), "start (greeting?)"),
    Row(USER, SessionEnded, on_session_ended, (ENDED,), "hang-up"),
    Row(HELD, SessionEnded, on_session_ended, ENDS, "hang-up"),
    Row(USER, TimerFired, _timer("max_call", on_max_call_timer), (ENDED,), "max duration"),
    Row(HELD, TimerFired, _timer("max_call", on_max_call_timer), ENDS, "max duration"),
    # -- the caller's turn
    Row(USER, SpeechStarted, on_speech_started, (LISTENING,), "caller speaks"),
    Row(USER, SpeechStopped, on_speech_stopped, (TRANSCRIBING, GENERATING), "silence (preemptive?)"),
    Row(USER, TranscriptPartial, on_partial, ("=",), "partial"),
    Row(USER, TranscriptFinal, on_final, ("=", LISTENING, TRANSCRIBING, GENERATING), "final: answer"),
    Row(USER, Dtmf, on_dtmf, ("=", TRANSCRIBING, GENERATING), "key press"),
    Row((TRANSCRIBING,), TimerFired, _timer("endpoint", on_endpoint_timer), ("=", LISTENING, GENERATING), "endpoint"),
    Row(USER, TimerFired, _timer("final", on_final_timer), ("=", LISTENING, GENERATING), "no final: go on without it"),
    Row(HELD, TimerFired, _timer("final", on_final_timer), ("=",), "no final: stop waiting for it"),
    Row((LISTENING,), TimerFired, _timer("reprompt", on_reprompt_timer), (GENERATING,), "silence: re-prompt"),
    Row(USER, ToolResult, on_tool_result, ("=",), "late tool result"),
    # -- the agent has the floor: a sound holds it
    Row(FLOOR, SpeechStarted, on_speech_started, (PAUSED, f"{CANCELLED}>{LISTENING}"), "sound: hold"),
    Row(FLOOR, SpeechStopped, on_speech_stopped, ("=",), "end of an earlier sound"),
    Row(FLOOR, TranscriptPartial, on_partial, ("=",), "partial"),
    Row(FLOOR, TranscriptFinal, on_final, ("=", GENERATING, f"{CANCELLED}>{GENERATING}", f"{CANCELLED}>{TRANSCRIBING}", f"{CANCELLED}>{LISTENING}") + BARGE_IN, "final: words barge in; preemptive check"),
    Row(FLOOR, Dtmf, on_dtmf, BARGE_IN, "key press: barge-in"),
    # -- a hold: barge-in or false interruption
    Row((PAUSED,), SpeechStarted, on_speech_started, ("=",), "more sound"),
    Row((PAUSED,), SpeechStopped, on_speech_stopped, ("=",), "sound ended: wait for words"),
    Row((PAUSED,), TranscriptPartial, on_partial, ("=", f"{INTERRUPTED}>{LISTENING}"), "words: barge-in"),
    Row((PAUSED,), TranscriptFinal, on_final, ("=", GENERATING, SPEAKING, AWAITING_TOOL) + RUN_ENDS + BARGE_IN, "words: barge-in; none: resume"),
    Row((PAUSED,), Dtmf, on_dtmf, BARGE_IN, "key press: barge-in"),
    Row((PAUSED,), TimerFired, _timer("interrupt", on_interrupt_timer), ("=", f"{INTERRUPTED}>{LISTENING}"), "long speech: barge-in"),
    Row((PAUSED,), TimerFired, _timer("resume", on_resume_timer), (GENERATING, SPEAKING, AWAITING_TOOL) + RUN_ENDS, "no words: resume"),
    # -- the run: LLM, tools, TTS, playback
    Row(STREAMING, LLMToken, on_llm_token, ("=",), "token"),
    Row(STREAMING, LLMToolCall, on_llm_tool_call, ("=",), "tool call"),
    Row(STREAMING, LLMDone, on_llm_done, ("=", AWAITING_TOOL, SPEAKING) + RUN_ENDS, "LLM done"),
    Row((PAUSED,), LLMToken, on_llm_token, ("=",), "token"),
    Row((PAUSED,), LLMToolCall, on_llm_tool_call, ("=",), "tool call"),
    Row((PAUSED,), LLMDone, on_llm_done, ("=", GENERATING, SPEAKING), "LLM done"),
    Row(HELD, LLMError, on_llm_error, FALLBACK, "LLM error: fallback"),
    Row(FLOOR, ToolResult, on_tool_result, ("=", GENERATING, SPEAKING), "tool result: continue"),
    Row((PAUSED,), ToolResult, on_tool_result, ("=",), "tool result"),
    Row(HELD, TTSChunkStarted, on_tts_started, ("=",), "first audio"),
    Row(FLOOR, TTSChunkDone, on_tts_done, ("=", SPEAKING) + RUN_ENDS, "chunk synthesized"),
    Row(FLOOR, TTSError, on_tts_error, ("=", SPEAKING) + RUN_ENDS, "chunk failed"),
    Row((PAUSED,), TTSChunkDone, on_tts_done, ("=",), "chunk synthesized"),
    Row((PAUSED,), TTSError, on_tts_error, ("=",), "chunk failed"),
    Row(FLOOR, PlaybackProgress, on_playback, ("=", SPEAKING) + RUN_ENDS, "heard / all heard"),
    Row((PAUSED,), PlaybackProgress, on_playback, ("=",), "heard"),
    Row(HELD, TimerFired, _timer("llm_first_token", on_llm_timeout), FALLBACK, "LLM timeout: fallback"),
    Row(HELD, TimerFired, _timer("tts_first_audio", on_tts_timeout), FALLBACK, "TTS timeout: fallback"),
    Row(HELD, TimerFired, _timer("playback", on_playback_timer), (f"{CANCELLED}>{LISTENING}",), "playback never confirmed"),
    Row(LIVE, TimerFired, _timer("*", on_spent_timer), ("=",), "spent timer"),
    # -- ownership: the replica running this session's streams changed
    Row(LIVE, Takeover, on_takeover, ("=",), "new owner: restart the LLM step, re-issue tool calls"),
)

_HANDLERS: dict[tuple[str, type], Callable] = {}
_TIMER_HANDLERS: dict[tuple[str, str], Callable] = {}
for _row in TRANSITIONS:
    _name = getattr(_row.handler, "timer_name", None)
    for _phase in _row.phases:
        _key = (_phase, _name) if _name else (_phase, _row.event)
        _table = _TIMER_HANDLERS if _name else _HANDLERS
        assert _key not in _table, f"two rows for {_key}"
        _table[_key] = _row.handler


def _dispatch_timer(t: _Tx, e: TimerFired) -> None:
    t.fired(e.name)  # it is not running any more, whatever its handler does
    handler = _TIMER_HANDLERS.get((t.s.phase, e.name)) or _TIMER_HANDLERS[(t.s.phase, "*")]
    handler(t, e)


for _phase in LIVE:
    _HANDLERS[(_phase, TimerFired)] = _dispatch_timer


def row_for(phase: str, event: AnyEvent) -> Row | None:
    """The table row that handles ``event`` in ``phase`` (for docs and tests)."""
    name = event.name if isinstance(event, TimerFired) else None
    for row in TRANSITIONS:
        if phase in row.phases and row.event is type(event):
            timer = getattr(row.handler, "timer_name", None)
            if name is None or timer == name:
                return row
    if name is not None:
        return row_for_spent(phase)
    return None


def row_for_spent(phase: str) -> Row | None:
    return next((r for r in TRANSITIONS if getattr(r.handler, "timer_name", None) == "*" and phase in r.phases), None)


def initial_state() -> SessionState:
    return SessionState()


def encode_state(state: SessionState) -> bytes:
    return msgspec.msgpack.encode(state)


_state_decoder = msgspec.msgpack.Decoder(SessionState)


def decode_state(data: bytes) -> SessionState:
    return _state_decoder.decode(data)
