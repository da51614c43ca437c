"""The end of an utterance worked out while the VAD still counts its silence
(``Speculation``, PARLEY_ASR_SPECULATE_MS): the end-of-turn score and the
final's transcript start on the audio so far, with the silence heard so far
repeated out to the stop's length, and the stop reuses them only when nothing
voice-like came after.

The VAD's probabilities are fed to ``Worker._endpoint`` directly (no Silero,
no clock), so which window decides what is exact; the models are stand-ins
that record what they were given, so the tests assert the order of things
(scored before the stop, once) and never a duration.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from asr_harness import Events

from parley import bus, contract
from parley_asr.audio import WINDOW
from parley_asr.settings import Settings
from parley_asr.worker import Session, Worker

PREROLL = 4800  # the default 300 ms at 16 kHz


class RecordingEndOfTurn:
    """An end-of-turn model that answers each clip by its length (call n
    answers 0.1 * n + 0.5, so the test can tell which call a score came from)."""

    def __init__(self):
        self.clips: list[np.ndarray] = []
        self.lock = threading.Lock()

    def __call__(self, clips):
        with self.lock:
            out = []
            for c in clips:
                self.clips.append(c.copy())
                out.append(min(0.1 * len(self.clips) + 0.4, 1.0))
            return np.array(out, np.float32)


class RecordingTranscriber:
    def __init__(self):
        self.clips: list[np.ndarray] = []

    def transcribe(self, pcm16: np.ndarray) -> str:
        self.clips.append(pcm16.copy())
        return f"clip {len(self.clips)} of {len(pcm16)} samples"


def utterance_audio(lead: int, speech: int, after: int, seed: int = 1) -> np.ndarray:
    """Windows of quiet noise, then louder 'speech', then quiet noise (int16)."""
    rng = np.random.default_rng(seed)
    level = np.concatenate([np.full(lead, 30), np.full(speech, 3000), np.full(after, 30)])
    return (rng.standard_normal((len(level), WINDOW)) * level[:, None]).astype(np.int16).reshape(-1)


async def feed(w: Worker, s: Session, audio: np.ndarray, probs: list[float]) -> None:
    """Window by window: its audio into the session (taken out of the inbox at
    once, so the worker's own VAD loop never sees it), then its probability."""
    for i, p in enumerate(probs):
        s.audio.push(audio[i * WINDOW : (i + 1) * WINDOW].tobytes())
        s.audio.take_windows()
        await w._endpoint(s, np.array([p], np.float32), 1_000.0 + i * 0.032)
        await asyncio.sleep(0.005)  # the models' threads get to run, as between real ticks


async def run_case(nats_url: str, probs: list[float], audio: np.ndarray, session: str, finals=None, **settings):
    eot, finals = RecordingEndOfTurn(), finals or RecordingTranscriber()
    w = Worker(await bus.connect(nats_url), Settings(nats_url=nats_url, providers="real", **settings), _NoVad(), RecordingTranscriber(), finals, eot)
    await w.start()
    nc = await bus.connect(nats_url)
    try:
        ev = await Events.watch(nc, session)
        s = await w.claim(session)
        await feed(w, s, audio, probs)
        await ev.finals(session, timeout=10)
        return ev.of(session), eot.clips, finals.clips, dict(w.stats)
    finally:
        await nc.close()
        await w.stop()
        await w.nc.close()


class _NoVad:
    """The worker builds a StreamBank around its VAD; these tests never run it."""

    def __call__(self, windows, h, c):  # pragma: no cover - not called
        raise AssertionError("the VAD is not used here")


LEAD, SPEECH = 12, 20


def probs_for(silence: list[float]) -> list[float]:
    return [0.02] * LEAD + [0.9] * SPEECH + silence


def test_the_stop_finds_its_score_and_its_final_made_during_the_silence(nats_url):
    """Quiet after the speech: scored and transcribed once, at the 3rd window
    of silence, on clips as long as the stop's own; the stop publishes them."""
    silence = [0.05] * 10
    audio = utterance_audio(LEAD, SPEECH, len(silence))
    events, eot_clips, final_clips, stats = asyncio.run(run_case(nats_url, probs_for(silence), audio, "spec-quiet"))

    stopped = next(e for e in events if isinstance(e, contract.SpeechStopped))
    final = next(e for e in events if isinstance(e, contract.TranscriptFinal))
    stop_windows = 7  # 200 ms of silence
    begin, end = LEAD, LEAD + SPEECH
    # One score, of a clip exactly as long as the stop's (pre-roll, speech, 7 windows of silence) ...
    assert len(eot_clips) == 1 and stopped.eot == pytest.approx(0.5)
    assert len(eot_clips[0]) == (end + stop_windows - begin) * WINDOW + PREROLL
    # ... whose audio is what was heard, then the silence heard so far repeated.
    heard_to = (end + 3) * WINDOW - (begin * WINDOW - PREROLL)
    first = begin * WINDOW - PREROLL
    assert np.array_equal(eot_clips[0][:heard_to], audio[first : (end + 3) * WINDOW])
    quiet = audio[end * WINDOW : (end + 3) * WINDOW]
    assert np.array_equal(eot_clips[0][heard_to:], np.resize(quiet, len(eot_clips[0]) - heard_to))
    # One Whisper call for the final, as long as the stop's clip would be (the pre-roll after the speech, clipped to the stop).
    assert len(final_clips) == 1 and final.text == f"clip 1 of {len(final_clips[0])} samples"
    assert len(final_clips[0]) == (end - begin) * WINDOW + PREROLL + min(PREROLL, stop_windows * WINDOW)
    assert stats["speculations"] == 1 and stats["speculations_kept"] == 1
    kinds = [type(e) for e in events]
    assert kinds.index(contract.SpeechStopped) < kinds.index(contract.TranscriptFinal)


def test_a_voice_like_window_after_the_speculation_makes_the_stop_work_afresh(nats_url):
    """A window between the silence and speech thresholds (0.35-0.5) does not
    end the silence, but the speculation did not hear it: the stop scores and
    transcribes its own clips."""
    silence = [0.05, 0.05, 0.05, 0.05, 0.42, 0.05, 0.05, 0.05, 0.05, 0.05]
    audio = utterance_audio(LEAD, SPEECH, len(silence))
    events, eot_clips, final_clips, stats = asyncio.run(run_case(nats_url, probs_for(silence), audio, "spec-loud"))

    stopped = next(e for e in events if isinstance(e, contract.SpeechStopped))
    final = next(e for e in events if isinstance(e, contract.TranscriptFinal))
    assert len(eot_clips) in (1, 2)  # the speculative one may have been skipped once dropped
    assert stopped.eot == pytest.approx(0.1 * len(eot_clips) + 0.4)  # the stop's own score
    last = eot_clips[-1]
    assert np.array_equal(last[-7 * WINDOW :], audio[(LEAD + SPEECH) * WINDOW : (LEAD + SPEECH + 7) * WINDOW])
    assert final.text == f"clip {len(final_clips)} of {len(final_clips[-1])} samples"
    assert stats["speculations_kept"] == 0


def test_speech_that_resumes_drops_the_speculation(nats_url):
    """Voice again after 4 windows of silence: that silence ended nothing; the
    utterance goes on and its stop (after the later silence) works afresh."""
    silence = [0.05] * 4 + [0.9] * 6 + [0.05] * 10
    audio = utterance_audio(LEAD, SPEECH, len(silence))
    events, eot_clips, final_clips, stats = asyncio.run(run_case(nats_url, probs_for(silence), audio, "spec-resume"))

    stops = [e for e in events if isinstance(e, contract.SpeechStopped)]
    assert len(stops) == 1 and stops[0].speech_ms == (SPEECH + 4 + 6) * 32
    assert stats["speculations"] == 2 and stats["speculations_kept"] == 1
    # The kept score is of the whole utterance (to its later silence), not of the first part.
    assert len(eot_clips[-1]) == (SPEECH + 4 + 6 + 7) * WINDOW + PREROLL


def test_speculation_off_scores_at_the_stop(nats_url):
    silence = [0.05] * 10
    audio = utterance_audio(LEAD, SPEECH, len(silence))
    events, eot_clips, final_clips, stats = asyncio.run(run_case(nats_url, probs_for(silence), audio, "spec-off", speculate_ms=0))
    assert stats["speculations"] == 0 and len(eot_clips) == 1 and len(final_clips) == 1
    stopped = next(e for e in events if isinstance(e, contract.SpeechStopped))
    assert stopped.eot == pytest.approx(0.5)


class MeasuringTranscriber(RecordingTranscriber):
    """A model whose finals carry a measurement (whisper.Transcript: the floor-word probability)."""

    def transcribe_final(self, pcm16: np.ndarray):
        from parley_asr.whisper import Transcript

        return Transcript(self.transcribe(pcm16), floor=0.42)


def test_the_final_carries_the_models_floor_probability_as_published_text(nats_url):
    """The final's text goes out as a plain string (msgspec encodes no str subclass) with its floor beside it."""
    silence = [0.05] * 10
    audio = utterance_audio(LEAD, SPEECH, len(silence))
    events, _, final_clips, _ = asyncio.run(run_case(nats_url, probs_for(silence), audio, "spec-floor", finals=MeasuringTranscriber()))
    final = next(e for e in events if isinstance(e, contract.TranscriptFinal))
    assert final.floor == 0.42 and type(final.text) is str and final.text == f"clip 1 of {len(final_clips[0])} samples"
