"""Which orchestrator replica reduces which sessions: partition ownership.

Every session event is stored in the stream ``subjects.EVENTS_STREAM`` under
``parley.evt.<partition>.<session>.<producer>``; the partition is the server's
deterministic hash of the session id (a subject transform). Each partition has
one durable pull consumer (``evt-<p>``) in the *pinned client* priority policy
(nats-server 2.11+, ADR-42): every replica keeps a pull waiting on every
partition, and the server delivers a partition's events to one of them only,
the pinned one, marking each delivery with a ``Nats-Pin-Id``. A replica is the
owner of a partition from its first delivery with a new pin id until a pull
with that id is refused (status 423), or until it gives the partition up. When
the owner stops pulling (it died) for ``PIN_TIMEOUT``, the server unpins it
and pins the next waiting pull when the partition next has a message; beats
(one tiny message per partition every ``BEAT_EVERY``, from every replica) make
sure that happens even while the partition's calls are quiet. A replica beats
only the partitions it does not own and no other live member announces
holding (a held partition is alive as long as its holder is), so a lone
replica, owning them all, sends none, and neither do replicas that share
them out; a hung holder stops announcing, and its partitions are beaten again
``MEMBER_TTL`` after its last announcement.

nats-py 2.16 has no priority-group API, so pulls are raw JetStream API
requests (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with ``group`` and
``id``), and deliveries arrive on one inbox subscription per partition.

Faster than the pin timeout: every replica answers on
``subjects.orchestrator_alive(replica)``, and the others ask each member
every ``PROBE_EVERY``; "no responders" means the process is
gone (its connection closed with it), and the prober unpins that member's
partitions at once (``$JS.API.CONSUMER.UNPIN``), pulls them (also any it had
given up to that member and was not pulling) and beats them, so the next
message pins this live replica. A replica that stops cleanly unpins its own.

Balance: replicas announce themselves (and the partitions they hold) on
``subjects.ORCHESTRATOR_MEMBERS``; a replica holding more than its fair share
(partitions / replicas, rounded up) while another holds less gives the excess
up: it stops pulling those partitions for ``GIVE_UP_FOR`` and hands them over
at once (``_hand_over``): its waiting pulls lose their inbox (the server skips
a pull nobody listens to) and it unpins, so the next event pins another
replica's waiting pull. Waiting out the pin timeout instead held a given-up
partition's events for up to ``PIN_TIMEOUT`` (0.5-0.7 s measured), and a
caller's answer with them.

Timings (issue 10: the next turn within 2 s of a kill): a killed replica's
partitions are found within ``PROBE_EVERY`` and gained a few ms later;
``stats["takeover_ms"]`` (the runtime) and the "orchestrator replica gone" /
"partition handed over" log lines carry the rest.

Nothing here decides about a conversation: deliveries go to the runtime, which
reduces them in order and acks them (``Delivery.ack``) once the state that
includes them is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import nats.errors
from nats.aio.client import Client

from parley import subjects

log = logging.getLogger("parley.orchestrator.partitions")

PIN_TIMEOUT = 1.0  # s without a pull before the server moves the pin
PULL_EVERY = 0.3  # s between pulls (well inside PIN_TIMEOUT)
PULL_EXPIRES = 0.9  # s a pull waits at the server
PULL_BATCH = 1000
BEAT_EVERY = 0.25
ACK_WAIT = 5.0  # s before an unacked delivery is delivered again (to the owner then)
MEMBER_EVERY = 0.5
MEMBER_TTL = 1.6  # s without an announcement: the replica is gone
GIVE_UP_FOR = 2.0
PROBE_EVERY = 0.1  # s between liveness questions to each member (a few bytes each way)
PROBE_TIMEOUT = 0.5  # s: a member slower than this is busy, not dead (the pin timeout covers a hung one)


@dataclass(slots=True)
class Delivery:
    """One stored event, delivered to this replica as owner of its partition."""

    partition: int
    seq: int  # stream sequence: the event's position and id
    subject: str
    data: bytes
    reply: str  # where the ack goes

    def ack(self, nc: Client):
        """The coroutine that acks it (the stream then deletes it)."""
        return nc.publish(self.reply, b"+ACK")


def consumer_config(p: int) -> dict:
    return {
        "durable_name": subjects.event_consumer(p),
        "filter_subjects": [subjects.event_partition(p), subjects.event_beat(p)],
        "ack_policy": "explicit",
        "ack_wait": int(ACK_WAIT * 1e9),
        "max_deliver": -1,
        "max_ack_pending": 20000,
        "max_waiting": 512,
        "deliver_policy": "all",
        "priority_groups": [subjects.EVENT_PIN_GROUP],
        "priority_policy": "pinned_client",
        "priority_timeout": int(PIN_TIMEOUT * 1e9),
    }


async def ensure_consumers(nc: Client, partitions: int) -> None:
    for p in range(partitions):
        body = {"stream_name": subjects.EVENTS_STREAM, "config": consumer_config(p), "action": ""}
        subject = f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.{subjects.event_consumer(p)}"
        reply = json.loads((await nc.request(subject, json.dumps(body).encode(), timeout=5)).data)
        error = reply.get("error")
        if error and error.get("err_code") != 10148:  # 10148: exists with another config
            raise RuntimeError(f"cannot create consumer {subjects.event_consumer(p)}: {error}")


def _stream_seq(reply: str) -> int:
    """The stream sequence in a JetStream ack subject (v1 and v2 forms)."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


