"""AsrWatch: one liveness question per ASR worker per round, for all of the
gateway's calls on it; each call gets its own progress; a dead worker's calls
are each claimed again once, found by the pings between rounds even when the
worker died holding a progress question. Real nats-server; the test answers
as the ASR workers (their documented replies: contract.AsrProgressAll, "1")."""

from __future__ import annotations

import asyncio
import time

from parley import bus, contract, subjects
from parley_gateway.asr_watch import AsrWatch
from parley_gateway.tasks import TaskSet


class FakeCall:
    """What AsrWatch reads and calls on a gateway Call."""

    def __init__(self, session: str, worker: str):
        self.session = session
        self.asr_worker = worker
        self.closed = False
        self.asr_progress = None
        self.asr_checked_at = 0.0
        self.tasks = TaskSet({})
        self.reclaims = 0

    async def _reclaim_asr(self) -> None:
        self.reclaims += 1
        await asyncio.sleep(0.3)  # a claim takes a while: the next round must not claim again
        self.asr_worker = "w-new"


def test_one_question_per_worker_per_round_progress_per_call_and_one_reclaim_per_dead_worker(nats_server):
    async def scenario():
        nc = await bus.connect(nats_server.url)
        asked: dict[str, list[bytes]] = {"w1": [], "w2": [], "w-new": []}

        def worker(name: str):
            async def on_alive(msg):
                if not msg.data:  # a ping
                    await msg.respond(b"1")
                    return
                asked[name].append(msg.data)
                sessions = [s for s in msg.data.decode().split(",") if s.startswith("s")]
                items = tuple(contract.AsrProgress(session=s, next_utterance=int(s[1:]), unfinished=-1) for s in sessions)
                await msg.respond(contract.encode(contract.AsrProgressAll(items=items)))

            return on_alive

        subs = {name: await nc.subscribe(subjects.asr_alive(name), cb=worker(name)) for name in asked}
        calls = [FakeCall("s1", "w1"), FakeCall("s2", "w1"), FakeCall("s3", "w2")]
        watch = AsrWatch(nc, every=0.1)
        try:
            for c in calls:
                watch.add(c)
            await asyncio.sleep(0.35)  # three rounds
            rounds = {name: len(v) for name, v in asked.items()}
            await subs["w1"].unsubscribe()  # w1's process is gone: no responders
            await nc.flush()
            # A round asked just as w1 left waits out its 2 s timeout (no answer, no "no responders"): poll.
            deadline = asyncio.get_running_loop().time() + 6
            while [c.reclaims for c in calls] != [1, 1, 0] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.4)  # four more rounds: no second reclaim
            return rounds, asked, calls
        finally:
            watch.close()
            for c in calls:
                c.tasks.cancel()
            await nc.close()

    rounds, asked, calls = asyncio.run(scenario())
    assert rounds["w1"] == rounds["w2"] >= 2  # one question per worker per round, not one per call
    assert sorted(asked["w1"][0].decode().strip(",").split(",")) == ["s1", "s2"]
    assert [c.asr_progress.next_utterance for c in calls] == [1, 2, 3]  # each its own progress
    assert [c.reclaims for c in calls] == [1, 1, 0]  # each of the dead worker's calls claimed again, once
    assert calls[0].asr_worker == calls[1].asr_worker == "w-new" and asked["w-new"]  # and watched on its new worker


def test_a_worker_that_dies_holding_a_progress_question_is_found_by_the_pings(nats_server):
    """The worker took the progress question and died before answering: the
    question waits out its timeout (here far longer than the test), but the
    pings find the worker gone and its call is claimed again."""

    async def scenario():
        nc = await bus.connect(nats_server.url)
        took = asyncio.Event()

        async def on_alive(msg):
            if not msg.data:
                await msg.respond(b"1")
            else:
                took.set()  # ... and never answers: it is dying

        sub = await nc.subscribe(subjects.asr_alive("w1"), cb=on_alive)
        call = FakeCall("s1", "w1")
        watch = AsrWatch(nc, every=0.1, ping_every=0.05, progress_timeout=120.0)
        try:
            watch.add(call)
            await asyncio.wait_for(took.wait(), 10)
            await sub.unsubscribe()  # gone, with the question in hand
            await nc.flush()
            deadline = asyncio.get_running_loop().time() + 20
            while call.reclaims == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            return call.reclaims
        finally:
            watch.close()
            call.tasks.cancel()
            await nc.close()

    assert asyncio.run(scenario()) == 1


def test_a_reclaim_answered_by_the_same_worker_replays_nothing(nats_server):
    """"No responders" is not always death: in a NATS cluster a worker whose
    node died is unreachable until its connection moves (a few ms). A claim
    answered by that same worker finds the session still there (claims are
    idempotent): the call's recent audio must not be sent again (the worker
    would hear that turn twice). Answered by another worker, it is replayed,
    and from then on the caller's audio names that worker: the first one, if
    it was only unreachable, hears it has lost the session and lets go."""
    from parley import telemetry
    from parley_gateway.call import Call, Switchboard
    from test_call_telemetry import Line

    async def scenario(answering: str):
        nc = await bus.connect(nats_server.url)
        heard: list[bytes] = []
        named: list[str] = []
        try:

            async def on_claim(msg):
                claim = contract.decode(msg.data, contract.AsrClaim)
                await msg.respond(contract.encode(contract.AsrClaimed(session=claim.session, worker=answering)))

            async def on_audio(msg):
                heard.append(msg.data)
                named.append((msg.headers or {}).get(subjects.H_WORKER, ""))

            await nc.subscribe(subjects.ASR_CLAIM, cb=on_claim)
            stats: dict = {}
            call = Call(Switchboard(nc, stats, telemetry.current()), Line(), session="pcm-rejoin")
            await nc.subscribe(subjects.audio_in(call.session), cb=on_audio)
            call.asr_worker = "w-1"
            now = time.time()
            call.recent_audio.extend((now - 0.2 + i * 0.02, bytes(640)) for i in range(10))
            call.asr_checked_at = now - 0.3
            await call._reclaim_asr()
            await call._to_asr(b"live")  # the caller's next audio
            # A marker after whatever the reclaim sent, on the same subject and
            # connection: once it is heard, so is any replay (NATS keeps that order).
            await nc.publish(subjects.audio_in(call.session), b"marker")
            deadline = time.monotonic() + 10
            while b"marker" not in heard:
                assert time.monotonic() < deadline, "the marker never came back"
                await asyncio.sleep(0.01)
            return call.asr_worker, heard.index(b"live"), set(named[: heard.index(b"marker")]), stats
        finally:
            await nc.close()

    worker, replayed, named, stats = asyncio.run(scenario("w-1"))
    assert (worker, replayed, named) == ("w-1", 0, {""}) and stats.get("asr_rejoins") == 1 and "asr_reclaims" not in stats
    worker, replayed, named, stats = asyncio.run(scenario("w-2"))
    assert (worker, replayed, named) == ("w-2", 10, {"w-2"}) and stats.get("asr_reclaims") == 1 and "asr_rejoins" not in stats
