"""Which chunk to synthesize next, and which runs are dead: the worker's bookkeeping.

Pure (no I/O, no clock: ``now`` comes in as an argument), so it is tested on
its own. The worker shell owns one ``Lanes``.

A *lane* is one run's queue of chunks, ``(session, run)``. It exists while
it has a runner: ``submit`` answers ``START`` when a lane is created (the
shell starts one runner task for it) and ``QUEUED`` when the lane's runner
will reach the job; the runner calls ``take`` until it answers ``None``, which
also removes the lane. So chunks of one run are synthesized one after the
other, in chunk order (a chunk that arrives late goes before the later ones
still queued), while lanes of other runs proceed side by side.

A chunk that arrives *after* a later chunk of its run was started (a dead
worker's request, delivered again to this worker while it speaks the next
chunk) answers ``AHEAD``: the gateway plays chunks in order and is waiting
for that one, so the shell synthesizes it at once, beside the lane's runner,
and calls ``done_ahead`` when it is finished. The lane stays live until the
runner and every AHEAD job are done.

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
    # The session's TTS provider (Synthesize.provider); "" the worker's own.
    provider: str = ""
    # Delivered again (its first worker died or stalled): the worker asks the
    # gateway which piece it needs (``from_piece``; earlier ones are neither
    # sent nor paced).
    redelivered: bool = False
    from_piece: int = 0

    @property
    def key(self) -> Key:
        return (self.session, self.run)


class Admit(enum.Enum):
    START = "start"  # a new lane: start its runner
    QUEUED = "queued"  # the lane's runner will take it
    AHEAD = "ahead"  # earlier than the chunk being synthesized: run it now, beside the runner
    CANCELLED = "cancelled"  # the run was cancelled: drop
    ENDED = "ended"  # the session ended: drop


@dataclass(slots=True)
class _Lane:
    queue: deque[Job]
    running: int = -1  # the chunk the runner took last
    runner: bool = True  # a runner is taking this lane's jobs
    ahead: int = 0  # AHEAD jobs not done yet


class Lanes:
    def __init__(self, forget_after: float = 120.0, remember: int = 10_000):
        self.forget_after = forget_after
        self.remember = remember
        self._lanes: dict[Key, _Lane] = {}
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
            self._lanes[job.key] = _Lane(deque([job]))
            return Admit.START
        if not lane.runner:  # only AHEAD jobs of it are running
            lane.queue.append(job)
            lane.runner = True
            return Admit.START
        if job.chunk < lane.running:
            lane.ahead += 1
            return Admit.AHEAD
        at = next((i for i, queued in enumerate(lane.queue) if queued.chunk > job.chunk), len(lane.queue))
        lane.queue.insert(at, job)
        return Admit.QUEUED

    def take(self, key: Key) -> Job | None:
        """The lane's next job; ``None`` means the runner stops (and the lane
        is removed, unless an AHEAD job of it is still running)."""
        lane = self._lanes.get(key)
        if lane is None:
            return None
        if not lane.queue:
            lane.runner = False
            self._drop_if_idle(key, lane)
            return None
        job = lane.queue.popleft()
        lane.running = job.chunk
        return job

    def done_ahead(self, key: Key) -> None:
        """An AHEAD job of the lane finished (or failed, or was cancelled)."""
        lane = self._lanes.get(key)
        if lane is None:  # cancelled or ended meanwhile
            return
        lane.ahead -= 1
        self._drop_if_idle(key, lane)

    def _drop_if_idle(self, key: Key, lane: _Lane) -> None:
        if not lane.runner and lane.ahead <= 0 and not lane.queue:
            del self._lanes[key]

    def live(self, key: Key) -> bool:
        return key in self._lanes

    # ------------------------------------------------------------- cancels
    def cancel(self, key: Key, now: float) -> list[Job]:
        """Forget the run's lane; returns its queued (never started) jobs."""
        self._forget(now)
        self._remember(self._cancelled, key, now)
        lane = self._lanes.pop(key, None)
        return list(lane.queue) if lane else []

    def end(self, session: str, now: float) -> dict[Key, list[Job]]:
        """Drop every lane of the session; returns them with their queued jobs."""
        self._forget(now)
        self._remember(self._ended, session, now)
        keys = [k for k in self._lanes if k[0] == session]
        return {k: list(self._lanes.pop(k).queue) for k in keys}

    # ------------------------------------------------------------ inspection
    def lanes(self) -> list[Key]:
        return list(self._lanes)

    def queued(self, key: Key) -> int:
        lane = self._lanes.get(key)
        return len(lane.queue) if lane else 0

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
