"""Adapter for fixed-latency mode: a recorded clip instead of a model.

For load tests of many concurrent calls on 2 cores: no Piper, no threads.
``canned.wav`` (next to the package) is one sentence said once by the
joe-medium Piper voice, 16-bit mono at 22 050 Hz (made with
``python -m parley_tts.canned_clip``). For a chunk of text it plays the clip
looped and trimmed to about 65 ms per character (at least 300 ms).

Timing, like a streaming TTS provider with a fixed latency: the first audio of
a run's first chunk (chunk 0) comes ``first_audio_ms`` after its Synthesize
arrived; later chunks start as soon as their turn comes. Pieces run
``lead_ms`` ahead of real time, then keep pace with it.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import AsyncIterator

from .. import audio
from ..lanes import Job


def clip_bytes() -> bytes:
    return resources.files("parley_tts").joinpath("canned.wav").read_bytes()


class Canned:
    name = "canned"

    def __init__(
        self,
        clip: bytes,
        sample_rate: int,
        *,
        first_audio_ms: float = 100.0,
        ms_per_char: float = 65.0,
        min_ms: float = 300.0,
        lead_ms: float = 300.0,
        piece_ms: float = 200.0,
    ):
        if len(clip) < audio.SAMPLE_BYTES:
            raise ValueError("empty canned clip")
        self.clip = clip
        self.sample_rate = sample_rate
        self.first_audio_ms = first_audio_ms
        self.ms_per_char = ms_per_char
        self.min_ms = min_ms
        self.lead_ms = lead_ms
        self.piece_ms = piece_ms
        self.max_samples = audio.samples_for_ms(piece_ms, sample_rate)

    @classmethod
    def load(cls, wav: bytes | None = None, **options) -> "Canned":
        pcm, rate = audio.read_wav(clip_bytes() if wav is None else wav)
        return cls(pcm, rate, **options)

    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        if job.chunk == 0:
            wait = job.received + self.first_audio_ms / 1000.0 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        total = audio.canned_samples(job.text, self.sample_rate, self.ms_per_char, self.min_ms)
        t0 = loop.time()
        pos = index = 0
        while pos < total:
            # Pieces before job.from_piece (the gateway has them: a chunk given
            # again) come at once; the rest are paced from the first it needs.
            wait = t0 + audio.piece_due(index - job.from_piece, self.piece_ms, self.lead_ms) - loop.time() if index >= job.from_piece else 0
            if wait > 0:
                await asyncio.sleep(wait)
            n = min(self.max_samples, total - pos)
            yield audio.looped(self.clip, pos, n)
            pos += n
            index += 1

    def close(self) -> None:
        pass
