"""Is each call's ASR worker still alive? One question per worker, not per call.

A call whose ASR worker died must be claimed again at once (``Call._reclaim_asr``),
so the gateway asks the worker every ``ASR_CHECK_S`` on its liveness subject
(``subjects.asr_alive``): "no responders" means the process is gone. Asked
per call, that was a request per call every half second (200 a second at 100
calls, in the gateway, the ASR worker and nats-server alike); here the
gateway asks each worker once per period for all of its calls there (the
body: their session ids, comma-separated) and the worker answers with each
one's progress (``contract.AsrProgressAll``): which utterance it is on, so
that a dead worker's unfinished audio can be given to the next.

Death is found faster than progress is needed: between progress rounds the
gateway pings each worker every ``ASR_PING_S`` (an empty body, answered
"1"), with a short timeout, in its own loop, so neither the period nor a
progress question left unanswered by a worker that died with it in hand (it
waits out its timeout) delays the reclaim. The reclaim then replays from the
last progress (at most ``ASR_CHECK_S`` old), as before.

A slow worker is not a dead one: a timeout changes nothing (two workers on
one session would double every event).
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.errors import NoRespondersError

from parley import contract, subjects

log = logging.getLogger("parley.gateway")

ASR_CHECK_S = 0.5  # s between progress rounds (the replay's starting point)
ASR_PING_S = 0.1  # s between liveness pings (how soon a dead worker is found)
ASR_PING_TIMEOUT_S = 0.25  # s: no answer in this long is a busy worker, not a dead one
ASR_PROGRESS_TIMEOUT_S = 2.0


class AsrWatch:
    def __init__(
        self, nc, every: float = ASR_CHECK_S, stats: dict | None = None, ping_every: float = ASR_PING_S,
        progress_timeout: float = ASR_PROGRESS_TIMEOUT_S,
    ):  # fmt: skip
        self.nc = nc
        self.stats = stats if stats is not None else {}  # the gateway's: watch_errors
        self.every = every
        self.ping_every = ping_every
        self.progress_timeout = progress_timeout
        self.calls: set = set()  # parley_gateway.call.Call
        self.reclaiming: set = set()
        self.tasks: list[asyncio.Task] = []
        self.pings: set[asyncio.Task] = set()  # liveness pings in flight

    def add(self, call) -> None:
        self.calls.add(call)
        if not self.tasks or any(t.done() for t in self.tasks):
            self.close()
            self.tasks = [asyncio.create_task(self._run(), name="asr-watch"), asyncio.create_task(self._ping_loop(), name="asr-ping")]
            for task in self.tasks:
                task.add_done_callback(self._ended)

    def remove(self, call) -> None:
        self.calls.discard(call)

    def close(self) -> None:
        for task in [*self.tasks, *self.pings]:
            task.cancel()

    def _ended(self, task: asyncio.Task) -> None:
        # Started again by the next call added; until then a dead worker goes unnoticed.
        if not task.cancelled() and task.exception() is not None:
            self.stats["watch_errors"] = self.stats.get("watch_errors", 0) + 1
            log.error("the ASR watch stopped", exc_info=task.exception())

    async def _run(self) -> None:
        while self.calls:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - one bad round must not stop the watching
                self.stats["watch_errors"] = self.stats.get("watch_errors", 0) + 1
                log.exception("checking the ASR workers failed")

    async def _ping_loop(self) -> None:
        """Each ping is a task of its own: one a worker died holding waits out
        its timeout without holding up the next round's ("no responders" at once)."""
        while self.calls:
            await asyncio.sleep(self.ping_every)
            for worker, calls in self._by_worker().items():
                task = asyncio.create_task(self._ping(worker, calls), name=f"asr-ping-{worker}")
                self.pings.add(task)
                task.add_done_callback(self._pinged)

    def _pinged(self, task: asyncio.Task) -> None:
        self.pings.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["watch_errors"] = self.stats.get("watch_errors", 0) + 1
            log.error("pinging an ASR worker failed", exc_info=task.exception())

    def _by_worker(self) -> dict[str, list]:
        by_worker: dict[str, list] = {}
        for call in list(self.calls):
            if not call.closed and call.asr_worker and call not in self.reclaiming:
                by_worker.setdefault(call.asr_worker, []).append(call)
        return by_worker

    async def check(self) -> None:
        """One progress round: every worker that holds calls of this gateway, at once."""
        await asyncio.gather(*(self._check(worker, calls) for worker, calls in self._by_worker().items()))

    async def _ping(self, worker: str, calls: list) -> None:
        try:
            await self.nc.request(subjects.asr_alive(worker), b"", timeout=ASR_PING_TIMEOUT_S)
        except NoRespondersError:
            self._gone(worker, calls)
        except Exception:  # noqa: BLE001 - slow or NATS reconnecting: not evidence of death
            return

    def _gone(self, worker: str, calls: list) -> None:
        for call in calls:
            if call.asr_worker == worker and not call.closed and call not in self.reclaiming:
                self.reclaiming.add(call)
                call.tasks.spawn(self._reclaim(call), "reclaim-asr")

    async def _check(self, worker: str, calls: list) -> None:
        # The trailing comma asks for the many-session answer even for one.
        body = ("".join(f"{c.session}," for c in calls)).encode()
        try:
            reply = await self.nc.request(subjects.asr_alive(worker), body, timeout=self.progress_timeout)
        except NoRespondersError:
            self._gone(worker, calls)
            return
        except Exception:  # noqa: BLE001 - slow or NATS reconnecting: not evidence of death
            return
        try:
            progress = {p.session: p for p in contract.decode(reply.data, contract.AsrProgressAll).items}
        except (contract.DecodeError, contract.ValidationError):
            return  # an older worker: alive, no progress
        now = time.time()
        for call in calls:
            p = progress.get(call.session)
            if p is not None:
                call.asr_progress = p
                call.asr_checked_at = now

    async def _reclaim(self, call) -> None:
        try:
            await call._reclaim_asr()
        finally:
            self.reclaiming.discard(call)