@dataclass
class Partition:
    index: int
    pin: str | None = None  # set while this replica owns the partition
    paused_until: float = 0.0  # giving it up: no pulls until then
    inbox: str = ""
    sub: object = None  # the inbox's subscription (a new one at each hand-over)


@dataclass
class Ownership:
    """Pulls every partition; tells the runtime what it owns and what arrives.

    ``on_delivery(delivery)`` must be quick (it runs in the inbox callback, one
    message at a time); ``on_gained(p)`` / ``on_lost(p)`` mark ownership changes.
    """

    nc: Client
    replica: str
    on_delivery: Callable[[Delivery], None]
    on_gained: Callable[[int], None]
    on_lost: Callable[[int], None]
    partitions: int = subjects.EVENT_PARTITIONS
    stats: dict[str, int] = field(default_factory=lambda: {"gained": 0, "lost": 0, "given_up": 0, "beats": 0})

    def __post_init__(self) -> None:
        self.parts = [Partition(p) for p in range(self.partitions)]
        self.members: dict[str, tuple[float, tuple[int, ...]]] = {}  # replica -> (last seen, partitions held)
        self.subs: list = []
        self.tasks: list[asyncio.Task] = []
        self.probes: set[asyncio.Task] = set()  # liveness questions in flight

    def owned(self) -> list[int]:
        return [p.index for p in self.parts if p.pin]

    async def start(self) -> None:
        await ensure_consumers(self.nc, self.partitions)
        for part in self.parts:
            await self._new_inbox(part)
        self.subs.append(await self.nc.subscribe(subjects.ORCHESTRATOR_MEMBERS, cb=self._on_member))
        self.subs.append(await self.nc.subscribe(subjects.orchestrator_alive(self.replica), cb=self._on_alive))
        for loop in (self._pull_loop, self._beat_loop, self._member_loop, self._probe_loop):
            task = asyncio.create_task(loop(), name=f"partitions{loop.__name__}")
            task.add_done_callback(self._crashed)
            self.tasks.append(task)

    def _crashed(self, task: asyncio.Task) -> None:
        """A loop that raised: this replica no longer pulls, beats or watches (stats loop_crashes)."""
        if not task.cancelled() and task.exception() is not None:
            self.stats["loop_crashes"] = self.stats.get("loop_crashes", 0) + 1
            log.critical("partition loop %s crashed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        for task in [*self.tasks, *self.probes]:
            task.cancel()
        for sub in [*self.subs, *(part.sub for part in self.parts if part.sub is not None)]:
            await sub.unsubscribe()
        for p in self.owned():  # hand over now, not after the pin timeout
            await self._unpin(p)

    async def _unpin(self, p: int) -> None:
        subject = f"$JS.API.CONSUMER.UNPIN.{subjects.EVENTS_STREAM}.{subjects.event_consumer(p)}"
        try:
            await self.nc.request(subject, json.dumps({"group": subjects.EVENT_PIN_GROUP}).encode(), timeout=2)
        except Exception as exc:  # noqa: BLE001 - the pin timeout does it anyway
            log.warning("unpin failed", extra={"partition": p, "error": str(exc)})

    async def _on_alive(self, msg) -> None:
        if msg.reply:
            await msg.respond(b"1")

    async def _new_inbox(self, part: Partition) -> None:
        """Deliveries for ``part`` come to a fresh inbox; pulls sent to the old
        one are void (the server skips a pull whose inbox has no subscriber)."""
        old = part.sub
        part.inbox = self.nc.new_inbox()
        part.sub = await self.nc.subscribe(part.inbox, cb=self._receiver(part))
        if old is not None:
            await old.unsubscribe()

    async def _probe_loop(self) -> None:
        """Find a dead member at once, and take over what it held. Each round's
        questions are tasks of their own: one the member died holding waits out
        its timeout without holding up the next round (whose question gets
        "no responders" at once)."""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            # Every other member, also one that announced nothing held yet: it
            # may have been pinned on what this replica just gave it (orphans).
            for replica, (_, held) in list(self.members.items()):
                if replica != self.replica:
                    task = asyncio.create_task(self._probe(replica, held), name=f"probe-{replica}")
                    self.probes.add(task)
                    task.add_done_callback(self.probes.discard)

    async def _probe(self, replica: str, held: tuple[int, ...]) -> None:
        try:
            await self.nc.request(subjects.orchestrator_alive(replica), b"", timeout=PROBE_TIMEOUT)
        except nats.errors.NoRespondersError:
            pass
        except Exception:  # noqa: BLE001 - slow is not dead
            return
        else:
            return
        if self.members.pop(replica, None) is None:
            return  # another question found it first
        try:
            await self._take_over_from(replica, held)
        except Exception:  # noqa: BLE001 - logged; the pin timeout still moves its partitions
            self.stats["probe_errors"] = self.stats.get("probe_errors", 0) + 1
            log.exception("taking over a dead member's partitions failed", extra={"gone": replica})

    async def _take_over_from(self, replica: str, held: tuple[int, ...]) -> None:
        found = time.monotonic()
        self.stats["dead_members"] = self.stats.get("dead_members", 0) + 1
        # And any partition this replica gave up that no live member claims
        # yet (given to the dead one before it announced it).
        claimed = {p for r, (_, h) in self.members.items() if r != self.replica for p in h}
        orphans = [part.index for part in self.parts if part.paused_until > found and part.index not in claimed and part.index not in held]
        await asyncio.gather(*(self._take_back(self.parts[p]) for p in [*held, *orphans] if self.parts[p].pin is None))
        log.warning(
            "orchestrator replica gone: its partitions unpinned and pulled",
            extra={"gone": replica, "partitions": list(held), "orphans": orphans, "took_ms": round((time.monotonic() - found) * 1000, 1)},
        )

    async def _take_back(self, part: Partition) -> None:
        """A dead member's partition: unpinned, pulled, beaten, so the beat pins our pull."""
        part.paused_until = 0.0  # perhaps given up to that member a moment ago: pull it again now
        await self._unpin(part.index)
        await self._pull(part)
        await self.nc.publish(subjects.event_beat(part.index), b"")

    async def _pull(self, part: Partition) -> None:
        request = {"batch": PULL_BATCH, "expires": int(PULL_EXPIRES * 1e9), "group": subjects.EVENT_PIN_GROUP}
        if part.pin:
            request["id"] = part.pin
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.{subjects.event_consumer(part.index)}"
        await self.nc.publish(subject, json.dumps(request).encode(), reply=part.inbox)

    # ------------------------------------------------------------- pulling
    async def _pull_loop(self) -> None:
        while True:
            now = time.monotonic()
            for part in self.parts:
                if part.paused_until <= now:
                    await self._pull(part)
            await asyncio.sleep(PULL_EVERY)

    def _receiver(self, part: Partition):
        async def receive(msg) -> None:
            headers = msg.headers
            if not msg.data and headers and "Status" in headers:
                if headers["Status"] == "423":  # our pin id is not the pinned one any more
                    self._lose(part, "pin moved")
                return  # 408/404/409: a pull expired or ended, nothing to do
            pin = headers.get("Nats-Pin-Id") if headers else None
            if part.paused_until > time.monotonic():
                return  # given up: unacked, the new owner reads it from the stream
            if pin and pin != part.pin:
                if part.pin:
                    self._lose(part, "pin changed")
                part.pin = pin
                self.stats["gained"] += 1
                log.info("partition gained", extra={"partition": part.index, "replica": self.replica})
                self.on_gained(part.index)
            if msg.subject.startswith(subjects.PREFIX + ".beat."):
                self.stats["beats"] += 1
                await self.nc.publish(msg.reply, b"+ACK")
                return
            self.on_delivery(Delivery(part.index, _stream_seq(msg.reply), msg.subject, msg.data, msg.reply))

        return receive

    def _lose(self, part: Partition, why: str) -> None:
        if part.pin is None:
            return
        part.pin = None
        self.stats["lost"] += 1
        log.info("partition lost: %s", why, extra={"partition": part.index, "replica": self.replica})
        self.on_lost(part.index)

    # ------------------------------------------------------- beats, balance
    async def _beat_loop(self) -> None:
        while True:
            claimed = self._claimed_by_others()
            for part in self.parts:
                if part.pin is None and part.index not in claimed:
                    await self.nc.publish(subjects.event_beat(part.index), b"")
                    self.stats["beats_sent"] = self.stats.get("beats_sent", 0) + 1
            await asyncio.sleep(BEAT_EVERY)

    def _claimed_by_others(self) -> set[int]:
        """Partitions another live member says it holds: not beaten. Its own
        pulls keep the pin there, so a beat would only be stored, delivered
        and acked for nothing (with two replicas, 48 a second). A member that
        dies is found by the probes, which beat what it held; one that hangs
        stops announcing, and after MEMBER_TTL its partitions are beaten
        again (the pin timeout has freed them by then). A member that lost
        a partition it still announces beats it itself (it does not own it)."""
        now = time.monotonic()
        return {p for r, (seen, held) in self.members.items() if r != self.replica and now - seen < MEMBER_TTL for p in held}

    async def _member_loop(self) -> None:
        while True:
            owned = self.owned()
            await self.nc.publish(subjects.ORCHESTRATOR_MEMBERS, json.dumps({"replica": self.replica, "held": owned}).encode())
            for part in self._rebalance(len(owned)):
                await self._hand_over(part)
            await asyncio.sleep(MEMBER_EVERY)

    async def _hand_over(self, part: Partition) -> None:
        """A given-up partition goes to another replica now: our waiting pulls
        are voided, then the pin, so its next event pins another's pull."""
        began = time.monotonic()
        await self._new_inbox(part)
        await self._unpin(part.index)
        log.info("partition handed over", extra={"partition": part.index, "replica": self.replica, "took_ms": round((time.monotonic() - began) * 1000, 1)})

    async def _on_member(self, msg) -> None:
        try:
            body = json.loads(msg.data)
            self.members[str(body["replica"])] = (time.monotonic(), tuple(int(p) for p in body["held"]))
        except (ValueError, KeyError, TypeError):
            log.warning("bad member announcement dropped")

    def _rebalance(self, held: int) -> list[Partition]:
        """The partitions to give up (paused and lost here; ``_hand_over`` next)."""
        now = time.monotonic()
        alive = {r: len(h) for r, (seen, h) in self.members.items() if now - seen < MEMBER_TTL}
        alive[self.replica] = held
        fair = math.ceil(self.partitions / len(alive))
        if held <= fair or not any(h < fair for r, h in alive.items() if r != self.replica):
            return []
        given = []
        for p in self.owned()[fair:]:
            part = self.parts[p]
            part.paused_until = now + GIVE_UP_FOR
            self.stats["given_up"] += 1
            self._lose(part, f"given up: {held} held, fair share {fair} of {len(alive)} replicas")
            given.append(part)
        return given
