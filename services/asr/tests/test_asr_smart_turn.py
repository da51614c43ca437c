"""The end-of-turn model: scores from real speech, batching across sessions, failure.

Speech from espeak-ng, which is deterministic (Piper's voice varies from run
to run, and so does the model's score of it: see BENCHMARKS.md). The model
hears prosody: a finished sentence ends low and long, a trailing "the" or
"um" does not. What it cannot do with synthetic voices is tell "Could you
book me in for" from a finished sentence (a TTS voice ends every fragment as
if it were a sentence); that is the text's job (test_asr_completeness.py).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import wave

import numpy as np
import pytest

from parley_asr.smart_turn import UNKNOWN, EndOfTurnQueue

RATE = 16000


def espeak(text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (deploy/system-deps.sh installs it)")
    import soxr

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-w", f.name, text], check=True, capture_output=True)
        with wave.open(f.name) as w:
            rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, RATE)
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return (audio[loud[0] : loud[-1] + 1] * 32767).astype(np.int16)


def as_stopped(speech: np.ndarray) -> np.ndarray:
    """What the worker hands the model at a stop: 300 ms of line noise, the speech, 224 ms of silence."""
    rng = np.random.default_rng(len(speech))
    noise = lambda s: (rng.standard_normal(int(s * RATE)) * 30).astype(np.int16)  # noqa: E731
    return np.concatenate([noise(0.3), speech, noise(0.224)])


FINISHED = ["Yes.", "I'd like to book a cleaning.", "Could you book me in for Thursday at eleven?"]
UNFINISHED = ["Um", "um, and the", "and then the"]


@pytest.fixture(scope="module")
def clips():
    return {t: as_stopped(espeak(t)) for t in FINISHED + UNFINISHED}


def test_finished_sentences_score_high_and_trailing_fillers_low(end_of_turn, clips):
    scores = dict(zip(clips, end_of_turn(list(clips.values())).tolist()))
    assert all(scores[t] > 0.7 for t in FINISHED), scores
    assert all(scores[t] < 0.5 for t in UNFINISHED), scores


def test_a_batch_scores_each_clip_as_it_would_alone(end_of_turn, clips):
    together = end_of_turn(list(clips.values()))
    alone = np.array([end_of_turn([c])[0] for c in clips.values()])
    assert np.allclose(together, alone, atol=1e-5)


def test_the_queue_batches_requests_that_arrive_while_the_model_runs(end_of_turn, clips):
    async def main():
        q = EndOfTurnQueue(end_of_turn, max_batch=8)
        q.start()
        try:
            futures = [q.score(c) for c in clips.values()]  # all waiting before the queue runs
            empty = q.score(np.empty(0, np.int16))
            results = await asyncio.gather(*futures, empty)
            return results, dict(q.stats)
        finally:
            await q.close()

    results, stats = asyncio.run(main())
    assert results[-1] == UNKNOWN  # nothing to hear
    assert stats["calls"] == 1 and stats["clips"] == len(clips) and stats["max_batch_seen"] == len(clips)
    alone = end_of_turn(list(clips.values()))
    assert np.allclose(results[:-1], alone, atol=1e-3)


def test_a_failing_model_answers_unknown_and_keeps_serving():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("onnxruntime fell over")
        return np.full(len(batch), 0.9, np.float32)

    async def main():
        q = EndOfTurnQueue(flaky, max_batch=2)
        q.start()
        try:
            first = await asyncio.gather(*(q.score(np.ones(100, np.int16)) for _ in range(2)))
            second = await q.score(np.ones(100, np.int16))
            return first, second, dict(q.stats)
        finally:
            await q.close()

    first, second, stats = asyncio.run(main())
    assert first == [UNKNOWN, UNKNOWN] and second == pytest.approx(0.9) and stats["failures"] == 1
