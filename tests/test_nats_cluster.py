"""A three-node NATS cluster on loopback (issue 10 point 5): three real
nats-servers routed to each other, every stream and KV bucket kept on all
three (PARLEY_NATS_REPLICAS=3), and one node killed with SIGKILL.

* The event stream loses nothing when the node leading it dies: every event a
  producer was told is stored is there afterwards, once, and producers go on
  by themselves (``publish_event`` waits through the new leader's election).
* Calls go on: Twilio-protocol calls over the whole stack, the node leading
  the event stream killed while they hear an answer; every turn of every call
  is answered, the logs replay, and the heard history is exact.

How long the stream has no leader after a kill -9 is nats-server's RAFT
election timeout (4 to 9 s, compiled into the server): the figures go to
docs/BENCHMARKS.md, the assertions here are about what is lost (nothing) and
whether calls go on (all of them).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from chaos import run_chaos

from parley import bus, contract, subjects
from parley.natsd import NatsCluster

ROOT = Path(__file__).resolve().parent.parent


def test_the_event_stream_loses_nothing_when_the_node_leading_it_is_killed(tmp_path):
    async def main(cluster: NatsCluster):
        nc = await bus.connect(cluster.url, replicas=3)
        try:
            await bus.ensure_event_stream(nc)
            js = nc.jetstream()
            info = await js.stream_info(subjects.EVENTS_STREAM)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
            leader = info.cluster.leader
            stored: list[int] = []
            gaps: list[float] = []

            async def producer(k: int) -> None:
                for i in range(10_000):
                    t = time.monotonic()
                    await bus.publish_event(nc, contract.TimerFired(session=f"cl-{k}", at=float(i), name="reprompt", token=i))
                    gaps.append(time.monotonic() - t)
                    stored.append(k)
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.02)

            stop = asyncio.Event()
            producers = [asyncio.create_task(producer(k)) for k in range(3)]
            await asyncio.sleep(1.0)
            before = len(stored)
            cluster.kill(leader)
            killed = time.monotonic()
            while len(stored) < before + 30:  # the producers got going again
                assert time.monotonic() - killed < bus.PUBLISH_PATIENCE, "no event stored since the kill"
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*producers)  # none raised EventNotStored
            after = await js.stream_info(subjects.EVENTS_STREAM)
            return leader, after, len(stored), max(gaps)
        finally:
            await nc.close()

    with NatsCluster(tmp_path / "nats", 3, ROOT / "deploy" / "nats.conf") as cluster:
        cluster.log_dir = tmp_path
        leader, after, n, stall = asyncio.run(main(cluster))
    assert after.cluster.leader != leader
    assert after.state.messages == n  # every acked event, once
    print(f"\n[nats cluster] leader {leader} killed: the event stream stored nothing for {stall:.1f} s, then went on; {n} events, none lost")


def test_calls_go_on_when_the_nats_node_leading_the_event_stream_is_killed(tmp_path, capsys):
    # Answers at the kill wait for the new leader (4-9 s): the limit is the
    # election's plus an answer's, not a 2 s turn.
    result = run_chaos(tmp_path / "stack", calls=3, turns=3, plan=[(5.0, "nats-leader")], answer_limit_ms=14_000, replicas={}, nats_nodes=3)
    with capsys.disabled():
        print("\n[nats cluster] " + json.dumps(result.summary(), indent=1))
    assert [k.key[:6] for k in result.kills] == ["nats-n"] and result.kills[0].mid_answer > 0
    assert not result.problems, "\n".join(result.problems)
    assert len(result.answer_ms) == 3 * 3  # every turn of every call answered
