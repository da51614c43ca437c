"""μ-law against independent implementations (sox, audioop) and the G.711 rules.

What was found (see parley/audio/g711.py): all decoders agree bit for bit.
The encoders differ only in how they reduce 16-bit input to G.711's 14 bits:
sox rounds (half up), audioop truncates negative samples away from zero, the
ITU-T reference (G.191) truncates through the one's complement. Parley rounds
as sox does and encodes the 14-bit value as the reference does, so it matches
sox bit for bit on every input; the other two are pinned to differ only at
decision thresholds, by one code.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.audio import pcm16_to_ulaw, ulaw_samples, ulaw_to_pcm16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64)
ALL_CODES = bytes(range(256))


def encode(values: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm16_to_ulaw(values.astype("<i2").tobytes()), dtype=np.uint8)


def decode(codes: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(codes), dtype="<i2").astype(np.int64)


@pytest.fixture(scope="module")
def sox(tmp_path_factory):
    """sox's own G.711 tables: every int16 encoded, every code decoded (no dither)."""
    if shutil.which("sox") is None:
        pytest.fail("sox is required for the G.711 conformance test: apt-get install sox")
    d = tmp_path_factory.mktemp("sox")
    (d / "all.s16").write_bytes(ALL_INT16.astype("<i2").tobytes())
    (d / "all.ul").write_bytes(ALL_CODES)
    raw16 = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]
    rawul = ["-t", "raw", "-r", "8000", "-e", "u-law", "-b", "8", "-c", "1"]
    subprocess.run(["sox", "-D", *raw16, d / "all.s16", *rawul, d / "enc.ul"], check=True, capture_output=True)
    subprocess.run(["sox", "-D", *rawul, d / "all.ul", *raw16, d / "dec.s16"], check=True, capture_output=True)
    return {
        "encoded": np.frombuffer((d / "enc.ul").read_bytes(), dtype=np.uint8),
        "decoded": np.frombuffer((d / "dec.s16").read_bytes(), dtype="<i2").astype(np.int64),
    }


def test_decoder_matches_sox_bit_for_bit(sox):
    assert len(sox["decoded"]) == 256
    assert np.array_equal(decode(ALL_CODES), sox["decoded"])


def test_decoder_matches_audioop_bit_for_bit():
    theirs = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype="<i2").astype(np.int64)
    assert np.array_equal(decode(ALL_CODES), theirs)


def test_encoder_matches_sox_bit_for_bit(sox):
    """Every one of the 65 536 int16 inputs encodes to sox's code."""
    assert len(sox["encoded"]) == 65536
    assert np.array_equal(encode(ALL_INT16), sox["encoded"])


def reference_truncating(x: np.ndarray) -> np.ndarray:
    """G.191's ulaw_compress on 16-bit input (truncation to 14 bits), written
    from the G.711 segment table for this test: one step off sox at most."""
    x = x.astype(np.int64)
    magnitude = np.where(x < 0, ~x, x) >> 2
    biased = np.minimum(magnitude + 33, 0x1FFF)
    segment = np.floor(np.log2(np.maximum(biased, 1))).astype(np.int64) - 4
    segment = np.clip(segment, 1, 8)
    code = ((8 - segment) << 4) | (15 - ((biased >> segment) & 0x0F)) | np.where(x >= 0, 0x80, 0)
    return code.astype(np.uint8)


