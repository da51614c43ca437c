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

ASR_CHECK_S = 0.5


class AsrWatch:
    def __init__(self, nc, every: float = ASR_CHECK_S, stats: dict | None = None):
        self.nc = nc
        self.stats = stats if stats is not None else {}  # the gateway's: watch_errors
        self.every = every
        self.calls: set = set()  # parley_gateway.call.Call
        self.reclaiming: set = set()
        self.task: asyncio.Task | None = None

    def add(self, call) -> None:
        self.calls.add(call)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="asr-watch")
            self.task.add_done_callback(self._ended)

    def remove(self, call) -> None:
        self.calls.discard(call)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

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

    async def check(self) -> None:
        """One round: every worker that holds calls of this gateway, at once."""
        by_worker: dict[str, list] = {}
        for call in list(self.calls):
            if not call.closed and call.asr_worker and call not in self.reclaiming:
                by_worker.setdefault(call.asr_worker, []).append(call)
        await asyncio.gather(*(self._check(worker, calls) for worker, calls in by_worker.items()))

    async def _check(self, worker: str, calls: list) -> None:
        # The trailing comma asks for the many-session answer even for one.
        body = ("".join(f"{c.session}," for c in calls)).encode()
        try:
            reply = await self.nc.request(subjects.asr_alive(worker), body, timeout=2)
        except NoRespondersError:
            for call in calls:
                if call.asr_worker == worker and not call.closed:
                    self.reclaiming.add(call)
                    call.tasks.spawn(self._reclaim(call), "reclaim-asr")
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
