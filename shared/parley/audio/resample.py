"""Streaming sample-rate conversion between Parley's rates, and stereo downmix.

Audio crosses rates at every edge: Twilio's 8 kHz and WebRTC's 48 kHz in, the
16 kHz the ASR wants, Piper's 22 050 Hz and other voices' 24 kHz out. The
gateway and the services call ``Resampler.process`` once per 20 ms frame, so
what matters is low delay, a steady output per frame and little CPU per call.

The method was chosen by measurement (``bench/resample.py``, results in
docs/BENCHMARKS.md): a windowed-sinc polyphase filter in numpy. soxr's HQ
stream is nearly as clean (within 5 dB, both near the 16-bit limit) and
cheaper, but fed 20 ms frames it emits output in blocks, holding back 40 to
115 ms: delay an ASR endpointer and a caller's ear both pay. This filter
holds back only half its length (1 to 4 ms) and emits output every frame.

Design: rate ratio L/M in lowest terms; each output sample at input time
n*M/L is a dot product of K input samples with the Kaiser-windowed sinc row of
its phase (L phases, each normalised to unit DC gain). The pass band reaches
0.45 x the lower rate; the stop band starts at 0.55 x the lower rate, so
aliases and images land only in the 0.45..0.5 band that no consumer keeps.
The kernel is centred on the output instant, so the output is time-aligned
with the input (no group delay to compensate) and its length after ``flush``
is ceil(n_in * L / M).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

RATES = (8000, 16000, 22050, 24000, 48000)

PASS_EDGE = 0.45  # x lower rate: flat up to here
STOP_EDGE = 0.55  # x lower rate: attenuated from here
ATTENUATION_DB = 90.0  # stop band; about the level of 16-bit rounding noise
BLOCK_BYTES = 256 * 1024  # gathered windows per block in the rational case


class _Design:
    __slots__ = ("up", "down", "taps", "half", "table", "block", "by_output")

    def __init__(self, up: int, down: int, taps: int, table: np.ndarray) -> None:
        self.up, self.down, self.taps, self.half = up, down, taps, taps // 2
        self.table = table  # (up, taps) float32, row p = weights of phase p
        # For a rational ratio: rows in output order (output n uses row
        # n % up), tiled so that any `block` consecutive outputs find their
        # rows in one slice rather than a gather.
        # Blocks bound the temporaries for long inputs; a 20 ms frame of any
        # pair fits in one (splitting frames measured slower, not faster).
        self.block = max(32, BLOCK_BYTES // (4 * taps))
        self.by_output = table
        if up > 1 and down > 1:
            once = table[np.arange(up) * down % up]
            self.by_output = np.ascontiguousarray(np.tile(once, (-(-(up + self.block) // up), 1)))


@cache
def design(in_rate: int, out_rate: int, attenuation_db: float = ATTENUATION_DB) -> _Design:
    """The polyphase filter for one rate pair (cached: every call shares it)."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    low = min(in_rate, out_rate)
    # Kaiser's design formulas: length and beta from the attenuation and the
    # transition width (in radians per input sample).
    width = 2 * math.pi * (STOP_EDGE - PASS_EDGE) * low / in_rate
    length = (attenuation_db - 7.95) / (2.285 * width) + 1
    taps = 2 * math.ceil(length / 2)
    a = attenuation_db
    beta = 0.1102 * (a - 8.7) if a > 50 else 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    cutoff = 0.5 * low / in_rate  # cycles per input sample, middle of the transition
    half = taps // 2
    # Phase p: output instant p/up of an input period past sample `base`; tap j
    # weighs input sample base - half + 1 + j, at distance t from the instant.
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    t = frac + (half - 1) - np.arange(taps, dtype=np.float64)[None, :]
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, None))) / np.i0(beta)
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * window
    # Unit DC gain on every phase: unequal phase gains would modulate the
    # output at the phase pattern's rate, an audible tone on steady input.
    h /= h.sum(axis=1, keepdims=True)
    return _Design(up, down, taps, h.astype(np.float32))


def _samples(pcm16: bytes) -> np.ndarray:
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 needs whole 2-byte samples, got {len(pcm16)} bytes")
    return np.frombuffer(pcm16, dtype="<i2")


def _to_pcm16(y: np.ndarray) -> bytes:
    """Round and saturate in place (``y`` is a temporary of ours), then int16."""
    np.rint(y, out=y)
    np.minimum(y, 32767.0, out=y)
    np.maximum(y, -32768.0, out=y)
    return y.astype("<i2").tobytes()


