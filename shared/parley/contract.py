"""The wire contract: every event and every command Parley's services exchange.

Events are facts that happened (a transcript arrived, a chunk was played); the
reducer consumes them. Commands are decisions the reducer made (start the LLM,
synthesize this text, flush that run); the runtime and the other services
execute them. Both are frozen msgspec structs in tagged unions, so one decoder
validates anything that arrives on the bus, and no service invents a message
shape inline.

Every message that can go stale carries the session id and the run id. Run ids
are small integers counted per session by the reducer; an event of a run that
is not the session's active run is dropped by construction.

Time is the ``at`` field (seconds since the epoch, set by whoever observed the
fact). The reducer never reads a clock, so replaying a log gives the same
commands, bit for bit.

Evolving the contract
---------------------
Events, commands and steps are stored (the session's event log, the state in
KV) and replayed long after they were written, by later releases. So:

- Every tagged struct names its tag explicitly (``tag="SpeechStopped"``). The
  tag is the wire name: it never changes, even when the class is renamed.
  ``shared/tests/test_contract.py`` pins the vocabulary.
- A new field gets a default, so messages and logs written before it still
  decode; a receiver ignores fields it does not know, so older services keep
  reading messages from newer ones.
- ``SCHEMA`` is the version of everything stored. It is bumped when a stored
  shape changes in a way the above cannot absorb (a field removed, renamed or
  retyped). Steps (``Step.schema``) and the KV value carry it, so a reader
  says which version it met instead of failing on some field.
"""

from __future__ import annotations

import enum
import functools
from typing import Literal, Union

import msgspec

# The version of the stored formats: steps in the event log, the state in KV.
# 1: release f79863b and before (no version field). 2: explicit tags, typed
# phases, Step.schema/rules.
SCHEMA = 2

# --------------------------------------------------------------------------
# Tools the reducer handles itself (the runtime never executes them): their
# names are part of the contract between the LLM adapters and the reducer.

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"  # handled by the reducer when the session has a transfer destination
SEND_DIGITS = "send_digits"  # handled by the reducer on calls Parley placed (keypad tones to an IVR)
# What a keypad can send: digits, * and #, and w for a half-second pause
# (Twilio's <Play digits>).
KEYPAD_OUT = frozenset("0123456789*#w")

# --------------------------------------------------------------------------
# Conversation items (carried inside StartLLM and the session state)


