"""Resampler: chunking never changes the output, tones survive, aliases do not,
and output is never held back more than the filter's half length."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.audio import RATES, Resampler, stereo_to_mono, ulaw_samples, ulaw_to_pcm16

# The pairs Parley uses: Twilio and WebRTC in to ASR, TTS voices out to both.
PAIRS = [
    (16000, 8000),
    (8000, 16000),
    (22050, 16000),
    (22050, 8000),
    (22050, 48000),
    (48000, 16000),
    (24000, 16000),
    (24000, 8000),
    (24000, 48000),
    (16000, 48000),
]


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def one_shot(a: int, b: int, x: np.ndarray) -> np.ndarray:
    r = Resampler(a, b)
    return samples(r.process(x.astype("<i2").tobytes()) + r.flush())


def tone(rate: int, freq: float, seconds: float, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def signal(rate: int, seed: int, n: int) -> np.ndarray:
    """Speech-like test input: a few tones below the lower Nyquist plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = sum(3000 * np.sin(2 * np.pi * f * t + p) for f, p in zip(rng.uniform(80, 3500, 4), rng.uniform(0, 6, 4)))
    return np.clip(np.rint(x + rng.normal(0, 500, n)), -32768, 32767)


@pytest.mark.parametrize(("a", "b"), PAIRS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_one_shot_output(a, b, data):
    n = data.draw(st.integers(0, 3000), label="samples")
    x = signal(a, data.draw(st.integers(0, 2**16), label="seed"), n)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=12), label="cuts"))
    r = Resampler(a, b)
    out = b"".join(r.process(p.astype("<i2").tobytes()) for p in np.split(x, cuts)) + r.flush()
    expected = one_shot(a, b, x)
    assert len(expected) == -(-n * b // a)
    got = samples(out)
    assert len(got) == len(expected)
    # float32 sums in a different order may round one LSB apart, never more.
    assert np.all(np.abs(got - expected) <= 1)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_twenty_ms_frames_are_never_held_back(a, b):
    """Each frame's output follows at once: at most the filter's half length
    (a few ms) behind the input, never soxr-style blocks of 40..115 ms."""
    r = Resampler(a, b)
    frame = (np.ones(a // 50) * 1000).astype("<i2").tobytes()
    fed = got = 0
    for _ in range(60):
        got += len(r.process(frame)) // 2
        fed += a // 50
        assert fed * b / a - got <= r.delay_samples * b / a + 1
    assert r.delay_samples / a < 0.005


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_a_tone_in_the_pass_band_comes_out_clean(a, b):
    low = min(a, b)
    for freq in (200.0, 1000.0, 0.4 * low):
        y = one_shot(a, b, np.rint(tone(a, freq, 0.5)))
        ref = tone(b, freq, 0.5)[: len(y)]
        edge = b // 50  # the stream starts and ends abruptly: skip the 20 ms transients
        err = y[edge:-edge] - ref[edge:-edge]
        snr = 10 * math.log10(np.sum(ref[edge:-edge] ** 2) / np.sum(err**2))
        assert snr > 80, (freq, snr)


@pytest.mark.parametrize(("a", "b"), [p for p in PAIRS if p[0] > p[1]])
def test_a_tone_above_the_lower_nyquist_does_not_alias(a, b):
    for freq in (0.55 * b, 0.7 * b, min(0.45 * a, 1.3 * b)):
        y = one_shot(a, b, np.rint(tone(a, freq, 0.5, amplitude=30000)))
        edge = b // 50
        rms = math.sqrt(np.mean(y[edge:-edge].astype(np.float64) ** 2))
        assert 20 * math.log10(max(rms, 1e-9) / (30000 / math.sqrt(2))) < -80, (freq, rms)


def test_flush_ends_one_stream_and_starts_the_next_fresh():
    r = Resampler(22050, 8000)
    first, second = signal(22050, 1, 1000), signal(22050, 2, 1500)
    out1 = samples(r.process(first.astype("<i2").tobytes()) + r.flush())
    out2 = samples(r.process(second.astype("<i2").tobytes()) + r.flush())
    assert np.array_equal(out1, one_shot(22050, 8000, first))
    assert np.array_equal(out2, one_shot(22050, 8000, second))


def test_whole_samples_only():
    r = Resampler(8000, 16000)
    with pytest.raises(ValueError):
        r.process(b"\x00\x00\x00")
    # An odd number of samples is fine.
    assert len(r.process(bytes(2 * 161)) + r.flush()) == 2 * 322


def test_unsupported_rates_and_same_rate():
    with pytest.raises(ValueError):
        Resampler(44100, 16000)
    r = Resampler(16000, 16000)
    assert r.process(b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04"
    assert r.flush() == b""
    assert set(RATES) == {8000, 16000, 22050, 24000, 48000}


@given(st.lists(st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)), max_size=200))
def test_stereo_to_mono_is_the_mean_of_both_channels(frames):
    pcm = np.array(frames, dtype="<i2").reshape(-1, 2).tobytes()
    assert samples(stereo_to_mono(pcm)).tolist() == [(left + right) // 2 for left, right in frames]


def test_stereo_to_mono_needs_whole_frames():
    with pytest.raises(ValueError):
        stereo_to_mono(bytes(6))


@settings(max_examples=50, deadline=None)
@given(frames=st.lists(st.binary(min_size=0, max_size=400), min_size=1, max_size=30))
def test_mulaw_samples_straight_in_give_exactly_the_pcm16_path_s_output(frames):
    """Twilio's frames go in as decoded float32 samples (``process_samples``),
    not as PCM16 bytes: the caller's audio reaching the ASR is the same, bit
    for bit, for any frame sizes."""
    via_bytes, direct = Resampler(8000, 16000), Resampler(8000, 16000)
    a = b"".join(via_bytes.process(ulaw_to_pcm16(f)) for f in frames) + via_bytes.flush()
    b = b"".join(direct.process_samples(ulaw_samples(f)) for f in frames) + direct.flush()
    assert a == b


def test_process_samples_takes_int16_arrays_and_the_same_rate_too():
    x = signal(8000, 7, 1000).astype(np.int16)
    r1, r2 = Resampler(8000, 16000), Resampler(8000, 16000)
    assert r1.process(x.astype("<i2").tobytes()) == r2.process_samples(x)
    same = Resampler(16000, 16000)
    assert same.process_samples(x) == x.astype("<i2").tobytes()
