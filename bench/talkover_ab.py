"""Talk-over judgements A/B, offline: the recorded ASR events of scenario calls
replayed through two reducers (docs/BENCHMARKS.md 6, barge8).

Every per-call JSON that ``parley scenarios run --out DIR`` (or ``make bench``:
``var/bench/scenarios``) keeps holds the reducer steps of the call, so its
events (speech, transcripts with their ``floor``, playback, timers...) can be
reduced again by another release's reducer. This lists the calls in which the
interruption verdicts differ between the reducer of ``--base`` (a checkout of
another commit, e.g. ``git worktree add /tmp/base main``) and this checkout's,
and whether the talk-over stopped the agent (a barge-in, or the run flushed)
under each. After the first changed decision it is counterfactual: the later
events are those recorded under the old decision (the agent's playback, the
caller's timing), so read it as "which talk-overs the rules judge
differently", not as a replayed call::

    uv run python bench/talkover_ab.py --base /tmp/base 'var/bench/scenarios/*.json' '/other/run/*.json'

Exit status 0; the last line counts the calls replayed, those that differ, and
those whose talk-overs stopped the agent under one reducer and not the other.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from parley import contract
from parley_orchestrator import reducer as this_reducer

PACKAGE = Path("services/orchestrator/parley_orchestrator")


def load_base(checkout: Path):
    """The reducer module of another checkout, imported under its own package name."""
    tmp = Path(tempfile.mkdtemp(prefix="talkover_ab_"))
    shutil.copytree(checkout / PACKAGE, tmp / "parley_orchestrator_base")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("parley_orchestrator_base.reducer")


def events_of(path: str) -> tuple[dict, list] | None:
    """The call's result and its recorded events (None: not a per-call record, or another schema)."""
    try:
        data = json.load(open(path))
        steps = data["record"]["steps"]
        return data["result"], [contract.step_from_json(json.dumps(s["step"]).encode()).event for s in steps]
    except Exception:  # noqa: BLE001  (not a per-call record, or a schema this release cannot read: skipped)
        return None


def verdicts(reducer, events: list) -> list[tuple[int, str, str, str]]:
    """(utterance, verdict, text, event type) of every interruption judgement, and FLUSH when a run was cut."""
    state = reducer.initial_state()
    out = []
    for ev in events:
        state, cmds, outcome = reducer.reduce_or_end(state, ev)
        utterance = getattr(ev, "utterance", -1)
        out += [(utterance, j.verdict, j.text[:60], type(ev).__name__) for j in outcome.judgements if j.kind == "interruption"]
        ended = isinstance(ev, contract.SessionEnded)  # a hang-up cuts every run: not a talk-over's doing
        if state.run is None and not ended and any(isinstance(c, contract.FlushPlayback) for c in cmds):
            out.append((utterance, "FLUSH", "", type(ev).__name__))
    return out


def stopped(got: list) -> bool:
    return any(v in ("barge-in", "FLUSH") for _, v, _, _ in got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="a checkout of the other commit (its reducer is arm A)")
    ap.add_argument("paths", nargs="+", help="per-call JSON files or globs")
    args = ap.parse_args()
    base = load_base(args.base)
    files = sorted({p for pattern in args.paths for p in glob.glob(pattern)})
    replayed = differ = gained = lost = 0
    for path in files:
        got = events_of(path)
        if got is None:
            continue
        result, events = got
        a, b = verdicts(base, events), verdicts(this_reducer, events)
        replayed += 1
        if [x[1] for x in a] == [x[1] for x in b]:
            continue
        differ += 1
        gained += stopped(b) and not stopped(a)
        lost += stopped(a) and not stopped(b)
        expect = [o.get("expect", "") for o in result.get("overlaps", [])]
        print(f"== {path}  expect={expect}  live={[o.get('outcome') for o in result.get('overlaps', [])]}")
        print(f"   A {'stop' if stopped(a) else 'keep'}  {[(u, v, t) for u, v, t, _ in a]}")
        print(f"   B {'stop' if stopped(b) else 'keep'}  {[(u, v, t) for u, v, t, _ in b]}")
    print(f"{replayed} calls replayed, {differ} differ: {gained} kept talking under A and stopped under B, {lost} the other way")


if __name__ == "__main__":
    main()
