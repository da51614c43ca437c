"""The tone detector: a voicemail beep is found, with its pitch and length,
whatever the chunking; a voice, silence, noise and short blips are not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.audio.tone import ToneDetector

RATE = 16000


def tone(hz: float, seconds: float, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amp).astype(np.int16)


def feed(audio: np.ndarray, chunk: int = 320):
    det = ToneDetector(RATE)
    data = audio.astype("<i2").tobytes()
    out = []
    for i in range(0, len(data), chunk * 2):
        out += det.feed(data[i : i + chunk * 2])
    return out + det.feed(np.zeros(RATE // 10, np.int16).tobytes())  # the silence after ends it


@pytest.mark.parametrize("hz", [440, 850, 1000, 1400])
def test_a_beep_after_silence_is_found_with_its_pitch_and_length(hz):
    (found,) = feed(np.concatenate([np.zeros(RATE // 2, np.int16), tone(hz, 0.5), np.zeros(RATE // 5, np.int16)]))
    assert abs(found.hz - hz) <= 50 and 440 <= found.ms <= 520


@settings(max_examples=30, deadline=None)
@given(st.integers(37, 4000))
def test_chunking_does_not_matter(chunk):
    assert [(t.hz, t.ms) for t in feed(tone(1000, 0.4), chunk)] == [(t.hz, t.ms) for t in feed(tone(1000, 0.4))]


def test_silence_noise_and_a_short_blip_are_no_tone():
    rng = np.random.default_rng(1)
    assert feed(np.zeros(RATE, np.int16)) == []
    assert feed((rng.standard_normal(RATE) * 3000).astype(np.int16)) == []
    assert feed(tone(1000, 0.08)) == []
    assert feed(tone(1000, 0.5, amp=100)) == []  # too quiet to be a beep


def test_a_voiced_sound_with_harmonics_and_a_moving_pitch_is_no_tone():
    t = np.arange(RATE) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 3 * t)  # a voice's pitch moves
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * 4000
    assert feed(voice.astype(np.int16)) == []
