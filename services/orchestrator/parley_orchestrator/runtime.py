"""The orchestrator's imperative shell: feeds events to the reducer, keeps the
state in JetStream KV, logs every step, and executes the commands.

Events for every session arrive on ``parley.evt.<session>`` through one queue
group, so any replica may take any event. Within a replica each session has
its own queue and task (events of one session are reduced in order; sessions
proceed in parallel). The state in memory is a cache: every batch of events is
reduced on top of the state read from KV and written back with
compare-and-set on its revision. If another replica wrote first, the batch is
reduced again on top of the fresh state; commands are only executed after the
write succeeded, so nothing is executed twice.

Commands go out as messages (TTS requests, playback commands, timers coming
back as events) or as local tasks (LLM streams, tool calls) whose output is
published back as events — never fed to the reducer directly, so a run's output
is subject to the same ordering, logging and staleness checks as everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from parley import contract, subjects, telemetry
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
    LLMError,
    LLMToken,
    LLMToolCall,
    PausePlayback,
    ResumePlayback,
    SessionControl,
    SessionEnded,
    SessionStarted,
    StartLLM,
    StartTimer,
    Step,
    Synthesize,
    TimerFired,
    ToolResult,
)

from . import records, reducer
from .adapters.llm import Brain, Done, Token, ToolCallOut
from .records import Stored, decode_stored

if TYPE_CHECKING:
    from .tools import ToolRegistry

log = logging.getLogger("parley.orchestrator")


@dataclass
class Cached:
    stored: Stored
    revision: int | None  # None: not in KV yet


@dataclass
class Runtime:
    nc: Client
    brain: Brain
    tools: "ToolRegistry"
    # Defaults merged into SessionStarted.params before the event is reduced
    # (and logged, so replay sees the same event).
    defaults: dict[str, str] = field(default_factory=dict)
    state_ttl: float = 24 * 3600
    stats: dict[str, int] = field(default_factory=lambda: {"events": 0, "stale": 0, "rejected": 0, "cas_retries": 0})

    def __post_init__(self) -> None:
        self.js = self.nc.jetstream()
        self.kv = None
        self.cache: dict[str, Cached] = {}
        self.queues: dict[str, asyncio.Queue] = {}
        self.workers: dict[str, asyncio.Task] = {}
        self.llm_tasks: dict[tuple[str, int], asyncio.Task] = {}
        self.tool_tasks: set[asyncio.Task] = set()
        self.timers: dict[tuple[str, str, int], asyncio.TimerHandle] = {}
        self.subs = []
        self.observer = None  # observe.StepObserver: spans and metrics from steps

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        self.kv = await self.js.create_key_value(
            KeyValueConfig(bucket=subjects.SESSIONS_BUCKET, history=1, ttl=self.state_ttl, storage=StorageType.FILE)
        )
        try:
            await self.js.stream_info(subjects.LOG_STREAM)
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(name=subjects.LOG_STREAM, subjects=[subjects.LOG_ALL], storage=StorageType.FILE, max_age=7 * 24 * 3600)
            )
        self.subs.append(await self.nc.subscribe(subjects.EVENTS_ALL, queue=subjects.ORCHESTRATOR_GROUP, cb=self._on_event))
        self.subs.append(await self.nc.subscribe(subjects.LLM_CANCEL, cb=self._on_llm_cancel))
        self.subs.append(await self.nc.subscribe(subjects.ORCHESTRATOR_INFO, queue=subjects.ORCHESTRATOR_GROUP, cb=self._on_info))

    async def stop(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()
        for task in [*self.workers.values(), *self.llm_tasks.values(), *self.tool_tasks]:
            task.cancel()
        for handle in self.timers.values():
            handle.cancel()

    async def _on_info(self, msg) -> None:
        await msg.respond(contract.to_json({"brain": self.brain.name}))

    # ------------------------------------------------------------ event intake
    async def _on_event(self, msg) -> None:
        try:
            event = contract.decode_event(msg.data)
            subjects.session_token(event.session)
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            log.warning("undecodable event dropped", extra={"subject": msg.subject, "error": str(exc)})
            return
        if msg.subject != subjects.events(event.session):
            log.warning("event on the wrong subject dropped", extra={"subject": msg.subject, "session_id": event.session})
            return
        queue = self.queues.get(event.session)
        if queue is None:
            queue = self.queues[event.session] = asyncio.Queue()
            self.workers[event.session] = asyncio.create_task(self._session_worker(event.session, queue))
        queue.put_nowait(event)

    async def _session_worker(self, session: str, queue: asyncio.Queue) -> None:
        try:
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=300)
                except asyncio.TimeoutError:
                    return  # idle: free the worker; the state stays in KV
                batch = [first]
                while not queue.empty() and len(batch) < 64:
                    batch.append(queue.get_nowait())
                try:
                    ended = await self._process(session, batch)
                except Exception:
                    log.exception("batch failed", extra={"session_id": session})
                    ended = False
                if ended and queue.empty():
                    return
        finally:
            self.queues.pop(session, None)
            self.workers.pop(session, None)
            self.cache.pop(session, None)

    # ------------------------------------------------------------- reduce+CAS
    async def _load(self, session: str) -> Cached:
        try:
            entry = await self.kv.get(session)
            return Cached(decode_stored(entry.value), entry.revision)
        except KeyNotFoundError:
            return Cached(Stored(consumed=0, state=reducer.initial_state()), None)

    async def _process(self, session: str, batch: list[AnyEvent]) -> bool:
        batch = [self._enrich(e) for e in batch]
        cached = self.cache.get(session) or await self._load(session)
        for _attempt in range(8):
            state = cached.stored.state
            consumed = cached.stored.consumed
            steps: list[tuple[Step, reducer.SessionState, reducer.SessionState, tuple[str, ...]]] = []
            commands: list[tuple[AnyCommand, reducer.SessionState]] = []
            for event in batch:
                before = state
                state, cmds, outcome = reducer.reduce(state, event)
                step = records.step(consumed, event, cmds, outcome)
                steps.append((step, before, state, outcome.path))
                commands.extend((cmd, state) for cmd in cmds)
                consumed += 1
            stored = Stored(consumed=consumed, state=state, schema=contract.SCHEMA)
            try:
                data = contract.encode(stored)
                if cached.revision is None:
                    revision = await self.kv.create(session, data)
                else:
                    revision = await self.kv.update(session, data, last=cached.revision)
            except (KeyWrongLastSequenceError, Exception) as exc:  # noqa: BLE001
                if not _is_conflict(exc):
                    raise
                self.stats["cas_retries"] += 1
                cached = await self._load(session)
                continue
            self.cache[session] = Cached(stored, revision)
            break
        else:
            log.error("could not write session state after retries", extra={"session_id": session})
            return False
        for step, before, after, path in steps:
            await self._record(session, step)
            if self.observer is not None:
                try:
                    self.observer.on_step(session, step, before, after, path)
                except Exception:  # noqa: BLE001 - telemetry never breaks a call
                    log.exception("observer failed")
        for cmd, after in commands:
            try:
                await self._execute(cmd, self._headers(session, after))
            except Exception:
                log.exception("command failed", extra={"session_id": session, "command": type(cmd).__name__})
        return state.phase == reducer.ENDED

    def _enrich(self, event: AnyEvent) -> AnyEvent:
        """Fill in deployment defaults (system prompt with today's date,
        greeting) that the caller's own params did not set."""
        if not isinstance(event, SessionStarted):
            return event
        params = dict(self.defaults)
        today = dt.datetime.fromtimestamp(event.at)
        if "system_prompt" in params:
            params["system_prompt"] = params["system_prompt"].replace("{today}", today.strftime("%Y-%m-%d (%A)"))
        params.update(event.params)
        return msgspec.structs.replace(event, params=params)

    async def _record(self, session: str, step: Step) -> None:
        self.stats["events"] += 1
        data = contract.encode(step)
        # Core publish: the stream captures it; order is kept per connection.
        await self.nc.publish(subjects.log(session), data)
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

    async def _execute(self, cmd: AnyCommand, headers: dict[str, str] | None = None) -> None:
        s = cmd.session
        match cmd:
            case StartLLM():
                task = asyncio.create_task(self._run_llm(cmd))
                self.llm_tasks[(s, cmd.run)] = task
                task.add_done_callback(lambda _t, k=(s, cmd.run): self.llm_tasks.pop(k, None) if self.llm_tasks.get(k) is _t else None)
            case CancelLLM():
                self._cancel_llm_local(s, cmd.run)
                await self.nc.publish(subjects.LLM_CANCEL, contract.encode(cmd))
            case Synthesize():
                await self.nc.publish(subjects.TTS_REQUEST, contract.encode(cmd), headers=headers)
            case CancelTTS():
                await self.nc.publish(subjects.TTS_CANCEL, contract.encode(cmd), headers=headers)
            case PausePlayback() | ResumePlayback() | FlushPlayback():
                await self.nc.publish(subjects.playback(s), contract.encode(cmd), headers=headers)
            case CallTool():
                task = asyncio.create_task(self._run_tool(cmd))
                self.tool_tasks.add(task)
                task.add_done_callback(self.tool_tasks.discard)
            case StartTimer():
                loop = asyncio.get_running_loop()
                key = (s, cmd.name, cmd.token)
                self.timers[key] = loop.call_later(cmd.delay, self._fire_timer, key)
            case CancelTimer():
                handle = self.timers.pop((s, cmd.name, cmd.token), None)
                if handle:
                    handle.cancel()
            case EndSession():
                await self.nc.publish(subjects.playback(s), contract.encode(cmd), headers=headers)
                await self.nc.publish(subjects.control(s), contract.encode(SessionControl(session=s, reason=cmd.reason)))

    def _fire_timer(self, key: tuple[str, str, int]) -> None:
        self.timers.pop(key, None)
        session, name, token = key
        event = TimerFired(session=session, at=time.time(), name=name, token=token)
        asyncio.ensure_future(self.nc.publish(subjects.events(session), contract.encode(event)))

    def _cancel_llm_local(self, session: str, run: int) -> None:
        task = self.llm_tasks.pop((session, run), None)
        if task:
            task.cancel()

    async def _on_llm_cancel(self, msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            return
        if isinstance(cmd, CancelLLM):
            self._cancel_llm_local(cmd.session, cmd.run)

    async def _run_llm(self, cmd: StartLLM) -> None:
        s, run, step = cmd.session, cmd.run, cmd.step
        out = subjects.events(s)
        try:
            async with contextlib.aclosing(self.brain.stream(cmd.messages, self.tools.schemas())) as stream:
                async for item in stream:
                    await self.nc.publish(out, contract.encode(_llm_event(item, s, run, step)))
                    if isinstance(item, Done):
                        return
            await self.nc.publish(out, contract.encode(LLMDone(session=s, at=time.time(), run=run, step=step)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes an event
            log.warning("LLM failed", extra={"session_id": s, "run_id": run, "error": str(exc)})
            await self.nc.publish(out, contract.encode(LLMError(session=s, at=time.time(), run=run, step=step, message=str(exc)[:500])))

    async def _run_tool(self, cmd: CallTool) -> None:
        started = time.perf_counter()
        # The session is part of the idempotency key: some servers reuse ids like "call_0".
        ok, result = await self.tools.call(cmd.name, cmd.arguments, call_id=f"{cmd.session}/{cmd.call_id}")
        log.info(
            "tool call",
            extra={"session_id": cmd.session, "run_id": cmd.run, "tool": cmd.name, "ok": ok, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        event = ToolResult(session=cmd.session, at=time.time(), run=cmd.run, call_id=cmd.call_id, name=cmd.name, result=result, ok=ok)
        await self.nc.publish(subjects.events(cmd.session), contract.encode(event))


def _llm_event(item, session: str, run: int, step: int) -> AnyEvent:
    """One LLM output as the event the reducer will see."""
    now = time.time()
    if isinstance(item, Token):
        return LLMToken(session=session, at=now, run=run, step=step, text=item.text)
    if isinstance(item, ToolCallOut):
        return LLMToolCall(session=session, at=now, run=run, step=step, call_id=item.call_id, name=item.name, arguments=item.arguments)
    return LLMDone(session=session, at=now, run=run, step=step, finish_reason=item.finish_reason)


def _is_conflict(exc: Exception) -> bool:
    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    text = str(exc).lower()
    return "wrong last sequence" in text or "key exists" in text or "10071" in text
