"""The queue between endpointing and Whisper: finals first, partials if idle.

One Whisper call at a time per worker (tiny.en with 2 threads already fills
the machine's 2 cores). The rules that keep partials from delaying finals:

* A final always goes before any waiting partial.
* A session has at most one waiting partial; a newer request replaces it.
* A partial's audio is cut when it starts, not when it was requested, and it
  is skipped if by then its utterance has stopped or silence has begun
  (``Job.audio`` returns None): the final is likely to need the CPU soon.
* A partial's text is dropped if its utterance stopped while Whisper ran
  (``Job.deliver`` checks), so no partial ever follows its SpeechStopped.

A partial that is already running is not interrupted (CTranslate2 cannot be);
the final waits at most for that one call. Measured in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

import numpy as np

log = logging.getLogger("parley_asr.transcription")


class Transcriber(Protocol):
    def transcribe(self, pcm16: np.ndarray) -> str: ...


@dataclass(eq=False)
class Job:
    session: str
    utterance: int
    final: bool
    audio: Callable[[], np.ndarray | None]  # in the loop, when the job starts; None = skip it
    deliver: Callable[[str], Awaitable[None]]  # in the loop, with the text


class TranscriptionQueue:
    def __init__(self, transcriber: Transcriber):
        self.transcriber = transcriber
        self._finals: deque[Job] = deque()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="whisper")
        self._task: asyncio.Task | None = None
        self.running: Job | None = None
        self.last_seconds = {"final": 0.0, "partial": 0.0}  # Whisper time of the last call of each kind

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asr-transcription")

    async def drain(self, timeout: float) -> None:
        """Wait (a bounded time) until every submitted final has been delivered."""
        deadline = time.monotonic() + timeout
        while (self._finals or (self.running is not None and self.running.final)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, job: Job) -> None:
        if job.final:
            self._finals.append(job)
        else:
            self._partials.pop(job.session, None)
            self._partials[job.session] = job
        self._wake.set()

    def partial_busy(self, session: str) -> bool:
        """A partial for this session is waiting or running."""
        running = self.running
        return session in self._partials or (running is not None and not running.final and running.session == session)

    def forget(self, session: str) -> None:
        """Drop a released session's waiting partial (its finals still run)."""
        self._partials.pop(session, None)

    def _next(self) -> Job | None:
        if self._finals:
            return self._finals.popleft()
        if self._partials:
            return self._partials.popitem(last=False)[1]
        return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self._next()
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            audio = job.audio()
            if audio is None:
                continue
            if len(audio) == 0:  # nothing to hear (a session cut off mid-utterance)
                await self._deliver(job, "")
                continue
            self.running = job
            t0 = time.perf_counter()
            try:
                text = await loop.run_in_executor(self._executor, self.transcriber.transcribe, audio)
                self.last_seconds["final" if job.final else "partial"] = time.perf_counter() - t0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("whisper failed", extra={"session_id": job.session, "utterance": job.utterance})
                if not job.final:
                    continue
                text = ""  # a final is always sent, so nobody waits for it forever
            finally:
                self.running = None
            await self._deliver(job, text)

    async def _deliver(self, job: Job, text: str) -> None:
        try:
            await job.deliver(text)
        except Exception:
            log.exception("delivering a transcript failed", extra={"session_id": job.session})