class ToolCallItem(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    name: str
    arguments: str  # JSON text, as the LLM produced it


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of the conversation history, in the OpenAI chat shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCallItem, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    # An assistant reply the caller did not hear to the end: content holds only
    # what was played.
    interrupted: bool = False


# --------------------------------------------------------------------------
# Events


class Event(msgspec.Struct, frozen=True, kw_only=True):
    session: str
    at: float


class SessionStarted(Event, frozen=True, kw_only=True, tag="SessionStarted"):
    transport: str = "pcm"  # pcm | webrtc | twilio
    caller: str = ""
    # Settings that override the session policy (see reducer.Policy), plus
    # free-form values such as a greeting or a system prompt.
    params: dict[str, str] = {}
    # The gateway records this call (the deployment's setting and the
    # session's opt-in decided so): the caller is told first if the policy
    # has a consent sentence.
    recorded: bool = False


class SessionEnded(Event, frozen=True, kw_only=True, tag="SessionEnded"):
    reason: str = "hangup"


class SpeechOnset(Event, frozen=True, kw_only=True, tag="SpeechOnset"):
    """The VAD heard the first few tens of milliseconds of what may be voice,
    before it is sure enough to start an utterance (SpeechStarted follows if
    the sound goes on). A pause-only signal: nothing is transcribed for it.
    ``utterance`` is the id the utterance will have if it starts."""

    utterance: int
    level: float = 0.0  # dBFS of the sound so far, as SpeechStopped.level (0: unknown)


class SpeechOnsetEnded(Event, frozen=True, kw_only=True, tag="SpeechOnsetEnded"):
    """The sound of a ``SpeechOnset`` faded before an utterance started (the
    VAD's count fell below its silence threshold): a click, a breath. It
    comes in order after the onset, however late the ASR runs, so whoever
    paused on the onset can go on at once, on evidence. Every SpeechOnset is
    followed by a SpeechStarted or a SpeechOnsetEnded for the same
    ``utterance`` (unless the stream ends first)."""

    utterance: int


class SpeechStarted(Event, frozen=True, kw_only=True, tag="SpeechStarted"):
    utterance: int
    level: float = 0.0  # dBFS of the sound so far, as SpeechStopped.level (0: unknown)


class SpeechStopped(Event, frozen=True, kw_only=True, tag="SpeechStopped"):
    """``at`` is when the VAD decided speech had ended (after its silence
    window); ``speech_end_at`` is when the voiced audio itself ended, as the
    ASR's audio clock places it (0 if unknown)."""

    utterance: int
    speech_ms: int = 0
    speech_end_at: float = 0.0
    # Acoustic P(end of turn) over the utterance's audio up to this stop, from
    # the ASR's end-of-turn model; -1: unknown (no model, other providers).
    eot: float = -1.0
    # How loud the sound was, in dBFS (the 80th percentile of its 32 ms
    # windows' RMS; the ASR's VAD measures it on the audio it hears): the
    # reducer compares a talk-over with the caller's own turns (a TV across
    # the room is far quieter). 0: unknown.
    level: float = 0.0


class TranscriptPartial(Event, frozen=True, kw_only=True, tag="TranscriptPartial"):
    utterance: int
    text: str


# The words TranscriptFinal.floor is the probability of, as the first word:
# they take the floor however short the utterance (the orchestrator's
# words.TAKE_FLOOR holds them and more).
FLOOR_WORDS = ("no", "nope", "nah", "wait", "stop", "hold", "hang", "sorry", "hey")


class TranscriptFinal(Event, frozen=True, kw_only=True, tag="TranscriptFinal"):
    utterance: int
    text: str
    # When the ASR saw the end of speech; lets metrics split ASR delay.
    speech_end_at: float = 0.0
    # P(the transcript so far is a finished turn), from the text; -1: unknown.
    complete: float = -1.0
    # P(the utterance begins with a word that takes the floor however short
    # it is: FLOOR_WORDS, "no", "stop", "wait"...), the
    # recogniser's own probability for that first word, measured on short
    # utterances whatever text it chose (phone-band "No." may come out "" or
    # "Go."); -1: not measured (a long utterance, another provider).
    floor: float = -1.0


class RunEvent(Event, frozen=True, kw_only=True):
    run: int


class LLMEvent(RunEvent, frozen=True, kw_only=True):
    """Output of one LLM stream. ``attempt`` names the stream (a run's step is
    restarted under a new attempt when its owner changed or output was lost);
    ``seq`` counts the stream's outputs from 0, so the reducer tells a gap or
    a duplicate (-1: a producer that does not number them)."""

    step: int
    attempt: int = 0
    seq: int = -1


class LLMToken(LLMEvent, frozen=True, kw_only=True, tag="LLMToken"):
    text: str


class LLMToolCall(LLMEvent, frozen=True, kw_only=True, tag="LLMToolCall"):
    call_id: str
    name: str
    arguments: str
    # The tool's declaration says it only reads (filled in by the orchestrator
    # from its tool registry, never by the model): it may run while the
    # answer that asked for it is held. False: it changes something, and
    # waits until that answer is heard.
    reads_only: bool = False


class LLMDone(LLMEvent, frozen=True, kw_only=True, tag="LLMDone"):
    finish_reason: str = "stop"


class LLMError(LLMEvent, frozen=True, kw_only=True, tag="LLMError"):
    message: str


class TTSChunkStarted(RunEvent, frozen=True, kw_only=True, tag="TTSChunkStarted"):
    chunk: int


class TTSChunkDone(RunEvent, frozen=True, kw_only=True, tag="TTSChunkDone"):
    chunk: int
    audio_ms: int = 0


class TTSError(RunEvent, frozen=True, kw_only=True, tag="TTSError"):
    chunk: int
    message: str


class PlaybackProgress(RunEvent, frozen=True, kw_only=True, tag="PlaybackProgress"):
    """From the gateway: the caller has actually heard this much of a chunk.

    ``finished`` is True once the whole chunk has been played (for Twilio: its
    mark came back, and not because of a ``clear``).
    """

    chunk: int
    finished: bool
    played_ms: int = 0


class ToolResult(RunEvent, frozen=True, kw_only=True, tag="ToolResult"):
    call_id: str
    name: str
    result: str  # JSON text
    ok: bool = True


class TimerFired(Event, frozen=True, kw_only=True, tag="TimerFired"):
    name: str
    token: int  # matches StartTimer.token; a stale token is ignored


class Dtmf(Event, frozen=True, kw_only=True, tag="Dtmf"):
    digit: str


class Takeover(Event, frozen=True, kw_only=True, tag="Takeover"):
    """Made by the orchestrator replica that takes over a live session whose
    last owner was another replica (it died, or gave the session up): the
    reducer re-issues the work that lived in the old owner's process."""

    owner: str


class CallStatus(Event, frozen=True, kw_only=True, tag="CallStatus"):
    """From the gateway: the telephony provider's view of the call (Twilio's
    status and answering-machine callbacks), for outbound calls above all.

    ``status`` is Twilio's CallStatus (queued, initiated, ringing,
    in-progress, busy, no-answer, failed, canceled, completed);
    ``answered_by`` its AnsweredBy (human, machine_start, machine_end_beep,
    machine_end_silence, machine_end_other, fax, unknown), "" if none.
    """

    status: str
    answered_by: str = ""
    provider_call: str = ""  # Twilio's CallSid

    @property
    def machine(self) -> bool:
        return self.answered_by.startswith("machine") or self.answered_by == "fax"


class ToneHeard(Event, frozen=True, kw_only=True, tag="ToneHeard"):
    """From the gateway: a steady pure tone in the other end's audio (an
    answering machine's beep), ``ms`` long at ``hz``. Measured only on
    outbound calls. What it means is the reducer's decision."""

    hz: int
    ms: int


class DigitsSent(Event, frozen=True, kw_only=True, tag="DigitsSent"):
    """From the gateway: keypad tones were played into the call (a
    ``SendDigits`` was executed), and the call's audio is back; or, with
    ``ok`` False, why they could not be. Scoped by ``call_id`` like a tool
    result ("" for the policy's own IVR path)."""

    digits: str
    call_id: str = ""
    ok: bool = True
    error: str = ""


class ProviderFailed(Event, frozen=True, kw_only=True, tag="ProviderFailed"):
    """From the ASR or TTS service: a cloud provider failed on this session's
    work (refused the key, rate-limited, dropped its socket, answered too
    late), and who did the work instead. ``fallback`` is "" when nobody
    could: then the work itself failed (an empty final, a ``TTSError``).
    ``utterance`` (ASR) or ``run``/``chunk`` (TTS) say which work; -1: none
    in particular (the session's stream)."""

    service: str  # "asr" | "tts"
    provider: str  # deepgram, openai, cartesia, elevenlabs ...
    error: str  # what the provider said (never a key)
    fallback: str = ""
    utterance: int = -1
    run: int = -1
    chunk: int = -1


class Usage(Event, frozen=True, kw_only=True, tag="Usage"):
    """What a provider did for this session, in the unit it bills: ASR
    ``audio_s`` (seconds of audio sent), TTS ``characters``, LLM
    ``input_tokens`` / ``output_tokens``. Summed per session by ``parley
    usage`` and priced with the deployer's table; the reducer only notes it."""

    service: str  # "asr" | "tts" | "llm"
    provider: str
    unit: str
    amount: float


AnyEvent = Union[
    SessionStarted,
    SessionEnded,
    SpeechOnset,
    SpeechOnsetEnded,
    SpeechStarted,
    SpeechStopped,
    TranscriptPartial,
    TranscriptFinal,
    LLMToken,
    LLMToolCall,
    LLMDone,
    LLMError,
    TTSChunkStarted,
    TTSChunkDone,
    TTSError,
    PlaybackProgress,
    ToolResult,
    TimerFired,
    Dtmf,
    Takeover,
    CallStatus,
    ToneHeard,
    DigitsSent,
    ProviderFailed,
    Usage,
]

# Who may produce each event type: the producer token of its subject
# (subjects.event_from). NATS lets each service publish under its own token
# only, and the orchestrator refuses an event whose type is not its
# producer's, so owning one service does not let an attacker speak for
# another (docs/SECURITY.md). Takeover never travels: a replica makes it.
PRODUCERS: dict[type, str] = {
    SessionStarted: "gateway",
    SessionEnded: "gateway",
    PlaybackProgress: "gateway",
    Dtmf: "gateway",
    CallStatus: "gateway",
    ToneHeard: "gateway",
    DigitsSent: "gateway",
    SpeechOnset: "asr",
    SpeechOnsetEnded: "asr",
    SpeechStarted: "asr",
    SpeechStopped: "asr",
    TranscriptPartial: "asr",
    TranscriptFinal: "asr",
    TTSChunkStarted: "tts",
    TTSChunkDone: "tts",
    TTSError: "tts",
    LLMToken: "orchestrator",
    LLMToolCall: "orchestrator",
    LLMDone: "orchestrator",
    LLMError: "orchestrator",
    ToolResult: "orchestrator",
    TimerFired: "orchestrator",
    Takeover: "orchestrator",
}


# Types several services produce: the event's ``service`` field says which,
# and must match its subject's producer.
PRODUCERS_BY_SERVICE: dict[type, dict[str, str]] = {
    ProviderFailed: {"asr": "asr", "tts": "tts"},
    Usage: {"asr": "asr", "tts": "tts", "llm": "orchestrator"},
}


def producer_of(event: Event) -> str:
    """The service that may publish ``event`` (its subject's producer token);
    ValueError for an event no service may publish."""
    by_service = PRODUCERS_BY_SERVICE.get(type(event))
    if by_service is not None:
        producer = by_service.get(getattr(event, "service", ""))
        if producer is None:
            raise ValueError(f"{type_name(event)} from service {getattr(event, 'service', '')!r}: no such producer")
        return producer
    try:
        return PRODUCERS[type(event)]
    except KeyError:
        raise ValueError(f"{type_name(event)} has no producer in contract.PRODUCERS") from None


def may_produce(event: Event, producer: str) -> bool:
    """Is ``producer`` the service that may publish ``event``?"""
    try:
        return producer_of(event) == producer
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Commands


class Command(msgspec.Struct, frozen=True, kw_only=True):
    session: str


class RunCommand(Command, frozen=True, kw_only=True):
    run: int


class StartLLM(RunCommand, frozen=True, kw_only=True, tag="StartLLM"):
    step: int
    messages: tuple[Message, ...]
    attempt: int = 0


class CancelLLM(RunCommand, frozen=True, kw_only=True, tag="CancelLLM"):
    """Stop the run's LLM streams: every attempt up to ``attempt`` (-1: all)."""

    attempt: int = -1


class Synthesize(RunCommand, frozen=True, kw_only=True, tag="Synthesize"):
    chunk: int
    text: str
    # Who should speak it (the session's ``tts`` parameter: piper, cartesia,
    # elevenlabs, openai); "" the worker's own choice (PARLEY_TTS).
    provider: str = ""


class CancelTTS(RunCommand, frozen=True, kw_only=True, tag="CancelTTS"):
    pass


class PausePlayback(RunCommand, frozen=True, kw_only=True, tag="PausePlayback"):
    pass


class ResumePlayback(RunCommand, frozen=True, kw_only=True, tag="ResumePlayback"):
    pass


class FlushPlayback(RunCommand, frozen=True, kw_only=True, tag="FlushPlayback"):
    pass


class CallTool(RunCommand, frozen=True, kw_only=True, tag="CallTool"):
    call_id: str
    name: str
    arguments: str


class StartTimer(Command, frozen=True, kw_only=True, tag="StartTimer"):
    name: str
    token: int
    delay: float  # seconds


class CancelTimer(Command, frozen=True, kw_only=True, tag="CancelTimer"):
    name: str
    token: int


class EndSession(Command, frozen=True, kw_only=True, tag="EndSession"):
    reason: str
    # A transfer instead of a hang-up: connect the caller to this number (the
    # deployment's, never the model's); warm: the person there first hears
    # ``summary``.
    transfer_to: str = ""
    warm: bool = False
    summary: str = ""


class SendDigits(Command, frozen=True, kw_only=True, tag="SendDigits"):
    """Play keypad tones into the call (navigating the menu of the line
    Parley called). ``digits``: 0-9, * and #, w for a half-second pause.
    ``call_id`` and ``run``: the send_digits tool call that asked for them
    ("" and -1 when the policy's IVR path did). The gateway answers with
    ``DigitsSent``."""

    digits: str
    call_id: str = ""
    run: int = -1


AnyCommand = Union[
    StartLLM,
    CancelLLM,
    Synthesize,
    CancelTTS,
    PausePlayback,
    ResumePlayback,
    FlushPlayback,
    CallTool,
    StartTimer,
    CancelTimer,
    EndSession,
    SendDigits,
]

# --------------------------------------------------------------------------
# Observation: what the runtime publishes about each reducer step, for the
# inspector, the event log and replay.


class Phase(enum.StrEnum):
    """The conversation's phase (see the reducer). The values are stored."""

    IDLE = "Idle"
    LISTENING = "Listening"
    TRANSCRIBING = "Transcribing"
    GENERATING = "Generating"
    AWAITING_TOOL = "AwaitingTool"
    SPEAKING = "Speaking"
    PAUSED = "Paused"  # the caller made a sound while the agent had the floor
    INTERRUPTED = "Interrupted"  # transient: barge-in confirmed, run cancelled
    CANCELLED = "Cancelled"  # transient: run superseded or timed out
    ENDED = "Ended"


# Why a step changed nothing: "stale" (its run, LLM attempt or timer is no
# longer active), "duplicate" (an LLM output already seen) or "rejected" (the
# event is not valid in this phase).
Dropped = Literal["", "stale", "duplicate", "rejected"]


class Judgement(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="Judgement"):
    """Why the reducer decided what it did about the floor, with the signals
    and thresholds it used: the inspector shows it per turn.

    ``kind`` "turn_end": is the caller done? ``verdict`` "answer" or "wait"
    (for ``wait`` s of silence after the voice ended; ``silence`` so far).
    ``kind`` "interruption": the caller made a sound while the agent had the
    floor; ``heard`` classifies the words ("sound", "backchannel", "answer": a
    yes/okay that answers the agent's question, "words"); ``verdict`` "hold",
    "resume" or "barge-in"; ``score`` the length of the sound (s) against
    ``threshold``, the policy's noise_sound (a few ordinary words in less
    sound are taken for a noise); ``wait`` how long a pause may last before
    playback resumes without words (onset_hold, resume_timeout). A turn_end
    "answer" with ``release`` was prepared at ``wait`` but is heard only from
    ``release`` s of silence (the caller may go on: the answer is held).
    """

    kind: Literal["turn_end", "interruption"]
    verdict: Literal["answer", "wait", "hold", "resume", "barge-in"]
    reason: str  # the rule that decided, in words
    text: str = ""  # the words judged
    heard: Literal["", "sound", "backchannel", "answer", "words"] = ""
    eot: float = -1.0  # acoustic P(end of turn) (-1: unknown)
    complete: float = -1.0  # text P(complete) (-1: unknown)
    score: float = -1.0  # what the threshold was applied to (-1: no signal)
    threshold: float = -1.0
    silence: float = -1.0  # s of silence after the voice ended, so far
    wait: float = -1.0  # s of silence the policy requires before answering
    # s of silence before a prepared answer may be HEARD (the run is held at the
    # gateway until then: a turn that may go on); -1: not held, heard when ready
    release: float = -1.0


class Step(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="Step"):
    """One reducer step as recorded in the session's event log."""

    index: int  # position of the event in the session's log
    event: AnyEvent
    state_from: Phase
    state_to: Phase
    commands: tuple[AnyCommand, ...] = ()
    dropped: Dropped = ""
    note: str = ""
    # Set when the reducer failed on this event (a bug): the session was
    # ended by the commands of this step.
    error: str = ""
    # The reducer's judgements of the floor made in this step (an
    # interruption, then the end of the turn it began, say).
    judgements: tuple[Judgement, ...] = ()
    # Versions of the format (contract.SCHEMA) and of the reducer's decisions
    # (reducer.RULES) that wrote this step; 1 in logs from before versions.
    schema: int = 1
    rules: int = 1


# --------------------------------------------------------------------------
# Codecs. msgpack on the bus; JSON for logs, exports and the browser.

_msgpack_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)
_command_decoder = msgspec.msgpack.Decoder(AnyCommand)
_step_decoder = msgspec.msgpack.Decoder(Step)
_json_encoder = msgspec.json.Encoder()
_json_step_decoder = msgspec.json.Decoder(Step)

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError


