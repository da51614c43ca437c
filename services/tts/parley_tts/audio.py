"""PCM16 arithmetic for the TTS output: pieces, durations, the canned loop.

Pure functions over bytes of PCM16 LE mono (2 bytes a sample). The adapters
use them to cut audio into messages of at most ``piece_ms``; the canned voice
uses them to loop its clip to the length a text would take to say and to pace
it like a streaming TTS.
"""

from __future__ import annotations

import io
import sys
import wave
from array import array

SAMPLE_BYTES = 2


def samples_for_ms(ms: float, rate: int) -> int:
    return int(round(ms * rate / 1000.0))


def ms_of(n_bytes: int, rate: int) -> int:
    return int(round(n_bytes / SAMPLE_BYTES * 1000.0 / rate))


def split(pcm: bytes, max_samples: int) -> list[bytes]:
    """``pcm`` in pieces of at most ``max_samples`` (all full but the last)."""
    step = max(1, max_samples) * SAMPLE_BYTES
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def quiet_lead(pcm: bytes, rate: int, floor: int = 100, keep_ms: float = 10.0) -> int:
    """Bytes at the start of ``pcm`` that can go so the voice starts at once:
    the samples before the first one louder than ``floor`` (about -50 dBFS),
    less the last ``keep_ms`` of them (the onset stays whole). 0 if nothing in
    ``pcm`` is louder (a pause is kept as it is)."""
    samples = array("h", pcm[: len(pcm) - len(pcm) % SAMPLE_BYTES])
    if sys.byteorder == "big":
        samples.byteswap()  # PCM16 LE on the wire
    first = next((i for i, x in enumerate(samples) if x > floor or x < -floor), None)
    if first is None:
        return 0
    return max(0, first - samples_for_ms(keep_ms, rate)) * SAMPLE_BYTES


def canned_samples(text: str, rate: int, ms_per_char: float, min_ms: float) -> int:
    """How long the canned voice talks for ``text``: proportional to its length."""
    return samples_for_ms(max(min_ms, ms_per_char * len(text.strip())), rate)


def looped(clip: bytes, start: int, count: int) -> bytes:
    """``count`` samples of ``clip`` repeated end to end, from sample ``start``."""
    n = len(clip) // SAMPLE_BYTES
    if n == 0 or count <= 0:
        return b""
    out = bytearray()
    pos = start % n
    left = count
    while left > 0:
        take = min(left, n - pos)
        out += clip[pos * SAMPLE_BYTES : (pos + take) * SAMPLE_BYTES]
        left -= take
        pos = 0
    return bytes(out)


def piece_due(index: int, piece_ms: float, lead_ms: float) -> float:
    """Seconds after a chunk's first piece at which piece ``index`` is ready.

    A streaming TTS runs ahead of the listener: here by ``lead_ms``, then at
    real time, so a run never arrives all at once and never falls behind.
    """
    return max(0.0, index * piece_ms - lead_ms) / 1000.0


def read_wav(data: bytes) -> tuple[bytes, int]:
    """(PCM16 mono samples, rate) of a 16-bit mono WAV file's bytes."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != SAMPLE_BYTES or w.getnchannels() != 1:
            raise ValueError("canned clip must be 16-bit mono WAV")
        return w.readframes(w.getnframes()), w.getframerate()


def write_wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_BYTES)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()
