"""The worker on a real nats-server in fixed-latency mode: real Silero VAD and endpointing, no Whisper.

Fast (audio mostly sent faster than real time), so it carries the protocol
tests: claims, two workers sharing sessions, bad audio, release, the fixed
final's timing, the app and ``python -m parley_asr``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from asr_harness import Events, claim, end, silence, stream

from parley import bus, contract, subjects
from parley.natsd import free_port
from parley_asr import completeness
from parley_asr.app import create_app
from parley_asr.settings import Settings
from parley_asr.vad import SileroVad
from parley_asr.worker import Worker

TEXT = "Fixed transcript for the ASR tests."
SENTENCE = "I'd like to book an appointment tomorrow at three p.m."


@pytest.fixture(scope="module")
def silero():
    return SileroVad()


def fixed_settings(url: str, **kw) -> Settings:
    kw.setdefault("fixed_transcript", TEXT)
    return Settings(nats_url=url, providers="fixed", **kw)


def run(coro):
    return asyncio.run(coro)


class Harness:
    """Workers plus a client connection, all on the module's nats-server."""

    def __init__(self, url: str, silero: SileroVad):
        self.url = url
        self.silero = silero
        self.workers: list[Worker] = []
        self.conns = []

    async def worker(self, **kw) -> Worker:
        nc = await bus.connect(self.url)
        self.conns.append(nc)
        w = Worker(nc, fixed_settings(self.url, **kw), self.silero)
        await w.start()
        self.workers.append(w)
        return w

    async def client(self):
        nc = await bus.connect(self.url)
        self.conns.append(nc)
        return nc

    async def close(self) -> None:
        for w in self.workers:
            await w.stop()
        for nc in self.conns:
            await nc.close()

    async def __aenter__(self) -> "Harness":
        return self

    async def __aexit__(self, *_) -> None:
        await self.close()


def assert_one_utterance(events: list, text: str) -> None:
    assert isinstance(events[0], contract.SpeechOnset) and events[0].utterance == 0  # pause-only, first
    events = events[1:]
    kinds = [type(e) for e in events]
    assert kinds == [contract.SpeechStarted, contract.SpeechStopped, contract.TranscriptFinal], kinds
    started, stopped, final = events
    assert started.utterance == stopped.utterance == final.utterance == 0
    assert final.text == text
    assert started.at <= stopped.at <= final.at
    assert final.speech_end_at == stopped.at
    assert stopped.speech_ms > 1500  # the sentence lasts about 3 s


def test_fixed_final_comes_150_ms_after_speech_stopped(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "fixed-1")
            claimed = await claim(nc, "fixed-1")
            assert claimed == contract.AsrClaimed(session="fixed-1", worker=w.id, window=1024)  # 32 ms of PCM16 at 16 kHz: the gateway sends whole windows
            await stream(nc, "fixed-1", speak(SENTENCE), speed=0)
            await ev.finals("fixed-1")
            await asyncio.sleep(0.3)  # nothing else may follow
            return ev.of("fixed-1")

    events = run(main())
    assert_one_utterance(events, TEXT)
    stopped, final = events[2], events[3]
    assert final.at - stopped.at >= 0.150
    # No end-of-turn model runs in fixed mode: eot is the fixed setting, and
    # the text is scored (cheaply) like any final.
    assert stopped.eot == 1.0 and final.complete == completeness.score(TEXT) >= 0.5


def test_fixed_eot_is_a_setting(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            await h.worker(fixed_eot=-1.0, fixed_transcript="I'd like to book it for")
            nc = await h.client()
            ev = await Events.watch(nc, "fixed-eot")
            await claim(nc, "fixed-eot")
            await stream(nc, "fixed-eot", speak(SENTENCE), speed=0)
            await ev.finals("fixed-eot")
            return ev.of("fixed-eot")

    _, _, stopped, final = run(main())
    assert stopped.eot == -1.0 and final.complete < 0.5


def test_real_time_stream_in_odd_sized_messages_gives_two_utterances(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "fixed-rt")
            await claim(nc, "fixed-rt")
            pcm = np.concatenate([speak("This is Sam speaking.", trail_s=0.0), silence(1.0), speak("Can I come tomorrow?", lead_s=0.0)])
            await stream(nc, "fixed-rt", pcm, speed=1.0, seed=7)
            await ev.finals("fixed-rt", 2)
            return ev.of("fixed-rt")

    events = run(main())
    assert [(type(e).__name__, e.utterance) for e in events] == [
        ("SpeechOnset", 0), ("SpeechStarted", 0), ("SpeechStopped", 0), ("TranscriptFinal", 0),
        ("SpeechOnset", 1), ("SpeechStarted", 1), ("SpeechStopped", 1), ("TranscriptFinal", 1),
    ]  # fmt: skip
    assert all(a.at <= b.at for a, b in zip(events, events[1:]))


def test_silence_alone_gives_no_events(nats_url, silero):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "fixed-quiet")
            await claim(nc, "fixed-quiet")
            await stream(nc, "fixed-quiet", silence(3.0), speed=0)
            for _ in range(100):  # until the worker has scored all of it
                await asyncio.sleep(0.02)
                if w.sessions["fixed-quiet"].audio.end >= 3 * 16000 - 512:
                    break
            await asyncio.sleep(0.1)
            return ev.items, w.stats["windows"]

    items, windows = run(main())
    assert items == [] and windows >= 90


