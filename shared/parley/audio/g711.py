"""G.711 μ-law: the telephone codec Twilio Media Streams speak (8 kHz, 8 bits).

Both directions are table lookups built once at import from the G.711 segment
rules. G.711 μ-law encodes 14-bit samples; a 16-bit sample is first rounded to
14 bits, ``(x + 2) >> 2`` (clipped to 8191), as sox does, then encoded as the
ITU-T reference software does (G.191 STL, ``src/g711/g711.c``,
``ulaw_compress``/``ulaw_expand``). So the encoder matches sox's, an
implementation nobody here wrote, bit for bit on all 65 536 inputs, and the
decoder matches sox's and audioop's on all 256 codes (the tests check both).

The 16 -> 14 bit step is the only place implementations differ: the G.191
reference truncates (510 inputs, each at a decision threshold, land one code
away from sox's), and ``audioop.lin2ulaw`` truncates negative samples the
other way. Rounding is the unbiased choice; every choice decodes the same.
"""

from __future__ import annotations

import numpy as np

_BIAS = 33  # G.191: "the difference value between the thresholds for A-law and u-law" (14-bit scale)


def _encode_table() -> np.ndarray:
    """Code for every int16 value, indexed by the value's uint16 bit pattern."""
    x = np.arange(65536, dtype=np.int64)
    x = np.where(x >= 32768, x - 65536, x)  # uint16 bit pattern -> int16 value
    v = np.minimum((x + 2) >> 2, 8191)  # rounded to 14 bits
    # The 14-bit value as the reference reads it from 16 bits: 4v, or for
    # v < 0 the one's complement of -4v (the reference's sign handling).
    x = np.maximum(np.where(v >= 0, 4 * v, 4 * v - 1), -32768)
    magnitude = np.where(x < 0, ~x, x) >> 2  # 14-bit, one's complement for negatives
    biased = np.minimum(magnitude + _BIAS, 0x1FFF)
    # Segment = position of the leading one above bit 5 (1..8).
    segment = np.ones_like(biased)
    rest = biased >> 6
    for _ in range(8):
        segment += rest != 0
        rest >>= 1
    high = 8 - segment
    low = 15 - ((biased >> segment) & 0x0F)
    code = (high << 4) | low | np.where(x >= 0, 0x80, 0)
    return code.astype(np.uint8)


def _decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int64)
    sign = np.where(code < 0x80, -1, 1)
    inverted = ~code
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    value = sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * _BIAS)
    return value.astype("<i2")


_ENCODE = _encode_table()
_DECODE = _decode_table()
# The same decoded values as float32 (exact: every int16 is a float32), for a
# resampler that filters in float32 anyway (``ulaw_samples``).
_DECODE_F32 = _DECODE.astype(np.float32)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """PCM16 little-endian mono -> μ-law, one byte per sample.

    ``data`` must hold whole samples (an even number of bytes), else ValueError.
    """
    if len(data) % 2:
        raise ValueError(f"PCM16 needs whole 2-byte samples, got {len(data)} bytes")
    return _ENCODE[np.frombuffer(data, dtype="<u2")].tobytes()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law -> PCM16 little-endian mono, two bytes per input byte."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def ulaw_samples(data: bytes) -> np.ndarray:
    """μ-law -> the decoded samples as float32 (the values ``ulaw_to_pcm16``
    gives, exactly), for ``Resampler.process_samples``: Twilio's 20 ms frames
    go to the 16 kHz filter without a round trip through PCM16 bytes."""
    return _DECODE_F32[np.frombuffer(data, dtype=np.uint8)]