def encode(message: msgspec.Struct) -> bytes:
    """Any contract struct as msgpack, for the bus, the log or KV."""
    return _msgpack_encoder.encode(message)


def _safely(decode, data):
    """msgspec raises UnicodeDecodeError (not DecodeError) for a string that
    is not UTF-8 (found by fuzz/targets.py bus): every decoder here raises
    DecodeError or ValidationError only, so one bad message is dropped like
    any other."""
    try:
        return decode(data)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in a string: {exc}") from None


def decode_event(data: bytes) -> AnyEvent:
    return _safely(_event_decoder.decode, data)


def decode_command(data: bytes) -> AnyCommand:
    return _safely(_command_decoder.decode, data)


def decode_step(data: bytes) -> Step:
    return _safely(_step_decoder.decode, data)


@functools.cache
def _decoder(cls: type) -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(cls)


def decode(data: bytes, cls: type[msgspec.Struct]):
    """msgpack ``data`` as a ``cls`` (validated); one decoder per type."""
    return _safely(_decoder(cls).decode, data)


def to_json(message: object) -> bytes:
    return _json_encoder.encode(message)


def step_from_json(data: bytes | str) -> Step:
    return _safely(_json_step_decoder.decode, data)


def type_name(message: object) -> str:
    """The wire name of a tagged struct (its tag), else its class name."""
    tag = getattr(type(message), "__struct_config__", None)
    return tag.tag if tag is not None and isinstance(tag.tag, str) else type(message).__name__


