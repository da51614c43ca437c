"""Reducer throughput: ``reduce()`` over recorded sessions, on one core.

The corpus is the event logs of real sessions recorded earlier in the same
``make bench`` run (``var/bench/sessions/<kind>/*.jsonl``: Twilio calls with
the fixed-latency providers, barge-ins included, and calls to the embedded
receptionist with its tool calls). Each session is first replayed once with
``parley_orchestrator.replay`` (the commands must come out identical, or the
corpus is not what the reducer does); then every session is reduced from the
initial state, event by event, and the CPU time (``time.process_time``, one
thread) of the whole pass is taken; best of ``passes``. A second, separate
pass times each event type with ``perf_counter`` around each call.

    uv run python bench/reducer_speed.py [DIR ...]
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from parley_orchestrator import reducer
from parley_orchestrator.replay import from_jsonl, replay

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = ROOT / "var" / "bench" / "sessions"


def load(dirs: list[Path]) -> tuple[list[list], int, int]:
    """(sessions as event lists, sessions replayed identically, sessions that were not)."""
    sessions, ok, bad = [], 0, 0
    for d in dirs:
        for f in sorted(d.glob("*.jsonl")):
            steps, digest = from_jsonl(f.read_text())
            if not steps:
                continue
            if replay(steps, digest).ok:
                ok += 1
                sessions.append([s.event for s in steps])
            else:
                bad += 1
    return sessions, ok, bad


def one_pass(sessions: list[list]) -> float:
    reduce, initial = reducer.reduce, reducer.initial_state
    t0 = time.process_time()
    for events in sessions:
        state = initial()
        for e in events:
            state = reduce(state, e)[0]
    return time.process_time() - t0


def per_type(sessions: list[list]) -> dict[str, dict]:
    reduce, initial, clock = reducer.reduce, reducer.initial_state, time.perf_counter
    out: dict[str, list[float]] = {}
    for events in sessions:
        state = initial()
        for e in events:
            t0 = clock()
            state = reduce(state, e)[0]
            out.setdefault(type(e).__name__, []).append(clock() - t0)
    return {k: {"count": len(v), "mean_us": sum(v) / len(v) * 1e6, "total_s": sum(v)} for k, v in out.items()}


def measure(dirs: list[Path], passes: int = 5, min_seconds: float = 1.0) -> dict:
    sessions, ok, bad = load(dirs)
    events = sum(len(s) for s in sessions)
    if not events:
        raise SystemExit(f"no recorded sessions under {[str(d) for d in dirs]}: run `make bench` (or bench/run.py) first")
    # Enough repetitions per pass that a pass lasts at least min_seconds.
    reps = 1
    gc.collect()
    while one_pass(sessions) * reps < min_seconds and reps < 1000:
        reps *= 2
    best = float("inf")
    for _ in range(passes):
        t = sum(one_pass(sessions) for _ in range(reps))
        best = min(best, t / reps)
    return {
        "sessions": len(sessions),
        "sessions_replay_identical": ok,
        "sessions_replay_mismatch": bad,
        "events": events,
        "passes": passes,
        "reps_per_pass": reps,
        "cpu_s_per_pass": best,
        "events_per_s": events / best,
        "us_per_event": best / events * 1e6,
        "per_type": per_type(sessions),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    dirs = [Path(a) for a in sys.argv[1:]] or [d for d in SESSIONS.iterdir() if d.is_dir()]
    print(json.dumps(measure(dirs), indent=1))
