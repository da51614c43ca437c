"""Draw docs/state-diagram.md from the reducer's transition table.

    python -m parley_orchestrator.diagram > docs/state-diagram.md

A test regenerates it and fails if the committed file differs, so the
diagram and the table cannot drift apart.
"""

from __future__ import annotations

from . import reducer


def _label(row: reducer.Row) -> str:
    return f"{row.event.__name__}({row.timer})" if row.timer else row.event.__name__


def edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for row in reducer.TRANSITIONS:
        for phase in row.phases:
            for targets in row.outcomes.values():
                path = reducer._path(phase, targets)
                for a, b in zip(path, path[1:]):
                    labels = out.setdefault((a.value, b.value), [])
                    if _label(row) not in labels:
                        labels.append(_label(row))
    return out


def _outcomes(row: reducer.Row) -> str:
    return "<br>".join(f"{name} → {' → '.join(p.value for p in path) or '='}" for name, path in row.outcomes.items())


def render() -> str:
    lines = [
        "# The reducer's state diagram",
        "",
        "Generated from `TRANSITIONS` in `services/orchestrator/parley_orchestrator/reducer.py`",
        "by `python -m parley_orchestrator.diagram`; `tests` fail if this file is stale.",
        "Interrupted and Cancelled are transient: a step passes through them (the run is",
        "cancelled there) and lands in the next phase in the same step.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {reducer.IDLE.value}",
    ]
    for (a, b), labels in sorted(edges().items()):
        lines.append(f"    {a} --> {b}: {', '.join(labels)}")
    lines += [f"    {reducer.ENDED.value} --> [*]", "```", "", "## The table", ""]
    lines += [
        "Each row: in these phases, this event is handled by this handler, which takes one of the",
        "listed outcomes; the outcome names the phases the step goes through (= : stays).",
        "",
        "| in phase | event | handler | outcomes | when |",
        "|---|---|---|---|---|",
    ]
    for row in reducer.TRANSITIONS:
        phases = ", ".join(p.value for p in row.phases)
        lines.append(f"| {phases} | {_label(row)} | `{row.handler.__name__}` | {_outcomes(row)} | {row.when} |")
    lines += [
        "",
        "Any other (phase, event) pair is *rejected*: the state stays as it is. Run-scoped events of a run that is not active, and timers that are no longer running, are *stale* and dropped before the table is consulted.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
