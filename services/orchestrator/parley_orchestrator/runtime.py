"""The orchestrator's imperative shell: feeds a session's events to the
reducer in order, keeps the state in JetStream KV, logs every step, and
executes the commands.

Order and ownership. Events are stored in the stream ``PARLEY_EVENTS`` (see
``parley.bus.publish_event``) and each partition of it is delivered to one
replica at a time, its owner (``partitions.Ownership``). Within a replica each
session has its own queue and task: a session's events are reduced one batch
after another, in stream order; sessions proceed in parallel.

The state in memory is a cache of the KV value (``Stored``), which also holds
the stream sequence of the last event reduced (``applied``). A cached
session is *warm* while this replica has owned its partition without a break:
deliveries then come in stream order, and any at or below ``applied`` is a
redelivery (acked, not reduced again). A session is *cold* when first seen,
after a partition was gained, or after a compare-and-set conflict (another
replica wrote it): its state is read from KV and every event after
``applied`` is read from the stream itself, in order, before anything else.
The KV write is a compare-and-set on the revision, so two replicas that both
believe they own a session (a pin moved while one was stalled) cannot both
commit; commands run only after the write succeeded, and events are acked
only then, so an event in flight to a replica that dies is delivered again.

Takeover. When a cold session is live and was last written by another
replica, a ``Takeover`` event is reduced first: the reducer restarts the LLM
step that streamed in the old owner's process and re-issues its tool calls.
Timers are re-armed from their deadlines (``Stored.timers``), and the
one-shot commands of the old owner's last batch (``Stored.outbox``: cancels,
flushes, pause/resume, end) are sent again; all of them are idempotent.

Commands go out as messages (TTS requests, playback commands, timers coming
back as events) or as local tasks (LLM streams, tool calls) whose output is
published back as events, never fed to the reducer directly, so a run's
output is subject to the same ordering, logging and staleness checks as
everything else.
"""

from __future__ import annotations

import asyncio
from collections import deque
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Union

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.nuid import NUID

from parley import bus, contract, session_params, subjects, telemetry
from parley.clock import Clock
from parley.contract import (
    AnyCommand,
    AnyEvent,
    CallTool,
    CancelLLM,
    CancelTimer,
    CancelTTS,
    EndSession,
    FlushPlayback,
    LLMDone,
    Usage,
    LLMError,
    LLMToken,
    LLMToolCall,
    PausePlayback,
    ResumePlayback,
    SendDigits,
    SessionControl,
    SessionStarted,
    StartLLM,
    StartTimer,
    Step,
    Synthesize,
    Takeover,
    TimerFired,
    ToolResult,
)

from . import records, reducer
from .adapters import batching
from .adapters.llm import Brain, Done, Token, ToolCallOut
from .partitions import Delivery, Ownership
from .records import Stored, decode_stored

from .tools import ToolContext

if TYPE_CHECKING:
    from .tools import ToolRegistry

log = logging.getLogger("parley.orchestrator")

# Policy fields a session's params cannot set: where calls are transferred,
# and what a recorded caller is told.
DEPLOYMENT_ONLY = ("transfer_to", "consent_text")

# Commands that are sent once and are harmless to send again: kept in the
# outbox of the batch that made them, re-sent by a new owner.
# Commands a new owner sends again from the last batch (all idempotent: a
# Synthesize is stored once by its chunk id, see bus.publish_synthesize).
ONE_SHOT = (CancelLLM, CancelTTS, PausePlayback, ResumePlayback, FlushPlayback, EndSession, Synthesize)
LIVE = frozenset(reducer.LIVE)


@dataclass
class Cached:
    stored: Stored
    revision: int | None  # None: not in KV yet


class _Touch:
    """Queue item: take the session over (load it cold) even with no event."""


TOUCH = _Touch()
Item = Union[Delivery, _Touch]


@dataclass
class Batch:
    """What one pass over a session's queue reduced, before it is committed."""

    steps: list[tuple[Step, reducer.SessionState, reducer.SessionState, reducer.Outcome]] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)  # the steps, as logged
    commands: list[tuple[AnyCommand, reducer.SessionState]] = field(default_factory=list)


