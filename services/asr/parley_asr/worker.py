"""The ASR worker: the NATS shell around endpointing, VAD batching and Whisper.

Flow of one session:

    gateway --ASR_CLAIM (queue group "asr")--> one worker --AsrClaimed--> gateway
    gateway --audio_in(s): PCM16 16 kHz, any length--> inbox of the session
    every 16 ms, the VAD loop: whole windows of every session -> one batched
        Silero call per window position -> endpointer.step per window
        -> SpeechOnset (the first few windows: pause-only), then SpeechStarted, or
           SpeechOnsetEnded if the sound faded first, on events(s)
        -> at a stop: the end-of-turn model scores the utterance (batched
           with other sessions' stops, EndOfTurnQueue), then SpeechStopped
           with that score (eot) on events(s); meanwhile Whisper already
           transcribes the final, published right after SpeechStopped with
           the text's own completeness score (complete)
        -> partial transcriptions while speech goes on (TranscriptionQueue)
        -> once silence has lasted PARLEY_ASR_SPECULATE_MS (96 ms), the
           end-of-turn score and (if the finals' Whisper is free) the final's
           transcription start on the utterance as the stop would cut it (the
           silence so far repeated out to the stop's length); when the stop
           comes on that same silence with nothing voice-like after, both are
           reused: they ran while the VAD was still counting (Speculation)
        -> in fixed mode: no models but Silero; eot is fixed, the final is the
           fixed text 150 ms after SpeechStopped
    control(s) "end", or 120 s without audio -> release everything

nats-py runs a subscription's callback one message at a time, so the audio
callback only appends bytes to the session's inbox; all work happens in the
loop, batched across sessions. The loop never waits for an event to be
stored: each session's VAD events are stored in order by a chain of tasks
(``_store_in_order``), and its partials and finals wait for that chain.

With a cloud provider (PARLEY_ASR=deepgram|openai, ``providers/``) the floor
is unchanged (the same VAD, endpointer and end-of-turn model make
SpeechStarted and SpeechStopped) and the provider hears the words: each
session has a ``Listener`` that gets its audio, answers partials at the same
cadence, and gives each utterance's final. A final the provider cannot give
(refused key, rate limit, dropped stream, no answer within ASR_TIMEOUT) is
loud (a warning, ``parley.provider.failures``, ``ProviderFailed`` on the
session) and is heard by Whisper from the utterance's audio instead
(PARLEY_ASR_FALLBACK=whisper), so the caller's words are not lost and finals
still go out in utterance order. Audio seconds billed go out as ``Usage``.

A provider that takes the caller's audio as the carrier sent it (Deepgram:
μ-law 8 kHz) gets it that way when the gateway offers it
(``AsrClaim.native``): the worker answers ``AsrClaimed.native``, subscribes
to ``audio_native(s)`` before answering, and hands those bytes to the
listener (``native_audio``); the VAD still hears ``audio_in``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from parley import bus, contract, subjects, telemetry
from parley.providers import Breaker, ProviderError

from . import completeness, endpointer
from .continuation import continuation
from .endpointer import WINDOW_MS
from .audio import WINDOW, SessionAudio
from .settings import Settings
from .smart_turn import UNKNOWN, EndOfTurnQueue, SmartTurn
from .transcription import Job, Transcriber, TranscriptionQueue
from .vad import SileroVad, StreamBank

log = logging.getLogger("parley_asr.worker")

SAMPLE_RATE = 16000
WINDOW_BYTES = 2 * WINDOW  # one VAD window of PCM16 (AsrClaimed.window: the gateway sends whole ones)
MAX_WINDOWS_PER_TICK = 32  # a session sending faster than real time is worked off at up to 32x
QUIET_PROB = 0.1  # a window scored under this is quiet (for the VAD state reset)
WARN_FIRST_DROPS = 5


class Session:
    __slots__ = (
        "id", "slot", "audio", "ep", "subs", "last_audio", "closed", "handed_over",
        "last_partial", "last_seq", "dropped", "unfinished", "storing", "turn_text", "turn_end",
        "listener", "final_chain", "partial_busy", "told_skipped", "speculation", "last_native_seq", "context", "redo", "hold", "quiet",
        "cfg",
    )  # fmt: skip

    def __init__(self, session_id: str, slot: int, first_utterance: int = 0):
        self.id = session_id
        self.slot = slot
        self.audio = SessionAudio()
        self.ep = endpointer.State(utterance=first_utterance)
        self.cfg: endpointer.Config | None = None  # the worker's for this session's line (phone or not)
        # Utterances without a final yet -> wall clock when their speech began
        # (told to the gateway, which replays that audio if this worker dies).
        self.unfinished: dict[int, float] = {}
        self.subs: list = []
        self.last_audio = time.monotonic()
        self.closed = False
        self.handed_over = False  # the gateway gave the session to another worker (Worker._handed_over)
        self.last_partial = 0  # window index of the last partial request
        self.last_seq: int | None = None
        self.last_native_seq: int | None = None  # audio_native's (a provider that hears it)
        self.dropped = 0
        # The newest of the VAD's events being stored (Worker._store_in_order):
        # each waits for the one before it, so they are stored in the order
        # the VAD decided them; finals and partials wait for them all.
        self.storing: asyncio.Task | None = None
        # Finals that did not read as finished, joined ("the transcript so
        # far"), and the window where the last of them ended.
        self.turn_text = ""
        self.turn_end = 0
        # Cloud provider (None with Whisper): the session's listener, the last
        # final on its way out (finals leave in utterance order), whether a
        # partial request is in flight.
        self.listener = None
        self.final_chain: asyncio.Task | None = None
        self.partial_busy = False
        self.told_skipped = False
        # The final transcribed early (Whisper), on a silence that may end the utterance.
        self.speculation: Speculation | None = None
        # The caller's latest words (Whisper): where their audio begins (a
        # sample), the window where they ended, and their text. An utterance
        # that begins soon after is transcribed with them (continuation.py).
        self.context: Context | None = None
        # A final transcribed again alone (its context did not cut): later
        # finals wait for it, so finals leave in utterance order.
        self.redo: asyncio.Future | None = None
        # From a stop until its final (which makes the context): keep the
        # audio from this sample while the window index is at most this.
        self.hold: tuple[int, int] | None = None
        # Windows in a row the VAD scored as quiet (see Worker._quiet).
        self.quiet = 0

    async def vad_events_stored(self) -> None:
        """Wait until the VAD's events decided so far (its SpeechStopped among
        them) are stored or have failed (each failure is its own: logged, counted)."""
        if self.storing is not None and not self.storing.done():
            await asyncio.wait([self.storing])


class Context(NamedTuple):
    """The caller's latest words: the sample ranges of their audio (each
    utterance with up to CONTEXT_GAP_MS of the silence on either side: a
    thinking pause left whole makes Whisper loop, "at four at four ..."),
    the window where they ended, and their text."""

    pieces: tuple[tuple[int, int], ...]
    end: int
    text: str

    @property
    def first(self) -> int:
        return self.pieces[0][0]

    @property
    def samples(self) -> int:
        return sum(b - a for a, b in self.pieces)


CONTEXT_GAP = int(0.15 * SAMPLE_RATE)  # measured: 0.3 s of pause between joined parts transcribe best (BENCHMARKS 6)


class Speculation:
    """The end of an utterance worked out before its stop, on the silence that
    began at window ``end`` of ``utterance``: the end-of-turn score (``eot``)
    and, when the finals' Whisper was free, the final's transcript (``text``),
    both of the audio heard up to window ``cut`` with the silence so far
    repeated out to where the stop would cut it (``Worker._as_at_stop``).
    Kept if the Stop has that ``end`` and nothing after ``cut`` sounded like
    a voice (every window below the VAD's silence threshold): the clips the
    stop would have scored and transcribed differ from these only in silence."""

    __slots__ = ("utterance", "end", "cut", "text", "eot", "loudest", "dropped", "context")

    def __init__(self, utterance: int, end: int, cut: int):
        self.utterance = utterance
        self.end = end
        self.cut = cut
        self.context: Context | None = None  # what its transcript was made with
        self.text: asyncio.Future[str] | None = None
        self.eot: asyncio.Future | None = None
        self.loudest = 0.0  # the highest speech probability of a window after ``cut``
        self.dropped = False

    def matches(self, d: endpointer.Stop, quiet_below: float) -> bool:
        return not self.dropped and (self.utterance, self.end) == (d.utterance, d.end) and self.loudest < quiet_below

    def drop(self) -> None:
        self.dropped = True  # a job not started yet is skipped
        for fut in (self.text, self.eot):
            if fut is not None and not fut.done():
                fut.cancel()


class Worker:
    # long: the worker's state, one attribute a line with why
    def __init__(
        self,
        nc: Client,
        settings: Settings,
        vad: SileroVad,
        transcriber: Transcriber | None = None,
        final_transcriber: Transcriber | None = None,
        end_of_turn: SmartTurn | None = None,
        cloud=None,
        tel: telemetry.Telemetry | None = None,
    ):
        """``final_transcriber``, a second model instance, gives finals a Whisper lane of their own;
        ``end_of_turn`` scores each stop (needed when ``settings.eot_model``); ``cloud``, a provider
        from ``providers/`` (Deepgram, OpenAITranscription), hears the words, and ``transcriber``
        is then the fallback (None: no fallback). ``tel``: the app's telemetry."""
        self.tel = tel or telemetry.current()
        if not settings.fixed and transcriber is None and cloud is None:
            raise ValueError("real mode needs a transcriber (fixed mode runs without Whisper)")
        if settings.eot_model and end_of_turn is None:
            raise ValueError("PARLEY_ASR_EOT=1 needs the end-of-turn model")
        self.nc = nc
        self.settings = settings
        self.id = settings.worker_id
        self.cfg = settings.endpointing()
        self.phone_cfg = settings.endpointing(phone=True)
        self.bank = StreamBank(vad)
        self.queue = None if settings.fixed or transcriber is None else TranscriptionQueue(transcriber, final_transcriber)
        self.cloud = None if settings.fixed else cloud
        # A stream per session (Deepgram) keeps its own state; a request per
        # utterance (OpenAI) shares one breaker across the worker's sessions.
        self.breaker = Breaker() if cloud is not None and not getattr(cloud, "per_session", False) else None
        self.eot = EndOfTurnQueue(end_of_turn, settings.eot_batch) if settings.eot_model else None
        self._turn_join_windows = settings.turn_join_ms / WINDOW_MS
        self._context_samples = int(settings.context_ms * SAMPLE_RATE / 1000)
        self.sessions: dict[str, Session] = {}
        self._preroll = int(settings.preroll_ms * SAMPLE_RATE / 1000)
        self._partial_windows = endpointer.windows_for(settings.partial_every_ms)
        self._reset_windows = endpointer.windows_for(settings.vad_reset_ms) if settings.vad_reset_ms > 0 else 0
        self._speculate_windows = endpointer.windows_for(settings.speculate_ms) if settings.speculate_ms > 0 else 0
        self._claim_sub = None
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.stats = {
            "sessions": 0, "claimed": 0, "released": 0, "handed_over": 0, "dropped_messages": 0, "seq_gaps": 0, "native_seq_gaps": 0,
            "ticks": 0, "windows": 0, "vad_calls": 0, "vad_seconds": 0.0, "tick_seconds": 0.0,
            "utterances": 0, "onsets": 0, "onsets_lost": 0, "vad_resets": 0, "partials": 0, "finals": 0, "last_final_latency_ms": None, "speculations": 0, "speculations_kept": 0,
            # Finals heard with the caller's words before them (continuation.py), and those cut no better than alone.
            "context_used": 0, "context_misses": 0,
            # Failures, each also logged at error with its session: a tick or
            # an endpointing step that raised, a background task that failed,
            # a Whisper call that failed (its final went out empty).
            "tick_errors": 0, "endpoint_errors": 0, "task_errors": 0, "events_lost": 0,
            "transcription_errors": self.queue.stats if self.queue else None,
            "eot": self.eot.stats if self.eot else None,
            "provider": self.cloud.name if self.cloud else "whisper",
            "provider_failures": 0, "provider_skipped": 0, "fallback_finals": 0,
        }  # fmt: skip

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        self._claim_sub = await self.nc.subscribe(subjects.ASR_CLAIM, queue=subjects.ASR_GROUP, cb=self._on_claim)
        self._alive_sub = await self.nc.subscribe(subjects.asr_alive(self.id), cb=self._on_alive)
        if self.queue:
            self.queue.start()
        if self.eot:
            self.eot.start()
        self._loop_task = asyncio.create_task(self._vad_loop(), name="asr-vad-loop")
        self._loop_task.add_done_callback(self._loop_ended)
        log.info("asr worker started", extra={"worker": self.id, "mode": self.settings.providers})

    async def _on_alive(self, msg: Msg) -> None:
        """Liveness; with a session id as the body, that session's progress;
        with several (comma-separated), the progress of those it holds."""
        if not msg.reply:
            return
        body = msg.data.decode(errors="replace") if msg.data else ""
        if "," in body:
            items = tuple(p for p in (self._progress(sid) for sid in body.split(",")) if p is not None)
            await msg.respond(contract.encode(contract.AsrProgressAll(items=items)))
            return
        progress = self._progress(body) if body else None
        await msg.respond(contract.encode(progress) if progress is not None else b"1")

    def _progress(self, session: str) -> contract.AsrProgress | None:
        s = self.sessions.get(session)
        if s is None:
            return None
        oldest = min(s.unfinished, default=-1)
        return contract.AsrProgress(
            session=s.id, next_utterance=s.ep.utterance if not s.ep.speaking else s.ep.utterance + 1,
            unfinished=oldest, unfinished_since=s.unfinished.get(oldest, 0.0),
        )  # fmt: skip

    async def stop(self) -> None:
        if self._claim_sub is not None:
            await self._claim_sub.unsubscribe()
            self._claim_sub = None
            await self._alive_sub.unsubscribe()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for session_id in list(self.sessions):
            await self.release(session_id, "shutdown")
        # Finals already promised still go out, so nobody waits for them forever.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self.queue:
            await self.queue.drain(timeout=5.0)
            await self.queue.close()
        if self.eot:
            await self.eot.close()
        if self.cloud is not None:
            await self.cloud.aclose()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ claims

    async def _on_claim(self, msg: Msg) -> None:
        try:
            claim = contract.decode(msg.data, contract.AsrClaim)
            subjects.session_token(claim.session)
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            log.warning("bad ASR claim dropped", extra={"error": str(exc)})
            return
        if claim.sample_rate != SAMPLE_RATE:
            # Not replying lets the gateway's request time out: it cannot be served.
            log.error("ASR claim for an unsupported rate", extra={"session_id": claim.session, "rate": claim.sample_rate})
            return
        cloud = self.cloud is not None
        ours = self.cloud.name if self.cloud is not None else "whisper"
        if claim.provider and claim.provider != ours:
            if claim.provider == "whisper" and self.queue is not None:
                cloud = False  # the session keeps its audio here: Whisper hears it
            else:
                log.warning("session asked for an ASR provider this deployment has not configured", extra={"session_id": claim.session, "provider": claim.provider, "using": ours})
                await self._event(contract.ProviderFailed(session=claim.session, at=time.time(), service="asr", provider=claim.provider,
                                                          error="not configured on this deployment", fallback=ours))  # fmt: skip
        native = claim.native if cloud and claim.native in getattr(self.cloud, "natives", ()) else ""
        s = await self.claim(claim.session, claim.utterance, cloud=cloud, native=native, phone=claim.native.startswith("mulaw/"))
        if msg.reply:
            await msg.respond(contract.encode(contract.AsrClaimed(session=claim.session, worker=self.id, native=getattr(s.listener, "native", ""), window=WINDOW_BYTES)))

    async def claim(self, session_id: str, first_utterance: int = 0, cloud: bool = True, native: str = "", phone: bool = False) -> Session:
        """Take a session's audio (idempotent). Subscribed before the claim is answered.
        ``native``: the provider hears the session's audio_native (one of its ``natives``).
        ``phone``: the caller's audio came through the phone's μ-law (the
        endpointer begins speech at ``PARLEY_ASR_PHONE_THRESHOLD``)."""
        existing = self.sessions.get(session_id)
        if existing is not None:
            return existing
        s = Session(session_id, self.bank.open(), first_utterance)
        s.cfg = self.phone_cfg if phone else self.cfg
        self.sessions[session_id] = s
        if self.cloud is not None and cloud:
            s.listener = self.cloud.listener(session_id, native=native) if native else self.cloud.listener(session_id)
            if native:
                s.subs.append(await self.nc.subscribe(subjects.audio_native(session_id), cb=self._native_callback(s, native)))
        s.subs.append(await self.nc.subscribe(subjects.audio_in(session_id), cb=self._audio_callback(s)))
        s.subs.append(await self.nc.subscribe(subjects.control(session_id), cb=self._on_control))
        self.stats["claimed"] += 1
        self.stats["sessions"] = len(self.sessions)
        log.info("session claimed", extra={"session_id": session_id, "worker": self.id})
        return s

    def _audio_callback(self, s: Session):
        async def on_audio(msg: Msg) -> None:
            # Runs once per inbound message for this session: keep it tiny.
            if s.closed:
                return
            data = msg.data
            try:
                meta = bus.AudioMeta(msg.headers)
            except ValueError:
                self._drop(s, "bad audio headers", len(data))
                return
            if meta.worker and meta.worker != self.id:
                self._handed_over(s, meta.worker)
                return
            if meta.rate != SAMPLE_RATE or len(data) % 2:
                self._drop(s, "audio of the wrong rate or an odd byte count", len(data), meta.rate)
                return
            if s.last_seq is not None and meta.seq != s.last_seq + 1:
                self.stats["seq_gaps"] += 1
            s.last_seq = meta.seq
            s.audio.push(data)
            if s.listener is not None:
                s.listener.audio(data)
            s.last_audio = time.monotonic()

        return on_audio

    def _native_callback(self, s: Session, native: str):
        encoding, rate = native.split("/")

        async def on_native(msg: Msg) -> None:
            # The provider's copy only: the floor (VAD, endpointer) hears audio_in.
            if s.closed or s.listener is None:
                return
            try:
                meta = bus.AudioMeta(msg.headers)
            except ValueError:
                self._drop(s, "bad native audio headers", len(msg.data))
                return
            if meta.worker and meta.worker != self.id:
                self._handed_over(s, meta.worker)
                return
            if meta.encoding != encoding or meta.rate != int(rate):
                self._drop(s, f"native audio is not {native}", len(msg.data), meta.rate)
                return
            if s.last_native_seq is not None and meta.seq != s.last_native_seq + 1:
                # Lost on the way while the PCM came: silence in its place keeps the provider's times the session's.
                self.stats["native_seq_gaps"] += 1
                filled = s.listener.native_gap(s.audio.received)
                log.warning("native audio lost a piece: the provider hears silence in its place",
                            extra={"session_id": s.id, "expected_seq": s.last_native_seq + 1, "seq": meta.seq, "filled_ms": filled * 1000 // SAMPLE_RATE})  # fmt: skip
            s.last_native_seq = meta.seq
            s.listener.native_audio(msg.data)

        return on_native

    def _drop(self, s: Session, why: str, size: int, rate: int | None = None) -> None:
        s.dropped += 1
        self.stats["dropped_messages"] += 1
        if s.dropped <= WARN_FIRST_DROPS or s.dropped % 1000 == 0:
            log.warning(
                "audio message dropped: " + why,
                extra={"session_id": s.id, "bytes": size, "rate": rate, "dropped": s.dropped},
            )

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = contract.decode(msg.data, contract.SessionControl)
        except (contract.DecodeError, contract.ValidationError) as exc:
            log.warning("bad session control dropped", extra={"error": str(exc), "subject": msg.subject})
            return
        if not _valid_session(ctl.session) or msg.subject != subjects.control(ctl.session):
            # Only a session's own control subject may end it.
            log.warning("session control for another session dropped", extra={"subject": msg.subject, "names_session": ctl.session[:64]})
            return
        if ctl.action == "end":
            # Not awaited here: release unsubscribes this very subscription,
            # which cancels its callback, and the release awaits the stream.
            self._spawn(self.release(ctl.session, ctl.reason or "end"), f"asr-release-{ctl.session}")

    def _handed_over(self, s: Session, worker: str) -> None:
        """The gateway claimed this session again and another worker has it:
        this one was only unreachable for a moment (in a NATS cluster a dead
        node's clients move to another), not dead. It lets go without a word:
        the new worker hears the unfinished utterance again from its start, so
        an empty final from here would only be a second, wrong answer to it."""
        if s.closed or s.handed_over:
            return
        s.handed_over = True
        self.stats["handed_over"] += 1
        log.warning("session claimed again by another worker: let go", extra={"session_id": s.id, "worker": self.id, "now_with": worker})
        # Not awaited here: release unsubscribes this very subscription (see _on_control).
        self._spawn(self.release(s.id, "claimed by another worker", finish=False), f"asr-release-{s.id}")

    async def release(self, session_id: str, reason: str, finish: bool = True) -> None:
        """Free a session. An utterance in progress gets its Stop and an empty
        final (``finish``; without it the utterance is dropped unsaid)."""
        s = self.sessions.pop(session_id, None)
        if s is None or s.closed:
            return
        s.closed = True
        self.stats["released"] += 1
        self.stats["sessions"] = len(self.sessions)
        for sub in s.subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already closing: nothing left to free
                log.debug("unsubscribe failed", extra={"session_id": session_id, "error": str(exc)})
        self.bank.close(s.slot)
        if self.queue:
            self.queue.forget(session_id)
        s.ep, stop = endpointer.finish(s.ep)
        if stop is not None and finish:
            # Cut off mid-utterance: an empty final, queued behind the session's
            # earlier finals so that they still arrive in utterance order.
            await self._stopped(s, stop, time.time(), heard=False)
        if s.listener is not None:
            self._spawn(self._close_listener(s), f"asr-close-listener-{s.id}")
        log.info("session released", extra={"session_id": session_id, "reason": reason, "worker": self.id})

    # ------------------------------------------------------------------ the VAD loop

    async def _vad_loop(self) -> None:
        period = self.settings.tick_ms / 1000
        next_at = time.monotonic()
        next_idle_check = next_at + 1.0
        while True:
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: carry on from now rather than burst to catch up
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)
            try:
                await self.tick()
                if next_at >= next_idle_check:
                    next_idle_check = next_at + 1.0
                    await self._release_idle()
            except Exception:  # noqa: BLE001 - one bad tick must not stop every session's VAD
                self.stats["tick_errors"] += 1
                log.exception("VAD tick failed")

    @property
    def healthy(self) -> bool:
        """The VAD loop runs: without it no session hears anything (/healthz says 503)."""
        return self._loop_task is not None and not self._loop_task.done()

    def _loop_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled():
            log.critical("the VAD loop stopped: no session hears anything until this worker restarts", exc_info=task.exception())

    async def _release_idle(self) -> None:
        cutoff = time.monotonic() - self.settings.idle_release_s
        for s in [s for s in self.sessions.values() if s.last_audio < cutoff]:
            await self.release(s.id, "idle")

    async def tick(self) -> None:
        """Score every whole window waiting in any session, then endpoint them."""
        t0 = time.perf_counter()
        work = [(s, s.audio.take_windows(MAX_WINDOWS_PER_TICK)) for s in self.sessions.values() if s.audio.pending_windows()]
        if not work:
            return
        probs = [np.empty(len(frames), np.float32) for _, frames in work]
        depth = max(len(frames) for _, frames in work)
        for r in range(depth):  # one batched call per window position
            rows = [i for i, (_, frames) in enumerate(work) if len(frames) > r]
            slots = np.fromiter((work[i][0].slot for i in rows), np.intp, len(rows))
            batch = np.stack([work[i][1][r] for i in rows]).astype(np.float32) * (1.0 / 32768.0)
            v0 = time.perf_counter()
            p = self.bank.run(slots, batch)
            self.stats["vad_seconds"] += time.perf_counter() - v0
            self.stats["vad_calls"] += 1
            self.stats["windows"] += len(rows)
            for i, prob in zip(rows, p):
                probs[i][r] = prob
                if self._reset_windows:
                    self._quiet(work[i][0], float(prob))
        now = time.time()
        for (s, _), ps in zip(work, probs):
            try:
                await self._endpoint(s, ps, now)
            except Exception:  # noqa: BLE001 - one session's failure stays its own
                self.stats["endpoint_errors"] += 1
                log.exception("endpointing failed", extra={"session_id": s.id})
        self.stats["ticks"] += 1
        self.stats["tick_seconds"] += time.perf_counter() - t0

    def _quiet(self, s: Session, prob: float) -> None:
        """After ``vad_reset_ms`` of quiet, the session's VAD state starts afresh.

        Silero's LSTM carries seconds of quiet into its next score: after
        the caller's first sentence and a few seconds of the agent's answer,
        a short word on the phone ("Wait!") scored 0.27-0.49, never an onset;
        from a fresh state the same word scores 0.56-0.64 (docs/BENCHMARKS.md
        section 6, barge4). Nothing is lost by forgetting a quiet stretch. The
        fresh state is a new stream's after a moment of silence
        (StreamBank.reset), not zeros: a word in the very next window would
        score low from zeros.
        """
        s.quiet = s.quiet + 1 if prob < QUIET_PROB else 0
        if s.quiet >= self._reset_windows:
            self.bank.reset(s.slot)
            self.stats["vad_resets"] += 1
            s.quiet = 0

    async def _endpoint(self, s: Session, probs: np.ndarray, now: float) -> None:
        n = len(probs)
        for j, p in enumerate(probs.tolist()):
            if s.closed:  # released while this tick awaited a publish
                return
            spec = s.speculation
            if spec is not None and s.ep.index >= spec.cut and p > spec.loudest:
                spec.loudest = p  # heard after the speculation's audio: does it still hold?
            s.ep, decision = endpointer.step(s.ep, p, s.cfg or self.cfg)
            if isinstance(decision, endpointer.Onset):
                await self._onset(s, decision, now)
            elif isinstance(decision, endpointer.OnsetLost):
                await self._onset_lost(s, decision, now)
            elif isinstance(decision, endpointer.Start):
                await self._started(s, decision, now)
            elif isinstance(decision, endpointer.Stop):
                # The newest window of this tick ended about now; count back.
                window_end = now - (n - 1 - j) * WINDOW_MS / 1000
                await self._stopped(s, decision, now, speech_end=window_end - (decision.window + 1 - decision.end) * WINDOW_MS / 1000)
        if s.closed:
            return
        self._after_tick(s)

    def _after_tick(self, s: Session) -> None:
        """Once a tick's windows are endpointed: speculation, partials, and
        trimming the audio no later cut can need."""
        spec = s.speculation
        if spec is not None and (s.ep.utterance, s.ep.silence_begin) != (spec.utterance, spec.end):
            spec.drop()  # the caller went on: that silence did not end the utterance
            s.speculation = None
        elif spec is not None and spec.loudest >= self.cfg.neg_threshold and not spec.dropped:
            spec.drop()  # a voice-like window after its audio: the stop works it out afresh
        if s.speculation is None and (self.eot is not None or (self.queue and s.listener is None)):
            end = endpointer.speculation_due(s.ep, self._speculate_windows)
            if end is not None:
                self._speculate(s, end)
        if s.listener is not None and self._cloud_allowed() and endpointer.partial_due(s.ep, s.last_partial, self._partial_windows):
            if not s.partial_busy:
                s.last_partial = s.ep.index
                self._request_cloud_partial(s)
        elif self.queue and endpointer.partial_due(s.ep, s.last_partial, self._partial_windows):
            if not self.queue.partial_busy(s.id):
                s.last_partial = s.ep.index
                self._request_partial(s)
        self._trim(s)

    def _trim(self, s: Session) -> None:
        # Keep what a later cut may need: the utterance in progress (or the run
        # of speech that may start one), with its pre-roll, and the caller's
        # words before it while an utterance may still join them.
        keep = s.ep.earliest_needed * WINDOW - self._preroll
        if s.context is not None and s.ep.index - s.context.end > self._turn_join_windows:
            s.context = None
        if s.hold is not None and s.ep.index > s.hold[1]:
            s.hold = None
        for held in (s.context.first if s.context else None, s.hold[0] if s.hold else None):
            keep = keep if held is None else min(keep, held)
        s.audio.trim(keep)

    async def _onset(self, s: Session, d: endpointer.Onset, now: float) -> None:
        self.stats["onsets"] += 1
        level = level_db(s.audio.slice(d.begin * WINDOW, (d.window + 1) * WINDOW), q=100)  # its first 64-200 ms: the loudest window
        self._store_in_order(s, contract.SpeechOnset(session=s.id, at=now, utterance=d.utterance, level=level))

    async def _onset_lost(self, s: Session, d: endpointer.OnsetLost, now: float) -> None:
        self.stats["onsets_lost"] += 1
        self._store_in_order(s, contract.SpeechOnsetEnded(session=s.id, at=now, utterance=d.utterance))

    async def _started(self, s: Session, d: endpointer.Start, now: float) -> None:
        s.last_partial = d.begin
        s.unfinished[d.utterance] = now - (d.window + 1 - d.begin) * WINDOW_MS / 1000
        self.stats["utterances"] += 1
        level = level_db(s.audio.slice(d.begin * WINDOW, (d.window + 1) * WINDOW), q=100)  # its first 64-200 ms: the loudest window
        self._store_in_order(s, contract.SpeechStarted(session=s.id, at=now, utterance=d.utterance, level=level))

    async def _stopped(self, s: Session, d: endpointer.Stop, now: float, heard: bool = True, speech_end: float = 0.0) -> None:
        """Publish SpeechStopped (with its end-of-turn score) and set the final going.

        The final's Whisper call starts at once, beside the end-of-turn model;
        the final is published only after its SpeechStopped.
        """
        spec, s.speculation = s.speculation, None
        kept = spec is not None and heard and spec.matches(d, self.cfg.neg_threshold)
        if kept:
            self.stats["speculations_kept"] += 1
        elif spec is not None:
            spec.drop()
        if not heard:
            eot: float | asyncio.Future = UNKNOWN
        elif kept and spec.eot is not None:
            eot = spec.eot  # scored while the VAD counted this silence
        elif self.eot is not None:
            # The utterance as the caller said it, with the silence that ended it.
            eot = self.eot.score(s.audio.slice(d.begin * WINDOW - self._preroll, (d.window + 1) * WINDOW))
        else:
            eot = self.settings.fixed_eot if self.settings.fixed else UNKNOWN
        level = level_db(s.audio.slice(d.begin * WINDOW, d.end * WINDOW)) if heard else 0.0
        self._store_in_order(s, self._stop_event(s.id, d, now, speech_end, eot, level))
        if self.settings.fixed:
            text = self.settings.fixed_transcript if heard else ""
            self._spawn(self._fixed_final(s, d, text, now), f"asr-final-{s.id}")
            return
        if s.listener is not None:
            begin = d.begin * WINDOW - self._preroll
            audio = s.audio.slice(begin, d.end * WINDOW + self._preroll) if heard else np.empty(0, np.int16)
            self._chain_final(s, d, now, self._cloud_final(s, d, audio, begin, d.end * WINDOW) if heard else None)
            return
        # Whisper gets the pre-roll and as much again after the speech, and
        # the caller's words just before, if any (continuation.py).
        first = d.begin * WINDOW - self._preroll
        context = self._context_for(s, d.begin, d.end) if heard else None
        own = self._own_start(context, d.begin) if context else first
        alone = s.audio.slice(first, d.end * WINDOW + self._preroll) if heard else np.empty(0, np.int16)
        audio = np.concatenate([self._context_audio(s, context), s.audio.slice(own, d.end * WINDOW + self._preroll)]) if context else alone
        if heard and self._context_samples > 0:
            s.hold = (context.first if context else first, d.end + int(self._turn_join_windows) + 1)

        redo = s.redo

        async def deliver(text: str) -> None:
            if redo is not None:
                await asyncio.shield(redo)  # the previous final, transcribed again, goes first
            await s.vad_events_stored()
            await self._publish_final(s, d, text, now)
            if text.strip():
                s.context = Context(((first, d.end * WINDOW + CONTEXT_GAP),), d.end, text.strip())

        async def deliver_joined(text: str) -> None:
            assert context is not None
            words = continuation(context.text, text)
            if not words:  # the context came out too differently to cut, or alone: the utterance alone
                self.stats["context_misses"] += 1
                done = s.redo = asyncio.get_running_loop().create_future()

                async def deliver_alone(text: str) -> None:
                    try:
                        await deliver(text)
                    finally:
                        done.set_result(None)

                self.queue.submit(Job(session=s.id, utterance=d.utterance, final=True, audio=lambda: alone, deliver=deliver_alone))
                return
            self.stats["context_used"] += 1
            if redo is not None:
                await asyncio.shield(redo)
            await s.vad_events_stored()
            await self._publish_final(s, d, words, now)
            if words.strip():
                s.context = Context(context.pieces + ((own, d.end * WINDOW + CONTEXT_GAP),), d.end, f"{context.text} {words.strip()}")

        early = spec.text if kept and spec.context == context else None
        job = Job(session=s.id, utterance=d.utterance, final=True, audio=lambda: audio, deliver=deliver_joined if context else deliver, early=early)
        self.queue.submit(job)

    def _context_for(self, s: Session, begin: int, end: int) -> Context | None:
        """The caller's words an utterance (windows ``begin`` to ``end``) is
        heard with: the latest words, if it began within turn_join_ms of them
        and the whole stays within context_ms of audio before it."""
        c = s.context
        if c is None or self._context_samples <= 0 or begin - c.end > self._turn_join_windows or c.end > begin:
            return None
        if c.samples > self._context_samples or c.first < s.audio.start:
            return None
        return c

    @staticmethod
    def _own_start(c: Context, begin: int) -> int:
        """Where an utterance's own audio starts after its context: CONTEXT_GAP before its speech, not inside the context."""
        return max(begin * WINDOW - CONTEXT_GAP, c.pieces[-1][1])

    @staticmethod
    def _context_audio(s: Session, c: Context) -> np.ndarray:
        return np.concatenate([s.audio.slice(a, b) for a, b in c.pieces])

    def _speculate(self, s: Session, end: int) -> None:
        """Work out the end of the utterance as if the silence that began at
        window ``end`` goes on to the stop: its end-of-turn score, and its final
        transcript if the finals' Whisper is free (in the finals' lane)."""
        spec = Speculation(s.ep.utterance, end, cut=s.ep.index)
        s.speculation = spec
        self.stats["speculations"] += 1
        first = s.ep.run_begin * WINDOW - self._preroll
        stop = (end + self.cfg.silence_windows) * WINDOW  # where a stop on this silence cuts the audio
        if self.eot is not None:
            spec.eot = self.eot.score(self._as_at_stop(s, first, end, spec.cut, stop))
        if self.queue and s.listener is None and self.queue.finals_idle():
            # As the stop's Whisper clip: the pre-roll again after the speech, as far as the stop has heard,
            # with the context the stop would give it.
            c = spec.context = self._context_for(s, s.ep.run_begin, end)
            audio = self._as_at_stop(s, self._own_start(c, s.ep.run_begin) if c else first, end, spec.cut, min(end * WINDOW + self._preroll, stop))
            if c is not None:
                audio = np.concatenate([self._context_audio(s, c), audio])
            text = spec.text = asyncio.get_running_loop().create_future()

            async def deliver(words: str) -> None:
                if not text.done():
                    text.set_result(words)

            self.queue.submit(Job(session=s.id, utterance=spec.utterance, final=True, audio=lambda: None if spec.dropped else audio, deliver=deliver))

    @staticmethod
    def _as_at_stop(s: Session, first: int, end: int, cut: int, upto: int) -> np.ndarray:
        """Samples [first, upto) of the stream as they will be if the silence
        heard from window ``end`` to ``cut`` goes on: what is held up to
        ``cut``, then that silence repeated. (Smart Turn scores such a clip
        as it scores the real one, to a few hundredths: services/asr/BENCHMARKS.md.)"""
        heard = s.audio.slice(first, min(cut * WINDOW, upto))
        missing = upto - cut * WINDOW
        if missing <= 0:
            return heard
        return np.concatenate([heard, np.resize(s.audio.slice(end * WINDOW, cut * WINDOW), missing)])

    # ------------------------------------------------------------------ a cloud provider

    def _cloud_allowed(self) -> bool:
        return self.breaker is None or self.breaker.allows(time.monotonic())

    def _chain_final(self, s: Session, d: endpointer.Stop, stopped_at: float, words) -> None:
        """The final's words are fetched at once (``words``: a coroutine, or
        None for nothing heard); it is published after its SpeechStopped and
        after the session's previous final, so finals keep utterance order."""
        words_task = self._spawn(words, f"asr-words-{s.id}-{d.utterance}") if words is not None else None
        previous = s.final_chain

        async def publish() -> None:
            text = ""
            try:
                if words_task is not None:
                    text = await words_task
            finally:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                await s.vad_events_stored()
                await self._publish_final(s, d, text, stopped_at)
                await self._report_usage(s)

        s.final_chain = self._spawn(publish(), f"asr-final-{s.id}-{d.utterance}")

    async def _cloud_final(self, s: Session, d: endpointer.Stop, audio: np.ndarray, begin: int, end: int) -> str:
        """The provider's words for the utterance; on its failure, Whisper's (or none)."""
        provider = self.cloud.name
        fallback = "whisper" if self.queue is not None else ""
        if not self._cloud_allowed():
            self.stats["provider_skipped"] += 1
            if not s.told_skipped:
                s.told_skipped = True
                error = f"skipped while it recovers (last error: {self.breaker.last_error})"
                await self._event(contract.ProviderFailed(session=s.id, at=time.time(), service="asr", provider=provider, error=error, fallback=fallback, utterance=d.utterance))
            return await self._fallback_final(s, d, audio)
        try:
            text = await s.listener.final(audio, begin, end)
        except ProviderError as exc:
            if self.breaker is not None:
                self.breaker.failed(exc, time.monotonic())
            s.told_skipped = True
            self.stats["provider_failures"] += 1
            self.tel.counter("parley.provider.failures", "1", "a cloud provider failed a piece of work").add(
                1, {"service": "asr", "provider": provider, "kind": exc.kind}
            )
            log.warning(
                "asr provider failed: %s", exc,
                extra={"session_id": s.id, "utterance": d.utterance, "provider": provider, "kind": exc.kind, "fallback": fallback or None},
            )  # fmt: skip
            await self._event(
                contract.ProviderFailed(session=s.id, at=time.time(), service="asr", provider=provider, error=f"{exc.kind}: {exc}", fallback=fallback, utterance=d.utterance)
            )
            return await self._fallback_final(s, d, audio)
        if self.breaker is not None:
            self.breaker.succeeded()
        return text

    async def _fallback_final(self, s: Session, d: endpointer.Stop, audio: np.ndarray) -> str:
        if self.queue is None or len(audio) == 0:
            return ""
        self.stats["fallback_finals"] += 1
        self.tel.counter("parley.usage.asr_audio_seconds", "s", "seconds of audio a provider heard").add(len(audio) / SAMPLE_RATE, {"provider": "whisper"})
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        async def deliver(text: str) -> None:
            if not done.done():
                done.set_result(text)

        self.queue.submit(Job(session=s.id, utterance=d.utterance, final=True, audio=lambda: audio, deliver=deliver))
        return await done

    def _request_cloud_partial(self, s: Session) -> None:
        utterance, begin = s.ep.utterance, s.ep.run_begin * WINDOW - self._preroll
        s.partial_busy = True

        async def ask() -> None:
            try:
                if not self._current(s, utterance, allow_silence=False):
                    return
                try:
                    text = await s.listener.partial(s.audio.slice(begin, s.audio.end), begin)
                except ProviderError as exc:
                    # Counted, not reported on the session: the final's own failure (if any) is.
                    self.stats["partial_failures"] = self.stats.get("partial_failures", 0) + 1
                    if self.breaker is not None:
                        self.breaker.failed(exc, time.monotonic())
                    log.info("partial not heard: %s", exc, extra={"session_id": s.id, "provider": self.cloud.name, "kind": exc.kind})
                    return
                if text and self._current(s, utterance, allow_silence=True):
                    self.stats["partials"] += 1
                    await s.vad_events_stored()  # never ahead of its SpeechStarted
                    await bus.publish_event(self.nc, contract.TranscriptPartial(session=s.id, at=time.time(), utterance=utterance, text=text))
            finally:
                s.partial_busy = False

        self._spawn(ask(), f"asr-partial-{s.id}-{utterance}")

    @staticmethod
    def _current(s: Session, utterance: int, allow_silence: bool) -> bool:
        ep = s.ep
        return not s.closed and ep.speaking and ep.utterance == utterance and (allow_silence or not ep.in_silence)

    async def _report_usage(self, s: Session) -> None:
        """Audio the provider billed since the last report, as Usage on the session."""
        if s.listener is None:
            return
        seconds = s.listener.take_billed()
        if seconds <= 0:
            return
        provider = s.listener.provider
        self.tel.counter("parley.usage.asr_audio_seconds", "s", "seconds of audio a provider heard").add(seconds, {"provider": provider})
        await self._event(contract.Usage(session=s.id, at=time.time(), service="asr", provider=provider, unit="audio_s", amount=round(seconds, 3)))

    async def _close_listener(self, s: Session) -> None:
        if s.final_chain is not None:
            await asyncio.gather(s.final_chain, return_exceptions=True)
        await s.listener.close()
        await self._report_usage(s)

    async def _event(self, event: contract.Event) -> None:
        try:
            await bus.publish_event(self.nc, event)
        except Exception as exc:  # noqa: BLE001 - a notice or usage must never break hearing
            log.warning("event not published: %s", exc, extra={"session_id": event.session, "event": contract.type_name(event)})

    @staticmethod
    async def _stop_event(session_id: str, d: endpointer.Stop, now: float, speech_end: float, eot, level: float = 0.0) -> contract.SpeechStopped:
        """The SpeechStopped, once its end-of-turn score is in (``eot``: a
        score, or the future of one being scored)."""
        if isinstance(eot, asyncio.Future):
            eot = await eot
        return contract.SpeechStopped(
            session=session_id, at=now, utterance=d.utterance, speech_ms=d.speech_ms, speech_end_at=speech_end, eot=eot, level=level
        )

    def _store_in_order(self, s: Session, event) -> None:
        """Store one of the VAD's events (or, for a stop, the coroutine that
        makes it) after the session's earlier ones, in a task of its own.
        The VAD tick hears every session: it never waits for one session's
        event to be stored (an ack takes ~3 ms at rest, over 100 ms at p99
        with 100 calls on two cores, seconds while the event stream elects a
        leader), so no caller's endpointing waits for another's storage. A
        failure is its own (the next event is stored anyway): logged and
        counted (``events_lost``)."""
        before = s.storing

        async def store() -> None:
            pending = event if asyncio.iscoroutine(event) else None
            name = "SpeechStopped" if pending is not None else contract.type_name(event)
            try:
                if before is not None and not before.done():
                    await asyncio.wait([before])
                await bus.publish_event(self.nc, await pending if pending is not None else event)
            except Exception as exc:  # noqa: BLE001 - counted and logged here; the session's later events still go
                self.stats["events_lost"] += 1
                log.error("event not stored: %s", exc, extra={"session_id": s.id, "event": name})
            finally:
                if pending is not None:
                    pending.close()  # not awaited when cancelled at shutdown (a no-op once it ran)

        s.storing = self._spawn(store(), f"asr-event-{s.id}")

    def _request_partial(self, s: Session) -> None:
        utterance = s.ep.utterance
        begin = s.ep.run_begin

        def current(allow_silence: bool) -> bool:
            ep = s.ep
            return not s.closed and ep.speaking and ep.utterance == utterance and (allow_silence or not ep.in_silence)

        def audio():
            if not current(allow_silence=False):
                return None
            return s.audio.slice(begin * WINDOW - self._preroll, s.audio.end)

        async def deliver(text: str) -> None:
            if text and current(allow_silence=True):
                self.stats["partials"] += 1
                await s.vad_events_stored()  # never ahead of its SpeechStarted
                await bus.publish_event(
                    self.nc, contract.TranscriptPartial(session=s.id, at=time.time(), utterance=utterance, text=text)
                )

        self.queue.submit(Job(session=s.id, utterance=utterance, final=False, audio=audio, deliver=deliver))

    async def _fixed_final(self, s: Session, d: endpointer.Stop, text: str, stopped_at: float) -> None:
        target = stopped_at + self.settings.fixed_delay_ms / 1000
        while (left := target - time.time()) > 0:  # asyncio may wake a hair early: never publish before
            await asyncio.sleep(left)
        await s.vad_events_stored()
        await self._publish_final(s, d, text, stopped_at)

    def _completeness(self, s: Session, d: endpointer.Stop, text: str) -> float:
        """Text P(complete) of the transcript so far: this final, after the
        session's unfinished finals when it began within turn_join_ms of them."""
        if not text:
            return UNKNOWN  # nothing heard (a noise): the context stays as it was
        joined = text
        if s.turn_text and d.begin - s.turn_end <= self._turn_join_windows:
            joined = f"{s.turn_text} {text}"
        complete = completeness.score(joined)
        if 0 <= complete < 0.5:
            s.turn_text, s.turn_end = joined, d.end
        else:
            s.turn_text = ""
        return complete

    async def _publish_final(self, s: Session, d: endpointer.Stop, text: str, stopped_at: float) -> None:
        session_id, utterance = s.id, d.utterance
        s.unfinished.pop(utterance, None)
        complete = self._completeness(s, d, text)
        now = time.time()
        latency_ms = round((now - stopped_at) * 1000, 1)
        self.stats["finals"] += 1
        self.stats["last_final_latency_ms"] = latency_ms
        # Traced under the turn this utterance starts (its id is derived, see parley.telemetry).
        turn = telemetry.turn_context(session_id, telemetry.turn_key(utterance=utterance))
        self.tel.record_span(
            "asr.utterance",
            session=session_id,
            parent=turn,
            start=stopped_at,
            end=now,
            attributes={"asr.utterance": utterance, "asr.chars": len(text), "messaging.system": "nats", "messaging.destination.name": subjects.events(session_id)},
        )
        self.tel.histogram("parley.asr.final_delay", "ms", "end of speech -> final transcript").record(latency_ms)
        await bus.publish_event(
            self.nc,
            contract.TranscriptFinal(
                session=session_id, at=now, utterance=utterance, text=str(text), speech_end_at=stopped_at, complete=complete,
                floor=getattr(text, "floor", -1.0),  # whisper.Transcript (a str subclass): measured on a short clip heard alone
            ),
            headers=telemetry.inject(turn),
        )
        log.info(
            "final transcript",
            extra={"session_id": session_id, "utterance": utterance, "latency_ms": latency_ms, "chars": len(text)},
        )

    def _spawn(self, coro, name: str) -> asyncio.Task:
        """A background task, kept until it ends; a failure is logged and counted."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def level_db(samples: np.ndarray, q: float = 80) -> float:
    """How loud a sound is, in dBFS: the ``q``th percentile of its 32 ms
    windows' RMS (80: its voiced part, not its quiet edges; 100: its loudest
    window). 0.0: no audio. The reducer compares a talk-over's level with
    the caller's own turns."""
    n = len(samples) // WINDOW
    if n == 0:
        return 0.0
    w = samples[: n * WINDOW].astype(np.float32).reshape(n, WINDOW) * (1.0 / 32768.0)
    db = 10.0 * np.log10(np.mean(w * w, axis=1) + 1e-10)
    return round(min(float(np.percentile(db, q)), -0.01), 2)


def _valid_session(session: str) -> bool:
    try:
        subjects.session_token(session)
    except ValueError:
        return False
    return True
