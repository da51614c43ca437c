"""The TTS worker: the NATS shell around ``Lanes`` and a ``Voice``.

    orchestrator --TTS_REQUEST (queue group "tts"): Synthesize(s, run, chunk, text)
        --> one worker: spoken(text) -> the run's lane -> voice.stream
        --> tts_audio(s, run): PCM16 LE mono pieces of at most 200 ms, headers
            Parley-Seq (from 0 within the chunk), -Rate, -Chunk, -Last ("1"
            on the final, possibly empty, message of the chunk)
        --> events(s): TTSChunkStarted at the first message, then
            TTSChunkDone(audio_ms) or TTSError after the last
    orchestrator --TTS_CANCEL (every worker): CancelTTS(s, run)
    anyone --control(s): SessionControl "end"

nats-py runs a subscription's callback one message at a time, so callbacks
only decode and do bookkeeping; each lane (one run's chunks, in order) has a
runner task, and the voice does the heavy work off the event loop.

After a cancel (or the session's end), nothing of that run leaves this
worker: ``Lanes.live`` is checked before every publish, the runner task is
cancelled (which closes the voice's stream, stopping Piper between
sentences), queued chunks are dropped, and later Synthesize for the run too.
No event is sent for a cancelled run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing

from nats.aio.client import Client
from nats.aio.msg import Msg

from parley import bus, contract, subjects, telemetry

from . import audio
from .adapters import SynthesisError, Voice
from .lanes import Admit, Job, Key, Lanes
from .settings import Settings
from .spoken import spoken

log = logging.getLogger("parley_tts.worker")


class Worker:
    def __init__(self, nc: Client, settings: Settings, voice: Voice):
        self.nc = nc
        self.settings = settings
        self.voice = voice
        self.id = settings.worker_id
        self.lanes = Lanes(forget_after=settings.forget_after_s, remember=settings.remember)
        self.runners: dict[Key, asyncio.Task] = {}
        self.reporting: set[asyncio.Task] = set()  # events still being stored (see _event)
        self.subs: list = []
        self.stats: dict[str, int] = {
            "requests": 0,
            "chunks_done": 0,
            "chunks_failed": 0,
            "cancels": 0,
            "sessions_ended": 0,
            "dropped_queued": 0,  # chunks of a cancelled run that never started
            "dropped_late": 0,  # Synthesize for a run already cancelled or ended
            "bad_messages": 0,
            "events_lost": 0,  # an event the stream never stored (logged)
            "audio_ms": 0,
        }

    # ------------------------------------------------------------- lifetime
    async def start(self) -> None:
        self.subs = [
            await self.nc.subscribe(subjects.TTS_REQUEST, queue=subjects.TTS_GROUP, cb=self._on_request),
            await self.nc.subscribe(subjects.TTS_CANCEL, cb=self._on_cancel),
            await self.nc.subscribe(subjects.CONTROL_ALL, cb=self._on_control),
        ]
        await self.nc.flush()

    async def stop(self) -> None:
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be closed
                pass
        self.subs = []
        tasks = list(self.runners.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.runners.clear()
        if self.reporting:  # what already happened is still told before the connection goes
            await asyncio.wait(set(self.reporting), timeout=bus.PUBLISH_PATIENCE)

    # ------------------------------------------------------------- requests
    async def _on_request(self, msg: Msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
            if not isinstance(cmd, contract.Synthesize):
                raise ValueError(f"expected Synthesize, got {contract.type_name(cmd)}")
            subjects.session_token(cmd.session)
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            self._bad("tts request", exc)
            return
        self.stats["requests"] += 1
        now = asyncio.get_running_loop().time()
        trace = tuple((k, v) for k, v in (msg.headers or {}).items() if k in ("traceparent", "tracestate"))
        job = Job(cmd.session, cmd.run, cmd.chunk, spoken(cmd.text), received=now, trace=trace)
        admit = self.lanes.submit(job, now)
        if admit is Admit.START:
            self.runners[job.key] = asyncio.create_task(self._run(job.key), name=f"tts-{job.session}-{job.run}")
        elif admit in (Admit.CANCELLED, Admit.ENDED):
            self.stats["dropped_late"] += 1
            log.info(
                "synthesize for a %s run dropped",
                admit.value,
                extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk},
            )

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
            if not isinstance(cmd, contract.CancelTTS):
                raise ValueError(f"expected CancelTTS, got {contract.type_name(cmd)}")
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            self._bad("tts cancel", exc)
            return
        key = (cmd.session, cmd.run)
        dropped = self.lanes.cancel(key, asyncio.get_running_loop().time())
        running = self._stop_runner(key)
        self.stats["cancels"] += 1
        self.stats["dropped_queued"] += len(dropped)
        if running or dropped:
            log.info(
                "run cancelled",
                extra={"session_id": cmd.session, "run_id": cmd.run, "dropped_chunks": len(dropped), "was_running": running},
            )

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = contract.decode(msg.data, contract.SessionControl)
        except (contract.DecodeError, contract.ValidationError) as exc:
            self._bad("session control", exc)
            return
        if ctl.action != "end":
            return
        lanes = self.lanes.end(ctl.session, asyncio.get_running_loop().time())
        for key, dropped in lanes.items():
            self._stop_runner(key)
            self.stats["dropped_queued"] += len(dropped)
        self.stats["sessions_ended"] += 1
        if lanes:
            log.info("session ended: runs dropped", extra={"session_id": ctl.session, "runs": [k[1] for k in lanes]})

    def _stop_runner(self, key: Key) -> bool:
        task = self.runners.pop(key, None)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def _bad(self, what: str, exc: Exception) -> None:
        self.stats["bad_messages"] += 1
        log.warning("bad %s dropped: %s", what, exc, extra={"error": str(exc)})

    # ------------------------------------------------------------- synthesis
    async def _run(self, key: Key) -> None:
        """One lane's runner: its chunks one after the other, until it is empty."""
        me = asyncio.current_task()
        try:
            while (job := self.lanes.take(key)) is not None:
                try:
                    await self._synthesize(job)
                except Exception:  # noqa: BLE001 - one chunk's failure must not strand the rest
                    log.exception("chunk failed", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})
        finally:
            if self.runners.get(key) is me:
                del self.runners[key]

    async def _synthesize(self, job: Job) -> None:
        key, rate = job.key, self.voice.sample_rate
        subject = subjects.tts_audio(job.session, job.run)
        loop = asyncio.get_running_loop()
        seq = n_bytes = 0
        first_at: float | None = None
        error = ""
        trace = dict(job.trace)
        try:
            async with aclosing(self.voice.stream(job)) as pieces:
                async for pcm in pieces:
                    if not self.lanes.live(key):
                        return
                    await self.nc.publish(subject, pcm, headers=bus.audio_headers(seq, rate, chunk=job.chunk) | trace)
                    seq += 1
                    n_bytes += len(pcm)
                    if first_at is None:
                        first_at = loop.time()
                        await self._event(contract.TTSChunkStarted(session=job.session, at=time.time(), run=job.run, chunk=job.chunk))
        except Exception as exc:  # noqa: BLE001 - reported as TTSError, and the chunk still ends
            if not isinstance(exc, SynthesisError):
                log.exception("synthesis broke", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})
            error = str(exc) or type(exc).__name__
        if not self.lanes.live(key):
            return
        # The final message of the chunk, even after a failure: the gateway
        # waits for it before it moves on to the next chunk.
        await self.nc.publish(subject, b"", headers=bus.audio_headers(seq, rate, chunk=job.chunk, last=True) | trace)
        if first_at is None:
            first_at = loop.time()
            await self._event(contract.TTSChunkStarted(session=job.session, at=time.time(), run=job.run, chunk=job.chunk))
        audio_ms = audio.ms_of(n_bytes, rate)
        self._trace_chunk(job, first_at, loop.time(), audio_ms, error)
        extra = {
            "session_id": job.session,
            "run_id": job.run,
            "chunk": job.chunk,
            "audio_ms": audio_ms,
            "first_audio_ms": round((first_at - job.received) * 1000, 1),
            "total_ms": round((loop.time() - job.received) * 1000, 1),
        }
        if error:
            self.stats["chunks_failed"] += 1
            log.warning("tts chunk failed: %s", error, extra=extra)
            await self._event(contract.TTSError(session=job.session, at=time.time(), run=job.run, chunk=job.chunk, message=error))
        else:
            self.stats["chunks_done"] += 1
            self.stats["audio_ms"] += audio_ms
            log.debug("tts chunk done", extra=extra)
            await self._event(contract.TTSChunkDone(session=job.session, at=time.time(), run=job.run, chunk=job.chunk, audio_ms=audio_ms))

    def _trace_chunk(self, job: Job, first_at: float, done_at: float, audio_ms: int, error: str) -> None:
        """The chunk's span (request -> last audio) under the turn, and its time to first audio."""
        tel = telemetry.current()
        wall = time.time() - done_at  # loop clock -> wall clock
        first_ms = (first_at - job.received) * 1000
        tel.histogram("parley.tts.ttfa", "ms", "Synthesize received -> first audio published").record(first_ms)
        tel.record_span(
            "tts.chunk",
            session=job.session,
            parent=telemetry.extract(dict(job.trace)) if job.trace else telemetry.session_context(job.session),
            start=wall + job.received,
            end=wall + done_at,
            attributes={
                "run.id": job.run,
                "tts.chunk": job.chunk,
                "tts.first_audio_ms": round(first_ms, 1),
                "tts.audio_ms": audio_ms,
                "tts.error": error or None,
                "messaging.system": "nats",
                "messaging.destination.name": subjects.TTS_REQUEST,
                "messaging.consumer.group.name": subjects.TTS_GROUP,
            },
        )

    async def _event(self, event: contract.Event) -> None:
        """Store one event of the session. An event reports what already
        happened (audio went out, a chunk ended), so cancelling the run while
        it is being stored must not lose it: the publish runs in its own task
        to its end, and only the wait for it is cancelled."""
        task = asyncio.create_task(bus.publish_event(self.nc, event), name=f"tts-event-{event.session}")
        self.reporting.add(task)
        task.add_done_callback(self._reported)
        await asyncio.shield(task)

    def _reported(self, task: asyncio.Task) -> None:
        self.reporting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.stats["events_lost"] += 1
            log.error("tts event not stored: %s", exc, exc_info=exc)
