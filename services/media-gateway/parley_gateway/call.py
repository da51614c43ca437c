"""One call through the gateway, whatever the transport.

A ``Call`` owns the NATS side of a session: it claims an ASR worker, publishes
the caller's audio and SessionStarted/SessionEnded, receives TTS audio and
playback commands, and keeps the outbound ``Playout`` buffer. Transports
(``/ws/pcm``, Twilio Media Streams, WebRTC) only move bytes in and out:

* inbound: ``await call.feed(pcm16_16k)``; a transport whose audio comes in
  another form (Twilio's μ-law 8 kHz) offers it (``transport.native``), and
  if the session's ASR worker asks for it (a cloud ASR that takes it as it
  is: ``AsrClaimed.native``) also hands it over unchanged first
  (``await call.feed_native(data)``, published on ``audio_native``);
* outbound: every 20 ms the transport takes ``call.next_frame()`` (WebRTC's
  track pulls it; the shared ``Ticker`` calls ``transport.tick()`` for the
  push transports, which take frames there);
* playback commands: the call executes Pause/Resume/Flush on its ``Playout``
  and tells the transport (``on_pause``, ``on_resume``, ``on_flush``), which
  makes them true at the far end (Twilio: ``clear``, and a replay from what
  the caller's marks say was heard).

TTS audio plays only for what the orchestrator asked TTS to say: a run's
chunk is *announced* by the reducer step that carries its ``Synthesize``
(on ``subjects.observe``, which only the orchestrator may publish). Audio for
a run or chunk nobody announced (a made-up run 99, which would otherwise close
every older run of the playout and silence the call) is held briefly, in case
its step is still on its way on the other subscription, then dropped and
counted (``tts_audio_unannounced``); it never reaches the playout. So not even
TTS can silence a call that way.

A chunk's audio comes from the TTS worker named in its headers. When the
playout waits for a chunk that has not ended (nothing to play) for
TTS_STALL_S, the call asks that worker whether it is alive (``tts_alive``);
"no responders" means it died mid-chunk: the chunk is ended at what was
played and the answer goes on from the next chunk, and any later chunk that
worker had started is emptied, to come again whole from the worker the
stored request is given to next (a Synthesize is redelivered by the stream,
see the TTS worker). Audio of a chunk from a second worker replaces the
first's from the piece it had reached (by sequence number); that worker
asks first (``subjects.tts_resume``, ``resume_at``) and sends only the
pieces after it. A chunk that
never gets any audio while later ones wait is given up after
TTS_CHUNK_PATIENCE_S, and one that stalls with its worker alive after
TTS_STALL_GIVE_UP_S: a missing chunk never holds the answer forever.

A client with a buffer of its own (the page over WebRTC or /ws/pcm, ``parley
talk``) is told at a pause to stop playing that run (``on_pause`` sends
``pause``); it drops what it had not played yet and answers how much that
was (``client_paused``): the playout takes that much back (``Playout.rewind``),
so the resume plays on from exactly what the caller heard, the recording's
agent channel loses it too, and a chunk already reported finished whose
voiced end was among it is reported unfinished (``PlaybackProgress`` with
``finished=False`` for a chunk behind: the reducer takes it out of what
was heard). A resume waits for that answer (at most ``ANSWER_WAIT_S`` after
the pause) once the client said it answers (``hello``); a client that never
answers plays as before.

Playback progress (what the caller heard) comes from the playout marks, unless
the transport knows better (Twilio echoes marks): then it reports progress
itself through ``call.heard``. Progress and latency notices are published, in
the order they were learned, by one task per call (``_publish_reports``): the
20 ms path never awaits NATS and never leaves a task without a reference. The
caller's audio goes to the ASR only once every progress report queued before
it is stored (``held_audio``): what the caller said after hearing something is
never stored before the news that they heard it, whatever the event stream
was doing meanwhile.

A transport that cannot go on (its peer stopped reading, a bug in its tick)
calls its own ``fail``: it closes with a reason sent to the peer, logs it,
counts it, and its call ends with that reason (SessionEnded tells the
orchestrator).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

import msgspec
import numpy as np
from nats.aio.client import Client
from nats.errors import NoRespondersError

from parley import bus, contract, subjects, telemetry
from parley.audio import Mark, Playout, Resampler
from parley.audio.tone import ToneDetector

from .admission import Admission
from .asr_watch import ASR_CHECK_S, AsrWatch
from .latency import TurnLatency
from .recording import FLUSH_S, Recorder, Recordings
from .tasks import TaskSet
from parley.contract import (
    EndSession,
    FlushPlayback,
    PausePlayback,
    PlaybackProgress,
    ResumePlayback,
    SendDigits,
    SessionControl,
    SessionEnded,
    SessionStarted,
)

log = logging.getLogger("parley.gateway")

FRAME_MS = 20
MAX_INBOUND_BYTES = 64_000  # 2 s of 16 kHz PCM16 in one message is plenty


class Transport(Protocol):
    kind: str  # pcm | webrtc | twilio
    rate: int  # outbound sample rate
    reports_playback: bool  # True: the transport reports progress itself

    async def send_notice(self, notice: dict) -> None: ...
    def on_pause(self, run: int) -> None: ...
    def on_resume(self, run: int) -> None: ...
    async def on_flush(self, run: int) -> None: ...
    async def close(self, reason: str) -> None: ...
    def fail(self, reason: str, kind: str) -> None:
        """It cannot go on: close with ``reason`` sent to the peer, log and
        count it (``<transport>_error_<kind>``); its call ends."""


# How much of the caller's audio the call keeps, to hand to the next ASR
# worker if the one hearing it dies mid-utterance (PCM16 16 kHz: 32 kB/s).
REPLAY_S = 6.0
# Caller audio held back while a playback report is being stored (see
# Call.held_audio): at most this much (20 s of PCM16 16 kHz, and its native
# copy; publish_event gives up after bus.PUBLISH_PATIENCE).
HOLD_MAX_BYTES = 20 * 48_000
# With no ASR worker answering a claim (one restarting), ask again every
# CLAIM_RETRY_S for CLAIM_PATIENCE_S before refusing the call.
CLAIM_PATIENCE_S = 5.0
CLAIM_RETRY_S = 0.25


# Audio for a chunk whose Synthesize step has not been seen yet waits this
# long (its step may still be queued on the observe subscription), at most
# this many bytes per call; then it is dropped and counted.
UNANNOUNCED_HOLD_S = 2.0
UNANNOUNCED_MAX_BYTES = 1 << 20
RUNS_REMEMBERED = 64  # announced runs kept per call (older ones are over anyway)

# A chunk whose audio stopped coming (nothing to play, not ended): ask its TTS
# worker after this long, then at most every TTS_ASK_EVERY_S.
TTS_STALL_S = 0.2
TTS_ASK_EVERY_S = 0.5
TTS_ASK_TIMEOUT_S = 0.5
# A chunk with no audio at all while later ones wait (its request is being
# delivered again: TTS_ACK_WAIT_S plus synthesis), and one that stalls with
# its worker alive: given up after these.
TTS_CHUNK_PATIENCE_S = 4.0
TTS_STALL_GIVE_UP_S = 8.0

# A client that answers pauses (client_paused): a resume waits for its answer
# at most this long after the pause; what it may say it dropped, at most
# (the playout keeps this much of a run's played audio to take back).
ANSWER_WAIT_S = 0.6
REWIND_MAX_MS = 500
VOICED = 0.01  # RMS (of full scale) of a 10 ms window that is more than silence


@dataclass(frozen=True)
class Switchboard:
    """What the gateway hands every call it builds, whatever the transport:
    the NATS connection, the gateway's counters and telemetry (from the app
    factory: no call reaches for a process-wide one), and the shared
    recordings, admission and ASR liveness check (None: not used)."""

    nc: Client
    stats: dict
    tel: telemetry.Telemetry
    recordings: Recordings | None = None
    admission: Admission | None = None
    asr_watch: AsrWatch | None = None


_NOTHING = object()  # _publish_reports: no item carried over


def new_session_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"


class Call:
    # long: the call's state, one attribute a line with why
    def __init__(self, board: Switchboard, transport: Transport, session: str | None = None):
        self.nc = board.nc
        self.transport = transport
        self.admission = board.admission
        self.asr_watch = board.asr_watch  # the gateway's shared ASR liveness check (None: this call checks its own)
        self.session = session or new_session_id(transport.kind)
        self.tones: ToneDetector | None = None  # outbound calls only (set in start)
        self.playout = Playout(rate=transport.rate, frame_ms=FRAME_MS, keep_ms=REWIND_MAX_MS)
        self.client_answers = False  # the client said it answers "pause" (hello): resumes wait for its answer
        self.answers_due: dict[int, float] = {}  # run -> when the client was told to stop playing it (monotonic)
        self.resume_due: set[int] = set()  # runs whose resume waits for the client's answer
        self.resamplers: dict[tuple[int, int], Resampler] = {}
        self.flushed_runs: set[int] = set()
        self.seq = 0
        self.subs: list = []
        self.closed = False
        self.ended_by_agent = False
        self.stats = board.stats
        self.frames_out = 0
        self.latency = TurnLatency()
        self.tel = board.tel
        self.started_at = time.time()
        self.playback_started: dict[int, float] = {}  # run -> first frame out
        self.playback_last: dict[int, float] = {}  # run -> last chunk finished
        self.asr_worker = ""
        self.asr_native = ""  # what the worker wants on audio_native ("" nothing)
        # After a re-claim by another worker, the caller's audio names its worker: a
        # first worker that was only unreachable (a cluster node's death moves its
        # connection) hears it is no longer the session's and lets go without a word.
        self.asr_fence = ""
        self.native_seq = 0
        self.recent_native: deque[tuple[float, bytes]] = deque()  # (wall clock, native audio) of the last REPLAY_S
        self.tasks = TaskSet(self.stats, context=lambda: {"session_id": self.session})
        # What the outbound path learned, in order: playback reports, other
        # publishing (a callable), None to stop (see _publish_reports).
        self._reports: asyncio.Queue[PlaybackProgress | Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self.asr_progress: contract.AsrProgress | None = None
        self.asr_checked_at = 0.0  # wall clock of the worker's last progress answer
        self.recent_audio: deque[tuple[float, bytes]] = deque()  # (wall clock, PCM16 16 kHz) of the last REPLAY_S sent to the ASR
        # The ASR worker hears the caller in VAD windows (AsrClaimed.window
        # bytes, counted from the first byte it got): audio that completes no
        # window yet waits in ``unsent`` for the piece that does, so a 20 ms
        # piece is not a message of its own when the worker could do nothing
        # with it (5 messages per 160 ms instead of 8, the worker's windows
        # as early as before).
        self.asr_window = 0  # 0: each piece as it comes
        self.unsent = bytearray()
        self.audio_pos = 0  # bytes of the caller's audio handed on to this worker
        # Causal order across producers: the caller's audio reaches the ASR
        # only after every playback report queued before it is stored, so an
        # ASR event caused by that audio (the caller talking after hearing
        # the answer) cannot be stored before the report of what they heard
        # (while the event stream elects a leader, each producer's retries
        # would otherwise land in any order, and a heard answer would look
        # unheard: withdrawn, the turns joined).
        self.unstored_reports = 0  # PlaybackProgress queued, not yet stored (or given up)
        self.held_audio: deque[tuple[bool, bytes]] = deque()  # (native?, audio) waiting for them, oldest first
        self.held_bytes = 0
        self._turn_parent: dict = {}  # run -> trace context from its TTS audio
        self.paused_at: dict[int, float] = {}  # run -> when its PausePlayback was executed
        self.recordings = board.recordings
        self.recorder: Recorder | None = None  # this call is recorded (decided in start)
        self.announced: dict[int, set[int]] = {}  # run -> chunks the orchestrator asked TTS for
        self.unannounced: dict[tuple[int, int], list[tuple[float, object]]] = {}  # (run, chunk) -> held messages
        self.unannounced_bytes = 0
        self.chunk_source: dict[tuple[int, int], list] = {}  # (run, chunk) -> [TTS worker, next piece seq]
        self._stall: tuple[tuple[int, int], float] | None = None  # (run, chunk) waited for, since (monotonic)
        self._stall_asked = 0.0  # monotonic time of the last tts_alive question
        self._stall_asking = False

    # ---------------------------------------------------------------- lifetime
    async def start(self, params: dict[str, str] | None = None, caller: str = "") -> None:
        self.asr_provider = (params or {}).get("asr", "")
        self.tones = ToneDetector(16000) if (params or {}).get("direction") == "outbound" else None
        s = self.session
        self.subs = [
            await self.nc.subscribe(subjects.tts_audio_all(s), cb=self._on_audio),
            await self.nc.subscribe(subjects.playback(s), cb=self._on_playback),
            await self.nc.subscribe(subjects.observe(s), cb=self._on_observe),
            await self.nc.subscribe(subjects.tts_resume(s), cb=self._on_resume),
        ]
        try:
            await self._claim_asr()
        except Exception as exc:  # noqa: BLE001
            for sub in self.subs:
                await sub.unsubscribe()
            self.subs = []
            self.closed = True
            raise RuntimeError("no speech recognizer is available (is the asr service running?)") from exc
        if self.admission is not None:
            self.admission.enter(s)
        if self.asr_watch is not None:
            self.asr_watch.add(self)
        else:
            self.tasks.spawn(self._watch_asr(), "watch-asr")
        self._reporter = self.tasks.spawn(self._publish_reports(), "reports")
        now = time.time()
        if self.recordings is not None:
            self.recorder = self.recordings.start(s, params or {}, self.transport.kind, now)
        if self.recorder is not None:
            self.tasks.spawn(self._flush_recording(), "recording")
        event = SessionStarted(session=s, at=now, transport=self.transport.kind, caller=caller, params=params or {}, recorded=self.recorder is not None)
        await bus.publish_event(self.nc, event)
        log.info("call started", extra={"session_id": s, "transport": self.transport.kind})

    async def _claim_asr(self, first_utterance: int = 0, patience: float = CLAIM_PATIENCE_S) -> None:
        """A worker of the ASR queue group takes the session. With none there
        (a worker restarting under the supervisor, or just starting), it asks
        again for ``patience`` seconds before the call is refused."""
        offer = getattr(self.transport, "native", "")
        claim = contract.encode(
            contract.AsrClaim(session=self.session, sample_rate=16000, utterance=first_utterance, provider=getattr(self, "asr_provider", ""), native=offer)
        )
        deadline = time.monotonic() + patience
        while True:
            try:
                reply = await self.nc.request(subjects.ASR_CLAIM, claim, timeout=max(0.5, deadline - time.monotonic()))
                break
            except NoRespondersError:
                if time.monotonic() >= deadline:
                    raise
                log.warning("no asr worker answers the claim yet; asking again", extra={"session_id": self.session})
                await asyncio.sleep(CLAIM_RETRY_S)
        claimed = contract.decode(reply.data, contract.AsrClaimed)
        self.asr_worker = claimed.worker
        self.asr_window = claimed.window if 0 < claimed.window <= MAX_INBOUND_BYTES // 4 else 0
        self.asr_native = claimed.native if claimed.native and claimed.native == offer else ""

    async def _watch_asr(self, every: float = ASR_CHECK_S) -> None:
        """If the session's ASR worker is gone (its liveness subject has no
        responders: the process died), claim the session again through the
        queue group, so another worker hears the rest of the call, starting
        with the audio the dead one had not finished (``_reclaim_asr``). A
        slow worker is not gone: a timeout changes nothing (two workers on one
        session would double every event)."""
        while not self.closed:
            await asyncio.sleep(every)
            try:
                reply = await self.nc.request(subjects.asr_alive(self.asr_worker), self.session.encode(), timeout=2)
            except NoRespondersError:
                await self._reclaim_asr()
            except Exception:  # noqa: BLE001 - slow or NATS reconnecting: not evidence of death
                pass
            else:
                try:
                    self.asr_progress = contract.decode(reply.data, contract.AsrProgress)
                    self.asr_checked_at = time.time()
                except (contract.DecodeError, contract.ValidationError):
                    pass  # an older worker: alive, no progress

    async def _reclaim_asr(self) -> None:
        """Another worker for a session whose worker died. It is given the
        audio from the start of the oldest utterance the dead one had not
        finished (or, with none, the last half second: a start it had not
        yet confirmed), and numbers its utterances on from there, so the
        reducer knows an utterance it hears again (``AsrClaim.utterance``)."""
        gone, progress = self.asr_worker, self.asr_progress
        if progress is not None and progress.unfinished >= 0:
            first, since = progress.unfinished, progress.unfinished_since - 0.3
        else:
            first = progress.next_utterance if progress is not None else 0
            since = (self.asr_checked_at or self.started_at) - 0.5
        try:
            await self._claim_asr(first)
        except Exception as exc:  # noqa: BLE001 - none left now; the next round finds it gone again and retries
            self._count("asr_reclaim_failures", 1)
            log.warning("ASR worker gone and no other claimed the session: retrying", extra={"session_id": self.session, "gone": gone, "error": repr(exc)[:200]})
            return
        if self.asr_worker == gone:
            # The same worker answered: it was unreachable, not dead (its NATS
            # connection moving to another node of a cluster), and it still
            # has the session (a claim is idempotent). Replaying would make it
            # hear that audio twice: a turn heard, and answered, twice.
            self._count("asr_rejoins", 1)
            log.warning("ASR worker answered again (unreachable a moment, not gone): nothing replayed", extra={"session_id": self.session, "worker": gone})
            return
        self.asr_fence = self.asr_worker
        if self.asr_native:  # the provider's copy first, as feed_native/feed send them
            encoding, rate = self.asr_native.split("/")
            for data in [data for at, data in self.recent_native if at >= since]:
                await self.nc.publish(subjects.audio_native(self.session), data, headers=bus.audio_headers(self.native_seq, int(rate), encoding=encoding, worker=self.asr_fence))
                self.native_seq += 1
        replay = [pcm for at, pcm in self.recent_audio if at >= since]
        for pcm in replay:
            await self.nc.publish(subjects.audio_in(self.session), pcm, headers=bus.audio_headers(self.seq, 16000, worker=self.asr_fence))
            self.seq += 1
        self.audio_pos = sum(map(len, replay))  # the new worker's windows start at the replay's first byte
        self.asr_progress = None
        log.warning(
            "ASR worker gone; session claimed again",
            extra={"session_id": self.session, "gone": gone, "worker": self.asr_worker, "first_utterance": first, "replayed_ms": len(replay) and round(sum(map(len, replay)) / 32)},
        )
        self._count("asr_reclaims", 1)

    async def end(self, reason: str = "hangup") -> None:
        if self.closed:
            return
        self.closed = True
        if self.admission is not None:
            self.admission.leave(self.session)
        if self.asr_watch is not None:
            self.asr_watch.remove(self)
        await self._drain_reports()
        self.tasks.cancel()
        if self.recorder is not None:
            self.recorder.close(time.time(), reason)
        s = self.session
        try:
            if self.unsent and not self.held_audio:  # the last piece of a window the call ended in
                await self._to_asr(bytes(self.unsent))
                self.unsent.clear()
            if not self.ended_by_agent:
                await bus.publish_event(self.nc, SessionEnded(session=s, at=time.time(), reason=reason))
            await self.nc.publish(subjects.control(s), contract.encode(SessionControl(session=s, reason=reason)))
        except Exception:  # noqa: BLE001 - NATS may be gone; nothing more to do
            log.warning("could not announce the end of the call", extra={"session_id": s})
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        self._expire_unannounced(float("inf"))  # whatever is still held never plays: counted
        for run in list(self.playback_started):
            self._playback_span(run, self.playback_last.get(run, time.time()), interrupted=False)
        self.tel.span_with_id(
            "session",
            session=s,
            key="session",
            parent=None,
            start=self.started_at,
            end=time.time(),
            attributes={"parley.transport": self.transport.kind, "parley.end_reason": reason},
        )
        log.info("call ended", extra={"session_id": s, "reason": reason, "frames_out": self.frames_out})

    # ---------------------------------------------------------------- inbound
    async def feed(self, pcm16_16k: bytes) -> None:
        if len(pcm16_16k) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        if len(pcm16_16k) > MAX_INBOUND_BYTES:
            raise ValueError(f"audio message too large ({len(pcm16_16k)} bytes, max {MAX_INBOUND_BYTES})")
        if not pcm16_16k or self.closed:
            return
        if self.recorder is not None:
            self.recorder.caller(time.time(), pcm16_16k)
        pcm = self._whole_windows(pcm16_16k)
        if pcm is None:
            pass  # completes no window of the worker's yet: goes with the next piece
        elif self.unstored_reports or self.held_audio:
            self._hold_audio(False, pcm)
        else:
            await self._to_asr(pcm)
        if self.tones is not None:
            # Calls we placed: a beep may be a voicemail greeting's end (the reducer judges).
            for tone in self.tones.feed(pcm16_16k):
                await bus.publish_event(self.nc, contract.ToneHeard(session=self.session, at=time.time(), hz=tone.hz, ms=tone.ms))

    def _whole_windows(self, pcm: bytes) -> bytes | None:
        """What of the caller's audio goes to the ASR worker now: everything
        not sent yet once it completes a window of the worker's (see
        ``asr_window``), else None (it waits in ``unsent``)."""
        w = self.asr_window
        if w <= 0 and not self.unsent:
            self.audio_pos += len(pcm)
            return pcm
        self.unsent += pcm
        end = self.audio_pos + len(self.unsent)
        if w > 0 and end // w == self.audio_pos // w:
            return None
        out = bytes(self.unsent)
        self.unsent.clear()
        self.audio_pos = end
        return out

    async def _to_asr(self, pcm16_16k: bytes) -> None:
        """The caller's audio to the session's ASR worker, kept for a replay (``_reclaim_asr``)."""
        await self.nc.publish(subjects.audio_in(self.session), pcm16_16k, headers=bus.audio_headers(self.seq, 16000, worker=self.asr_fence))
        self.seq += 1
        now = time.time()
        recent = self.recent_audio
        recent.append((now, pcm16_16k))
        while recent and recent[0][0] < now - REPLAY_S:
            recent.popleft()

    async def feed_native(self, data: bytes) -> None:
        """The caller's audio as the transport received it (its ``native``
        offer), before ``feed`` gets the same audio as PCM: only while the
        session's ASR worker asked for it, unchanged, on ``audio_native``."""
        if not self.asr_native or not data or self.closed:
            return
        if len(data) > MAX_INBOUND_BYTES:
            raise ValueError(f"audio message too large ({len(data)} bytes, max {MAX_INBOUND_BYTES})")
        if self.unstored_reports or self.held_audio:
            self._hold_audio(True, data)
        else:
            await self._native_to_asr(data)

    async def _native_to_asr(self, data: bytes) -> None:
        encoding, rate = self.asr_native.split("/")
        await self.nc.publish(subjects.audio_native(self.session), data, headers=bus.audio_headers(self.native_seq, int(rate), encoding=encoding, worker=self.asr_fence))
        self.native_seq += 1
        now = time.time()
        recent = self.recent_native
        recent.append((now, data))
        while recent and recent[0][0] < now - REPLAY_S:
            recent.popleft()

    def _hold_audio(self, native: bool, data: bytes) -> None:
        """Keep the caller's audio back while a playback report is not stored
        (see ``held_audio``); past HOLD_MAX_BYTES the oldest goes, counted
        (publish_event gives up long before: PUBLISH_PATIENCE)."""
        held = self.held_audio
        held.append((native, data))
        self.held_bytes += len(data)
        while self.held_bytes > HOLD_MAX_BYTES and held:
            self.held_bytes -= len(held.popleft()[1])
            self._count("caller_audio_dropped", 1)

    async def _release_audio(self) -> None:
        """Every playback report is stored: the held audio goes, in order (a
        report queued meanwhile holds the rest again)."""
        held = self.held_audio
        while held and not self.unstored_reports and not self.closed:
            native, data = held.popleft()  # popped and published with no await between: feed() cannot overtake it
            self.held_bytes -= len(data)
            if not native:
                await self._to_asr(data)
            elif self.asr_native:  # (a worker that no longer wants it, after a re-claim: dropped)
                await self._native_to_asr(data)

    async def dtmf(self, digit: str) -> None:
        await bus.publish_event(self.nc, contract.Dtmf(session=self.session, at=time.time(), digit=digit))

    # --------------------------------------------------------------- outbound
    async def _on_audio(self, msg) -> None:
        try:
            meta = bus.AudioMeta(msg.headers)
            run = int(msg.subject.rsplit(".", 1)[1])
        except ValueError as exc:
            self._count("tts_audio_invalid", 1)
            log.warning("bad TTS audio message dropped", extra={"session_id": self.session, "error": str(exc)})
            return
        if meta.chunk is None or run in self.flushed_runs or len(msg.data) % 2 or not 8000 <= meta.rate <= 48000:
            self._count("frames_dropped_stale", max(1, len(msg.data) // 640))
            return
        self._expire_unannounced(time.monotonic())
        if meta.chunk not in self.announced.get(run, ()):
            self._hold_unannounced(run, meta.chunk, msg)
            return
        self._play_audio(run, meta, msg)

    def _hold_unannounced(self, run: int, chunk: int, msg) -> None:
        """Audio of a chunk not announced (yet): held, never played unless its
        Synthesize step arrives within UNANNOUNCED_HOLD_S."""
        if self.unannounced_bytes + len(msg.data) > UNANNOUNCED_MAX_BYTES:
            self._drop_unannounced(run, chunk, [msg], "too much unannounced audio")
            return
        self.unannounced.setdefault((run, chunk), []).append((time.monotonic(), msg))
        self.unannounced_bytes += len(msg.data)

    def _expire_unannounced(self, now: float) -> None:
        for key in [k for k, held in self.unannounced.items() if held[0][0] < now - UNANNOUNCED_HOLD_S]:
            held = self.unannounced.pop(key)
            self.unannounced_bytes -= sum(len(m.data) for _, m in held)
            self._drop_unannounced(*key, [m for _, m in held], "no Synthesize for it")

    def _drop_unannounced(self, run: int, chunk: int, msgs: list, why: str) -> None:
        self._count("tts_audio_unannounced", len(msgs))
        log.warning(
            "TTS audio for a run/chunk the orchestrator never asked for: dropped",
            extra={"session_id": self.session, "run_id": run, "chunk": chunk, "messages": len(msgs), "why": why},
        )

    def _announce(self, run: int, chunk: int) -> None:
        """The orchestrator asked TTS for this chunk: its audio may play (and
        what arrived before the step did plays now, in order)."""
        if run not in self.announced:
            for key in [k for k in self.chunk_source if k[0] < run]:
                del self.chunk_source[key]  # older runs are over: only one plays at a time
        self.announced.setdefault(run, set()).add(chunk)
        while len(self.announced) > RUNS_REMEMBERED:
            del self.announced[min(self.announced)]
        held = self.unannounced.pop((run, chunk), None)
        if held:
            self.unannounced_bytes -= sum(len(m.data) for _, m in held)
            for _, msg in held:
                self._play_audio(run, bus.AudioMeta(msg.headers), msg)

    def _play_audio(self, run: int, meta: bus.AudioMeta, msg) -> None:
        if run not in self._turn_parent and msg.headers and "traceparent" in msg.headers:
            self._turn_parent[run] = telemetry.extract(msg.headers)
        if run in self.flushed_runs:
            self._count("frames_dropped_stale", max(1, len(msg.data) // 640))
            return
        key = (run, meta.chunk)
        data = self._from_source(key, meta, msg.data) if meta.worker else msg.data
        if data is None:
            return
        resampler = self.resamplers.get(key)
        head = b""
        if resampler is not None and resampler.in_rate != meta.rate:
            # The chunk changed voice mid-way (a TTS provider failed and
            # another took over at its own rate): finish the first voice's
            # audio, then resample the rest from its own rate.
            head = resampler.flush()
            resampler = None
        if resampler is None:
            resampler = self.resamplers[key] = Resampler(meta.rate, self.transport.rate)
        pcm = head + (resampler.process(data) if data else b"")
        if meta.last:
            pcm += resampler.flush()
            del self.resamplers[key]
        was_idle = not self.playout.is_playing
        if not self.playout.push(run, meta.chunk, pcm, meta.last):
            self._count("frames_dropped_stale", max(1, len(pcm) // (self.transport.rate // 50 * 2)))
        elif was_idle and pcm and (tick := getattr(self.transport, "tick", None)):
            # Audio reached an idle playout: send its first frame now rather
            # than at the next shared tick (10 ms sooner on average).
            try:
                tick()
            except Exception as exc:  # noqa: BLE001
                tick_failed(self.transport, exc)

    def _from_source(self, key: tuple[int, int], meta: bus.AudioMeta, data: bytes) -> bytes | None:
        """What of this piece plays (None: nothing): one worker's audio per chunk, each piece
        once. A second worker (the request was delivered again) takes over a
        chunk: whole if it has not started playing, from the piece reached if
        it has; the first worker's later pieces are dropped."""
        src = self.chunk_source.get(key)
        if src is None:
            src = self.chunk_source[key] = [meta.worker, 0]
        elif src[0] != meta.worker:
            if meta.seq != 0 and meta.worker != src[0]:
                # Not the start of a new delivery: the old worker's stragglers
                # after a takeover, or a third party.
                self._count("tts_audio_other_worker", 1)
                return None
            if not self._take_over(key, src, meta.worker):
                self._count("frames_dropped_stale", max(1, len(data) // 640))
                return None
        if meta.seq < src[1]:
            if not meta.last:
                self._count("tts_audio_duplicate", 1)
                return None
            data = b""  # the end of the chunk, whose audio was had already
        src[1] = max(src[1], meta.seq + 1)
        return data

    def _take_over(self, key: tuple[int, int], src: list, worker: str) -> bool:
        """``worker`` (given the chunk's request again) speaks the chunk from
        now on: whole if it has not started playing, from the piece reached
        if it has; False (nothing of it is needed) if it was heard whole."""
        state = self.playout.chunk_state(*key)
        if state == "played":
            return False
        if state != "playing":
            self.playout.reset(*key)
            self.resamplers.pop(key, None)
            src[1] = 0
        src[0] = worker
        self._count("tts_chunk_redelivered", 1)
        log.info("chunk audio now from another TTS worker", extra={"session_id": self.session, "run_id": key[0], "chunk": key[1], "worker": worker, "from_piece": src[1]})
        return True

    def resume_at(self, run: int, chunk: int, worker: str) -> int:
        """The first piece of a chunk ``worker`` must send (issue 10 point 4:
        a TTS worker given a chunk again goes on where the call's audio
        stopped, not from the chunk's start); contract.RESUME_NONE if none."""
        key = (run, chunk)
        if self.playout.chunk_state(run, chunk) == "played":
            return contract.RESUME_NONE
        src = self.chunk_source.get(key)
        if src is None:
            return 0  # nothing of it came: all of it
        if src[0] != worker and not self._take_over(key, src, worker):
            return contract.RESUME_NONE
        return src[1]

    async def _on_resume(self, msg) -> None:
        try:
            ask = contract.decode(msg.data, contract.TtsResume)
        except (contract.DecodeError, contract.ValidationError) as exc:
            self._count("bad_messages", 1)
            log.warning("bad TTS resume question dropped", extra={"session_id": self.session, "error": str(exc)})
            return
        at = self.resume_at(ask.run, ask.chunk, ask.worker)
        if msg.reply:
            await msg.respond(contract.encode(contract.TtsResumeAt(from_piece=at)))

    def _watch_stall(self, now: float) -> None:
        """Called when no frame could be taken: is the head chunk stuck?"""
        stalled = self.playout.stalled()
        if stalled is None:
            self._stall = None
            return
        key = stalled[:2]
        if self._stall is None or self._stall[0] != key:
            self._stall = (key, now)
            return
        waited = now - self._stall[1]
        src = self.chunk_source.get(key)
        if src is None:
            if waited >= TTS_CHUNK_PATIENCE_S:
                self._give_up(key, f"no audio for it in {TTS_CHUNK_PATIENCE_S:g} s while later chunks wait")
            return
        if waited >= TTS_STALL_GIVE_UP_S:
            self._give_up(key, f"its audio stopped for {TTS_STALL_GIVE_UP_S:g} s (worker {src[0]} alive)")
        elif waited >= TTS_STALL_S and not self._stall_asking and now - self._stall_asked >= TTS_ASK_EVERY_S:
            self._stall_asking = True
            self._stall_asked = now
            self.tasks.spawn(self._ask_tts(src[0]), "tts-alive")

    async def _ask_tts(self, worker: str) -> None:
        try:
            await self.nc.request(subjects.tts_alive(worker), b"", timeout=TTS_ASK_TIMEOUT_S)
        except NoRespondersError:
            self._worker_died(worker)
        except asyncio.TimeoutError:
            pass  # busy, not gone: the give-up bound still holds
        finally:
            self._stall_asking = False

    def _worker_died(self, worker: str) -> None:
        """A TTS worker is gone: its playing chunk ends where it is, its other
        chunks wait for their audio again (from the worker the request goes to next)."""
        abandoned, reset = [], []
        for key, src in list(self.chunk_source.items()):
            if src[0] != worker:
                continue
            state = self.playout.chunk_state(*key)
            if state == "playing" and self.playout.abandon(*key):
                abandoned.append(key)
            elif state == "queued":
                self.playout.reset(*key)
                reset.append(key)
            else:
                continue
            self.resamplers.pop(key, None)
            del self.chunk_source[key]
        self._count("tts_worker_lost", 1)
        self._count("tts_chunks_abandoned", len(abandoned))
        log.warning(
            "TTS worker gone mid-answer: the answer goes on from the next chunk",
            extra={"session_id": self.session, "worker": worker, "abandoned": abandoned, "to_come_again": reset},
        )

    def _give_up(self, key: tuple[int, int], why: str) -> None:
        self._stall = None
        if self.playout.abandon(*key):
            self.resamplers.pop(key, None)
            self.chunk_source.pop(key, None)
            self._count("tts_chunks_abandoned", 1)
            log.warning("chunk given up: the answer goes on", extra={"session_id": self.session, "run_id": key[0], "chunk": key[1], "why": why})

    async def _on_playback(self, msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            log.warning("bad playback command dropped", extra={"session_id": self.session})
            return
        try:
            await self._execute(cmd)
        except Exception as exc:  # noqa: BLE001 - a transport that cannot execute a command cannot go on
            log.exception("playback command failed", extra={"session_id": self.session, "command": contract.type_name(cmd)})
            self.transport.fail(f"internal error executing {contract.type_name(cmd)}: {type(exc).__name__}", "command")

    # long: a match over the playback commands, one case each
    async def _execute(self, cmd: contract.Command) -> None:
        match cmd:
            case FlushPlayback():
                # Before anything else: no frame of this run may leave after this.
                self.flushed_runs.add(cmd.run)
                dropped = self.playout.flush(cmd.run)
                for run in [r for r in self.answers_due if r <= cmd.run]:
                    del self.answers_due[run]
                self.resume_due = {r for r in self.resume_due if r > cmd.run}
                self._count("frames_flushed", dropped)
                for key in [k for k in self.resamplers if k[0] <= cmd.run]:
                    del self.resamplers[key]
                await self.transport.on_flush(cmd.run)
                was_playing = cmd.run in self.playback_started
                self._playback_span(cmd.run, time.time(), interrupted=True)
                reaction = self.latency.barge_in_reaction(time.time())
                if reaction is not None and was_playing:
                    self.tel.histogram("parley.bargein.reaction", "ms", "caller speech start -> cancelled run's audio stopped").record(
                        reaction * 1000, {"transport": self.transport.kind}
                    )
                    await self._notice({"type": "barge_in", "run": cmd.run, "reaction_ms": round(reaction * 1000)})
            case PausePlayback():
                self.playout.pause(cmd.run)
                self.transport.on_pause(cmd.run)
                self._paused(cmd.run)
            case ResumePlayback():
                told = self.answers_due.get(cmd.run)
                if self.client_answers and told is not None:
                    # The client has not said yet what it dropped: resuming now would skip it.
                    self.resume_due.add(cmd.run)
                    self.tasks.spawn(self._resume_unanswered(cmd.run, told), "resume-unanswered")
                    return
                self._resume(cmd.run)
            case SendDigits():
                press = getattr(self.transport, "send_digits", None)
                if press is None:
                    log.error("keys cannot be pressed on this transport", extra={"session_id": self.session, "transport": self.transport.kind})
                    self._count("digits_unsupported", 1)
                    await self.digits_sent(cmd, f"keys can be pressed only on phone calls (Twilio), not on {self.transport.kind}")
                    return
                # Not awaited here: a REST request must not hold up this
                # session's playback commands.
                self.tasks.spawn(self._press(press, cmd), "send-digits")
            case EndSession():
                self.ended_by_agent = True
                await self.transport.send_notice({"type": "end", "reason": cmd.reason})
                transfer = getattr(self.transport, "transfer", None)
                if cmd.transfer_to and transfer is not None:
                    await transfer(cmd.transfer_to, cmd.warm, cmd.summary)
                    return
                if cmd.transfer_to:
                    log.error("transfer not possible on this transport: the call is ended", extra={"session_id": self.session, "transport": self.transport.kind})
                    self._count("transfers_unsupported", 1)
                # Let the goodbye finish playing first (it was heard: the run ended).
                await self.transport.close(cmd.reason)

    # ------------------------------------------------- pauses the client answers
    def pause_told(self, run: int) -> None:
        """The transport told the client to stop playing ``run`` (``pause``):
        its answer (``client_paused``) is due."""
        self.answers_due[run] = time.monotonic()

    def client_paused(self, run: int, unplayed_ms: int) -> None:
        """The client stopped ``run`` at the pause and dropped ``unplayed_ms``
        of it that it had not played: take that much back, so that the resume
        plays it (and the recording and the reports say it was not heard)."""
        if self.answers_due.pop(run, None) is None:
            self._count("pause_answers_ignored", 1)  # not told, answered already, flushed or resumed since
            return
        self.client_answers = True
        back = self.playout.rewind(run, min(max(0, unplayed_ms), REWIND_MAX_MS))
        if back is None:
            self._count("pause_answers_ignored", 1)
        elif back.samples:
            self._count("playback_rewinds", 1)
            self._count("playback_rewound_ms", round(back.samples * 1000 / self.transport.rate))
            if self.recorder is not None and not self.transport.reports_playback:
                self.recorder.take_back(back.samples / self.transport.rate)
            if back.reopened and voiced(back.reopened_pcm, self.transport.rate):
                # The caller never heard this chunk's end: it was reported finished too soon.
                self.heard(run, back.chunk, False, back.played_ms)
            log.info("client dropped audio at a pause: taken back", extra={"session_id": self.session, "run_id": run, "unplayed_ms": unplayed_ms, "rewound_ms": round(back.samples * 1000 / self.transport.rate), "reopened": back.reopened})
        if run in self.resume_due:
            self.resume_due.discard(run)
            self._resume(run)

    async def _resume_unanswered(self, run: int, told: float) -> None:
        """The resume of ``run`` waits for the client's answer to the pause
        told at ``told``, until ANSWER_WAIT_S after it (a newer pause of the
        run has a wait of its own)."""
        await asyncio.sleep(max(0.0, told + ANSWER_WAIT_S - time.monotonic()))
        if run in self.resume_due and self.answers_due.get(run) == told:
            self.resume_due.discard(run)
            self.answers_due.pop(run, None)  # too late now: it would take back audio playing again
            self._count("pause_answers_missing", 1)
            log.warning("the client did not say what it dropped at a pause: resumed without it", extra={"session_id": self.session, "run_id": run})
            self._resume(run)

    def _resume(self, run: int) -> None:
        self.answers_due.pop(run, None)
        self.playout.resume(run)
        self.transport.on_resume(run)

    async def _on_observe(self, msg) -> None:
        try:
            step = contract.decode_step(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            self._count("steps_invalid", 1)
            return
        if step.event.session != self.session:
            self._count("steps_foreign", 1)
            return
        self._expire_unannounced(time.monotonic())
        for cmd in step.commands:
            if isinstance(cmd, contract.Synthesize) and cmd.session == self.session:
                self._announce(cmd.run, cmd.chunk)
        split = self.latency.on_step(step)
        for notice in notices_for(step):
            await self.transport.send_notice(notice)
        if split:
            await self._report_latency(split)

    def audible(self, run: int) -> bool:
        """Whether the last frame taken was ``run``'s audio: what the client
        may still be playing from its buffer (a held answer paused before any
        of its audio came is not)."""
        return self.playout.is_playing and self.playout.current_run == run

    def next_frame(self, due: float | None = None) -> bytes | None:
        """Take the next 20 ms frame (or None when nothing plays). ``due``:
        the wall-clock time the frame is scheduled to play (a paced track's
        deadline), else now."""
        return self.take_frame(due)[0]

    def take_frame(self, due: float | None = None) -> tuple[bytes | None, list[Mark]]:
        """The next frame and the playout marks it carries. The marks are
        handled here, synchronously (bookkeeping, and progress queued for
        publishing in order); a transport that places marks of its own at the
        far end (Twilio) reads them from the result."""
        frame, marks = self.playout.next_frame()
        if frame is None and self.playout.current_run is not None:
            self._watch_stall(time.monotonic())
        if frame is not None:
            self.frames_out += 1
            if self.recorder is not None and not self.transport.reports_playback:
                # What left the playout is what this caller hears, placed where it was due to play: a frame
                # the loop took late (a stall, then frames back to back) plays in order at the far end.
                self.recorder.agent(time.time() if due is None else due, frame, self.transport.rate)
        for mark in marks:
            self._on_mark(mark)
        return frame, marks

    def _on_mark(self, mark: Mark) -> None:
        now = time.time()
        if mark.kind == "finished":
            self.playback_last[mark.run] = now
        if mark.kind == "started" and mark.run not in self.playback_started:
            for earlier in [r for r in self.playback_started if r < mark.run]:
                self._playback_span(earlier, self.playback_last.get(earlier, now), interrupted=False)
            self.playback_started[mark.run] = now
            split = self.latency.on_first_frame(mark.run, now)
            if split:
                self._queue(self._report_latency, split)
        if mark.kind == "started":
            # Its first frame left: playback began (nothing is claimed heard yet
            # where the transport reports what was heard itself).
            self.heard(mark.run, mark.chunk, False, 0 if self.transport.reports_playback else mark.played_ms)
        elif not self.transport.reports_playback:
            self.heard(mark.run, mark.chunk, True, mark.played_ms)

    async def _press(self, press, cmd: SendDigits) -> None:
        try:
            await press(cmd)
        except Exception as exc:  # noqa: BLE001 - the reducer must hear of it, not wait forever
            log.exception("pressing keys failed", extra={"session_id": self.session})
            self._count("digits_failed", 1)
            await self.digits_sent(cmd, f"internal error: {type(exc).__name__}")

    async def digits_sent(self, cmd: SendDigits, error: str = "") -> None:
        """Tell the reducer the keys were pressed (or why not)."""
        event = contract.DigitsSent(session=self.session, at=time.time(), digits=cmd.digits, call_id=cmd.call_id, ok=not error, error=error[:300])
        await bus.publish_event(self.nc, event)

    def heard_audio(self, ulaw: bytes, until: float) -> None:
        """The transport proved the caller heard this audio (Twilio: μ-law
        8 kHz before an echoed mark), ending at ``until``: the recording's."""
        if self.recorder is not None and ulaw:
            self.recorder.agent_ulaw(until, ulaw)

    async def _flush_recording(self) -> None:
        """Hand the recording's settled audio to the writer, every FLUSH_S."""
        while True:
            await asyncio.sleep(FLUSH_S)
            if self.recorder is not None:
                self.recorder.flush(time.time())

    def heard(self, run: int, chunk: int, finished: bool, played_ms: int = 0, at_pause: bool = False) -> None:
        """Queue PlaybackProgress: the caller heard ``played_ms`` of the chunk
        (all of it when ``finished``). The caller's audio waits until it is
        stored (``held_audio``), except after a report made ``at_pause``: the
        caller's voice paused the playback, and what they say next goes on
        from what they began before it (a barge-in's words must not wait)."""
        event = PlaybackProgress(session=self.session, at=time.time(), run=run, chunk=chunk, finished=finished, played_ms=played_ms)
        if at_pause:
            self._queue(bus.publish_event, self.nc, event)
            return
        self.unstored_reports += 1
        self._reports.put_nowait(event)

    async def _store_reports(self, batch: list[PlaybackProgress]) -> None:
        """Store reports queued together at once: sent in order on the one
        connection (so stored in order), their acks awaited together. A clear
        echoes every pending mark at once, and the caller's audio waits for
        them (``held_audio``): one round trip, not one each."""
        try:
            results = await asyncio.gather(*(bus.publish_event(self.nc, e) for e in batch), return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("could not publish a playback report: %s", result, extra={"session_id": self.session})
                    self._count("report_errors", 1)
        finally:
            self.unstored_reports -= len(batch)
            if not self.unstored_reports and self.held_audio:
                await self._release_audio()

    def _paused(self, run: int) -> None:
        """Measure the pause: from the caller's speech start (as the VAD saw
        it) to the moment the gateway executed the PausePlayback."""
        now = time.time()
        self.paused_at[run] = now
        start = self.latency.last_speech_start
        if start is not None and run in self.playback_started and 0 <= now - start < 10:
            ms = (now - start) * 1000
            self.tel.histogram("parley.pause.reaction", "ms", "caller speech start (VAD) -> playback paused at the gateway").record(ms, {"transport": self.transport.kind})
            self._queue(self._notice, {"type": "paused", "run": run, "reaction_ms": round(ms)})

    # ----------------------------------------------------------- reporting
    def _queue(self, fn: Callable[..., Awaitable[None]], *args) -> None:
        self._reports.put_nowait(lambda: fn(*args))

    async def _publish_reports(self) -> None:
        """Publish what the outbound path learned, in order; playback reports
        that are queued one after the other go together (``_store_reports``).
        A failed publish is logged and counted; the next one is still tried."""
        queue, carry = self._reports, _NOTHING
        while True:
            item = carry if carry is not _NOTHING else await queue.get()
            carry = _NOTHING
            try:
                if item is None:
                    return
                if isinstance(item, PlaybackProgress):
                    batch = [item]
                    while not queue.empty():
                        after = queue.get_nowait()
                        if not isinstance(after, PlaybackProgress):
                            carry = after  # next round (None: stop then)
                            break
                        batch.append(after)
                    await self._store_reports(batch)
                else:
                    await item()
            except Exception:  # noqa: BLE001 - NATS trouble must not stop the reports
                log.exception("could not publish a playback report", extra={"session_id": self.session})
                self._count("report_errors", 1)

    async def _drain_reports(self, timeout: float = 1.0) -> None:
        """At the end of the call: publish what is queued (briefly), then stop."""
        reporter = getattr(self, "_reporter", None)
        if reporter is None or reporter.done():
            return
        self._reports.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(reporter), timeout)
        except asyncio.TimeoutError:
            log.warning("playback reports still queued at the end of the call", extra={"session_id": self.session, "queued": self._reports.qsize()})
        except Exception:  # noqa: BLE001 - already logged by the TaskSet
            pass

    async def _report_latency(self, split: dict) -> None:
        if split["voice_to_voice_ms"] is not None:
            self.tel.histogram("parley.voice_to_voice", "ms", "end of caller speech -> first agent frame out").record(
                split["voice_to_voice_ms"], {"transport": self.transport.kind}
            )
        await self._notice(split)

    async def _notice(self, notice: dict) -> None:
        """A notice the gateway derived: to this caller, and to any inspector."""
        await self.transport.send_notice(notice)
        await self.nc.publish(subjects.notices(self.session), json.dumps(notice).encode())

    def _playback_span(self, run: int, end: float, interrupted: bool) -> None:
        start = self.playback_started.pop(run, None)
        self.playback_last.pop(run, None)
        if start is None:
            return
        turn = self.latency.turns.get(run)
        parent = self._turn_parent.pop(run, None) or telemetry.session_context(self.session)
        self.tel.record_span(
            "playback",
            session=self.session,
            parent=parent,
            start=start,
            end=end,
            attributes={"run.id": run, "playback.interrupted": interrupted, "parley.transport": self.transport.kind, "playback.first_frame_at": turn.first_frame if turn else None},
        )

    def _count(self, name: str, n: int) -> None:
        """Count in /healthz stats and, for dropped audio, in the metrics."""
        if n:
            self.stats[name] = self.stats.get(name, 0) + n
            if name.startswith("frames_"):
                self.tel.counter("parley.frames.dropped", description="outbound frames dropped (flushed or stale run)").add(
                    n, {"reason": name.removeprefix("frames_"), "transport": self.transport.kind}
                )


def pause_answer(msg: dict) -> tuple[int, int] | None:
    """``{"type": "paused", "run", "unplayed_ms"}`` -> (run, unplayed_ms), or None if malformed."""
    run, ms = msg.get("run"), msg.get("unplayed_ms")
    if isinstance(ms, float) and ms.is_integer():
        ms = int(ms)
    if type(run) is not int or type(ms) is not int or not 0 <= ms <= 60_000:
        return None
    return run, ms


def voiced(pcm16: bytes, rate: int) -> bool:
    """Whether any 10 ms of the audio is louder than silence (VOICED)."""
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64) / 32768
    n = max(1, rate // 100)
    if not len(x):
        return False
    x = np.concatenate([x, np.zeros(-len(x) % n)])
    return bool((np.sqrt((x.reshape(-1, n) ** 2).mean(axis=1)) > VOICED).any())


def notices_for(step: contract.Step) -> list[dict]:
    """What the browser page is told about one reducer step."""
    e = step.event
    out: list[dict] = [
        {
            "type": "step",
            "index": step.index,
            "at": e.at,
            "event": contract.type_name(e),
            "run": getattr(e, "run", None),
            "from": step.state_from,
            "to": step.state_to,
            "commands": [contract.type_name(c) for c in step.commands],
            "dropped": step.dropped,
            "note": step.note,
        }
    ]
    if step.state_from != step.state_to:
        out.append({"type": "state", "state": step.state_to})
    # Why the agent judged the caller done, or interrupting: signals and thresholds.
    out += [{**msgspec.to_builtins(j), "type": "judgement", "index": step.index, "at": e.at, "event": contract.type_name(e)} for j in step.judgements]
    if isinstance(e, (contract.TranscriptPartial, contract.TranscriptFinal)):
        out.append({"type": "transcript", "final": isinstance(e, contract.TranscriptFinal), "text": e.text, "utterance": e.utterance})
    for c in step.commands:
        if isinstance(c, contract.CallTool):
            out.append({"type": "tool_call", "run": c.run, "name": c.name, "arguments": c.arguments})
        elif isinstance(c, contract.Synthesize):
            out.append({"type": "agent_text", "run": c.run, "chunk": c.chunk, "text": c.text})
        elif isinstance(c, contract.FlushPlayback):
            out.append({"type": "interrupted", "run": c.run})
    if isinstance(e, contract.ToolResult) and not step.dropped:
        out.append({"type": "tool_result", "run": e.run, "name": e.name, "ok": e.ok, "result": e.result})
    if isinstance(e, contract.Usage):
        out.append({"type": "usage", "service": e.service, "provider": e.provider, "unit": e.unit, "amount": e.amount})
    if isinstance(e, contract.ProviderFailed):
        out.append({"type": "provider_failed", "service": e.service, "provider": e.provider, "error": e.error, "fallback": e.fallback})
    return out


class Ticker:
    """One task that paces every push-style call at 20 ms against absolute
    deadlines (not one sleeping task per call): 50 calls cost one wake-up.

    A ``tick`` that raises is a bug in that call's transport: the call is
    taken off the ticker and its transport fails (closes with a reason,
    logged and counted; the call ends). The other calls tick on.
    """

    def __init__(self, stats: dict | None = None):
        self.calls: set = set()
        self.task: asyncio.Task | None = None
        self.stats = stats if stats is not None else {}

    def add(self, sender) -> None:
        self.calls.add(sender)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="ticker")
            self.task.add_done_callback(self._ended)

    def remove(self, sender) -> None:
        self.calls.discard(sender)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the ticker stopped", exc_info=task.exception())
            self.stats["ticker_errors"] = self.stats.get("ticker_errors", 0) + 1
            for sender in list(self.calls):  # nothing paces them any more
                self.calls.discard(sender)
                tick_failed(sender, task.exception())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        next_at = loop.time()
        while self.calls:
            for sender in list(self.calls):
                try:
                    sender.tick()
                except Exception as exc:  # noqa: BLE001 - one bad call never stops the others
                    self.calls.discard(sender)
                    tick_failed(sender, exc)
            next_at += period
            delay = next_at - loop.time()
            if delay < -0.2:  # fell far behind (machine stalled): resync, don't burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(max(delay, 0))


def tick_failed(sender, exc: BaseException) -> None:
    """A transport's tick raised: end that call loudly (never drop it silently)."""
    log.error("tick failed; the call is ended", exc_info=exc)
    try:
        sender.fail(f"internal error: {type(exc).__name__}", "tick")
    except Exception:  # noqa: BLE001
        log.exception("could not fail the transport after its tick failed")
