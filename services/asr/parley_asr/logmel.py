"""Whisper-style log-mel features for the Smart Turn end-of-turn model.

Smart Turn v3.2 (``smart_turn.py``) is a Whisper-tiny encoder with a
classifier head. It takes the *last 8 s* of a caller's audio at 16 kHz as an
80 x 800 log-mel image, computed the way Hugging Face's
``WhisperFeatureExtractor(chunk_length=8)`` does with ``do_normalize=True``.
The facts this module implements (read in pipecat's
``smart_turn/_whisper_features.py`` and ``local_smart_turn_v3.py``; the code
is ours):

* audio longer than 8 s keeps its end; shorter audio is padded with zeros at
  the *start*, so the end of the window is always "now";
* the padded 128 000 samples are normalised to zero mean and unit variance
  (in float32, variance + 1e-7) before anything else;
* short-time Fourier transform: 400-sample periodic Hann window, hop 160,
  frames centred on their hop (reflect padding of 200 at both ends), power
  spectrum; 801 frames, of which the last is dropped -> 800;
* 80 triangular mel filters on the Slaney scale (linear to 1 kHz, then
  logarithmic), 0 to 8 kHz, each scaled to unit area (Slaney normalisation);
* log10 of the mel energies floored at 1e-10, clamped to 8 below the window's
  maximum, then ``(x + 4) / 4``.

The same pipeline is Whisper's own for 30 s windows; tests check it against
faster-whisper's independent feature extractor as well as against the
reference Smart Turn uses.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16000
SECONDS = 8
SAMPLES = RATE * SECONDS  # 128 000
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = SAMPLES // HOP  # 800
_LOG_FLOOR = 1e-10
_VARIANCE_EPS = 1e-7


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz < 1000.0, linear, log)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel < 15.0, linear, log)


@functools.cache
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, each of unit area."""
    bins = np.arange(n_fft // 2 + 1) * (rate / n_fft)  # centre frequency of each FFT bin
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    triangles *= (2.0 / (hi - lo))  # Slaney: unit area per filter
    triangles.flags.writeable = False
    return triangles


@functools.cache
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic: N, not N - 1
    window.flags.writeable = False
    return window


def window_of(audio: np.ndarray) -> np.ndarray:
    """The model's 8 s view of ``audio`` (float, 16 kHz): its end, zero-padded in front."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    if len(audio) >= SAMPLES:
        return audio[len(audio) - SAMPLES :]
    out = np.zeros(SAMPLES, np.float32)
    out[SAMPLES - len(audio) :] = audio
    return out


def features(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] at 16 kHz, any length -> float32 [80, 800]."""
    x = window_of(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(_VARIANCE_EPS))
    half = N_FFT // 2
    padded = np.pad(x.astype(np.float64), (half, half), mode="reflect")
    # Frame k starts at k * HOP of the padded signal (a view, no copy); the
    # last of the 801 frames is dropped.
    frames = sliding_window_view(padded, N_FFT)[::HOP][:FRAMES]  # [800, 400]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # [800, 201]
    log = np.log10(np.maximum(mel_filters() @ power.T, _LOG_FLOOR))  # [80, 800]
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


def features_batch(clips: list[np.ndarray]) -> np.ndarray:
    """Many clips -> float32 [n, 80, 800], the model's batch."""
    return np.stack([features(c) for c in clips]) if clips else np.empty((0, N_MELS, FRAMES), np.float32)