@dataclass
class Runtime:
    nc: Client
    brain: Brain
    tools: "ToolRegistry"
    # Defaults merged into SessionStarted.params before the event is reduced
    # (and logged, so replay sees the same event).
    defaults: dict[str, str] = field(default_factory=dict)
    state_ttl: float = 24 * 3600
    # How long a session's event log is kept (PARLEY_LOG_RETENTION_DAYS):
    # the stream's max_age, applied to an existing stream at start too.
    log_retention: float = 7 * 24 * 3600
    replica: str = field(default_factory=lambda: NUID().next().decode()[-10:])
    partitions: int = subjects.EVENT_PARTITIONS
    clock: Clock = field(default_factory=Clock.system)  # the clinic's calendar: "{today}" in the prompt
    tel: telemetry.Telemetry | None = None  # the app's (parley.telemetry.setup); None: telemetry.current()
    about: dict = field(default_factory=dict)  # more for ORCHESTRATOR_INFO (the page's things to say)
    # LLM tokens arriving within this many seconds go as one event, unless one
    # lets the reducer cut a chunk (adapters/batching.py; PARLEY_LLM_TOKEN_BATCH_MS).
    token_batch: float = 0.1
    stats: dict[str, int] = field(
        default_factory=lambda: {"events": 0, "stale": 0, "rejected": 0, "bugs": 0, "duplicate": 0, "redelivered": 0, "cas_retries": 0, "takeovers": 0, "caught_up": 0,
                                 # failures, each logged at error: a batch that raised (retried from the stream), a background task
                                 "batch_failures": 0, "task_errors": 0,
                                 # events refused: a type not its producer's, or naming another session (logged at error)
                                 "events_forged": 0,
                                 # batches whose partition changed hands while they ran: the session is read cold next
                                 "rereads": 0}
    )

    def __post_init__(self) -> None:
        self.tel = self.tel or telemetry.current()
        self.js = self.nc.jetstream()
        self.kv = None
        self.live = None
        self.cache: dict[str, Cached] = {}
        self.partition_of: dict[str, int] = {}
        self.gained_at: dict[int, float] = {}  # partition -> when this replica last gained it (monotonic)
        # partition -> breaks in this replica's ownership of it (each loss and
        # each gain): a batch that spans one must not leave its session warm.
        self.breaks: dict[int, int] = {}
        self.listed: set[str] = set()  # sessions this replica put in the live index
        self.queues: dict[str, asyncio.Queue] = {}
        self.workers: dict[str, asyncio.Task] = {}
        self.llm_tasks: dict[tuple[str, int], tuple[int, asyncio.Task]] = {}
        self.tool_tasks: set[asyncio.Task] = set()
        self.background: set[asyncio.Task] = set()
        # Steps waiting to be stored in the log, per session, in index order;
        # one writer task per session while it has any (see _log_steps).
        self.log_queue: dict[str, deque[tuple[int, bytes]]] = {}
        self.log_writers: dict[str, asyncio.Task] = {}
        self.timers: dict[tuple[str, str, int], asyncio.TimerHandle] = {}
        self.subs = []
        self.observer = None  # observe.StepObserver: spans and metrics from steps
        self.ownership = Ownership(self.nc, self.replica, self._on_delivery, self._on_gained, self._on_lost, self.partitions)

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        self.kv = await self.js.create_key_value(
            KeyValueConfig(bucket=subjects.SESSIONS_BUCKET, history=1, ttl=self.state_ttl, storage=StorageType.FILE, replicas=bus.replicas(self.nc))
        )
        self.live = await self.js.create_key_value(KeyValueConfig(bucket=subjects.LIVE_BUCKET, history=1, ttl=self.state_ttl, storage=StorageType.FILE, replicas=bus.replicas(self.nc)))
        try:
            info = await self.js.stream_info(subjects.LOG_STREAM)
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=subjects.LOG_STREAM, subjects=[subjects.LOG_ALL], storage=StorageType.FILE, max_age=self.log_retention,
                    num_replicas=bus.replicas(self.nc),
                    duplicate_window=30,  # a new owner logs its predecessor's last batch again within seconds
                )  # fmt: skip
            )
        else:
            if info.config.max_age is not None and abs(info.config.max_age - self.log_retention) > 1:
                await self.js.update_stream(_with(info.config, max_age=self.log_retention))
                log.info("event log retention changed", extra={"days": round(self.log_retention / 86400, 3)})
        # update: an existing stream of an older layout, or one a worker made
        # with other subjects, is brought to ours (loudly).
        await bus.ensure_event_stream(self.nc, update=True)
        await bus.ensure_stream(self.nc, bus.tts_stream_config(replicas=bus.replicas(self.nc)), update=True)
        self.subs.append(await self.nc.subscribe(subjects.LLM_CANCEL, cb=self._on_llm_cancel))
        self.subs.append(await self.nc.subscribe(subjects.ORCHESTRATOR_INFO, queue=subjects.ORCHESTRATOR_GROUP, cb=self._on_info))
        await self.ownership.start()

    async def stop(self) -> None:
        await self.ownership.stop()
        for sub in self.subs:
            await sub.unsubscribe()
        if self.log_writers:  # what was decided is logged before the connection goes
            await asyncio.wait(set(self.log_writers.values()), timeout=5.0)
        tasks = [*self.workers.values(), *(t for _, t in self.llm_tasks.values()), *self.tool_tasks, *self.background]
        for task in tasks:
            task.cancel()
        for handle in self.timers.values():
            handle.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_info(self, msg) -> None:
        await msg.respond(contract.to_json({**self.about, "brain": self.brain.name, "replica": self.replica, "partitions": self.ownership.owned()}))

    def _spawn(self, coro, what: str) -> asyncio.Task:
        """A background task with a reference and an error path."""
        task = asyncio.create_task(coro, name=what)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        task.add_done_callback(lambda t: self._failed(t, what))
        return task

    def _failed(self, task: asyncio.Task, what: str) -> None:
        """Every task this runtime starts ends here: a failure is logged and counted (stats task_errors)."""
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.error("%s failed", what, exc_info=task.exception())

    # ------------------------------------------------------------ intake
    def _on_delivery(self, d: Delivery) -> None:
        try:
            session, _producer = subjects.stored_origin(d.subject)
        except ValueError:
            log.warning("event on a bad subject dropped", extra={"subject": d.subject[:200]})
            self._spawn(d.ack(self.nc), "ack")
            return
        self.partition_of[session] = d.partition
        self._enqueue(session, d)

    def _enqueue(self, session: str, item: Item) -> None:
        queue = self.queues.get(session)
        if queue is None:
            queue = self.queues[session] = asyncio.Queue()
            worker = self.workers[session] = asyncio.create_task(self._session_worker(session, queue), name=f"session-{session}")
            worker.add_done_callback(lambda t: self._failed(t, f"the worker of session {session}"))
        queue.put_nowait(item)

    def _break(self, session: str) -> int:
        return self.breaks.get(self.partition_of.get(session, -1), 0)

    def _keep(self, session: str, cached: Cached, breaks: int) -> bool:
        """Cache ``cached`` as the session's warm state, unless its partition
        changed hands while the batch ran: a loss emptied the session's queue
        (those events are unacked in the stream, and only a cold read finds
        them); cached as warm, the next event would be reduced without them and
        their redelivery dropped as already applied."""
        if self._break(session) != breaks:
            self.cache.pop(session, None)
            self.stats["rereads"] += 1
            log.info("partition changed hands during a batch: the session is read again", extra={"session_id": session})
            return False
        self.cache[session] = cached
        return True

    def _on_gained(self, p: int) -> None:
        self.breaks[p] = self.breaks.get(p, 0) + 1
        self.gained_at[p] = time.monotonic()
        for session, part in self.partition_of.items():
            if part == p:
                self.cache.pop(session, None)  # a break in ownership: read it again
        self._spawn(self._take_over_partition(p), f"takeover of partition {p}")

    def _on_lost(self, p: int) -> None:
        self.breaks[p] = self.breaks.get(p, 0) + 1
        for session, part in list(self.partition_of.items()):
            if part != p:
                continue
            self.cache.pop(session, None)
            self.listed.discard(session)
            self._cancel_timers(session)
            queue = self.queues.get(session)
            while queue is not None and not queue.empty():
                queue.get_nowait()  # unacked: the new owner reads them from the stream

    async def _take_over_partition(self, p: int) -> None:
        """Load every live session of a gained partition, so its timers and
        unfinished work resume even if no event of it arrives."""
        try:
            keys = await bus.through_election(self.live.keys, "live index not read", reads=True)
        except NoKeysError:
            return
        prefix = f"{p}."
        for key in keys:
            if key.startswith(prefix):
                session = key[len(prefix) :]
                self.partition_of[session] = p
                self._enqueue(session, TOUCH)

    async def _session_worker(self, session: str, queue: asyncio.Queue) -> None:
        try:
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=300)
                except asyncio.TimeoutError:
                    return  # idle: free the worker; the state stays in KV
                items = [first]
                while not queue.empty() and len(items) < 256:
                    items.append(queue.get_nowait())
                try:
                    ended = await self._process(session, items)
                except Exception:
                    # Nothing acked: the events stay in the stream, and the
                    # session is read again from KV and the stream next time.
                    self.stats["batch_failures"] += 1
                    log.exception("batch failed", extra={"session_id": session})
                    self.cache.pop(session, None)
                    ended = False
                if ended and queue.empty():
                    return
        finally:
            self.queues.pop(session, None)
            self.workers.pop(session, None)
            self.cache.pop(session, None)
            self._cancel_timers(session)

    # ------------------------------------------------------------- reduce+CAS
    async def _load(self, session: str) -> Cached:
        try:
            entry = await bus.through_election(lambda: self.kv.get(session), "session state not read", session, reads=True)
            return Cached(decode_stored(entry.value), entry.revision)
        except KeyNotFoundError:
            return Cached(Stored(consumed=0, state=reducer.initial_state()), None)

    async def _catch_up(self, session: str, applied: int) -> list[tuple[int, str, bytes]]:
        """Every stored event of the session after ``applied``, in order:
        (stream sequence, subject, data)."""
        out: list[tuple[int, str, bytes]] = []
        seq = applied + 1
        # A direct get may be answered by any copy of the stream, and a
        # follower may not have the newest events yet (direct gets do not read
        # your writes: nats.docs "JetStream consistency"): a catch-up that
        # missed one would lose it (the warm path drops its redelivery as
        # applied). With copies, ask the stream's leader.
        direct = bus.replicas(self.nc) == 1
        while True:
            try:
                msg = await bus.through_election(
                    lambda: self.js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject=subjects.stored_events(session), next=True, direct=direct),
                    "stored events not read", session, reads=True,
                )  # fmt: skip
            except NotFoundError:
                return out
            out.append((msg.seq, msg.subject, msg.data or b""))
            seq = msg.seq + 1

    # long: the compare-and-set loop of one batch: read, reduce, write, retry on a conflict; its steps are calls, the loop is the point
    async def _process(self, session: str, items: list[Item]) -> bool:
        deliveries = [i for i in items if isinstance(i, Delivery)]
        breaks = self._break(session)
        for _attempt in range(8):
            cached = self.cache.get(session)
            cold = cached is None
            if cold:
                loading = time.monotonic()
                cached = await self._load(session)
                pending = await self._catch_up(session, cached.stored.applied)
                self.stats["caught_up"] += len(pending)
                loaded_ms = (time.monotonic() - loading) * 1000
            else:
                pending = [(d.seq, d.subject, d.data) for d in deliveries if d.seq > cached.stored.applied]
            events, applied, dropped = self._decode(session, pending, cached.stored.applied)
            # A dropped event (undecodable, forged) changes no state: acked
            # now, so it is not delivered (and refused, and counted) again.
            for d in deliveries:
                if d.seq in dropped:
                    await d.ack(self.nc)
            state = cached.stored.state
            takeover = cold and state.phase in LIVE and cached.stored.owner != self.replica
            if takeover:
                events.insert(0, Takeover(session=session, at=time.time(), owner=self.replica))
            if not events:
                await self._ack(deliveries, cached.stored.applied)
                if cold and self._keep(session, cached, breaks):
                    self._rearm(session, cached.stored)
                return state.phase == reducer.ENDED
            batch, stored = self._reduce(cached.stored, events, applied)
            revision = await self._commit(session, cached, stored)
            if revision is None:
                self.stats["cas_retries"] += 1
                self.cache.pop(session, None)
                continue
            self._keep(session, Cached(stored, revision), breaks)
            break
        else:
            log.error("could not write session state after retries", extra={"session_id": session})
            return False
        await self._ack(deliveries, stored.applied)
        if takeover:
            self.stats["takeovers"] += 1
            gained = self.gained_at.get(self.partition_of.get(session, -1))
            log.info(
                "session taken over",
                extra={
                    "session_id": session, "from": cached.stored.owner, "replica": self.replica, "caught_up": len(pending),
                    "load_ms": round(loaded_ms, 1), "since_gained_ms": round((time.monotonic() - gained) * 1000, 1) if gained else None,
                },
            )  # fmt: skip
        if takeover and cached.stored.unlogged:
            # The old owner may have died between its commit and its log
            # write: log its last batch again (the log drops a step it has).
            for data in cached.stored.unlogged:
                await self._publish_step(session, data)
        await self._after_commit(session, batch, stored, cold, resend=cached.stored.outbox if takeover else ())
        return stored.state.phase == reducer.ENDED

    def _decode(self, session: str, pending: list[tuple[int, str, bytes]], applied: int) -> tuple[list[AnyEvent], int, set[int]]:
        events: list[AnyEvent] = []
        dropped: set[int] = set()
        for seq, subject, data in pending:
            applied = max(applied, seq)
            try:
                event = contract.decode_event(data)
            except (contract.DecodeError, contract.ValidationError) as exc:
                log.warning("undecodable event dropped", extra={"session_id": session, "seq": seq, "error": str(exc)})
                dropped.add(seq)
                continue
            if not self._authentic(session, seq, subject, event):
                dropped.add(seq)
                continue
            events.append(self._enrich(event))
        return events, applied, dropped

    def _authentic(self, session: str, seq: int, subject: str, event: AnyEvent) -> bool:
        """Did the event come from the service that may produce its type, for
        the session it names? NATS lets each service publish under its own
        producer token only (parley.natsauth), so the subject's producer is
        who sent it; a type that is not that producer's (an ASR worker's
        SessionEnded, a gateway's ToolResult) is forged: dropped, counted,
        logged as an error. Never reduced, so it cannot touch the call."""
        try:
            subject_session, producer = subjects.stored_origin(subject)
        except ValueError:
            producer, subject_session = "", ""
        if subject_session == session and contract.may_produce(event, producer) and event.session == session:
            return True
        self.stats["events_forged"] += 1
        log.error(
            "forged event refused",
            extra={"session_id": session, "seq": seq, "event": contract.type_name(event), "producer": producer or subject[:120], "names_session": event.session[:64]},
        )
        return False

    def _reduce(self, before: Stored, events: list[AnyEvent], applied: int) -> tuple[Batch, Stored]:
        batch = Batch()
        state, consumed = before.state, before.consumed
        for event in events:
            prior = state
            state, cmds, outcome = reducer.reduce_or_end(state, event)
            step = records.step(consumed, event, cmds, outcome)
            batch.steps.append((step, prior, state, outcome))
            batch.encoded.append(contract.encode(step))
            batch.commands.extend((cmd, state) for cmd in cmds)
            consumed += 1
        cmds = [c for c, _ in batch.commands]
        stored = Stored(
            consumed=consumed,
            state=state,
            schema=contract.SCHEMA,
            applied=applied,
            owner=self.replica,
            timers=_running_timers(before.timers, cmds, state, time.time()),
            outbox=tuple(c for c in cmds if isinstance(c, ONE_SHOT)),
            unlogged=tuple(batch.encoded),
        )
        return batch, stored

    async def _commit(self, session: str, cached: Cached, stored: Stored) -> int | None:
        """Compare-and-set; None when another replica wrote first."""
        data = contract.encode(stored)
        for _attempt in range(4):
            try:
                if cached.revision is None:
                    return await bus.through_election(lambda: self.kv.create(session, data), "session state not written", session)
                return await bus.through_election(lambda: self.kv.update(session, data, last=cached.revision), "session state not written", session)
            except KeyWrongLastSequenceError:
                return None
            except nats.errors.TimeoutError:
                # Sent but unanswered (the bucket's leader died with it, in a
                # NATS cluster): it may have been written. Look, rather than
                # guess: written by us, it is our commit (its commands must
                # run); written by another, a conflict; unchanged, send again.
                log.warning("session state write unanswered: reading it back", extra={"session_id": session})
                try:
                    entry = await bus.through_election(lambda: self.kv.get(session), "session state not read", session, reads=True)
                except KeyNotFoundError:
                    entry = None
                if entry is not None and entry.value == data:
                    return entry.revision
                if (entry.revision if entry is not None else None) != cached.revision:
                    return None
        raise nats.errors.TimeoutError

    async def _ack(self, deliveries: list[Delivery], applied: int) -> None:
        for d in deliveries:
            if d.seq <= applied:
                await d.ack(self.nc)

    async def _after_commit(self, session: str, batch: Batch, stored: Stored, cold: bool, resend: tuple[AnyCommand, ...]) -> None:
        for (step, before, after, outcome), data in zip(batch.steps, batch.encoded):
            await self._record(session, step, data)
            if outcome.error:
                # A bug in the reducer: the session was ended by this step's commands.
                self.stats["bugs"] += 1
                log.error("reducer bug: session ended\n%s", outcome.trace, extra={"session_id": session, "event": contract.type_name(step.event), "error": outcome.error})
            if self.observer is not None:
                try:
                    self.observer.on_step(session, step, before, after, outcome.path)
                except Exception:  # noqa: BLE001 - telemetry never breaks a call
                    log.exception("observer failed")
        await self._index(session, stored)
        headers = self._headers(session, stored.state)
        for cmd in resend:
            await self._run_command(cmd, headers, stored.state.caller)
        for cmd, after in batch.commands:
            if cold and isinstance(cmd, (StartTimer, CancelTimer)):
                continue  # armed below from the stored deadlines
            await self._run_command(cmd, self._headers(session, after), after.caller)
        if cold:
            self._rearm(session, stored)

    async def _run_command(self, cmd: AnyCommand, headers: dict[str, str], caller: str = "") -> None:
        try:
            await self._execute(cmd, headers, caller=caller)
        except Exception:
            log.exception("command failed", extra={"session_id": cmd.session, "command": type(cmd).__name__})

    async def _index(self, session: str, stored: Stored) -> None:
        """Keep the live index (partition -> live sessions) for takeovers."""
        p = self.partition_of.get(session)
        if p is None:
            return
        key = f"{p}.{session}"
        if stored.state.phase == reducer.ENDED:
            if session in self.listed:
                self.listed.discard(session)
                with contextlib.suppress(Exception):
                    await bus.through_election(lambda: self.live.delete(key), "live index not written", session)
        elif session not in self.listed and stored.state.phase in LIVE:
            await bus.through_election(lambda: self.live.put(key, self.replica.encode()), "live index not written", session)
            self.listed.add(session)

    def _enrich(self, event: AnyEvent) -> AnyEvent:
        """Fill in deployment defaults (system prompt with today's date and
        the caller's number, greeting) that the caller's own params did not set."""
        if not isinstance(event, SessionStarted):
            return event
        params = dict(self.defaults)
        today = self.clock.local(event.at)
        if "system_prompt" in params:
            caller = event.caller or "an unknown number (ask for a name when you need to look up a booking)"
            prompt = params["system_prompt"].replace("{today}", today.strftime("%Y-%m-%d (%A)"))
            params["system_prompt"] = prompt.replace("{caller}", caller)
        # Only what a session may set (parley.session_params; the gateway
        # refused anything else already, with an error to the caller): a
        # system prompt, tools or limits never come from a session.
        refused = [k for k in event.params if not session_params.accepted_by_orchestrator(k)]
        if refused:
            self.stats["params_refused"] = self.stats.get("params_refused", 0) + len(refused)
            log.warning("session parameters refused", extra={"session_id": event.session, "params": sorted(refused)[:20]})
        params.update((k, v) for k, v in event.params.items() if session_params.accepted_by_orchestrator(k))
        # Where calls may be transferred, and the recording notice, are the
        # deployment's to say, never a caller's (a browser's query string, a
        # webhook URL) nor the model's.
        for key in DEPLOYMENT_ONLY:
            params.pop(key, None)
            if key in self.defaults:
                params[key] = self.defaults[key]
        return msgspec.structs.replace(event, params=params)

    async def _publish_step(self, session: str, data: bytes) -> None:
        self._log_steps(session, [(contract.decode_step(data).index, data)])

    def _log_steps(self, session: str, steps: list[tuple[int, bytes]]) -> None:
        """Store steps in the log (``PARLEY_LOG``), in order, each acked by
        the stream and retried like events, with the step's index as its id,
        so a step logged twice (by a new owner, see Stored.unlogged) is
        stored once. A core publish would be lost while a NATS cluster elects
        the log's new leader (seen: 4-9 s after a node's kill -9); the
        session's reduction does not wait for it (one writer per session)."""
        self.log_queue.setdefault(session, deque()).extend(steps)
        if session not in self.log_writers:
            task = asyncio.create_task(self._write_log(session), name=f"log-{session}")
            task.add_done_callback(lambda t: self._failed(t, f"the step log writer of session {session}"))
            self.log_writers[session] = task

    async def _write_log(self, session: str) -> None:
        queue = self.log_queue[session]
        try:
            while queue:
                index, data = queue[0]
                try:
                    await bus.publish_stored(
                        self.nc, subjects.log(session), data, {"Nats-Msg-Id": f"{session}:{index}"}, self._log_stream_config,
                        f"step {index} of {session}", session,
                    )  # fmt: skip
                except bus.EventNotStored as exc:
                    self.stats["steps_not_logged"] = self.stats.get("steps_not_logged", 0) + 1
                    log.error("step not logged: %s", exc, extra={"session_id": session, "index": index})
                queue.popleft()
        finally:
            del self.log_writers[session]
            if not queue:
                del self.log_queue[session]

    def _log_stream_config(self, replicas: int) -> dict:
        return {
            "name": subjects.LOG_STREAM, "subjects": [subjects.LOG_ALL], "storage": "file", "max_age": int(self.log_retention * 1e9),
            "duplicate_window": 30 * 10**9, "num_replicas": replicas,
        }  # fmt: skip

    async def _record(self, session: str, step: Step, data: bytes) -> None:
        self.stats["events"] += 1
        self._log_steps(session, [(step.index, data)])
        await self.nc.publish(subjects.observe(session), data)
        extra = {
            "session_id": session,
            "event": contract.type_name(step.event),
            "state_from": step.state_from,
            "state_to": step.state_to,
            "commands": [contract.type_name(c) for c in step.commands],
        }
        run = getattr(step.event, "run", None)
        if run is not None:
            extra["run_id"] = run
        if step.dropped:
            self.stats[step.dropped] = self.stats.get(step.dropped, 0) + 1
            log.info("event dropped: %s", step.dropped, extra=extra | {"dropped": step.dropped, "note": step.note})
        elif not isinstance(step.event, LLMToken) or step.commands:
            log.info("step", extra=extra | ({"note": step.note} if step.note else {}))

    # ------------------------------------------------------------- commands
    def _headers(self, session: str, state: reducer.SessionState) -> dict[str, str]:
        """Trace context of the current turn, for every message a command sends."""
        run = state.run
        ctx = telemetry.session_context(session) if run is None else telemetry.turn_context(session, telemetry.turn_key(run.id, run.utterance))
        return telemetry.inject(ctx)

    async def _execute(self, cmd: AnyCommand, headers: dict[str, str] | None = None, caller: str = "") -> None:
        s = cmd.session
        match cmd:
            case StartLLM():
                self._cancel_llm_local(s, cmd.run, cmd.attempt - 1)
                task = asyncio.create_task(self._run_llm(cmd), name=f"llm-{s}-{cmd.run}")
                self.llm_tasks[(s, cmd.run)] = (cmd.attempt, task)
                task.add_done_callback(lambda t, k=(s, cmd.run): self._llm_finished(k, t))
            case CancelLLM():
                self._cancel_llm_local(s, cmd.run, cmd.attempt)
                await self.nc.publish(subjects.LLM_CANCEL, contract.encode(cmd))
            case Synthesize():
                await bus.publish_synthesize(self.nc, cmd, headers)
            case CancelTTS():
                await self.nc.publish(subjects.TTS_CANCEL, contract.encode(cmd), headers=headers)
            case PausePlayback() | ResumePlayback() | FlushPlayback():
                await self.nc.publish(subjects.playback(s), contract.encode(cmd), headers=headers)
            case CallTool():
                task = asyncio.create_task(self._run_tool(cmd, caller), name=f"tool-{s}-{cmd.run}-{cmd.name}")
                self.tool_tasks.add(task)
                task.add_done_callback(self._tool_finished)
            case StartTimer():
                self._arm(s, cmd.name, cmd.token, cmd.delay)
            case CancelTimer():
                handle = self.timers.pop((s, cmd.name, cmd.token), None)
                if handle:
                    handle.cancel()
            case SendDigits():
                # The gateway presses them and answers DigitsSent. Not one-shot:
                # sent again by a new owner, keys would be pressed twice.
                await self.nc.publish(subjects.playback(s), contract.encode(cmd), headers=headers)
            case EndSession():
                await self.nc.publish(subjects.playback(s), contract.encode(cmd), headers=headers)
                await self.nc.publish(subjects.control(s), contract.encode(SessionControl(session=s, reason=cmd.reason)))

    # --------------------------------------------------------------- timers
    def _arm(self, session: str, name: str, token: int, delay: float) -> None:
        key = (session, name, token)
        old = self.timers.pop(key, None)
        if old:
            old.cancel()
        self.timers[key] = asyncio.get_running_loop().call_later(max(delay, 0.0), self._fire_timer, key)

    def _rearm(self, session: str, stored: Stored) -> None:
        """Timers of a session this replica (again) owns, from their deadlines."""
        self._cancel_timers(session)
        now = time.time()
        for name, token, due in stored.timers:
            self._arm(session, name, token, due - now)

    def _cancel_timers(self, session: str) -> None:
        for key in [k for k in self.timers if k[0] == session]:
            self.timers.pop(key).cancel()

    def _fire_timer(self, key: tuple[str, str, int]) -> None:
        self.timers.pop(key, None)
        session, name, token = key
        event = TimerFired(session=session, at=time.time(), name=name, token=token)
        self._spawn(bus.publish_event(self.nc, event), f"timer {name}")

    # ------------------------------------------------------------ LLM, tools
    def _cancel_llm_local(self, session: str, run: int, attempt: int) -> None:
        """Cancel this replica's stream of the run if its attempt is at most
        ``attempt`` (-1: any)."""
        entry = self.llm_tasks.get((session, run))
        if entry and (attempt < 0 or entry[0] <= attempt):
            self.llm_tasks.pop((session, run))
            entry[1].cancel()

    def _llm_finished(self, key: tuple[str, int], task: asyncio.Task) -> None:
        entry = self.llm_tasks.get(key)
        if entry and entry[1] is task:
            self.llm_tasks.pop(key)
        self._failed(task, "LLM task")

    def _tool_finished(self, task: asyncio.Task) -> None:
        self.tool_tasks.discard(task)
        self._failed(task, "tool task")

    async def _on_llm_cancel(self, msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            return
        if isinstance(cmd, CancelLLM):
            self._cancel_llm_local(cmd.session, cmd.run, cmd.attempt)

    async def _run_llm(self, cmd: StartLLM) -> None:
        s, run, step, attempt = cmd.session, cmd.run, cmd.step, cmd.attempt
        seq = 0

        async def emit(event: AnyEvent) -> None:
            # Tokens are not waited for: a lost one shows as a gap in ``seq``
            # and the reducer restarts the step. Everything else is.
            nonlocal seq
            await bus.publish_event(self.nc, event, acked=not isinstance(event, LLMToken))
            seq += 1

        # A registry that does not say which tools only read: none do (they wait for a held answer's release).
        reads_only = getattr(self.tools, "reads_only", None) or (lambda name: False)
        try:
            async with (
                contextlib.aclosing(self.brain.stream(cmd.messages, self.tools.schemas())) as provider,
                contextlib.aclosing(batching.joined(provider, self.token_batch)) as stream,
            ):
                async for item in stream:
                    await emit(_llm_event(item, s, run, step, attempt, seq, reads_only))
                    if isinstance(item, Done):
                        await self._llm_usage(s, item)
                        return
            await emit(LLMDone(session=s, at=time.time(), run=run, step=step, attempt=attempt, seq=seq))
        except asyncio.CancelledError:
            raise
        except bus.EventNotStored:
            log.error("LLM output could not be stored", extra={"session_id": s, "run_id": run})
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes an event
            log.warning("LLM failed", extra={"session_id": s, "run_id": run, "error": str(exc)})
            await emit(LLMError(session=s, at=time.time(), run=run, step=step, attempt=attempt, seq=seq, message=str(exc)[:500]))

    async def _llm_usage(self, session: str, done: Done) -> None:
        """Tokens the LLM billed for a step: ``Usage`` on the session and
        ``parley.usage.llm_tokens`` on /metrics (nothing when it did not say)."""
        provider = getattr(self.brain, "model", "") or "llm"
        for unit, amount in (("input_tokens", done.input_tokens), ("output_tokens", done.output_tokens)):
            if amount <= 0:
                continue
            self.tel.counter("parley.usage.llm_tokens", "1", "tokens an LLM provider billed").add(amount, {"provider": provider, "kind": unit})
            try:
                await bus.publish_event(self.nc, Usage(session=session, at=time.time(), service="llm", provider=provider, unit=unit, amount=amount))
            except Exception as exc:  # noqa: BLE001 - usage is bookkeeping: never breaks the turn
                log.warning("LLM usage not stored: %s", exc, extra={"session_id": session})

    async def _run_tool(self, cmd: CallTool, caller: str) -> None:
        started = time.perf_counter()
        # The session is part of the idempotency key: some servers reuse ids like "call_0".
        context = ToolContext(session=cmd.session, caller=caller, call_id=f"{cmd.session}/{cmd.call_id}")
        ok, result = await self.tools.call(cmd.name, cmd.arguments, context)
        log.info(
            "tool call",
            extra={"session_id": cmd.session, "run_id": cmd.run, "tool": cmd.name, "ok": ok, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        event = ToolResult(session=cmd.session, at=time.time(), run=cmd.run, call_id=cmd.call_id, name=cmd.name, result=result, ok=ok)
        await bus.publish_event(self.nc, event)


def _with(config, **changes):
    """A nats-py config dataclass with some fields changed."""
    import dataclasses

    return dataclasses.replace(config, **changes)


def _running_timers(before: tuple[tuple[str, int, float], ...], cmds: list[AnyCommand], state: reducer.SessionState, now: float) -> tuple[tuple[str, int, float], ...]:
    """Deadlines of the timers the state says are running."""
    due = {(n, t): d for n, t, d in before}
    for cmd in cmds:
        if isinstance(cmd, StartTimer):
            due[(cmd.name, cmd.token)] = now + cmd.delay
    return tuple((n, t, due.get((n, t), now)) for n, t in state.timers)


def _llm_event(item, session: str, run: int, step: int, attempt: int, seq: int, reads_only: Callable[[str], bool] = lambda name: False) -> AnyEvent:
    """One LLM output as the event the reducer will see; a tool call says
    whether its tool is declared to only read (``reads_only``, from the
    registry)."""
    now = time.time()
    common = dict(session=session, at=now, run=run, step=step, attempt=attempt, seq=seq)
    if isinstance(item, Token):
        return LLMToken(**common, text=item.text)
    if isinstance(item, ToolCallOut):
        return LLMToolCall(**common, call_id=item.call_id, name=item.name, arguments=item.arguments, reads_only=reads_only(item.name))
    return LLMDone(**common, finish_reason=item.finish_reason)

