"""Stack-wide admission (issue 10 point 7): every service reports its load,
and a gateway refuses a new call when any kind of service is at capacity.

Each replica of each service (gateway, asr, orchestrator, tts) runs a
``Reporter``: every ``EVERY`` seconds it publishes a ``contract.LoadReport``
(the sessions it carries now, and its capacity: the service's
``PARLEY_<KIND>_CAPACITY`` setting, from the capacity benchmark) on
``subjects.load(kind, instance)``, core NATS. Nothing is stored: a load
figure older than a few seconds is worth nothing.

Each gateway keeps a ``LoadBoard``: the latest report of every replica it
hears. A replica not heard for ``TTL`` seconds is gone and its capacity with
it (a killed process just stops reporting); one stopping cleanly says so
(``gone``) and leaves at once. A gateway that starts asks every replica for a
report now (``subjects.LOAD_ASK``), so it does not admit blindly for a period.

``LoadBoard.full()`` is the first kind whose replicas together carry as many
sessions as they can: the sum of their ``active`` (plus the calls this
gateway let in since that kind last reported: reports are a second old at
most, and a burst of calls must not all get in on one stale figure) reaches
the sum of their ``capacity``. A kind nobody reports, or whose replicas all
say 0 (no limit), never refuses: admission protects the calls of a working
stack; it does not judge whether a stack works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from nats.aio.client import Client

from . import contract, subjects

log = logging.getLogger("parley.load")

EVERY = 1.0  # s between a replica's reports
TTL = 3.5  # s without a report: the replica is gone
# A call let in this long before a report may not be in it yet (the
# orchestrator counts a session once its SessionStarted is reduced): counted
# on top of it too. Erring on the side of refusing: measured 13 let in for
# an orchestrator capacity of 12 without it (bench/admission.py, 30 offered).
LAG = 0.25
KINDS = ("gateway", "asr", "orchestrator", "tts")


class Reporter:
    """Publishes one replica's load every ``every`` seconds, and at once when a
    gateway asks. ``active``: how many sessions it carries now."""

    def __init__(self, nc: Client, kind: str, instance: str, active: Callable[[], int], capacity: int, every: float = EVERY):
        self.nc, self.kind, self.instance, self.active, self.capacity, self.every = nc, kind, instance, active, capacity, every
        self.subject = subjects.load(kind, instance)
        self._task: asyncio.Task | None = None
        self._sub = None
        self.sent = 0
        self.errors = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(subjects.LOAD_ASK, cb=self._on_ask)
        self._task = asyncio.create_task(self._loop(), name=f"load-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await _unsubscribe(self._sub)
        self._sub = None
        await self.report(gone=True)

    def make(self, gone: bool = False) -> contract.LoadReport:
        active = 0 if gone else int(self.active())
        return contract.LoadReport(kind=self.kind, instance=self.instance, active=active, capacity=self.capacity, gone=gone)

    async def report(self, gone: bool = False) -> None:
        try:
            await self.nc.publish(self.subject, contract.encode(self.make(gone)))
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a closed or reconnecting connection: the next report says it
            self.errors += 1
            if not gone:
                log.warning("load report not sent: %s", exc, extra={"kind": self.kind, "instance": self.instance})

    async def _on_ask(self, msg) -> None:
        await self.report()

    async def _loop(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self.every)


@dataclass(frozen=True)
class Total:
    """One kind of service, all its live replicas together."""

    kind: str
    active: int
    capacity: int
    replicas: int

    def describe(self) -> str:
        return f"the {self.kind} service is full, {self.active} of {self.capacity} sessions on {self.replicas} replica{'s' * (self.replicas != 1)}"


class LoadBoard:
    """A gateway's view of the stack's load (see the module doc)."""

    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self.reports: dict[tuple[str, str], tuple[contract.LoadReport, float]] = {}
        self.admitted: list[float] = []  # when this gateway let calls in (the last ttl seconds)
        self.bad = 0
        self._sub = None

    async def start(self, nc: Client) -> None:
        self._sub = await nc.subscribe(subjects.LOAD_ALL, cb=self._on_report)
        await nc.publish(subjects.LOAD_ASK, b"")

    async def stop(self) -> None:
        await _unsubscribe(self._sub)
        self._sub = None

    async def _on_report(self, msg) -> None:
        try:
            report = contract.decode(msg.data, contract.LoadReport)
        except (contract.DecodeError, contract.ValidationError) as exc:
            self.bad += 1
            log.warning("bad load report dropped", extra={"subject": msg.subject, "error": str(exc)})
            return
        self.note(report)

    def note(self, report: contract.LoadReport) -> None:
        key = (report.kind, report.instance)
        if report.gone:
            self.reports.pop(key, None)
        else:
            self.reports[key] = (report, self.clock())

    def let_in(self) -> None:
        """This gateway admitted a call (counted against every kind until
        that kind's next report)."""
        now = self.clock()
        self.admitted = [t for t in self.admitted if t > now - self.ttl] + [now]

    def totals(self) -> dict[str, Total]:
        now = self.clock()
        for key in [k for k, (_, at) in self.reports.items() if at <= now - self.ttl]:
            del self.reports[key]
        out: dict[str, Total] = {}
        oldest: dict[str, float] = {}
        for (kind, _), (r, at) in self.reports.items():
            t = out.get(kind) or Total(kind, 0, 0, 0)
            out[kind] = Total(kind, t.active + r.active, t.capacity + r.capacity, t.replicas + 1)
            oldest[kind] = min(oldest.get(kind, at), at)
        # Calls let in after a kind's oldest live report (or just before it,
        # LAG) may be in none of them: count them, so a burst cannot overshoot.
        return {k: Total(k, t.active + sum(1 for a in self.admitted if a > oldest[k] - LAG), t.capacity, t.replicas) for k, t in out.items()}

    def full(self, skip: tuple[str, ...] = ("gateway",)) -> Total | None:
        """The first kind at capacity (None: room everywhere). ``skip``: kinds
        the caller judges itself (a gateway counts its own calls exactly)."""
        for kind, total in self.totals().items():
            if kind in skip or total.capacity <= 0:
                continue
            # A replica saying 0 (no limit of its own) makes the kind unlimited.
            if any(r.kind == kind and r.capacity <= 0 for r, _ in self.reports.values()):
                continue
            if total.active >= total.capacity:
                return total
        return None

    def snapshot(self) -> dict:
        """For /healthz and the inspector."""
        return {k: {"active": t.active, "capacity": t.capacity, "replicas": t.replicas} for k, t in sorted(self.totals().items())}


async def _unsubscribe(sub) -> None:
    """Leave a subscription, if any; the connection may already be closed."""
    if sub is None:
        return
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - a closed connection has no subscription left to leave
        pass
