"""The transcription queue: finals before partials, one waiting partial per session, stale ones skipped.

The transcriber here is a stand-in that records what it was asked and blocks
until released, so the test controls exactly what is running when.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from parley_asr.transcription import Job, TranscriptionQueue


class GatedTranscriber:
    def __init__(self, fail_on: set[int] = frozenset()):
        self.calls: list[int] = []
        self.gate = threading.Semaphore(0)
        self.fail_on = fail_on

    def transcribe(self, pcm16: np.ndarray) -> str:
        self.gate.acquire()
        tag = int(pcm16[0])
        self.calls.append(tag)
        if tag in self.fail_on:
            raise RuntimeError("boom")
        return f"text {tag}"


def job(tag: int, session: str, final: bool, delivered: list, stale: bool = False) -> Job:
    async def deliver(text: str) -> None:
        delivered.append((tag, text))

    return Job(session=session, utterance=0, final=final, audio=lambda: None if stale else np.array([tag], np.int16), deliver=deliver)


async def settle(q: TranscriptionQueue, t: GatedTranscriber, n: int, delivered: list) -> None:
    """Let n transcriptions run, then wait until the queue is idle again."""
    for _ in range(n):
        t.gate.release()
    for _ in range(400):
        await asyncio.sleep(0.005)
        if len(t.calls) >= n and q.running is None:
            return
    raise AssertionError(f"queue did not settle: {t.calls}")


def test_finals_go_first_and_newer_partials_replace_older_ones():
    async def main():
        t = GatedTranscriber()
        q = TranscriptionQueue(t)
        q.start()
        delivered: list = []
        q.submit(job(1, "a", final=False, delivered=delivered))  # starts running at once
        await asyncio.sleep(0.05)
        assert q.partial_busy("a") and not q.partial_busy("b")
        q.submit(job(2, "a", final=False, delivered=delivered))
        q.submit(job(3, "b", final=False, delivered=delivered))
        q.submit(job(4, "a", final=False, delivered=delivered))  # replaces 2
        q.submit(job(5, "a", final=True, delivered=delivered))
        q.submit(job(6, "b", final=True, delivered=delivered))
        await settle(q, t, 5, delivered)
        await q.close()
        return t.calls, delivered

    calls, delivered = asyncio.run(main())
    assert calls == [1, 5, 6, 3, 4]
    assert delivered == [(n, f"text {n}") for n in calls]


def test_stale_partials_are_skipped_and_a_failed_final_is_still_delivered():
    async def main():
        t = GatedTranscriber(fail_on={2, 3})
        q = TranscriptionQueue(t)
        q.start()
        delivered: list = []
        q.submit(job(1, "a", final=False, delivered=delivered, stale=True))
        q.submit(job(2, "a", final=True, delivered=delivered))
        q.submit(job(3, "b", final=False, delivered=delivered))
        q.submit(job(4, "c", final=False, delivered=delivered))
        q.forget("c")
        await settle(q, t, 2, delivered)
        await q.close()
        return t.calls, delivered, q.stats

    calls, delivered, stats = asyncio.run(main())
    assert calls == [2, 3]  # 1 was stale when its turn came, 4's session was released
    assert delivered == [(2, "")]  # the failed final is sent empty; the failed partial is not sent
    assert stats == {"whisper": 2, "delivery": 0}  # both failures counted (and logged)


def test_a_job_whose_audio_or_delivery_fails_is_counted_and_the_lane_goes_on():
    async def main():
        t = GatedTranscriber()
        q = TranscriptionQueue(t)
        q.start()
        delivered: list = []

        def broken():
            raise RuntimeError("a bug in the job")

        async def refused(text: str) -> None:
            raise ConnectionError("NATS is gone")

        q.submit(Job(session="a", utterance=1, final=True, audio=broken, deliver=refused))
        q.submit(job(2, "b", final=True, delivered=delivered))
        await settle(q, t, 1, delivered)
        await q.close()
        return delivered, q.stats

    delivered, stats = asyncio.run(main())
    assert delivered == [(2, "text 2")]  # the lane survived the broken job
    assert stats == {"whisper": 1, "delivery": 1}


def test_an_empty_final_skips_whisper_but_keeps_its_place_in_line():
    async def main():
        t = GatedTranscriber()
        q = TranscriptionQueue(t)
        q.start()
        delivered: list = []
        q.submit(job(1, "a", final=True, delivered=delivered))

        async def deliver_empty(text: str) -> None:
            delivered.append((2, text))

        q.submit(Job(session="a", utterance=1, final=True, audio=lambda: np.empty(0, np.int16), deliver=deliver_empty))
        await asyncio.sleep(0.05)
        assert delivered == []  # still behind final 1, which Whisper is holding
        await settle(q, t, 1, delivered)
        await q.drain(timeout=1.0)
        await q.close()
        return t.calls, delivered

    calls, delivered = asyncio.run(main())
    assert calls == [1] and delivered == [(1, "text 1"), (2, "")]


def test_with_a_final_lane_a_final_starts_beside_a_running_partial_and_holds_new_partials():
    async def main():
        partials, finals = GatedTranscriber(), GatedTranscriber()
        q = TranscriptionQueue(partials, final_transcriber=finals)
        q.start()
        delivered: list = []
        q.submit(job(1, "a", final=False, delivered=delivered))
        await asyncio.sleep(0.05)  # partial 1 is running in the partial lane
        q.submit(job(2, "b", final=True, delivered=delivered))
        q.submit(job(3, "c", final=False, delivered=delivered))
        await asyncio.sleep(0.05)
        running = sorted(j.session for j in q._running.values())
        finals.gate.release()  # final 2 finishes while partial 1 still runs
        for _ in range(100):
            await asyncio.sleep(0.005)
            if delivered:
                break
        after_final = list(delivered)
        partials.gate.release(2)  # partial 1 finishes, then 3 may start
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(delivered) == 3:
                break
        await q.close()
        return running, after_final, delivered, partials.calls

    running, after_final, delivered, partial_calls = asyncio.run(main())
    assert running == ["a", "b"]  # the final did not wait for the partial
    assert after_final == [(2, "text 2")]
    assert delivered == [(2, "text 2"), (1, "text 1"), (3, "text 3")] and partial_calls == [1, 3]


def test_no_partial_starts_while_a_final_waits_or_runs():
    async def main():
        partials, finals = GatedTranscriber(), GatedTranscriber()
        q = TranscriptionQueue(partials, final_transcriber=finals)
        q.start()
        delivered: list = []
        q.submit(job(1, "a", final=True, delivered=delivered))
        q.submit(job(2, "b", final=False, delivered=delivered))
        await asyncio.sleep(0.05)
        started_during_final = [j.session for j in q._running.values()]
        finals.gate.release()
        partials.gate.release()
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(delivered) == 2:
                break
        await q.close()
        return started_during_final, delivered

    started_during_final, delivered = asyncio.run(main())
    assert started_during_final == ["a"]
    assert delivered == [(1, "text 1"), (2, "text 2")]


def test_a_final_made_early_is_delivered_without_another_call_and_an_empty_one_is_made_again():
    async def main():
        t = GatedTranscriber()
        q = TranscriptionQueue(t, GatedTranscriber())
        q.start()
        delivered: list = []
        loop = asyncio.get_running_loop()
        made, empty = loop.create_future(), loop.create_future()
        made.set_result("made early")
        empty.set_result("")
        for tag, early in ((7, made), (8, empty)):
            j = job(tag, "a", final=True, delivered=delivered)
            j.early = early
            q.submit(j)
        finals = q._lanes["finals"]
        await settle(q, finals, 1, delivered)
        await q.close()
        return finals.calls, delivered, q.early_used

    calls, delivered, used = asyncio.run(main())
    assert delivered == [(7, "made early"), (8, "text 8")] and calls == [8] and used == 1


def test_a_decode_may_not_run_longer_than_its_audio_could_need():
    from parley_asr.whisper import max_tokens

    assert max_tokens(0) == 12 and max_tokens(16000) == 22 and max_tokens(16000 * 30) == 224
    assert all(max_tokens(n) <= max_tokens(n + 1600) for n in range(0, 16000 * 30, 1600))


class MeasuringTranscriber:
    """A model with a richer call for finals (whisper.WhisperTranscriber.transcribe_final)."""

    def __init__(self):
        self.kinds: list[str] = []

    def transcribe(self, pcm16: np.ndarray) -> str:
        self.kinds.append("plain")
        return f"text {int(pcm16[0])}"

    def transcribe_final(self, pcm16: np.ndarray):
        from parley_asr.whisper import Transcript

        self.kinds.append("final")
        return Transcript(f"text {int(pcm16[0])}" if pcm16[0] else "", floor=0.5)  # a phone-band "No." Whisper wrote as nothing


def test_finals_get_the_models_final_call_and_its_measurement_reaches_delivery():
    async def main():
        t = MeasuringTranscriber()
        q = TranscriptionQueue(t)
        q.start()
        delivered: list = []

        async def deliver(text: str) -> None:
            delivered.append((text, getattr(text, "floor", None)))

        q.submit(Job(session="a", utterance=0, final=False, audio=lambda: np.array([1], np.int16), deliver=deliver))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if delivered:
                break
        q.submit(Job(session="a", utterance=0, final=True, audio=lambda: np.array([2], np.int16), deliver=deliver))
        q.submit(Job(session="a", utterance=1, final=True, audio=lambda: np.array([0], np.int16), deliver=deliver))
        await q.drain(2.0)
        await q.close()
        return t.kinds, delivered

    kinds, delivered = asyncio.run(main())
    assert kinds == ["plain", "final", "final"]
    assert delivered == [("text 1", None), ("text 2", 0.5), ("", 0.5)]  # an empty text keeps its measurement


def test_a_sentence_whisper_repeats_in_a_clip_too_short_for_it_is_said_once():
    """barge7 OPEN 5 / barge8: finals seen on this machine for one clean utterance, each a sentence
    written two or three times in audio that holds it once (at most FAST_WORDS_PER_S words a second)."""
    from parley_asr.whisper import drop_repeats

    thrice = "Are you open on Saturdays? Are you open on Saturdays? Are you open on Saturdays"
    assert drop_repeats(thrice, 1.54) == "Are you open on Saturdays?"
    assert drop_repeats("Do you open early on Mondays? Do you open early on Mondays?", 1.6) == "Do you open early on Mondays?"
    assert drop_repeats("Could I get Monday the 14th? Could I get Monday the 14th? Could I get Monday the 14th?", 1.8) == "Could I get Monday the 14th?"
    # Said twice, with the time to say it twice; different sentences; one sentence: as written.
    assert drop_repeats("Hello? Hello?", 1.2) == "Hello? Hello?"
    assert drop_repeats("Are you open on Saturdays? Are you open on Saturdays?", 3.0) == "Are you open on Saturdays? Are you open on Saturdays?"
    assert drop_repeats("Yes. Book it for Monday. Thanks.", 0.5) == "Yes. Book it for Monday. Thanks."
    assert drop_repeats("No, no, no, no, no.", 0.5) == "No, no, no, no, no."
    assert drop_repeats("", 0.0) == "" and drop_repeats("Wait.", 0.0) == "Wait."
