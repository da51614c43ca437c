"""Spans and metrics drawn from reducer steps.

Everything the orchestrator knows about a turn is in its steps: when the LLM
was asked and answered, when a tool was called and returned, when the run
ended and whether it was cut. So spans are recorded after the fact from the
steps' ``at`` times, under the turn's derived span id (see parley.telemetry),
and the turn span itself is recorded when its run ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley import contract, subjects, telemetry
from parley.contract import Step

from . import reducer

MESSAGING = {"messaging.system": "nats"}


@dataclass
class _Pending:
    llm: dict[tuple[int, int], dict] = field(default_factory=dict)  # (run, step) -> info
    tools: dict[str, tuple[float, str, int]] = field(default_factory=dict)  # call id -> (start, name, run)


class StepObserver:
    def __init__(self, tel: telemetry.Telemetry):
        self.tel = tel
        self.pending: dict[str, _Pending] = {}
        self.ttft = tel.histogram("parley.llm.ttft", "ms", "LLM time to first token")
        self.steps = tel.counter("parley.reducer.steps", description="events reduced")
        self.dropped = tel.counter("parley.events.dropped", description="events dropped as stale or rejected")
        self.bugs = tel.counter("parley.reducer.bugs", description="events the reducer failed on (each ended its session)")
        self.runs = tel.counter("parley.runs", description="runs started")
        self.interruptions = tel.counter("parley.interruptions", description="barge-ins that cancelled a run")
        self.resumed = tel.counter("parley.false_interruptions", description="holds that resumed (false interruptions)")
        self.sessions = tel.counter("parley.sessions", description="sessions started")

    def turn_parent(self, session: str, run: reducer.Run | None):
        if run is None:
            return telemetry.session_context(session)
        return telemetry.turn_context(session, telemetry.turn_key(run.id, run.utterance))

    # long: one step -> its span, metrics and turn bookkeeping; the attributes are one flat table read together
    def on_step(self, session: str, step: Step, before: reducer.SessionState, after: reducer.SessionState, path: tuple[str, ...]) -> None:
        ev = step.event
        at = ev.at
        run = after.run or before.run
        parent = self.turn_parent(session, run)
        if getattr(self.tel, "exporting", True):  # (no exporter: the span would go nowhere; see parley.telemetry)
            attrs = {
                "parley.event": type(ev).__name__,
                "parley.transition": " > ".join(path),
                "parley.commands": ",".join(type(c).__name__ for c in step.commands),
                "run.id": run.id if run else None,
                "parley.dropped": step.dropped or None,
                **MESSAGING,
                "messaging.destination.name": subjects.event_from(session, contract.producer_of(ev)),
                "messaging.consumer.group.name": "orchestrator",
            }
            self.tel.record_span(f"reduce {type(ev).__name__}", session=session, parent=parent, start=at, end=at, attributes=attrs)
        self.steps.add(1, {"event": type(ev).__name__})
        if step.error:
            self.bugs.add(1, {"event": type(ev).__name__})
        if step.dropped:
            self.dropped.add(1, {"reason": step.dropped})
            return
        p = self.pending.setdefault(session, _Pending())
        if isinstance(ev, contract.SessionStarted):
            self.sessions.add(1, {"transport": ev.transport})
        for cmd in step.commands:
            if isinstance(cmd, contract.StartLLM):
                p.llm[(cmd.run, cmd.step)] = {"start": at, "first": None, "tokens": 0, "tools": 0, "parent": self.turn_parent(session, after.run)}
                if cmd.step == 0:
                    self.runs.add(1)
            elif isinstance(cmd, contract.CallTool):
                p.tools[cmd.call_id] = (at, cmd.name, cmd.run)
            elif isinstance(cmd, contract.ResumePlayback):
                self.resumed.add(1)
            elif isinstance(cmd, contract.CancelLLM):
                self._end_llm(session, p, cmd.run, at, "cancelled")
        if reducer.INTERRUPTED in path:
            self.interruptions.add(1)
        if isinstance(ev, contract.LLMToken):
            info = p.llm.get((ev.run, ev.step))
            if info:
                info["tokens"] += 1
                if info["first"] is None:
                    info["first"] = at
                    self.ttft.record((at - info["start"]) * 1000)
        elif isinstance(ev, contract.LLMToolCall):
            info = p.llm.get((ev.run, ev.step))
            if info:
                info["tools"] += 1
        elif isinstance(ev, (contract.LLMDone, contract.LLMError)):
            self._end_llm(session, p, ev.run, at, "done" if isinstance(ev, contract.LLMDone) else "error", ev.step)
        elif isinstance(ev, contract.ToolResult):
            started = p.tools.pop(ev.call_id, None)
            if started:
                start, name, run_id = started
                self.tel.record_span(f"tool {name}", session=session, parent=parent, start=start, end=at, attributes={"run.id": run_id, "tool.ok": ev.ok})
        # The turn ends when its run leaves the state.
        if before.run is not None and (after.run is None or after.run.id != before.run.id):
            ended = before.run
            key = telemetry.turn_key(ended.id, ended.utterance)
            cut = reducer.INTERRUPTED in path or reducer.CANCELLED in path
            self.tel.span_with_id(
                "turn",
                session=session,
                key=key,
                parent=telemetry.session_context(session),
                start=min(ended.started_at or at, at),
                end=at,
                attributes={"run.id": ended.id, "turn.interrupted": cut, "turn.user_text": ended.user_text[:200] or None, "turn.chunks": len(ended.chunks), "turn.heard_chunks": ended.played},
            )
        if isinstance(ev, contract.SessionEnded) or after.phase == reducer.ENDED:
            self.pending.pop(session, None)

    def _end_llm(self, session: str, p: _Pending, run: int, at: float, outcome: str, step: int | None = None) -> None:
        for key in [k for k in p.llm if k[0] == run and (step is None or k[1] == step)]:
            info = p.llm.pop(key)
            ttft = (info["first"] - info["start"]) * 1000 if info["first"] else None
            self.tel.record_span(
                "llm",
                session=session,
                parent=info["parent"],
                start=info["start"],
                end=at,
                attributes={"run.id": run, "llm.step": key[1], "llm.ttft_ms": ttft, "llm.tokens": info["tokens"], "llm.tool_calls": info["tools"], "llm.outcome": outcome},
            )
