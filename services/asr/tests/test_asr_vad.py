"""Silero VAD batched across streams: same probabilities as one stream at a time, on real speech."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from parley_asr import vad
from parley_asr.vad import CONTEXT, WINDOW, SileroVad, StreamBank


@pytest.fixture(scope="module")
def silero():
    return SileroVad()


def reference_probs(pcm: np.ndarray) -> np.ndarray:
    """The original, unmodified model, one window per call, as a single stream."""
    sess = onnxruntime.InferenceSession(vad.model_path(), providers=["CPUExecutionProvider"])
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    ctx = np.zeros((1, CONTEXT), np.float32)
    out = []
    for w in (pcm[: len(pcm) // WINDOW * WINDOW].astype(np.float32) / 32768).reshape(-1, WINDOW):
        p, h, c = sess.run(None, {"input": np.concatenate([ctx, w[None]], 1), "h": h, "c": c})
        ctx = w[None, -CONTEXT:]
        out.append(p[0])
    return np.array(out)


def bank_probs(bank: StreamBank, streams: list[np.ndarray]) -> list[np.ndarray]:
    """Run several streams of different lengths through one bank, one batched call per window position."""
    slots = [bank.open() for _ in streams]
    frames = [(s[: len(s) // WINDOW * WINDOW].astype(np.float32) / 32768).reshape(-1, WINDOW) for s in streams]
    out = [[] for _ in streams]
    for r in range(max(len(f) for f in frames)):
        rows = [i for i, f in enumerate(frames) if len(f) > r]
        probs = bank.run(np.array([slots[i] for i in rows]), np.stack([frames[i][r] for i in rows]))
        for i, p in zip(rows, probs):
            out[i].append(p)
    return [np.array(o) for o in out]


def test_the_graph_is_rewritten_for_batches(silero):
    assert silero.batched


def test_batched_streams_match_the_original_model_one_stream_at_a_time(silero, speak):
    streams = [speak("Good morning, I need a dentist."), speak("Three p.m. works for me.", lead_s=0.3), speak("Yes.", lead_s=1.5)]
    got = bank_probs(StreamBank(silero, capacity=2), streams)  # capacity 2 also exercises growth
    for stream, probs in zip(streams, got):
        np.testing.assert_allclose(probs, reference_probs(stream), atol=1e-5)


def test_the_unbatched_fallback_gives_the_same_probabilities(silero, speak):
    streams = [speak("Hello there."), speak("Tomorrow afternoon.", lead_s=0.2)]
    batched = bank_probs(StreamBank(silero), streams)
    single = bank_probs(StreamBank(SileroVad(batched=False)), streams)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_speech_scores_high_and_silence_low(silero, speak):
    pcm = speak("I'd like to book an appointment.", lead_s=1.0, trail_s=1.0)
    (probs,) = bank_probs(StreamBank(silero), [pcm])
    per_s = 16000 // WINDOW
    assert probs[: per_s - 2].max() < 0.3  # the leading second of line noise
    assert (probs[per_s + 5 : -per_s - 5] > 0.5).mean() > 0.6  # the sentence
    assert probs[-per_s + 10 :].max() < 0.3


def test_a_reused_slot_starts_from_a_clean_state(silero, speak):
    bank = StreamBank(silero, capacity=1)
    pcm = speak("Hello there.")
    first = bank_probs(bank, [pcm])[0]
    bank.close(0)
    again = bank_probs(bank, [pcm])[0]  # reopens slot 0, which held the state of the first run
    np.testing.assert_allclose(first, again, atol=1e-6)


def test_a_reset_slot_scores_on_as_a_new_stream_and_leaves_the_others_alone(silero, speak):
    """The worker resets a session's state after a quiet stretch (PARLEY_ASR_VAD_RESET_MS): from there the
    slot scores exactly as a new stream that heard a moment of silence and then the rest of the audio, and the
    other slots of the batch are untouched."""
    head = np.concatenate([speak("Can I book something on Sunday?"), np.zeros(2 * 16000, np.int16)])
    head = head[: len(head) // WINDOW * WINDOW]
    tail = speak("Wait!", lead_s=0.2, trail_s=0.3)
    other = speak("Three p.m. works for me.", lead_s=0.5)
    bank = StreamBank(silero)
    a, b = bank.open(), bank.open()
    frames = lambda x: (x[: len(x) // WINDOW * WINDOW].astype(np.float32) / 32768).reshape(-1, WINDOW)
    stream, others = frames(np.concatenate([head, tail])), frames(other)
    got, got_other = [], []
    for r in range(max(len(stream), len(others))):
        if r == len(head) // WINDOW:
            bank.reset(a)
        rows = [(a, stream, got)] * (r < len(stream)) + [(b, others, got_other)] * (r < len(others))
        probs = bank.run(np.array([slot for slot, _, _ in rows]), np.stack([f[r] for _, f, _ in rows]))
        for (_, _, out), p in zip(rows, probs):
            out.append(p)
    # as a new stream after vad.SETTLE_WINDOWS windows of silence (the state at the start of a call)
    settled = reference_probs(np.concatenate([np.zeros(vad.SETTLE_WINDOWS * WINDOW, np.int16), tail]))[vad.SETTLE_WINDOWS :]
    np.testing.assert_allclose(got[len(head) // WINDOW :], settled, atol=1e-5)
    np.testing.assert_allclose(got_other, reference_probs(other), atol=1e-5)
