"""The worker on a real nats-server with the canned voice (fixed-latency mode).

Fast and model-free, so it carries most protocol tests: headers and events of
a run, the fixed first-audio delay, cancels (running, queued and late),
session end, bad payloads, two workers sharing the request stream, a worker
killed mid-chunk (its requests go to the other), and the service as a
process (``python -m parley_tts``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from tts_harness import Harness, Seen, alive, cancel, check_chunk, check_events, end, settled, synthesize, until

from parley import contract, subjects
from parley.natsd import free_port
from parley_tts import audio
from parley_tts.adapters import SynthesisError
from parley_tts.adapters.canned import Canned
from parley_tts.app import create_app
from parley_tts.settings import Settings

RATE = 22050
FIRST = "Sure, I can help with that."
SECOND = "Your appointment is on Friday at ten."
LONG = " ".join(["This sentence goes on for quite a while so that the canned voice talks for a long time."] * 3)


def run(coro):
    return asyncio.run(coro)


def canned(**kw) -> Canned:
    return Canned.load(**kw)


def test_a_run_of_two_chunks_streams_in_order_after_the_fixed_delay(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            await h.worker(canned(first_audio_ms=100, lead_ms=5000))  # pacing: the next test
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-1")
            sent = await synthesize(nc, "fx-1", 3, 0, FIRST)
            await synthesize(nc, "fx-1", 3, 1, SECOND)
            await seen.chunks_done("fx-1", 3, 2)
            await asyncio.sleep(0.1)  # nothing else may follow
            return sent, seen

    sent, seen = run(main())
    chunk0, chunk1 = seen.audio("fx-1", 3, 0), seen.audio("fx-1", 3, 1)
    check_chunk(chunk0, RATE)
    check_chunk(chunk1, RATE)
    assert len(seen.audio("fx-1")) == len(chunk0) + len(chunk1)
    # The fixed provider's latency, then chunk 1 only after chunk 0 ended.
    assert chunk0[0].t - sent >= 0.100
    assert chunk1[0].t >= chunk0[-1].t
    # At most 200 ms a message; about 65 ms of audio per character.
    max_bytes = audio.samples_for_ms(200, RATE) * 2
    assert all(0 < len(a.data) <= max_bytes for a in chunk0[:-1] + chunk1[:-1])
    for msgs, text in ((chunk0, FIRST), (chunk1, SECOND)):
        ms = audio.ms_of(sum(len(a.data) for a in msgs), RATE)
        assert abs(ms - 65 * len(text)) <= 1
    events = seen.events("fx-1")
    check_events(events, [0, 1])
    done = {e.chunk: e.audio_ms for e in events if isinstance(e, contract.TTSChunkDone)}
    assert done == {c: audio.ms_of(sum(len(a.data) for a in msgs), RATE) for c, msgs in ((0, chunk0), (1, chunk1))}
    # Started goes out right after the first audio message, Done after the last.
    order = [("a" if not hasattr(i, "at") else type(i).__name__) + str(i.chunk) for i in seen.items]
    assert order.index("TTSChunkStarted0") > order.index("a0")
    assert order.index("TTSChunkDone0") > max(i for i, o in enumerate(order) if o == "a0")
    assert all(e.run == 3 for e in events)


def test_pieces_run_a_little_ahead_of_real_time(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            await h.worker(canned(first_audio_ms=0, lead_ms=300))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-pace")
            await synthesize(nc, "fx-pace", 1, 0, "x" * 20)  # 1.3 s of audio
            await seen.chunks_done("fx-pace", 1, 1)
            return seen.audio("fx-pace")

    msgs = run(main())
    spread = msgs[-1].t - msgs[0].t
    # 1.3 s of audio, 300 ms of it ahead: not all at once (the last piece is
    # due 0.9 s after the first), and not much slower than real time.
    assert 0.85 < spread < 3.0


def test_cancel_stops_the_run_drops_its_queue_and_its_late_requests(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-cancel", "fx-other")
            await synthesize(nc, "fx-cancel", 2, 0, LONG)  # about 17 s of audio, paced
            await synthesize(nc, "fx-cancel", 2, 1, SECOND)  # queued behind it
            await synthesize(nc, "fx-other", 2, 0, FIRST)  # another session, same run id
            await seen.wait_for(lambda s: len(s.audio("fx-cancel")) >= 3)
            await cancel(nc, "fx-cancel", 2)
            await until(lambda: w.stats["cancels"] == 1)
            await settled(w, nc)
            before = len(seen.audio("fx-cancel"))
            await synthesize(nc, "fx-cancel", 2, 2, "Too late.")
            await until(lambda: w.stats["dropped_late"] == 1)
            await seen.chunks_done("fx-other", 2, 1)
            await asyncio.sleep(0.6)  # three more pieces would have come by now
            return w, seen, before

    w, seen, before = run(main())
    msgs = seen.audio("fx-cancel")
    assert len(msgs) == before >= 3
    assert {a.chunk for a in msgs} == {0} and not any(a.last for a in msgs)
    assert audio.ms_of(sum(len(a.data) for a in msgs), RATE) < 65 * len(LONG) / 2
    assert [type(e).__name__ for e in seen.events("fx-cancel")] == ["TTSChunkStarted"]
    assert w.stats["dropped_queued"] == 1 and w.stats["dropped_late"] == 1
    check_chunk(seen.audio("fx-other"), RATE)
    check_events(seen.events("fx-other"), [0])
    assert not w.runners and not w.lanes.lanes()


def test_cancel_before_the_first_audio_sends_nothing(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=800))  # time enough for the cancel, on a busy machine
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-early")
            await synthesize(nc, "fx-early", 1, 0, FIRST)
            await until(lambda: w.stats["requests"] == 1)
            await cancel(nc, "fx-early", 1)
            await until(lambda: w.stats["cancels"] == 1)
            await asyncio.sleep(1.0)
            return seen

    assert run(main()).items == []


def test_session_end_drops_every_run_of_the_session(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-end", "fx-stays")
            await synthesize(nc, "fx-end", 1, 0, LONG)
            await synthesize(nc, "fx-end", 1, 1, SECOND)
            await synthesize(nc, "fx-stays", 1, 0, FIRST)
            await seen.wait_for(lambda s: len(s.audio("fx-end")) >= 2)
            await end(nc, "fx-end")
            await until(lambda: w.stats["sessions_ended"] == 1)
            await settled(w, nc)
            before = len(seen.audio("fx-end"))
            await synthesize(nc, "fx-end", 2, 0, "A new run of an ended session.")
            await until(lambda: w.stats["dropped_late"] == 1)
            await seen.chunks_done("fx-stays", 1, 1)
            await asyncio.sleep(0.5)
            return w, seen, before

    w, seen, before = run(main())
    assert len(seen.audio("fx-end")) == before
    assert not any(a.last for a in seen.audio("fx-end"))
    assert not seen.ends("fx-end", 1) and not seen.audio("fx-end", 2)
    check_events(seen.events("fx-stays"), [0])
    assert not w.runners


def test_bad_payloads_are_logged_and_the_worker_goes_on(nats_url, caplog):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-good")
            junk = [
                (subjects.TTS_REQUEST, b"\x00\x01garbage"),
                (subjects.TTS_REQUEST, b""),
                (subjects.TTS_REQUEST, contract.encode(contract.CancelTTS(session="fx-good", run=1))),  # wrong command
                (subjects.TTS_REQUEST, contract.to_json(contract.Synthesize(session="fx-good", run=1, chunk=0, text="json"))),
                (subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session="bad.session", run=1, chunk=0, text="x"))),
                (subjects.TTS_CANCEL, b"\xc1"),
                (subjects.TTS_CANCEL, contract.encode(contract.Synthesize(session="fx-good", run=1, chunk=0, text="x"))),
                (subjects.control("fx-good"), b"not msgpack"),
            ]
            for subject, data in junk:
                await nc.publish(subject, data)
            await until(lambda: w.stats["bad_messages"] == len(junk))
            await synthesize(nc, "fx-good", 1, 0, FIRST)
            await seen.chunks_done("fx-good", 1, 1)
            return w, seen, len(junk)

    w, seen, n_junk = run(main())
    assert w.stats["bad_messages"] == n_junk and w.stats["requests"] == 1
    check_chunk(seen.audio("fx-good"), RATE)
    check_events(seen.events("fx-good"), [0])
    assert sum("bad" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == n_junk


def test_two_workers_share_the_stored_requests(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            voice = canned(first_audio_ms=0, ms_per_char=2, min_ms=20)
            a = await h.worker(voice, worker_id="tts-a")
            b = await h.worker(voice, worker_id="tts-b")
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-share")
            for r in range(24):
                await synthesize(nc, "fx-share", r, 0, f"Run {r}.")
            await seen.wait_for(lambda s: len(s.events("fx-share", contract.TTSChunkDone)) >= 24)
            await asyncio.sleep(0.1)
            # A request is delivered again only when its ack was lost (a
            # connection dropped under load): count requests, not deliveries.
            return a.stats["requests"] - a.stats["redelivered"], b.stats["requests"] - b.stats["redelivered"], seen

    on_a, on_b, seen = run(main())
    # Each request went to exactly one worker, and both got some (2^-23 odds of a false failure).
    assert on_a + on_b == 24 and on_a > 0 and on_b > 0
    for r in range(24):
        check_chunk(seen.audio("fx-share", r), RATE)
    # (a redelivered request may be spoken twice: the chunk id makes it idempotent downstream)
    assert sorted({e.run for e in seen.events("fx-share", contract.TTSChunkDone)}) == list(range(24))


def test_a_chunk_without_audio_still_ends(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0, min_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-empty")
            await synthesize(nc, "fx-empty", 1, 0, "   ")
            await seen.chunks_done("fx-empty", 1, 1)
            return seen

    seen = run(main())
    msgs = seen.audio("fx-empty")
    assert [(a.seq, a.last, a.data) for a in msgs] == [(0, True, b"")]
    events = seen.events("fx-empty")
    check_events(events, [0])
    assert events[1].audio_ms == 0


def test_app_health_turns_ok_once_started(nats_url):
    app = create_app(Settings(nats_url=nats_url, providers="fixed"))
    client = TestClient(app)
    assert client.get("/healthz").status_code == 503
    with TestClient(app) as started:
        body = started.get("/healthz").json()
        assert body["ok"] is True and body["mode"] == "fixed" and body["voice"] == "canned"


def test_python_dash_m_parley_tts_serves_in_fixed_mode(nats_url):
    port = free_port()
    env = dict(os.environ, NATS_URL=nats_url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "parley_tts"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "parley_tts exited"
            time.sleep(0.1)
        else:
            pytest.fail("parley_tts did not become healthy")

        async def main():
            async with Harness(nats_url) as h:
                nc = await h.client()
                seen = await Seen.watch(nc, "fx-proc")
                await synthesize(nc, "fx-proc", 1, 0, FIRST)
                await seen.chunks_done("fx-proc", 1, 1)
                return seen

        seen = run(main())
        check_chunk(seen.audio("fx-proc"), RATE)
        check_events(seen.events("fx-proc"), [0])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert '"tts ready"' in err


class BrokenVoice:
    """A voice that says one piece and then fails (or fails outright on chunk 1)."""

    name = "broken"
    sample_rate = RATE

    async def stream(self, job):
        if job.chunk == 1:
            raise RuntimeError("no voice today")
        yield b"\x00\x01" * 100
        raise SynthesisError("model crashed")

    def close(self) -> None:
        pass


def test_a_failing_synthesis_reports_tts_error_and_still_ends_the_chunk(nats_url):
    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(BrokenVoice())
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-broken")
            await synthesize(nc, "fx-broken", 1, 0, FIRST)
            await synthesize(nc, "fx-broken", 1, 1, SECOND)
            await seen.chunks_done("fx-broken", 1, 2)
            return w, seen

    w, seen = run(main())
    assert [(a.chunk, a.seq, a.last, len(a.data)) for a in seen.audio("fx-broken")] == [(0, 0, False, 200), (0, 1, True, 0), (1, 0, True, 0)]
    events = [(type(e).__name__, e.chunk) for e in seen.events("fx-broken")]
    assert events == [("TTSChunkStarted", 0), ("TTSError", 0), ("TTSChunkStarted", 1), ("TTSError", 1)]
    assert "model crashed" in seen.events("fx-broken", contract.TTSError)[0].message
    assert w.stats["chunks_failed"] == 2


def test_a_chunk_that_breaks_after_its_synthesis_is_reported_and_the_run_goes_on(nats_url):
    """A failure outside the voice (here the chunk's telemetry) is a TTSError
    on the session and a count, not a log line the run waits behind forever."""

    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            real = w._trace_chunk

            def broken(job, *args):
                if job.chunk == 0:
                    raise RuntimeError("telemetry exporter gone")
                return real(job, *args)

            w._trace_chunk = broken
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-after")
            await synthesize(nc, "fx-after", 1, 0, FIRST)
            await synthesize(nc, "fx-after", 1, 1, SECOND)
            await seen.chunks_done("fx-after", 1, 2)
            return w, seen

    w, seen = run(main())
    ends = [(type(e).__name__, e.chunk) for e in seen.events("fx-after", (contract.TTSChunkDone, contract.TTSError))]
    assert ends == [("TTSError", 0), ("TTSChunkDone", 1)]
    assert "telemetry exporter gone" in seen.events("fx-after", contract.TTSError)[0].message
    assert w.stats["chunks_failed"] == 1 and w.stats["chunks_done"] == 1 and w.stats["runner_errors"] == 0


def test_a_request_the_worker_breaks_on_is_counted_and_the_pulling_goes_on(nats_url):
    """A bug on one request (here the lanes refuse it) must not stop the pull
    loop: the next requests are still said, and the worker stays healthy."""

    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            real = w.lanes.submit

            def submit(job, now):
                if job.session == "fx-bug":
                    raise RuntimeError("a bug in the lanes")
                return real(job, now)

            w.lanes.submit = submit
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-fine")
            await synthesize(nc, "fx-bug", 1, 0, FIRST)
            await until(lambda: w.stats["request_errors"] >= 1)
            await synthesize(nc, "fx-fine", 1, 0, FIRST)
            await seen.chunks_done("fx-fine", 1, 1)
            return w, seen

    w, seen = run(main())
    assert [type(e).__name__ for e in seen.ends("fx-fine", 1)] == ["TTSChunkDone"]
    assert w.stats["request_errors"] >= 1 and w.stats["loop_errors"] == 0


def test_a_cancel_while_an_event_is_being_stored_does_not_lose_it(nats_url, monkeypatch):
    """The first audio went out, so TTSChunkStarted must reach the session even
    when the run is cancelled while the stream is still storing that event
    (under load, the first event of a connection also makes sure the stream
    exists: several round trips)."""
    from parley import bus

    real = bus.publish_event
    storing = asyncio.Event()

    async def slow(nc, event, *args, **kw):
        if isinstance(event, contract.TTSChunkStarted):
            storing.set()
            await asyncio.sleep(0.3)
        await real(nc, event, *args, **kw)

    monkeypatch.setattr(bus, "publish_event", slow)

    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-slow-store")
            await synthesize(nc, "fx-slow-store", 6, 0, LONG)
            await asyncio.wait_for(storing.wait(), 10)
            await cancel(nc, "fx-slow-store", 6)
            await until(lambda: w.stats["cancels"] == 1)
            await seen.wait_for(lambda s: s.events("fx-slow-store"))
            await settled(w, nc)
            return w, seen

    w, seen = run(main())
    assert [type(e).__name__ for e in seen.events("fx-slow-store")] == ["TTSChunkStarted"]
    assert seen.audio("fx-slow-store") and w.stats["events_lost"] == 0
    assert not w.reporting


def test_the_audio_goes_on_while_the_event_stream_stores_nothing(nats_url, monkeypatch):
    """The event stream without a leader (its NATS node killed: seconds of
    RAFT election) must not stop an answer mid-sentence: every chunk's audio
    goes out while no event is stored; then the events are stored in the
    order they happened, and only then are the requests acked (a worker dying
    before would have them delivered again)."""
    from parley import bus

    real = bus.publish_event
    stream_back = asyncio.Event()
    waiting: list[str] = []

    async def leaderless(nc, event, *args, **kw):
        if event.session == "fx-election":
            waiting.append(f"{type(event).__name__}{getattr(event, 'chunk', '')}")
            await stream_back.wait()
        await real(nc, event, *args, **kw)

    monkeypatch.setattr(bus, "publish_event", leaderless)

    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-election")
            await synthesize(nc, "fx-election", 2, 0, FIRST)
            await synthesize(nc, "fx-election", 2, 1, SECOND)
            await seen.wait_for(lambda s: any(a.last for a in s.audio("fx-election", 2, 1)))
            audio_done, events_then, held_then = len(seen.audio("fx-election")), len(seen.events("fx-election")), len(w.held)
            stream_back.set()
            await seen.chunks_done("fx-election", 2, 2)
            await settled(w, nc)
            return w, seen, audio_done, events_then, held_then

    w, seen, audio_done, events_then, held_then = run(main())
    assert events_then == 0 and held_then == 2  # all the audio out, nothing stored, nothing acked
    assert waiting[:1] == ["TTSChunkStarted0"]
    check_chunk(seen.audio("fx-election", 2, 0), RATE)
    check_chunk(seen.audio("fx-election", 2, 1), RATE)
    assert len(seen.audio("fx-election")) == audio_done
    check_events(seen.events("fx-election"), [0, 1])
    assert [(type(e).__name__, e.chunk) for e in seen.events("fx-election")] == [
        ("TTSChunkStarted", 0), ("TTSChunkDone", 0), ("TTSChunkStarted", 1), ("TTSChunkDone", 1)]  # fmt: skip
    assert not w.held and w.stats["events_lost"] == 0 and not w.reporting


def test_a_worker_killed_mid_chunk_leaves_its_requests_to_another_within_the_ack_wait(nats_url):
    """kill -9 of the worker speaking a chunk, with the next chunk queued
    behind it: the stream delivers both again to the surviving worker, within
    the consumer's ack wait of the worker's last "in progress"; the new audio
    is numbered from piece 0 and comes from the survivor."""
    from parley import bus

    port = free_port()
    env = dict(
        os.environ, NATS_URL=nats_url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port), PARLEY_TTS_WORKER_ID="tts-doomed",
        PARLEY_TTS_FIXED_MS_PER_CHAR="60",
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "parley_tts"], env=env, stderr=subprocess.DEVNULL, start_new_session=True)

    async def main():
        async with Harness(nats_url) as h:
            nc = await h.client()
            await alive(nc, "tts-doomed", proc)  # answers once it pulls
            seen = await Seen.watch(nc, "fx-kill")
            await synthesize(nc, "fx-kill", 1, 0, LONG)  # seconds of audio, paced
            await synthesize(nc, "fx-kill", 1, 1, SECOND)  # queued behind it in the same lane
            await seen.wait_for(lambda s: len(s.audio("fx-kill", 1, 0)) >= 2)
            os.killpg(proc.pid, 9)
            proc.wait()
            killed = time.monotonic()
            survivor = await h.worker(canned(first_audio_ms=0, ms_per_char=2, min_ms=20), worker_id="tts-survivor")
            await seen.chunks_done("fx-kill", 1, 2, timeout=20)
            again = {c: [a for a in seen.audio("fx-kill", 1, c) if a.t > killed + 0.3] for c in (0, 1)}
            return again, survivor, {c: again[c][0].t - killed for c in (0, 1)}

    try:
        again, survivor, after = run(main())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert survivor.stats["redelivered"] >= 2  # (and any an earlier test's stopped worker held)
    for c in (0, 1):
        check_chunk(again[c], RATE)  # said whole by the survivor, from piece 0
        # Redelivered within the ack wait of the last "in progress" (plus scheduling slack).
        assert after[c] < bus.TTS_ACK_WAIT_S + bus.TTS_PROGRESS_S + 1.0, after
    print(f"\nrequests of a killed worker delivered again after {', '.join(f'{1000 * t:.0f} ms' for t in after.values())}")


def test_a_chunk_delivered_after_a_later_one_started_is_said_at_once_beside_it(nats_url):
    """Chunk 1 is being said (a long one, paced) when chunk 0 arrives (its
    first worker died): the gateway waits for chunk 0, so the worker says it
    now, not after chunk 1."""

    async def main():
        async with Harness(nats_url) as h:
            w = await h.worker(canned(first_audio_ms=0))
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-ahead")
            await synthesize(nc, "fx-ahead", 3, 1, LONG)  # seconds of paced audio
            await seen.wait_for(lambda s: len(s.audio("fx-ahead", 3, 1)) >= 1)
            await synthesize(nc, "fx-ahead", 3, 0, FIRST)
            await seen.chunks_done("fx-ahead", 3, 2)
            return w, seen

    w, seen = run(main())
    check_chunk(seen.audio("fx-ahead", 3, 0), RATE)
    check_chunk(seen.audio("fx-ahead", 3, 1), RATE)
    done = [e.chunk for e in seen.ends("fx-ahead", 3)]
    assert done == [0, 1], done  # chunk 0 finished while chunk 1 was still being said
    assert w.stats["chunks_done"] == 2


def test_a_chunk_given_again_is_taken_up_where_the_calls_audio_stopped(nats_url):
    """Worker A stops mid-chunk (its held requests go back to the stream, as a
    kill's do after the ack wait); worker B, given the chunk again, asks the
    gateway (played here by the test) where the call's audio stopped, and
    sends only the pieces after it: the first of them at once, not after
    re-pacing the ones the gateway had (issue 10 point 4)."""
    asked = []

    async def main():
        async with Harness(nats_url) as h:
            a = await h.worker(canned(first_audio_ms=0, lead_ms=0), worker_id="tts-resume-a")
            nc = await h.client()
            seen = await Seen.watch(nc, "fx-resume")

            async def gateway(msg):  # the call had every piece A sent
                q = contract.decode(msg.data, contract.TtsResume)
                asked.append((q.run, q.chunk, q.worker))
                had = len([x for x in seen.audio("fx-resume", 1, 0)])
                await msg.respond(contract.encode(contract.TtsResumeAt(from_piece=had)))

            await nc.subscribe(subjects.tts_resume("fx-resume"), cb=gateway)
            await synthesize(nc, "fx-resume", 1, 0, "x" * 37)  # 2.4 s of audio: 12 pieces, paced at real time
            await seen.wait_for(lambda s: len(s.audio("fx-resume", 1, 0)) >= 6)
            b = await h.worker(canned(first_audio_ms=0, lead_ms=0), worker_id="tts-resume-b")
            await a.stop()
            stopped = time.monotonic()
            had = len(seen.audio("fx-resume", 1, 0))
            await seen.chunks_done("fx-resume", 1, 1, timeout=30)
            return b, seen.audio("fx-resume", 1, 0), had, stopped

    b, msgs, had, stopped = run(main())
    assert asked == [(1, 0, "tts-resume-b")]
    again = [m for m in msgs[had:]]
    assert [m.seq for m in msgs] == list(range(len(msgs))) and msgs[-1].last  # every piece once, in order
    assert again and again[0].seq == had and b.stats["resumed"] == 1 and b.stats["pieces_skipped"] == had
    # The first piece the call needed came at once (re-pacing the ones it had: had x 200 ms).
    assert again[0].t - stopped < 0.2 * had, (again[0].t - stopped, had)
