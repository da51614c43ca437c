"""Our Whisper-style log-mel features for Smart Turn, against two references.

1. faster-whisper's own feature extractor (an independent implementation of
   Whisper's log-mel), fed the same normalised 8 s window.
2. The reference Smart Turn ships with, pipecat's ``_whisper_features.py``,
   loaded by file path from the installed pipecat-ai wheel (it needs only
   numpy; pipecat itself is never imported). Test only.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from parley_asr import logmel, smart_turn


def _clip(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / logmel.RATE
    voice = 0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)  # a buzzing on and off
    return (voice + rng.standard_normal(n) * 0.01).astype(np.float32)


def _normalised_window(audio: np.ndarray) -> np.ndarray:
    x = logmel.window_of(audio)
    return (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))


@pytest.mark.parametrize("seconds", [0.3, 2.0, 8.0, 11.5])
def test_matches_faster_whispers_log_mel(seconds):
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = _clip(int(seconds * logmel.RATE), seed=int(seconds * 10))
    ours = logmel.features(audio)
    theirs = FeatureExtractor(chunk_length=8)(_normalised_window(audio), padding=0)
    assert ours.shape == (80, 800) == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4  # theirs runs in float32, ours in float64


def _pipecat_reference():
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pipecat-ai is not installed")
    path = list(spec.submodule_search_locations)[0] + "/audio/turn/smart_turn/_whisper_features.py"
    module_spec = importlib.util.spec_from_file_location("smart_turn_reference_features", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seconds", [0.5, 3.0, 9.0])
def test_matches_the_reference_smart_turn_was_shipped_with(seconds):
    ref = _pipecat_reference()
    audio = _clip(int(seconds * logmel.RATE), seed=7)
    # Their caller pads in front (or keeps the last 8 s) before calling them.
    window = logmel.window_of(audio)
    assert np.array_equal(logmel.features(audio), ref.compute_whisper_log_mel_features(window))


def test_short_audio_is_padded_in_front_so_the_window_ends_now():
    audio = _clip(16000, seed=1)
    window = logmel.window_of(audio)
    assert len(window) == logmel.SAMPLES and not window[: -len(audio)].any()
    assert np.array_equal(window[-len(audio) :], audio)
    long = _clip(logmel.SAMPLES + 5000, seed=2)
    assert np.array_equal(logmel.window_of(long), long[5000:])


def test_mel_filters_are_slaney_triangles_of_unit_area():
    f = logmel.mel_filters()
    assert f.shape == (80, 201) and (f >= 0).all()
    hz = np.arange(201) * 40.0
    # Slaney normalisation: each triangle's area over frequency is 1 (sampled at 40 Hz bins,
    # so the narrow filters below about 2 kHz only approximately).
    area = f.sum(axis=1) * 40.0
    assert np.allclose(area[48:], 1.0, atol=0.02) and np.allclose(area, 1.0, atol=0.1)
    # Centres rise monotonically; below 1 kHz they are evenly spaced (the linear part).
    centres = hz[f.argmax(axis=1)]
    assert (np.diff(centres) >= 0).all()


def test_the_model_file_is_found_without_importing_pipecat():
    import sys

    path = smart_turn.model_path()
    assert path.endswith("smart-turn-v3.2-cpu.onnx")
    assert "pipecat" not in sys.modules
