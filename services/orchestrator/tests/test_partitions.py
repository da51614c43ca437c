"""Partition ownership around a real nats-server: how fast events move to
another replica when one joins (a hand-over) or dies (a take-back).

Both must happen at once, not after a timeout: while a partition has no
replica pulling it, its calls' events wait, and so do their answers (issue 10:
the next turn within 2 s of a kill). The tests stretch the timeouts the old
behaviour waited out, so that waiting shows up as a failure, not as a delay.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from parley import bus, subjects
from parley.natsd import NatsServer, free_port
from parley_orchestrator import partitions
from parley_orchestrator.adapters.fixed import FixedLatencyBrain
from parley_orchestrator.runtime import Runtime

from test_runtime import doomed_replica


class NoTools:
    def schemas(self):
        return []


@pytest.fixture
def nats(tmp_path):
    with NatsServer(free_port(), tmp_path / "nats") as server:
        yield server


async def _until(pred, timeout: float, what) -> None:
    """Wait for ``pred()``; ``what`` (text, or a function giving it) says what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(what() if callable(what) else what)


def _replica(nc, name: str) -> Runtime:
    return Runtime(nc=nc, brain=FixedLatencyBrain(first_token=0.0, per_token=0.0), tools=NoTools(), replica=name)


def test_a_replica_that_joins_gets_its_share_handed_over_not_after_the_pin_timeout(nats, monkeypatch):
    """The replica giving partitions up voids its waiting pulls and unpins them:
    with a pin timeout far longer than the wait, the newcomer still gets its share."""
    monkeypatch.setattr(partitions, "PIN_TIMEOUT", 60.0)  # the consumers are made with it (priority_timeout)

    async def scenario():
        nc1, nc2 = await bus.connect(nats.url), await bus.connect(nats.url)
        first, second = _replica(nc1, "first"), _replica(nc2, "second")
        await first.start()
        await _until(lambda: len(first.ownership.owned()) == first.partitions, 15, "the first replica owns every partition")
        await second.start()
        fair = first.partitions // 2
        await _until(
            lambda: len(second.ownership.owned()) == fair and len(first.ownership.owned()) == fair, 20,
            lambda: f"not shared out: {first.ownership.owned()} / {second.ownership.owned()}",
        )  # fmt: skip
        assert first.ownership.stats["given_up"] == fair
        for r, nc in ((first, nc1), (second, nc2)):
            await r.stop()
            await nc.close()

    asyncio.run(scenario())




async def _survivor_then_doomed(url: str):
    """A replica ("survivor") owning every partition, then a second
    ("doomed", a process of its own, ready): (connection, survivor, process)."""
    nc = await bus.connect(url)
    survivor = _replica(nc, "survivor")
    await survivor.start()
    await _until(lambda: len(survivor.ownership.owned()) == survivor.partitions, 15, "the survivor owns every partition")
    proc = doomed_replica(url)
    try:
        assert (await asyncio.to_thread(proc.stdout.readline)).strip() == b"ready"
    except BaseException:
        proc.kill()
        raise
    return nc, survivor, proc


def test_partitions_given_to_a_replica_that_dies_are_pulled_again_at_once(nats, monkeypatch):
    """kill -9 of a replica just after it was given partitions: the giver does
    not sit out its give-up pause; it takes them back as soon as it finds the
    replica gone."""
    monkeypatch.setattr(partitions, "GIVE_UP_FOR", 60.0)

    async def scenario():
        nc, survivor, proc = await _survivor_then_doomed(nats.url)
        try:
            await _until(lambda: survivor.ownership.stats["given_up"] > 0, 20, "partitions given up to the newcomer")
            given = [p.index for p in survivor.ownership.parts if p.paused_until > time.monotonic()]
            assert given, "given-up partitions are paused here"
            proc.kill()
            proc.wait()
            await _until(lambda: len(survivor.ownership.owned()) == survivor.partitions, 20, lambda: f"not taken back: owns {survivor.ownership.owned()}, {survivor.ownership.stats}")
            assert survivor.ownership.stats["dead_members"] == 1
            assert all(survivor.ownership.parts[p].paused_until == 0.0 for p in given)
        finally:
            proc.kill()
        await survivor.stop()
        await nc.close()

    asyncio.run(scenario())


