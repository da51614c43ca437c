"""One session's audio on its way from the bus to the VAD and to Whisper.

Messages of any length land in ``inbox`` (the NATS callback only appends
bytes). The VAD loop takes whole 512-sample windows out of it; those samples
move to a short history, addressed by their position in the stream (sample 0
is the first sample the session sent), from which the worker cuts an
utterance with its pre-roll. The history is trimmed to what a later cut can
still need, so memory stays bounded while nobody speaks.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW = 512


class SessionAudio:
    def __init__(self) -> None:
        self.inbox = bytearray()
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (start sample, int16 samples)
        self.end = 0  # samples moved out of the inbox so far (a multiple of WINDOW)

    def push(self, pcm16: bytes) -> None:
        self.inbox += pcm16

    def pending_windows(self) -> int:
        return len(self.inbox) // (2 * WINDOW)

    def take_windows(self, limit: int | None = None) -> np.ndarray:
        """The whole windows waiting in the inbox (at most ``limit``), as int16 [k, 512]."""
        k = self.pending_windows() if limit is None else min(limit, self.pending_windows())
        if k == 0:
            return np.empty((0, WINDOW), np.int16)
        n = k * WINDOW * 2
        # Copy out before resizing: a live numpy view would pin the bytearray.
        samples = np.frombuffer(self.inbox, dtype="<i2", count=k * WINDOW).copy()
        del self.inbox[:n]
        self._chunks.append((self.end, samples))
        self.end += k * WINDOW
        return samples.reshape(k, WINDOW)

    @property
    def received(self) -> int:
        """Samples pushed so far (the session's audio clock)."""
        return self.end + len(self.inbox) // 2

    @property
    def start(self) -> int:
        """The first sample still held."""
        return self._chunks[0][0] if self._chunks else self.end

    def slice(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) of the stream, clipped to what is held, as int16."""
        a = max(a, self.start)
        b = min(b, self.end)
        parts = []
        for start, samples in self._chunks:
            stop = start + len(samples)
            if stop <= a or start >= b:
                continue
            parts.append(samples[max(a - start, 0) : min(b, stop) - start])
        if not parts:
            return np.empty(0, np.int16)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def trim(self, keep_from: int) -> None:
        """Forget whole chunks that end at or before ``keep_from``."""
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= keep_from:
            self._chunks.popleft()
