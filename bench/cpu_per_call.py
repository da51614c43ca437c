"""CPU per call, by process, for an A/B of two commits on a busy machine.

A pass/fail capacity step needs a quiet machine (docs/BENCHMARKS.md, section
5); CPU *time* per call does not: each process's user+system seconds
(psutil) over a fixed-latency run of ``--calls`` Twilio-protocol calls
(``bench/loadgen.py``'s callers, three turns each), divided by the calls'
total connected minutes. Run it in two worktrees back to back and compare.

    uv run python bench/cpu_per_call.py --calls 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from admission import offer  # noqa: E402
from stack import Stack  # noqa: E402


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for key, p in procs.items():
        try:
            t = p.cpu_times()
            out[key] = t.user + t.system
        except psutil.Error:
            out[key] = 0.0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--root", default=str(ROOT / "var" / "cpu-per-call"))
    a = ap.parse_args(argv)
    env = {"PARLEY_PROVIDERS": "fixed", "PARLEY_TWILIO_INSECURE": "1"}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with Stack(Path(a.root) / time.strftime("%Y%m%d-%H%M%S"), env=env) as stack:
        asyncio.run(offer(stack, 1, 1))  # warm-up call
        procs = {k: psutil.Process(p.pid) for k, p in stack.procs.items()}
        procs["nats-server"] = psutil.Process(stack.nats.proc.pid)
        before = cpu_seconds(procs)
        t0 = time.monotonic()
        records = asyncio.run(offer(stack, a.calls, a.turns))
        wall = time.monotonic() - t0
        after = cpu_seconds(procs)
    load = psutil.getloadavg()
    call_min = a.calls * wall / 60  # every call is up for (about) the whole run: the same for both sides of an A/B
    used = {k: round(after[k] - before[k], 2) for k in procs}
    total = sum(used.values())
    print(json.dumps({
        "commit": commit, "calls": a.calls, "wall_s": round(wall, 1), "call_minutes": round(call_min, 2), "load_avg": [round(x, 1) for x in load],
        "failed_calls": sum(1 for r in records if r["failures"]), "underruns": sum(len(r["underruns"]) for r in records),
        "cpu_s": used, "cpu_s_total": round(total, 2), "cpu_s_per_call": round(total / a.calls, 3),
        "pct_of_a_core_per_call": round(100 * total / (call_min * 60), 3),
        "by_process_pct_per_call": {k: round(100 * v / (call_min * 60), 3) for k, v in used.items()},
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
