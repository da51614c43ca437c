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
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec

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


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    session: str
    at: float


class SessionStarted(Event, frozen=True, kw_only=True, tag=True):
    transport: str = "pcm"  # pcm | webrtc | twilio
    caller: str = ""
    # Settings that override the session policy (see reducer.Policy), plus
    # free-form values such as a greeting or a system prompt.
    params: dict[str, str] = {}


class SessionEnded(Event, frozen=True, kw_only=True, tag=True):
    reason: str = "hangup"


class SpeechStarted(Event, frozen=True, kw_only=True, tag=True):
    utterance: int


class SpeechStopped(Event, frozen=True, kw_only=True, tag=True):
    """``at`` is when the VAD decided speech had ended (after its silence
    window); ``speech_end_at`` is when the voiced audio itself ended, as the
    ASR's audio clock places it (0 if unknown)."""

    utterance: int
    speech_ms: int = 0
    speech_end_at: float = 0.0


class TranscriptPartial(Event, frozen=True, kw_only=True, tag=True):
    utterance: int
    text: str


class TranscriptFinal(Event, frozen=True, kw_only=True, tag=True):
    utterance: int
    text: str
    # When the ASR saw the end of speech; lets metrics split ASR delay.
    speech_end_at: float = 0.0


class RunEvent(Event, frozen=True, kw_only=True):
    run: int


class LLMToken(RunEvent, frozen=True, kw_only=True, tag=True):
    step: int
    text: str


class LLMToolCall(RunEvent, frozen=True, kw_only=True, tag=True):
    step: int
    call_id: str
    name: str
    arguments: str


class LLMDone(RunEvent, frozen=True, kw_only=True, tag=True):
    step: int
    finish_reason: str = "stop"


class LLMError(RunEvent, frozen=True, kw_only=True, tag=True):
    step: int
    message: str


class TTSChunkStarted(RunEvent, frozen=True, kw_only=True, tag=True):
    chunk: int


class TTSChunkDone(RunEvent, frozen=True, kw_only=True, tag=True):
    chunk: int
    audio_ms: int = 0


class TTSError(RunEvent, frozen=True, kw_only=True, tag=True):
    chunk: int
    message: str


class PlaybackProgress(RunEvent, frozen=True, kw_only=True, tag=True):
    """From the gateway: the caller has actually heard this much of a chunk.

    ``finished`` is True once the whole chunk has been played (for Twilio: its
    mark came back, and not because of a ``clear``).
    """

    chunk: int
    finished: bool
    played_ms: int = 0


class ToolResult(RunEvent, frozen=True, kw_only=True, tag=True):
    call_id: str
    name: str
    result: str  # JSON text
    ok: bool = True


class TimerFired(Event, frozen=True, kw_only=True, tag=True):
    name: str
    token: int  # matches StartTimer.token; a stale token is ignored


class Dtmf(Event, frozen=True, kw_only=True, tag=True):
    digit: str


AnyEvent = Union[
    SessionStarted,
    SessionEnded,
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
]

# --------------------------------------------------------------------------
# Commands


class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    session: str


class RunCommand(Command, frozen=True, kw_only=True):
    run: int


class StartLLM(RunCommand, frozen=True, kw_only=True, tag=True):
    step: int
    messages: tuple[Message, ...]


class CancelLLM(RunCommand, frozen=True, kw_only=True, tag=True):
    pass


class Synthesize(RunCommand, frozen=True, kw_only=True, tag=True):
    chunk: int
    text: str


class CancelTTS(RunCommand, frozen=True, kw_only=True, tag=True):
    pass


class PausePlayback(RunCommand, frozen=True, kw_only=True, tag=True):
    pass


class ResumePlayback(RunCommand, frozen=True, kw_only=True, tag=True):
    pass


class FlushPlayback(RunCommand, frozen=True, kw_only=True, tag=True):
    pass


class CallTool(RunCommand, frozen=True, kw_only=True, tag=True):
    call_id: str
    name: str
    arguments: str


class StartTimer(Command, frozen=True, kw_only=True, tag=True):
    name: str
    token: int
    delay: float  # seconds


class CancelTimer(Command, frozen=True, kw_only=True, tag=True):
    name: str
    token: int


class EndSession(Command, frozen=True, kw_only=True, tag=True):
    reason: str


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
]

# --------------------------------------------------------------------------
# Observation: what the runtime publishes about each reducer step, for the
# inspector, the event log and replay.


class Step(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One reducer step as recorded in the session's event log."""

    index: int  # position of the event in the session's log
    event: AnyEvent
    state_from: str
    state_to: str
    commands: tuple[AnyCommand, ...] = ()
    # Why nothing happened, if nothing did: "stale" (run not active) or
    # "rejected" (invalid in this state).
    dropped: str = ""
    note: str = ""


# --------------------------------------------------------------------------
# Codecs. msgpack on the bus; JSON for logs, exports and the browser.

_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)
_command_decoder = msgspec.msgpack.Decoder(AnyCommand)
_step_decoder = msgspec.msgpack.Decoder(Step)
_json_encoder = msgspec.json.Encoder()
_json_step_decoder = msgspec.json.Decoder(Step)

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError


def encode(message: Event | Command | Step) -> bytes:
    return _event_encoder.encode(message)


def decode_event(data: bytes) -> AnyEvent:
    return _event_decoder.decode(data)


def decode_command(data: bytes) -> AnyCommand:
    return _command_decoder.decode(data)


def decode_step(data: bytes) -> Step:
    return _step_decoder.decode(data)


def to_json(message: object) -> bytes:
    return _json_encoder.encode(message)


def step_from_json(data: bytes | str) -> Step:
    return _json_step_decoder.decode(data)


def type_name(message: object) -> str:
    return type(message).__name__


# --------------------------------------------------------------------------
# Session plumbing between services (not reducer events).


class AsrClaim(msgspec.Struct, frozen=True, kw_only=True):
    """Gateway -> one ASR worker (queue group): take this session's audio."""

    session: str
    sample_rate: int = 16000


class AsrClaimed(msgspec.Struct, frozen=True, kw_only=True):
    session: str
    worker: str


class SessionControl(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Broadcast on subjects.control(session): release per-session resources."""

    session: str
    action: Literal["end"] = "end"
    reason: str = ""


def encode_plain(obj: msgspec.Struct) -> bytes:
    return _event_encoder.encode(obj)


def decode_plain(data: bytes, cls: type):
    return msgspec.msgpack.decode(data, type=cls)