# --------------------------------------------------------------------------
# Session plumbing between services (not reducer events).


class AsrClaim(msgspec.Struct, frozen=True, kw_only=True, tag="AsrClaim"):
    """Gateway -> one ASR worker (queue group): take this session's audio.

    ``utterance`` is the id the worker gives its first utterance: a session
    claimed again after its worker died goes on from the old worker's count
    (see AsrProgress), so an utterance heard again keeps its id and the
    reducer can tell it was heard already."""

    session: str
    sample_rate: int = 16000
    utterance: int = 0
    # Who should hear this session (its ``asr`` parameter: whisper, deepgram,
    # openai); "" the worker's own choice (PARLEY_ASR). A worker that has no
    # such provider says so (ProviderFailed) and uses its own.
    provider: str = ""
    # The caller's audio as the transport receives it, which the gateway can
    # publish unchanged on subjects.audio_native beside the 16 kHz PCM:
    # "mulaw/8000" on a Twilio call, "" none. A provider that takes it as it
    # is (Deepgram) is spared the upsampled copy (4x the bytes).
    native: str = ""


class AsrProgress(msgspec.Struct, frozen=True, kw_only=True, tag="AsrProgress"):
    """An ASR worker's answer to the gateway's liveness check of one session
    (``subjects.asr_alive``): where it is, so that if it dies the next worker
    can be given the audio it had not finished with."""

    session: str
    next_utterance: int  # the id its next utterance gets
    unfinished: int = -1  # the oldest utterance without a final yet (-1: none)
    unfinished_since: float = 0.0  # wall clock when that utterance's speech began