class Resampler:
    """Stateful PCM16 mono rate converter; feed it any chunking of one stream.

    ``process(pcm16)`` takes whole little-endian int16 samples (an odd byte
    count raises ValueError; any sample count is fine) and returns every output
    sample it can already compute. ``flush()`` ends the stream: it returns the
    tail (zero-padded past the end) and resets, so the object can start a new,
    unrelated stream. Concatenated output does not depend on the chunking.

    The input history lives in one float32 buffer that grows only when a
    frame does not fit, with a strided view of its filter windows made once
    per size: per frame there is a copy in, the dot products and a move of
    the few samples the next frame still needs (measured: a new buffer and
    view per frame cost more than the arithmetic at 20 ms frames).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        for rate in (in_rate, out_rate):
            if rate not in RATES:
                raise ValueError(f"unsupported rate {rate}; supported: {RATES}")
        self.in_rate, self.out_rate = in_rate, out_rate
        self._d = design(in_rate, out_rate) if in_rate != out_rate else None
        self._buf = np.zeros(0, dtype=np.float32)
        self._windows = self._buf[:0]
        self._reset()

    @property
    def delay_samples(self) -> int:
        """Input samples held back before an output sample can be computed."""
        return self._d.half if self._d else 0

    def _reset(self) -> None:
        d = self._d
        self._received = 0  # input samples so far
        self._next = 0  # index of the next output sample
        # Input history as float32 in self._buf[:self._fill], starting at
        # input index self._start; the stream is taken as silent before index 0.
        self._start = -d.half if d else 0
        self._fill = 0
        if d is not None:
            self._room(d.half + 2 * d.taps + 1024)
            self._buf[: d.half] = 0.0
            self._fill = d.half

    def _room(self, need: int) -> None:
        """Make the buffer hold at least ``need`` samples (keeping its content)."""
        if need <= len(self._buf):
            return
        d = self._d
        assert d is not None
        buf = np.zeros(max(need, 2 * len(self._buf)), dtype=np.float32)
        buf[: self._fill] = self._buf[: self._fill]
        step = buf.strides[0]
        self._buf = buf
        # Row i = the taps window starting at buffer index i (a view, no copy).
        self._windows = as_strided(buf, (len(buf) - d.taps + 1, d.taps), (step, step), writeable=False)

    def _append(self, x: np.ndarray) -> None:
        n = len(x)
        self._room(self._fill + n)
        self._buf[self._fill : self._fill + n] = x  # int16 -> float32 on the way in
        self._fill += n

    def process(self, pcm16: bytes) -> bytes:
        x = _samples(pcm16)
        if self._d is None:
            return bytes(pcm16)
        return self._process(x)

    def process_samples(self, x: np.ndarray) -> bytes:
        """``process`` for samples already decoded: a 1-D array of int16
        values (any numeric dtype; float32 is taken as it is, with no
        conversion), e.g. ``g711.ulaw_samples``. The same output as
        ``process`` of the same samples as PCM16 bytes."""
        if self._d is None:
            return _to_pcm16(np.array(x, dtype=np.float32))
        return self._process(x)

    def _process(self, x: np.ndarray) -> bytes:
        if len(x):
            self._append(x)
            self._received += len(x)
        # Output n needs input up to base(n) + half, where base(n) = n*M // L.
        ready = self._received - self._d.half
        end = -(-ready * self._d.up // self._d.down) if ready > 0 else 0
        return self._emit(end)

    def flush(self) -> bytes:
        if self._d is None:
            return b""
        d = self._d
        self._append(np.zeros(d.half, dtype=np.float32))
        out = self._emit(-(-self._received * d.up // d.down))
        self._reset()
        return out

    def _emit(self, end: int) -> bytes:
        d = self._d
        assert d is not None
        start = self._next
        if end <= start:
            return b""
        up, down, windows = d.up, d.down, self._windows
        lead = d.half - 1 + self._start  # buffer index of tap 0 = base - lead
        if down == 1:
            # Integer upsampling: each window feeds `up` consecutive outputs.
            b0, b1 = start // up, (end - 1) // up
            y = np.dot(windows[b0 - lead : b1 - lead + 1], d.table.T).ravel()[start - b0 * up : end - b0 * up]
        elif up == 1:
            # Integer decimation: one phase, windows at a fixed stride.
            f0 = start * down - lead
            y = np.dot(windows[f0 : f0 + (end - start - 1) * down + 1 : down], d.table[0])
        else:
            # Rational ratio: gather each output's window; weights are a slice.
            parts = []
            for s0 in range(start, end, d.block):
                n = np.arange(s0, min(s0 + d.block, end), dtype=np.int64)
                j = s0 % up
                parts.append(np.einsum("ij,ij->i", windows[n * down // up - lead], d.by_output[j : j + len(n)]))
            y = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._next = end
        # Keep only what the next output still needs, at the buffer's front.
        keep_from = end * down // up - lead
        if keep_from > 0:
            left = self._fill - keep_from
            self._buf[:left] = self._buf[keep_from : self._fill]  # overlapping: numpy copies safely
            self._fill = left
            self._start += keep_from
        return _to_pcm16(y)


def stereo_to_mono(pcm16: bytes) -> bytes:
    """Interleaved s16le stereo (WebRTC's 48 kHz frames) -> mono, mean of L and R.

    ``pcm16`` must hold whole frames of 4 bytes, else ValueError. Pass exactly
    samples * 4 bytes: a decoder's plane buffer may be padded beyond that.
    """
    if len(pcm16) % 4:
        raise ValueError(f"stereo PCM16 needs whole 4-byte frames, got {len(pcm16)} bytes")
    lr = np.frombuffer(pcm16, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return ((lr[:, 0] + lr[:, 1]) >> 1).astype("<i2").tobytes()
