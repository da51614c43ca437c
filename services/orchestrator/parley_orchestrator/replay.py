"""Replay: re-reduce a recorded session and check it decides the same again.

The runtime appends one ``Step`` per consumed event to the session's log
(JetStream subject ``parley.log.<session>``); ``export`` turns it into JSON
lines. ``replay(steps)`` feeds the recorded events, in order, to ``reduce``
from the initial state and compares, step by step, the commands, the phase
transition and whether the event was dropped; and at the end the final state's
digest with the recorded one, if there is one.

Old logs. Every step records the versions that wrote it (``schema``: the
format; ``rules``: the reducer's decisions; see ``records.py``). A log the
reader cannot decode fails with the line and the schema that wrote it. A log
recorded under other rules is still replayed, and its differences are reported
as what the rule changes did, not as nondeterminism; the final state digest is
compared only when the log's schema and rules are this release's (the state's
encoding is part of the schema).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from parley import contract
from parley.contract import Step

from . import reducer
from .records import NewerSchema, read_step


def state_digest(state: reducer.SessionState) -> str:
    return hashlib.sha256(reducer.encode_state(state)).hexdigest()


@dataclass
class Mismatch:
    index: int
    what: str
    recorded: object
    replayed: object


@dataclass
class ReplayResult:
    steps: list[tuple[Step, reducer.Outcome]] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    final_state: reducer.SessionState | None = None
    digest_checked: bool = False
    # Versions the log was written with (every distinct value met).
    schemas: set[int] = field(default_factory=set)
    rules: set[int] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def same_rules(self) -> bool:
        """Recorded under this release's rules: any difference is a defect."""
        return self.rules <= {reducer.RULES}

    def verdict(self) -> str:
        versions = f"recorded under rules {_list(self.rules)}, schema {_list(self.schemas)}; this release: rules {reducer.RULES}, schema {contract.SCHEMA}"
        if self.ok:
            extra = " (final state digest checked)" if self.digest_checked else ""
            return f"replayed {len(self.steps)} events: identical{extra}" + ("" if self.same_rules and self.schemas <= {contract.SCHEMA} else f" ({versions})")
        if self.same_rules:
            return f"replayed {len(self.steps)} events: {len(self.mismatches)} mismatch(es)"
        first = self.mismatches[0].index
        return f"replayed {len(self.steps)} events: {len(self.mismatches)} difference(s) from #{first} on, expected: {versions}"


def _list(values: set[int]) -> str:
    return "/".join(str(v) for v in sorted(values)) or "?"


def replay(steps: Iterable[Step], final_digest: str | None = None) -> ReplayResult:
    result = ReplayResult()
    state = reducer.initial_state()
    for expected_index, recorded in enumerate(steps):
        if recorded.schema > contract.SCHEMA:
            raise NewerSchema(f"step #{recorded.index} written by schema {recorded.schema}; this release reads schemas up to {contract.SCHEMA}")
        result.schemas.add(recorded.schema)
        result.rules.add(recorded.rules)
        if recorded.index != expected_index:
            result.mismatches.append(Mismatch(expected_index, "log index (missing or reordered entries)", recorded.index, expected_index))
        state, cmds, outcome = reducer.reduce_or_end(state, recorded.event)
        result.steps.append((recorded, outcome))
        _compare(result, recorded, tuple(cmds), outcome)
    result.final_state = state
    if final_digest is not None and result.same_rules and result.schemas <= {contract.SCHEMA}:
        result.digest_checked = True
        if state_digest(state) != final_digest:
            result.mismatches.append(Mismatch(-1, "final state", final_digest, state_digest(state)))
    return result


def _compare(result: ReplayResult, recorded: Step, cmds: tuple, outcome: reducer.Outcome) -> None:
    if cmds != recorded.commands:
        result.mismatches.append(Mismatch(recorded.index, "commands", recorded.commands, cmds))
    if bool(outcome.error) != bool(recorded.error):
        result.mismatches.append(Mismatch(recorded.index, "reducer error", recorded.error, outcome.error))
    if outcome.dropped != recorded.dropped:
        result.mismatches.append(Mismatch(recorded.index, "dropped", recorded.dropped, outcome.dropped))
    if (outcome.path[0], outcome.path[-1]) != (recorded.state_from, recorded.state_to):
        result.mismatches.append(Mismatch(recorded.index, "transition", (recorded.state_from, recorded.state_to), (outcome.path[0], outcome.path[-1])))


# ---------------------------------------------------------------- JSON lines


def to_jsonl(steps: Iterable[Step], final_digest: str | None = None) -> str:
    lines = [contract.to_json(step).decode() for step in steps]
    if final_digest is not None:
        lines.append(json.dumps({"final_state_sha256": final_digest}))
    return "\n".join(lines) + "\n"


def from_jsonl(text: str) -> tuple[list[Step], str | None]:
    steps: list[Step] = []
    digest = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if '"final_state_sha256"' in line and '"event"' not in line:
            digest = json.loads(line)["final_state_sha256"]
            continue
        try:
            steps.append(read_step(line, json=True))
        except ValueError as exc:  # NewerSchema included
            raise type(exc)(f"line {n}: {exc}") from exc
    return steps, digest


# ---------------------------------------------------------------- timeline


def timeline(result: ReplayResult) -> str:
    """A readable account: time, event, transition, commands, drops."""
    out = []
    t0 = result.steps[0][0].event.at if result.steps else 0.0
    for step, outcome in result.steps:
        ev = step.event
        detail = _event_detail(ev)
        path = " > ".join(outcome.path)
        cmds = ", ".join(_command_detail(c) for c in step.commands)
        line = f"{ev.at - t0:8.3f}s  #{step.index:<4} {type(ev).__name__:<18} {detail:<40.40} {path:<34}"
        if step.dropped:
            line += f" DROPPED ({step.dropped}: {step.note})"
        elif cmds:
            line += f" -> {cmds}"
        if outcome.note and not step.dropped:
            line += f"   [{outcome.note}]"
        out.append(line.rstrip())
    for m in result.mismatches:
        out.append(f"MISMATCH at #{m.index}: {m.what}\n  recorded: {m.recorded}\n  replayed: {m.replayed}")
    out.append(result.verdict())
    return "\n".join(out)


def _event_detail(ev: contract.AnyEvent) -> str:
    for name in ("text", "name", "digit", "reason", "message"):
        value = getattr(ev, name, None)
        if value:
            return repr(value)
    if isinstance(ev, contract.PlaybackProgress):
        return f"run {ev.run} chunk {ev.chunk} {'finished' if ev.finished else 'started'}"
    run = getattr(ev, "run", None)
    return f"run {run}" if run is not None else ""


def _command_detail(cmd: contract.AnyCommand) -> str:
    name = type(cmd).__name__
    if isinstance(cmd, contract.Synthesize):
        return f"{name}(r{cmd.run}#{cmd.chunk} {cmd.text[:30]!r})"
    if isinstance(cmd, (contract.StartTimer, contract.CancelTimer)):
        return f"{name}({cmd.name})"
    if isinstance(cmd, contract.CallTool):
        return f"{name}({cmd.name})"
    run = getattr(cmd, "run", None)
    return f"{name}(r{run})" if run is not None else name
