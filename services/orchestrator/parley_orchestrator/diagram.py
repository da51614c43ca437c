"""Draw docs/state-diagram.md from the reducer's transition table.

    python -m parley_orchestrator.diagram > docs/state-diagram.md

A test regenerates it and fails if the committed file differs, so the
diagram and the table cannot drift apart.
"""

from __future__ import annotations

from . import reducer


def edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for row in reducer.TRANSITIONS:
        event = row.event.__name__
        timer = getattr(row.handler, "timer_name", None)
        label = f"{event}({timer})" if timer else event
        for phase in row.phases:
            for target in row.leads_to:
                path = [phase, *(phase if p == "=" else p for p in target.split(">"))]
                for a, b in zip(path, path[1:]):
                    if a == b:
                        continue
                    labels = out.setdefault((a, b), [])
                    if label not in labels:
                        labels.append(label)
    return out


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
        f"    [*] --> {reducer.IDLE}",
    ]
    for (a, b), labels in sorted(edges().items()):
        lines.append(f"    {a} --> {b}: {', '.join(labels)}")
    lines += [f"    {reducer.ENDED} --> [*]", "```", "", "## The table", "", "| in phase | event | handler | leads to | when |", "|---|---|---|---|---|"]
    for row in reducer.TRANSITIONS:
        timer = getattr(row.handler, "timer_name", None)
        event = f"TimerFired({timer})" if timer else row.event.__name__
        leads = ", ".join(t.replace(">", " → ") for t in row.leads_to)
        lines.append(f"| {', '.join(row.phases)} | {event} | `{row.handler.__name__}` | {leads} | {row.when} |")
    lines += ["", "Any other (phase, event) pair is *rejected*: the state stays as it is. Run-scoped events of a run that is not active are *stale* and dropped before the table is consulted.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
