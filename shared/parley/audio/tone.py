"""A steady pure tone in a caller's audio: the beep of an answering machine.

``ToneDetector(rate).feed(pcm16) -> list[Tone]`` is pure bookkeeping over
20 ms frames: a frame is *tonal* when it is loud enough and one frequency
holds most of its energy (the peak of its spectrum, with its two
neighbouring bins, against the whole); consecutive tonal frames at the same
frequency (within one bin) make a tone, reported once it ends, if it lasted
at least ``min_ms``. Speech is never tonal for long: its energy is spread
over harmonics and formants and its pitch moves.

It reports what it heard; whether a tone means a machine is the reducer's
decision (with how long the other end talked before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_MS = 20


@dataclass(frozen=True)
class Tone:
    hz: int
    ms: int
    end_sample: int  # where it ended, in samples since the detector started


class ToneDetector:
    def __init__(self, rate: int, *, min_ms: int = 150, purity: float = 0.7, min_rms: float = 500.0, low_hz: float = 300.0, high_hz: float = 3000.0):
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self.min_ms = min_ms
        self.purity = purity
        self.min_rms = min_rms
        self.bins = np.fft.rfftfreq(self.frame, 1 / rate)
        self.band = (self.bins >= low_hz) & (self.bins <= high_hz)
        self.window = np.hanning(self.frame)
        self._pending = np.zeros(0, dtype=np.float64)
        self._run_bin = -1
        self._run_frames = 0
        self._samples = 0

    def feed(self, pcm16: bytes) -> list[Tone]:
        audio = np.concatenate([self._pending, np.frombuffer(pcm16, dtype="<i2").astype(np.float64)])
        n = len(audio) // self.frame
        self._pending = audio[n * self.frame :]
        out: list[Tone] = []
        for i in range(n):
            frame = audio[i * self.frame : (i + 1) * self.frame]
            self._samples += self.frame
            peak = self._tonal_bin(frame)
            if peak >= 0 and self._run_frames and abs(peak - self._run_bin) <= 1:
                self._run_frames += 1
                continue
            out += self._close()
            if peak >= 0:
                self._run_bin, self._run_frames = peak, 1
        return out

    def _tonal_bin(self, frame: np.ndarray) -> int:
        """The frame's tone bin, or -1 when the frame is not a pure tone."""
        if np.sqrt(np.mean(frame * frame)) < self.min_rms:
            return -1
        power = np.abs(np.fft.rfft(frame * self.window)) ** 2
        total = power.sum()
        if total <= 0:
            return -1
        peak = int(np.argmax(np.where(self.band, power, 0)))
        near = power[max(peak - 1, 0) : peak + 2].sum()
        return peak if near / total >= self.purity else -1

    def _close(self) -> list[Tone]:
        frames, self._run_frames = self._run_frames, 0
        ms = frames * FRAME_MS
        if frames and ms >= self.min_ms:
            return [Tone(hz=int(round(self.bins[self._run_bin])), ms=ms, end_sample=self._samples - self.frame)]
        return []