class AsrProgressAll(msgspec.Struct, frozen=True, kw_only=True, tag="AsrProgressAll"):
    """An ASR worker's answer to one liveness check for several sessions at
    once (the body: their ids, comma-separated): a gateway asks each worker
    once per period for all its calls, not once per call. Sessions the
    worker does not hold are left out."""

    items: tuple[AsrProgress, ...] = ()


class LoadReport(msgspec.Struct, frozen=True, kw_only=True, tag="LoadReport"):
    """One service replica's load (``subjects.load``, parley.load): the
    sessions it carries now and how many it can carry (its capacity setting).
    ``gone``: it is stopping; its capacity leaves with it at once (a replica
    that dies is forgotten when its reports stop, parley.load.TTL)."""

    kind: str  # gateway, asr, orchestrator, tts
    instance: str
    active: int
    capacity: int  # 0: no limit of its own
    gone: bool = False


class TtsResume(msgspec.Struct, frozen=True, kw_only=True, tag="TtsResume"):
    """A TTS worker given a Synthesize again (``subjects.tts_resume``): from
    which piece does the gateway need this chunk's audio?"""

    session: str
    run: int
    chunk: int
    worker: str  # the asking worker: its audio of the chunk is taken from now on


class TtsResumeAt(msgspec.Struct, frozen=True, kw_only=True, tag="TtsResumeAt"):
    """The gateway's answer: the first piece (by ``Parley-Seq``) it has not
    got; the pieces before it need not be sent (nor paced). ``RESUME_NONE``:
    the chunk was heard whole, or its run is over: none of its audio."""

    from_piece: int


RESUME_NONE = 1 << 30


class AsrClaimed(msgspec.Struct, frozen=True, kw_only=True, tag="AsrClaimed"):
    session: str
    worker: str
    # The claim's ``native`` if this worker wants that audio on
    # subjects.audio_native (it is subscribed before it answers); "" the
    # gateway sends PCM only. An older worker never says it (the default).
    native: str = ""
    # Bytes of audio_in (PCM16) the worker's VAD hears at a time, counted from
    # the first byte it got: the gateway sends the caller's audio when a
    # window is whole (a 20 ms piece that completes none waits for the next),
    # so the worker hears every window as soon as before, in fewer messages.
    # 0 (an older worker): each piece as it comes.
    window: int = 0


class SessionControl(msgspec.Struct, frozen=True, kw_only=True, tag="SessionControl"):
    """Broadcast on subjects.control(session): release per-session resources."""

    session: str
    action: Literal["end"] = "end"
    reason: str = ""
