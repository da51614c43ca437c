"""Whisper's own probability of a floor word first (TranscriptFinal.floor).

Through the phone band tiny.en writes a short interruption as nothing or as
another word ("No." -> "" or "Go."), and a cough as the same nothing; what the
model believed at the first token still tells them apart (whisper.py). Real
Whisper, deterministic callers: espeak-ng words and sox sounds, each through
the telephone band and 8 kHz μ-law, with the worker's 300 ms of pre-roll on
either side. What must hold: every floor word scores well above every
non-word sound (the reducer's Policy.floor_word sits between them); a long
clip and a partial carry no measurement.
"""

from __future__ import annotations

import numpy as np
import pytest

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.scenarios import sounds
from parley.scenarios.spec import Audio
from parley_asr.whisper import Transcript

PREROLL = np.zeros(4800, np.int16)


def phone_line(kind: str, text: str, voice: str = "sox") -> np.ndarray:
    """A caller's sound as the ASR gets it from a phone call: telephone band, μ-law 8 kHz, back to 16 kHz."""
    pcm = sounds.render(kind, text, Audio(voice=voice, phone=True))
    x = pcm.astype(np.float32) / 32768
    narrow = np.interp(np.arange(0, len(x), 2), np.arange(len(x)), x)
    mu = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw((np.clip(narrow, -1, 1) * 32767).astype("<i2").tobytes())), "<i2")
    wide = np.interp(np.arange(2 * len(mu)) / 2, np.arange(len(mu)), mu.astype(np.float32))
    return np.concatenate([PREROLL, wide.astype(np.int16), PREROLL])


WORDS = [("No.", "espeak:en-us+m3"), ("Stop.", "espeak:en-us+f2"), ("Wait.", "espeak:en-gb"), ("Hold on.", "espeak:en-us")]
SOUNDS = ["cough", "cough-twice", "throat-clear", "chuckle", "door", "hum-mm-hmm", "hum-uh-huh", "sigh", "knock"]


@pytest.fixture(scope="module")
def floors(whisper):
    said = {text: whisper.transcribe_final(phone_line("say", text, voice)) for text, voice in WORDS}
    made = {kind: whisper.transcribe_final(phone_line("sound", kind)) for kind in SOUNDS}
    return said, made


def test_every_floor_word_scores_well_above_every_sound(floors):
    said, made = floors
    assert all(isinstance(t, Transcript) and 0 <= t.floor <= 1 for t in [*said.values(), *made.values()])
    lowest_word = min(t.floor for t in said.values())
    highest_sound = max(t.floor for t in made.values())
    detail = {**{k: (str(t), t.floor) for k, t in said.items()}, **{k: (str(t), t.floor) for k, t in made.items()}}
    assert lowest_word > 3 * highest_sound, detail


def test_a_long_clip_and_a_partial_carry_no_measurement(whisper):
    long = np.concatenate([phone_line("say", "I'd like to book an appointment for Friday morning please.", "espeak:en-us")] * 2)
    assert len(long) > whisper.floor_samples
    assert whisper.transcribe_final(long).floor == -1.0
    short = phone_line("say", "No.", "espeak:en-us+m3")
    plain = whisper.transcribe(short)  # what partials get: no extra decoder step
    assert type(plain) is str
    assert whisper.transcribe_final(np.zeros(0, np.int16)).floor == -1.0