def test_truncating_and_audioop_encoders_differ_only_at_thresholds(sox):
    """The other ways to go from 16 to 14 bits land on a neighbouring code, at
    a decision threshold, and nowhere else."""
    ours = encode(ALL_INT16)
    others = {
        "G.191 truncation": reference_truncating(ALL_INT16),
        "audioop": np.frombuffer(audioop.lin2ulaw(ALL_INT16.astype("<i2").tobytes(), 2), dtype=np.uint8),
    }
    for name, theirs in others.items():
        differ = np.nonzero(ours != theirs)[0]
        assert 0 < len(differ) < 1100, (name, len(differ))
        assert np.all(np.abs(decode(bytes(ours[differ])) - decode(bytes(theirs[differ]))) <= 1024), name
        assert np.all(np.abs(ALL_INT16[differ] - _threshold_near(ALL_INT16[differ])) <= 4), name
    # Where rounding and truncation read the same 14-bit value, they agree.
    same = (ALL_INT16 >= 0) & (ALL_INT16 % 4 == 0) | (ALL_INT16 < -1) & (ALL_INT16 % 4 == 3)
    assert same.sum() == 16383
    assert np.array_equal(ours[same], others["G.191 truncation"][same])


def _threshold_near(x: np.ndarray) -> np.ndarray:
    """The nearest input where the encoder changes code."""
    codes = encode(ALL_INT16)
    edges = ALL_INT16[1:][codes[1:] != codes[:-1]]
    i = np.clip(np.searchsorted(edges, x), 1, len(edges) - 1)
    return np.where(np.abs(edges[i] - x) < np.abs(edges[i - 1] - x), edges[i], edges[i - 1])


def test_g711_structure():
    codes = encode(ALL_INT16)
    # Symmetric around zero on the 14-bit grid (sign bit flips, the rest stays).
    grid = np.arange(1, 8192) * 4
    assert np.array_equal(encode(-grid) ^ 0x80, encode(grid - 1 + 1))
    assert (codes[32768], codes[32767]) == (0xFF, 0xFF)  # 0 and -1 both round to +0
    assert (codes[-1], codes[0]) == (0x80, 0x00)  # +32767 and -32768 clip to the end codes
    # Every code but the negative zero (which rounding never reaches, as in sox).
    assert set(codes.tolist()) == set(range(256)) - {0x7F}
    # Monotonic: decoding the code never goes down as the input goes up.
    assert np.all(np.diff(decode(bytes(codes))) >= 0)
    # The decoded levels are the G.711 table: 8 segments of 16 levels, the
    # step doubling from 8 to 1024 (16-bit scale), from 0 up to 32124.
    levels = decode(bytes(range(0xFF, 0x7F, -1))).reshape(8, 16)
    assert levels[0, 0] == 0 and levels[-1, -1] == 32124
    for e, row in enumerate(levels):
        assert set(np.diff(row).tolist()) == {8 << e}


def test_odd_byte_count_is_rejected():
    with pytest.raises(ValueError):
        pcm16_to_ulaw(b"\x00\x01\x02")


def _max_error(x: np.ndarray) -> np.ndarray:
    """Half a quantization step (+4 for the 16 -> 14 bit step), of the segment
    x rounds into (rounding can cross a segment's edge), or the clipping
    distance beyond the top level."""
    mag = np.abs(x)
    segment = np.clip(np.floor(np.log2(np.maximum(mag + 4 + 132, 1) / 256)) + 1, 0, 7)
    return np.maximum((8 * 2**segment) / 2 + 4, mag - 32124 + 4)


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_decode_encode_is_within_quantization_error(samples):
    x = np.array(samples, dtype=np.int64)
    y = decode(pcm16_to_ulaw(x.astype("<i2").tobytes()))
    assert np.all(np.abs(y - x) <= _max_error(x))


@given(st.binary(max_size=400))
def test_encode_decode_returns_every_code_but_negative_zero(data):
    back = pcm16_to_ulaw(ulaw_to_pcm16(data))
    assert back == data.replace(b"\x7f", b"\xff")


def test_encode_decode_exhaustive():
    back = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    assert [c for c in range(256) if back[c] != c] == [0x7F]


def test_ulaw_samples_are_the_pcm16_decoder_s_values_as_float32():
    codes = bytes(range(256))
    got = ulaw_samples(codes)
    assert got.dtype == np.float32
    assert got.tolist() == np.frombuffer(ulaw_to_pcm16(codes), dtype="<i2").astype(float).tolist()
