"""The queue between endpointing and Whisper: finals first, partials when there is room.

The rules that keep partials from delaying finals:

* A final always goes before any waiting partial, and no partial *starts*
  while a final is waiting or running.
* A session has at most one waiting partial; a newer request replaces it.
* A partial's audio is cut when it starts, not when it was requested, and it
  is skipped if by then its utterance has stopped or silence has begun
  (``Job.audio`` returns None): the final is likely to need the CPU soon.
* A partial's text is dropped if its utterance stopped while Whisper ran
  (``Job.deliver`` checks), so no partial ever follows its SpeechStopped.

A final may come with its transcript already made (``Job.early``): the
worker started it speculatively when the silence that ended the utterance
began, in the same lane, so it ran before the final's turn came and the
final is delivered without a second Whisper call. An early transcript that
is missing or empty is made again, as usual.

A running Whisper call cannot be interrupted (CTranslate2 has no cancel).
With one model instance ("one lane") a final that arrives during a partial
waits for the rest of it. With a second instance for finals ("two lanes") it
starts at once, beside the partial, and both run a little slower; measured in
services/asr/BENCHMARKS.md, the second lane cuts that case from about 630 to
about 515 ms, against about 420 ms with no partial in the way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal, Protocol

import numpy as np

log = logging.getLogger("parley_asr.transcription")

Lane = Literal["both", "finals", "partials"]


class Transcriber(Protocol):
    def transcribe(self, pcm16: np.ndarray) -> str: ...


@dataclass(eq=False)
class Job:
    session: str
    utterance: int
    final: bool
    audio: Callable[[], np.ndarray | None]  # in the loop, when the job starts; None = skip it
    deliver: Callable[[str], Awaitable[None]]  # in the loop, with the text
    early: "asyncio.Future[str] | None" = None  # a final's transcript made before it was asked for


class TranscriptionQueue:
    """``final_transcriber`` (a second model instance) gives finals a lane of their own."""

    def __init__(self, transcriber: Transcriber, final_transcriber: Transcriber | None = None):
        if final_transcriber is None:
            self._lanes: dict[Lane, Transcriber] = {"both": transcriber}
        else:
            self._lanes = {"finals": final_transcriber, "partials": transcriber}
        self._finals: deque[Job] = deque()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._wake = {lane: asyncio.Event() for lane in self._lanes}
        self._executors = {lane: ThreadPoolExecutor(1, thread_name_prefix=f"whisper-{lane}") for lane in self._lanes}
        self._running: dict[Lane, Job] = {}
        self._tasks: list[asyncio.Task] = []
        self.last_seconds = {"final": 0.0, "partial": 0.0}  # Whisper time of the last call of each kind
        self.early_used = 0  # finals delivered from a transcript made early
        # Failures, each logged with its session: a Whisper call (a final then
        # goes out empty), a delivery (publishing the transcript).
        self.stats = {"whisper": 0, "delivery": 0}

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(lane), name=f"asr-transcription-{lane}") for lane in self._lanes]

    async def drain(self, timeout: float) -> None:
        """Wait (a bounded time) until every submitted final has been delivered."""
        deadline = time.monotonic() + timeout
        while self._final_busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, job: Job) -> None:
        if job.final:
            self._finals.append(job)
        else:
            self._partials.pop(job.session, None)
            self._partials[job.session] = job
        self._wake_all()

    def partial_busy(self, session: str) -> bool:
        """A partial for this session is waiting or running."""
        return session in self._partials or any(
            not job.final and job.session == session for job in self._running.values()
        )

    def forget(self, session: str) -> None:
        """Drop a released session's waiting partial (its finals still run)."""
        self._partials.pop(session, None)

    @property
    def running(self) -> Job | None:
        return next(iter(self._running.values()), None)

    def finals_idle(self) -> bool:
        """No final is waiting or running: the finals' Whisper is free."""
        return not self._final_busy()

    def _final_busy(self) -> bool:
        return bool(self._finals) or any(job.final for job in self._running.values())

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    def _next(self, lane: Lane) -> Job | None:
        if lane != "partials" and self._finals:
            return self._finals.popleft()
        if lane != "finals" and self._partials and not self._final_busy():
            return self._partials.popitem(last=False)[1]
        return None

    async def _run(self, lane: Lane) -> None:
        wake = self._wake[lane]
        while True:
            job = self._next(lane)
            if job is None:
                wake.clear()
                await wake.wait()
                continue
            early = job.early
            if early is not None and early.done() and not early.cancelled() and early.result():
                self.early_used += 1
                await self._deliver(job, early.result())
                continue
            try:
                audio = job.audio()
            except Exception:  # noqa: BLE001 - the lane must outlive one job's bug
                self.stats["whisper"] += 1
                log.exception("could not take a job's audio", extra={"session_id": job.session, "utterance": job.utterance})
                audio = np.empty(0, np.int16) if job.final else None
            if audio is None:
                continue
            text = await self._transcribe(lane, job, audio) if len(audio) else ""  # empty: a session cut off mid-utterance
            if text is None and not job.final:
                continue
            await self._deliver(job, "" if text is None else text)  # a final is always sent, so nobody waits for it forever (an empty Transcript keeps its floor)

    async def _transcribe(self, lane: Lane, job: Job, audio: np.ndarray) -> str | None:
        """Whisper's text, or None if it failed (logged and counted)."""
        self._running[lane] = job
        t0 = time.perf_counter()
        try:
            model = self._lanes[lane]
            # A final's transcript may carry more than its text (whisper.Transcript: the floor-word probability).
            call = getattr(model, "transcribe_final", model.transcribe) if job.final else model.transcribe
            text = await asyncio.get_running_loop().run_in_executor(self._executors[lane], call, audio)
            self.last_seconds["final" if job.final else "partial"] = time.perf_counter() - t0
            return text
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one utterance's failure; the lane goes on
            self.stats["whisper"] += 1
            log.exception("whisper failed", extra={"session_id": job.session, "utterance": job.utterance, "final": job.final})
            return None
        finally:
            del self._running[lane]
            if job.final:
                self._wake_all()  # partials may start again

    async def _deliver(self, job: Job, text: str) -> None:
        try:
            await job.deliver(text)
        except Exception:  # noqa: BLE001 - one session's failure stays its own
            self.stats["delivery"] += 1
            log.exception("delivering a transcript failed", extra={"session_id": job.session, "utterance": job.utterance})