def test_two_workers_share_sessions(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            a = await h.worker()
            b = await h.worker()
            nc = await h.client()
            owners = {}
            for i in range(24):
                owners[f"share-{i}"] = (await claim(nc, f"share-{i}")).worker
            # One speaking session on each worker, streamed side by side.
            on_a = next(s for s, o in owners.items() if o == a.id)
            on_b = next(s for s, o in owners.items() if o == b.id)
            ev = await Events.watch(nc, on_a, on_b)
            pcm = speak(SENTENCE)
            await asyncio.gather(stream(nc, on_a, pcm, speed=4, seed=1), stream(nc, on_b, pcm, speed=4, seed=2))
            await ev.finals(on_a)
            await ev.finals(on_b)
            await asyncio.sleep(0.2)
            return owners, set(a.sessions), set(b.sessions), ev.of(on_a), ev.of(on_b)

    owners, held_a, held_b, events_a, events_b = run(main())
    # Each claim went to exactly one worker, and both got some (2^-23 odds of a false failure).
    assert len(set(owners.values())) == 2
    assert held_a.isdisjoint(held_b) and held_a | held_b == set(owners)
    assert_one_utterance(events_a, TEXT)
    assert_one_utterance(events_b, TEXT)


def test_bad_audio_messages_are_dropped_without_harm(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "bad", "good")
            await claim(nc, "bad")
            await claim(nc, "good")
            pcm = speak(SENTENCE)
            bad_subject = subjects.audio_in("bad")
            junk = [
                (b"\x01\x02\x03", bus.audio_headers(0, 16000)),  # odd byte count
                (b"\x00" * 640, None),  # no headers
                (b"\x00" * 640, {subjects.H_SEQ: "x", subjects.H_RATE: "16000"}),
                (b"\x00" * 640, {subjects.H_SEQ: "1"}),
                (b"\x00" * 640, bus.audio_headers(2, 8000)),  # wrong rate
                (b"\xff" * 641, bus.audio_headers(3, 16000)),
            ]

            async def garbage():
                for _ in range(20):
                    for data, headers in junk:
                        await nc.publish(bad_subject, data, headers=headers)
                    await asyncio.sleep(0.01)

            await asyncio.gather(garbage(), stream(nc, "good", pcm, speed=4))
            await ev.finals("good")
            # The bad session still works once it sends proper audio.
            await stream(nc, "bad", pcm, speed=0, first_seq=100)
            await ev.finals("bad")
            return ev.of("good"), ev.of("bad"), w.stats["dropped_messages"]

    good, bad, dropped = run(main())
    assert_one_utterance(good, TEXT)
    assert_one_utterance(bad, TEXT)
    assert dropped == 20 * 6


def test_end_mid_utterance_stops_it_and_frees_the_session(nats_url, silero, speak):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "ending")
            await claim(nc, "ending")
            pcm = speak(SENTENCE, trail_s=0.0)
            await stream(nc, "ending", pcm[: len(pcm) * 2 // 3], speed=0)
            await ev.wait_for(lambda e: e.of("ending", contract.SpeechStarted))
            subs_before = len(w.nc._subs)
            await end(nc, "ending")
            await ev.finals("ending")
            await stream(nc, "ending", pcm, speed=0)  # after the release: nobody listens
            await asyncio.sleep(0.3)
            return ev.of("ending"), w.sessions, subs_before - len(w.nc._subs), w.stats["released"]

    events, sessions, unsubscribed, released = run(main())
    assert [type(e) for e in events] == [contract.SpeechOnset, contract.SpeechStarted, contract.SpeechStopped, contract.TranscriptFinal]
    assert events[3].text == "" and events[3].utterance == 0
    assert sessions == {} and unsubscribed == 2 and released == 1


def test_audio_naming_another_worker_makes_this_one_let_go_without_a_word(nats_url, silero, speak):
    """After the gateway claimed a session again and another worker took it
    (this one was only unreachable: a cluster node's death moved its
    connection), the audio names the new worker. This one lets go at once and
    says nothing of the utterance it was hearing (the new worker hears it again
    from its start); audio naming this worker itself is heard as ever."""

    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "own", "moved")
            await claim(nc, "own")
            await claim(nc, "moved")
            pcm = speak(SENTENCE, trail_s=0.0)
            await stream(nc, "own", np.concatenate([pcm, silence(1.0)]), speed=0, worker=w.id)
            await ev.finals("own")
            await stream(nc, "moved", pcm[: len(pcm) * 2 // 3], speed=0)
            await ev.wait_for(lambda e: e.of("moved", contract.SpeechStarted))
            subs_before = len(w.nc._subs)
            await stream(nc, "moved", pcm[len(pcm) * 2 // 3 :], speed=0, first_seq=10_000, worker="another-worker")
            deadline = time.monotonic() + 10
            while "moved" in w.sessions:
                assert time.monotonic() < deadline, "the worker never let go"
                await asyncio.sleep(0.01)
            await stream(nc, "moved", np.concatenate([pcm, silence(1.0)]), speed=0, first_seq=20_000, worker="another-worker")
            await asyncio.sleep(0.5)
            return ev, set(w.sessions), subs_before - len(w.nc._subs), dict(w.stats)

    ev, sessions, unsubscribed, stats = run(main())
    assert_one_utterance(ev.of("own"), TEXT)
    assert [type(e) for e in ev.of("moved")] == [contract.SpeechOnset, contract.SpeechStarted]  # no Stop, no final
    assert sessions == {"own"} and unsubscribed == 2  # its audio and control subscriptions
    assert stats["handed_over"] == 1 and stats["released"] == 1


def test_a_session_without_audio_is_released(nats_url, silero):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker(idle_release_s=0.5)
            nc = await h.client()
            await claim(nc, "idle")
            await stream(nc, "idle", silence(0.2), speed=0)
            held = "idle" in w.sessions
            for _ in range(60):
                await asyncio.sleep(0.05)
                if "idle" not in w.sessions:
                    break
            return held, w.sessions

    held, sessions = run(main())
    assert held and sessions == {}


def test_a_failing_tick_is_counted_and_the_vad_loop_goes_on_and_a_dead_loop_makes_the_worker_unhealthy(nats_url, silero, caplog):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            real, calls = w.tick, []

            async def failing() -> None:
                calls.append(1)
                if len(calls) <= 3:
                    raise RuntimeError("a bug in a tick")
                await real()

            w.tick = failing
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(calls) > 5:
                    break
            alive = w.healthy
            w._loop_task.cancel()  # as if it had died: health says so
            await asyncio.gather(w._loop_task, return_exceptions=True)
            return w.stats["tick_errors"], alive, w.healthy

    errors, alive, after = run(main())
    assert errors == 3 and alive and not after
    assert caplog.text.count("VAD tick failed") == 3


def test_a_claim_that_arrives_twice_keeps_one_session(nats_url, silero):
    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker()
            nc = await h.client()
            first = await claim(nc, "twice")
            second = await claim(nc, "twice")
            # Garbage on the claim subject is dropped; the worker still answers afterwards.
            await nc.publish(subjects.ASR_CLAIM, b"not msgpack")
            third = await claim(nc, "thrice")
            return first, second, third, sorted(w.sessions), len(w.nc._subs)

    first, second, third, sessions, subs = run(main())
    assert first == second and third.worker == first.worker
    assert sessions == ["thrice", "twice"] and subs == 2 + 2 * 2  # claim + liveness, then audio + control per session


def test_app_health_is_503_until_started(nats_url):
    from fastapi.testclient import TestClient

    app = create_app(fixed_settings(nats_url))
    client = TestClient(app)
    assert client.get("/healthz").status_code == 503
    with TestClient(app) as started:
        body = started.get("/healthz").json()
        assert body["ok"] is True and body["mode"] == "fixed"


def test_python_m_parley_asr_serves_in_fixed_mode(nats_url, speak):
    port = free_port()
    env = dict(
        os.environ, NATS_URL=nats_url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port),
        PARLEY_FIXED_TRANSCRIPT=TEXT, PARLEY_ASR_SILENCE_MS="300",
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "parley_asr"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the service never became healthy")

        async def main():
            nc = await bus.connect(nats_url)
            try:
                ev = await Events.watch(nc, "proc")
                await claim(nc, "proc")
                await stream(nc, "proc", speak(SENTENCE), speed=0)
                return await ev.finals("proc")
            finally:
                await nc.close()

        (final,) = run(main())
        assert final.text == TEXT
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert '"msg": "asr ready"' in err


def test_a_sound_too_short_to_start_an_utterance_ends_its_onset(nats_url, silero, speak):
    """A blip of voice (a click, a breath): SpeechOnset, then SpeechOnsetEnded
    for the same utterance id, and no utterance. The reducer resumes the agent
    on that evidence, in order, however late the ASR runs. (With the faded
    start, PARLEY_ASR_FADED_START_MS, a blip whose run lasts 128 ms starts an
    utterance as it fades instead, and with the voiced start,
    PARLEY_ASR_VOICED_START_MS, one that stays voiced 192 ms starts one at once:
    both off here. Piper's noise is off for the blip (``steady``): with it, the
    blip's VAD count varied from run to run, and it started an utterance in 1
    fresh-clone run, and in 3 of 6 with the voiced start on.)"""

    async def main():
        h = Harness(nats_url, silero)
        try:
            await h.worker(faded_start_ms=0, voiced_start_ms=0)
            nc = await h.client()
            sid = "blip"
            ev = await Events.watch(nc, sid)
            await claim(nc, sid)
            pcm = speak("Okay.", trail_s=0.0, steady=True)  # the same samples in every run
            voiced = int(np.argmax(np.abs(pcm) > 2000))
            blip = pcm[voiced : voiced + 224 * 16]  # Silero lags: this gives 2-4 windows over the threshold, not the start's 5
            await stream(nc, sid, np.concatenate([silence(0.5), blip, silence(1.0)]), speed=0)
            await ev.wait_for(lambda e: e.of(sid, contract.SpeechOnsetEnded) or e.of(sid, contract.SpeechStarted), timeout=30)
            await asyncio.sleep(0.3)
            return ev.of(sid)
        finally:
            await h.close()

    events = run(main())
    assert [type(e) for e in events] == [contract.SpeechOnset, contract.SpeechOnsetEnded], events
    assert events[0].utterance == events[1].utterance == 0 and events[0].at <= events[1].at


def test_a_phone_call_begins_speech_at_the_phone_threshold(nats_url, silero):
    """A claim whose native audio is the phone's μ-law (Twilio) gets the
    endpointer's phone thresholds for what begins speech; others the usual."""

    async def main():
        async with Harness(nats_url, silero) as h:
            w = await h.worker(phone_threshold=0.4)
            nc = await h.client()
            for session, native in (("phone", "mulaw/8000"), ("browser", ""), ("opus", "opus/48000")):
                await nc.request(subjects.ASR_CLAIM, contract.encode(contract.AsrClaim(session=session, native=native)), timeout=3)
            return {k: s.cfg for k, s in w.sessions.items()}

    cfgs = run(main())
    assert cfgs["phone"].idle_thresholds == (0.4, pytest.approx(0.25)) and cfgs["phone"].threshold == 0.5
    assert cfgs["browser"].idle_thresholds == cfgs["opus"].idle_thresholds == (0.5, pytest.approx(0.35))


def test_one_sessions_slow_event_storage_holds_up_no_other_session_and_keeps_its_own_order(nats_url, silero, speak, monkeypatch):
    """The VAD tick hears every session: while one session's events cannot be
    stored (its acks held back here, as during an event-stream election or an
    overloaded server), the other session is endpointed and answered at once,
    and the held session's events are stored afterwards in the VAD's order."""
    gate = asyncio.Event()
    publish_event = bus.publish_event

    async def held_for_slow(nc, event, *a, **kw):
        if event.session == "slow":
            await gate.wait()
        return await publish_event(nc, event, *a, **kw)

    monkeypatch.setattr(bus, "publish_event", held_for_slow)

    async def main():
        async with Harness(nats_url, silero) as h:
            await h.worker()
            nc = await h.client()
            ev = await Events.watch(nc, "slow", "fast")
            await claim(nc, "slow")
            await claim(nc, "fast")
            await stream(nc, "slow", speak(SENTENCE), speed=0)
            await asyncio.sleep(0.5)  # the slow session's onset, start and stop are decided (and held)
            await stream(nc, "fast", speak(SENTENCE), speed=0)
            await ev.finals("fast")
            held = ev.of("slow")
            gate.set()
            await ev.finals("slow")
            await asyncio.sleep(0.3)  # nothing else may follow
            return held, ev.of("fast"), ev.of("slow")

    held, fast, slow = run(main())
    assert held == []  # the fast session's final came while none of the slow one's was stored
    assert_one_utterance(fast, TEXT)
    assert_one_utterance(slow, TEXT)  # stored late, in the order the VAD decided them
