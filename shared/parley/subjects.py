"""Every NATS subject Parley uses, in one place.

Subjects are keyed by session id, and by run id wherever output can go stale.
Session ids are made by the gateway from [A-Za-z0-9_-] only, so they are safe
as a single subject token (see ``session_token``).

Flow of one turn (docs/ARCHITECTURE.md draws it):

    gateway --audio_in(s)--> asr --events(s)--> orchestrator
    orchestrator --tts_request--> tts --tts_audio(s, run)--> gateway
    orchestrator --playback(s)--> gateway --events(s)--> orchestrator
"""

from __future__ import annotations

import re

PREFIX = "parley"

# Queue groups: one member of each group handles a given message.
ASR_GROUP = "asr"
ORCHESTRATOR_GROUP = "orchestrator"

# JetStream resources.
SESSIONS_BUCKET = "parley_sessions"  # KV: session id -> encoded SessionState
LOG_STREAM = "PARLEY_LOG"  # the per-session event log (Step records)
# Every session event, durable until the orchestrator that reduced it acks it
# (work-queue retention). The stream stores ``parley.evt.<session>`` as
# ``parley.evt.<partition>.<session>`` (a server-side subject transform with
# ``partition(EVENT_PARTITIONS, 1)``), and each partition has one durable
# consumer whose pinned client is the one orchestrator replica reducing it.
EVENTS_STREAM = "PARLEY_EVENTS"
# Part of the stream's layout: every producer and replica must agree, and
# changing it means recreating the stream (drained first).
EVENT_PARTITIONS = 12
EVENT_PIN_GROUP = "owner"  # the consumers' priority group
GRANTS_BUCKET = "parley_grants"  # KV: SHA-256 of a session token -> its grant (the gateways')
LIVE_BUCKET = "parley_live"  # KV: "<partition>.<session>" -> owner, for live sessions only

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def session_token(session: str) -> str:
    """Validate a session id for use as one subject token."""
    if not _SESSION_RE.match(session):
        raise ValueError(f"invalid session id {session!r}")
    return session


# --- inbound audio: PCM16 LE mono 16 kHz, headers Parley-Seq and Parley-Rate
def audio_in(session: str) -> str:
    return f"{PREFIX}.audio.in.{session_token(session)}"


# --- inbound audio as the carrier sent it (μ-law 8 kHz from Twilio), beside
# audio_in, for a cloud ASR that takes it as it is (AsrClaimed.native says
# so); headers Parley-Seq, Parley-Rate and Parley-Encoding. The worker's own
# VAD still hears audio_in.
def audio_native(session: str) -> str:
    return f"{PREFIX}.audio.native.{session_token(session)}"


# --- ASR claims a session (request/reply, queue group ASR_GROUP)
ASR_CLAIM = f"{PREFIX}.asr.claim"


def asr_alive(worker: str) -> str:
    """One ASR worker's liveness (request/reply): "no responders" means it is
    gone, and the gateway claims the session again through the group."""
    return f"{PREFIX}.asr.alive.{session_token(worker)}"

# --- events for the orchestrator (through bus.publish_event only), one subject
# per session AND producer: ``parley.evt.<session>.<producer>``. The producer
# of each event type is fixed (contract.PRODUCERS), and NATS lets each service
# publish under its own producer token only, so a compromised ASR worker
# cannot publish a SessionEnded or a ToolResult: the orchestrator refuses an
# event whose type is not its subject's producer's. Stored in EVENTS_STREAM;
# core subscribers (tests, tools) see them here.
PRODUCERS = ("gateway", "asr", "tts", "orchestrator")


def event_from(session: str, producer: str) -> str:
    """The subject ``producer`` publishes ``session``'s events on."""
    if producer not in PRODUCERS:
        raise ValueError(f"unknown event producer {producer!r}")
    return f"{PREFIX}.evt.{session_token(session)}.{producer}"


def events(session: str) -> str:
    """Every producer's events of ``session`` (a subscription pattern)."""
    return f"{PREFIX}.evt.{session_token(session)}.*"


EVENTS_ALL = f"{PREFIX}.evt.*.*"


def stored_events(session: str) -> str:
    """The subjects ``session``'s events have inside EVENTS_STREAM (any
    partition, any producer): ``parley.evt.<partition>.<session>.<producer>``."""
    return f"{PREFIX}.evt.*.{session_token(session)}.*"


def event_partition(p: int) -> str:
    """Filter of partition ``p``'s consumer: its events (beats are another filter)."""
    return f"{PREFIX}.evt.{int(p)}.*.*"