def test_a_member_that_dies_holding_a_liveness_question_is_still_found_at_once(nats, monkeypatch):
    """The question in flight waits out its timeout (here longer than the
    test); the next round's question gets "no responders" and finds it gone."""
    monkeypatch.setattr(partitions, "PROBE_TIMEOUT", 120.0)

    async def scenario():
        nc, ghost = await bus.connect(nats.url), await bus.connect(nats.url)
        survivor = _replica(nc, "survivor")
        await survivor.start()
        asked = asyncio.Event()

        async def hangs(msg):
            asked.set()  # ... and never answers: it is dying

        sub = await ghost.subscribe(subjects.orchestrator_alive("ghost"), cb=hangs)
        deadline = time.monotonic() + 10
        while not asked.is_set():  # announced as a member until the survivor asks it
            assert time.monotonic() < deadline, "the survivor never asked the new member"
            await ghost.publish(subjects.ORCHESTRATOR_MEMBERS, json.dumps({"replica": "ghost", "held": []}).encode())
            await asyncio.sleep(0.1)
        await sub.unsubscribe()
        await ghost.flush()
        await _until(lambda: survivor.ownership.stats.get("dead_members") == 1, 20, "the dead member was not found")
        await survivor.stop()
        await nc.close()
        await ghost.close()

    asyncio.run(scenario())


def test_replicas_that_share_the_partitions_send_no_beats_and_a_hung_ones_are_beaten_and_taken(nats):
    """A beat into a partition another live member holds is stored,
    delivered and acked for nothing: none is sent while two replicas share
    them out. A replica that hangs (SIGSTOP: its connection stays up, so the
    probes do not find it dead) stops announcing; its partitions are beaten
    again and taken over, quiet as they are (no event is published here)."""

    async def scenario():
        nc, survivor, proc = await _survivor_then_doomed(nats.url)
        try:
            fair = survivor.partitions // 2
            await _until(lambda: len(survivor.ownership.owned()) == fair and "doomed" in survivor.ownership.members, 20, "partitions shared out")
            await _until(lambda: set(survivor.ownership.members["doomed"][1]) == set(range(survivor.partitions)) - set(survivor.ownership.owned()), 10,
                         lambda: f"the newcomer does not announce the rest: {survivor.ownership.members}")  # fmt: skip
            beats: list[str] = []

            async def count(msg):
                beats.append(msg.subject)

            watch = await nc.subscribe(subjects.EVENT_BEATS, cb=count)
            await asyncio.sleep(4 * partitions.BEAT_EVERY)
            assert not beats, f"beats into partitions a live member holds: {sorted(set(beats))}"
            sent = survivor.ownership.stats.get("beats_sent", 0)
            proc.send_signal(signal.SIGSTOP)
            hung = time.monotonic()
            await _until(lambda: len(survivor.ownership.owned()) == survivor.partitions, 20, lambda: f"not taken over: owns {survivor.ownership.owned()}, {survivor.ownership.stats}")
            assert survivor.ownership.stats.get("beats_sent", 0) > sent
            # Not before the hung member's announcements ran out (nor the pin timeout).
            assert time.monotonic() - hung >= min(partitions.PIN_TIMEOUT, partitions.MEMBER_TTL - partitions.MEMBER_EVERY)
            assert survivor.ownership.stats.get("dead_members", 0) == 0  # hung, not found dead
            assert beats, "taken over without a beat: the test does not test what it says"
            await watch.unsubscribe()
        finally:
            proc.kill()
            proc.wait()
        await survivor.stop()
        await nc.close()

    asyncio.run(scenario())
