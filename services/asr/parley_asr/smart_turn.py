"""The acoustic end-of-turn model: Smart Turn v3.2, scored for many sessions at once.

Smart Turn v3.2 (Daily, BSD-2) is a Whisper-tiny encoder with a classifier:
8 s of audio ending "now" in, P(the speaker has finished their turn) out. It
hears prosody (a falling pitch, a drawn-out filler) that a transcript does
not show. Its only offline copy is inside the ``pipecat-ai`` wheel; we read
the ONNX file from the installed distribution (``importlib.metadata``, which
neither imports pipecat nor needs its dependencies, see the service README)
and compute its input ourselves (``logmel.py``).

ONNX: ``input_features`` float32 [batch, 80, 800] -> ``logits`` float32
[batch, 1], which despite the name already went through a sigmoid.

``EndOfTurnQueue`` is how the worker uses it: each SpeechStopped asks for a
score (``await queue.score(audio)``); one thread runs the model, and every
request that arrived while it was busy goes into its next call (up to
``max_batch``), as the VAD batches windows of all sessions. A failed call
answers -1 ("unknown") to everyone in it: a broken model delays nobody's
turn, it only loses the signal (logged, counted).

Cost on this machine (services/asr/BENCHMARKS.md): about 45 ms per clip on
one thread, 27 ms on two; a batch costs about the sum of its clips (the
encoder is compute-bound at 400 positions), so batching saves calls and
thread hand-offs, not arithmetic.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime

from . import logmel

log = logging.getLogger("parley_asr.smart_turn")

DISTRIBUTION = "pipecat-ai"
MODEL_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
UNKNOWN = -1.0


def model_path() -> str:
    """The ONNX file inside the installed pipecat-ai wheel (found without importing pipecat)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"the end-of-turn model ships in the {DISTRIBUTION} wheel, which is not installed") from None
    path = dist.locate_file(MODEL_FILE)
    if not path.exists():  # type: ignore[union-attr]
        raise RuntimeError(f"{DISTRIBUTION} {dist.version} has no {MODEL_FILE}")
    return str(path)


class SmartTurn:
    """Adapter: int16 clips at 16 kHz -> P(end of turn) each."""

    def __init__(self, path: str | None = None, threads: int = 1):
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.path = path or model_path()
        self._session = onnxruntime.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self._session.get_inputs()]
        if inputs != ["input_features"]:
            raise RuntimeError(f"unexpected Smart Turn inputs {inputs}")
        self.threads = threads

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        """int16 (or float in [-1, 1]) clips -> float32 [n] probabilities."""
        if not clips:
            return np.empty(0, np.float32)
        audio = [c.astype(np.float32) / 32768.0 if c.dtype == np.int16 else c for c in clips]
        (out,) = self._session.run(["logits"], {"input_features": logmel.features_batch(audio)})
        return out.reshape(len(clips)).astype(np.float32)


@functools.cache
def shared(threads: int = 1) -> SmartTurn:
    """One loaded model per process and thread count (the tests' workers share it)."""
    return SmartTurn(threads=threads)


class EndOfTurnQueue:
    """Scores from many sessions, one model call per batch, on one thread."""

    def __init__(self, model: SmartTurn, max_batch: int = 8):
        self.model = model
        self.max_batch = max(1, max_batch)
        self._waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="smart-turn")
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.stats = {"calls": 0, "clips": 0, "failures": 0, "seconds": 0.0, "last_ms": None, "max_batch_seen": 0}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asr-end-of-turn")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, fut in self._waiting:
            if not fut.done():
                fut.set_result(UNKNOWN)
        self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def score(self, audio: np.ndarray) -> asyncio.Future:
        """A future for P(end of turn) of ``audio`` (int16, 16 kHz); -1 if the model fails."""
        fut = asyncio.get_running_loop().create_future()
        if len(audio) == 0:
            fut.set_result(UNKNOWN)
            return fut
        self._waiting.append((audio, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A score nobody waits for any more (a speculation the caller's voice overtook) is not computed.
            self._waiting = [(a, fut) for a, fut in self._waiting if not fut.done()]
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self.model, [a for a, _ in batch])
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(UNKNOWN)
                raise
            except Exception:
                log.exception("end-of-turn model failed", extra={"clips": len(batch)})
                self.stats["failures"] += 1
                probs = np.full(len(batch), UNKNOWN, np.float32)
            took = time.perf_counter() - t0
            self.stats["calls"] += 1
            self.stats["clips"] += len(batch)
            self.stats["seconds"] += took
            self.stats["last_ms"] = round(took * 1000, 1)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
            for (_, fut), p in zip(batch, probs.tolist()):
                if not fut.done():  # its session may have gone
                    fut.set_result(round(float(p), 4))