def stored_origin(subject: str) -> tuple[str, str]:
    """(session, producer) of a subject inside EVENTS_STREAM; ValueError if it
    is not ``parley.evt.<partition>.<session>.<producer>``."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != [PREFIX, "evt"] or parts[4] not in PRODUCERS:
        raise ValueError(f"{subject!r} is not a stored event subject")
    return session_token(parts[3]), parts[4]


def event_beat(p: int) -> str:
    """A beat into partition ``p`` (orchestrators publish one every fraction of a
    second): the server pins a partition only when it has a message to deliver,
    so a partition whose owner died is taken over even while its calls are quiet."""
    return f"{PREFIX}.beat.{int(p)}"


EVENT_BEATS = f"{PREFIX}.beat.*"


def event_consumer(p: int) -> str:
    return f"evt-{int(p)}"


# --- orchestrator replicas announce themselves (core, every half second), so
# each knows its fair share of partitions
ORCHESTRATOR_MEMBERS = f"{PREFIX}.orchestrator.members"


def orchestrator_alive(replica: str) -> str:
    """One orchestrator replica's liveness (request/reply): "no responders"
    means it is gone, and its partitions are unpinned at once."""
    return f"{PREFIX}.orchestrator.alive.{session_token(replica)}"

# --- TTS: requests are stored in a work-queue stream and pulled by one worker
# at a time (a worker that dies mid-chunk: the request is delivered again to
# another within the consumer's ack wait); cancels go to every worker
TTS_REQUEST = f"{PREFIX}.tts.req"
TTS_CANCEL = f"{PREFIX}.tts.cancel"
TTS_STREAM = "PARLEY_TTS"  # work queue: a Synthesize stays until a worker finished with it
TTS_CONSUMER = "tts"  # the one durable pull consumer every worker pulls from


def tts_alive(worker: str) -> str:
    """One TTS worker's liveness (request/reply): the gateway asks when a
    chunk's audio stalls; "no responders" means the worker is gone, and the
    answer goes on from the next chunk."""
    return f"{PREFIX}.tts.alive.{session_token(worker)}"



def tts_held(worker: str) -> str:
    """A TTS worker says here, as it takes a stored request, the request's ack
    subject (the body). Its peers keep them: when the worker is gone (its
    ``tts_alive`` has no responders) one of them hands its requests back to the
    stream at once ("-NAK"), rather than after the consumer's ack wait."""
    return f"{PREFIX}.tts.held.{session_token(worker)}"


TTS_HELD_ALL = f"{PREFIX}.tts.held.*"


def tts_resume(session: str) -> str:
    """Where a TTS worker given a request again (its first worker died) asks
    the gateway carrying the call which piece of the chunk it needs
    (request/reply: contract.TtsResume -> TtsResumeAt)."""
    return f"{PREFIX}.tts.resume.{session_token(session)}"


def tts_audio(session: str, run: int) -> str:
    """Synthesized PCM16 for one run; headers carry chunk, seq, rate, last."""
    return f"{PREFIX}.tts.audio.{session_token(session)}.{int(run)}"


def tts_audio_all(session: str) -> str:
    return f"{PREFIX}.tts.audio.{session_token(session)}.*"


# --- load reports (issue 10 point 7, parley.load): every replica of every
# service publishes its load (contract.LoadReport, core, every second) on
# parley.load.<kind>.<instance>; the gateways add them up and refuse a new
# call when a kind is at capacity. A gateway starting asks for reports now.
LOAD_ALL = f"{PREFIX}.load.*.*"
LOAD_ASK = f"{PREFIX}.load.ask"


def load(kind: str, instance: str) -> str:
    return f"{PREFIX}.load.{session_token(kind)}.{session_token(instance)}"


# --- orchestrator info (request/reply): which brain answers, for the page
ORCHESTRATOR_INFO = f"{PREFIX}.orchestrator.info"

# --- the front desk's call-back tasks (request/reply, JSON {"callbacks": [...]}),
# for the inspector: requests the agent could not serve itself
ORCHESTRATOR_CALLBACKS = f"{PREFIX}.orchestrator.callbacks"

# --- LLM cancel: broadcast to every orchestrator replica (whoever runs it)
LLM_CANCEL = f"{PREFIX}.llm.cancel"


# --- playback commands (Pause/Resume/Flush/EndSession) for the gateway
def playback(session: str) -> str:
    return f"{PREFIX}.play.{session_token(session)}"


# --- session control broadcast: every service that holds per-session
# resources listens here (session ended -> release them)
def control(session: str) -> str:
    return f"{PREFIX}.ctl.{session_token(session)}"


CONTROL_ALL = f"{PREFIX}.ctl.*"


# --- observation: Step records and UI notices for the inspector
def observe(session: str) -> str:
    return f"{PREFIX}.obs.{session_token(session)}"


# --- notices the gateway itself derives (latency split, barge-in reaction),
# JSON, for inspectors watching a call from elsewhere (e.g. a phone call)
def notices(session: str) -> str:
    return f"{PREFIX}.notice.{session_token(session)}"


# --- the JetStream event log, one subject per session
def log(session: str) -> str:
    return f"{PREFIX}.log.{session_token(session)}"


LOG_ALL = f"{PREFIX}.log.>"


def session_of(subject: str) -> str:
    """The session token of a per-session subject (its 4th token)."""
    parts = subject.split(".")
    if len(parts) < 3:
        raise ValueError(f"subject {subject!r} carries no session")
    return parts[2] if parts[1] in ("evt", "play", "ctl", "obs", "log", "notice") else parts[3]


# Header names on audio messages.
H_SEQ = "Parley-Seq"
H_RATE = "Parley-Rate"
H_CHUNK = "Parley-Chunk"
H_LAST = "Parley-Last"  # "1" on the final (possibly empty) message of a chunk
H_ENCODING = "Parley-Encoding"  # on audio_native: "mulaw" (absent: PCM16)
H_WORKER = "Parley-Worker"  # TTS audio: the worker that made it (tts_alive); caller audio after an ASR re-claim: the worker that has the session
