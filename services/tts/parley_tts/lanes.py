"""Which chunk to synthesize next, and which runs are dead: the worker's bookkeeping.

Pure (no I/O, no clock: ``now`` comes in as an argument), so it is tested on
its own. The worker shell owns one ``Lanes``.

A *lane* is one run's queue of chunks, ``(session, run)``. It exists while
it has a runner: ``submit`` answers ``START`` when a lane is created (the
shell starts one runner task for it) and ``QUEUED`` when the lane's runner
will reach the job; the runner calls ``take`` until it answers ``None``, which
also removes the lane. So chunks of one run are synthesized one after the
other, in arrival order, while lanes of other runs proceed side by side.

``cancel`` removes a lane at once (dropping its queued chunks) and remembers
the run, so that a Synthesize arriving later for it is dropped too; ``end``
does the same for every run of a session. The memory is bounded: entries are
forgotten ``forget_after`` seconds after the cancel, and the oldest go first
when there are more than ``remember``. Run ids only grow within a session, so
a run forgotten after minutes will not be asked for again.

``live(key)`` is what the shell checks before every publish: once a run is
cancelled, nothing of it may leave the worker.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass

Key = tuple[str, int]  # (session, run)


@dataclass(frozen=True, slots=True)
class Job:
    """One Synthesize request as it arrived (``received``: the loop's clock)."""

    session: str
    run: int
    chunk: int
    text: str
    received: float
    # The turn's trace context (W3C headers) the request came with: the chunk's
    # span and its audio messages carry it on.
    trace: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> Key:
        return (self.session, self.run)


class Admit(enum.Enum):
    START = "start"  # a new lane: start its runner
    QUEUED = "queued"  # the lane's runner will take it
    CANCELLED = "cancelled"  # the run was cancelled: drop
    ENDED = "ended"  # the session ended: drop


class Lanes:
    def __init__(self, forget_after: float = 120.0, remember: int = 10_000):
        self.forget_after = forget_after
        self.remember = remember
        self._lanes: dict[Key, deque[Job]] = {}
        # key -> when to forget it; insertion order is expiry order (fixed TTL).
        self._cancelled: OrderedDict[Key, float] = OrderedDict()
        self._ended: OrderedDict[str, float] = OrderedDict()

    # ------------------------------------------------------------ requests
    def submit(self, job: Job, now: float) -> Admit:
        self._forget(now)
        if job.session in self._ended:
            return Admit.ENDED
        if job.key in self._cancelled:
            return Admit.CANCELLED
        lane = self._lanes.get(job.key)
        if lane is None:
            self._lanes[job.key] = deque([job])
            return Admit.START
        lane.append(job)
        return Admit.QUEUED

    def take(self, key: Key) -> Job | None:
        """The lane's next job; ``None`` means the runner stops (lane removed)."""
        lane = self._lanes.get(key)
        if lane is None:
            return None
        if not lane:
            del self._lanes[key]
            return None
        return lane.popleft()

    def live(self, key: Key) -> bool:
        return key in self._lanes

    # ------------------------------------------------------------- cancels
    def cancel(self, key: Key, now: float) -> list[Job]:
        """Forget the run's lane; returns its queued (never started) jobs."""
        self._forget(now)
        self._remember(self._cancelled, key, now)
        return list(self._lanes.pop(key, ()))

    def end(self, session: str, now: float) -> dict[Key, list[Job]]:
        """Drop every lane of the session; returns them with their queued jobs."""
        self._forget(now)
        self._remember(self._ended, session, now)
        keys = [k for k in self._lanes if k[0] == session]
        return {k: list(self._lanes.pop(k)) for k in keys}

    # ------------------------------------------------------------ inspection
    def lanes(self) -> list[Key]:
        return list(self._lanes)

    def queued(self, key: Key) -> int:
        return len(self._lanes.get(key, ()))

    def remembered(self) -> int:
        return len(self._cancelled) + len(self._ended)

    # --------------------------------------------------------------- memory
    def _remember(self, table: OrderedDict, key, now: float) -> None:
        table[key] = now + self.forget_after
        table.move_to_end(key)
        while len(table) > self.remember:
            table.popitem(last=False)

    def _forget(self, now: float) -> None:
        for table in (self._cancelled, self._ended):
            while table and next(iter(table.values())) <= now:
                table.popitem(last=False)
