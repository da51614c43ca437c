"""What admission control buys (issue 10 point 7): the same overload with and
without a limit on one gateway.

The stack with the fixed-latency providers (``tests/stack.py``) takes
``--offered`` Twilio-protocol calls (``bench/loadgen.py``'s callers, real-time
pace, three turns each), once with ``PARLEY_MAX_CALLS=--limit`` and once
without a limit. For each run: calls refused (the gateway closed the stream
with 1013 before the call started), and for the calls let in: turns
answered, answer p50/p99 (caller's end of speech to the first agent audio),
playout underruns (silences inside a reply) and failed calls. Prints JSON.

    uv run python bench/admission.py --offered 60 --limit 30

``--kind asr`` (or orchestrator, tts) puts the limit on that service's
replicas instead (``PARLEY_ASR_CAPACITY``...: stack-wide admission,
``parley.load``): the gateway refuses once they report full, and its
counters say which service was (``busy_full_<kind>``). ``--limited-only``
skips the run without a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import loadgen  # noqa: E402
import utterances  # noqa: E402
from chaos import caller_args  # noqa: E402
from stack import Stack  # noqa: E402


def pct(xs: list[float], q: float) -> float | None:
    return round(sorted(xs)[min(len(xs) - 1, int(len(xs) * q))]) if xs else None


async def offer(stack: Stack, calls: int, turns: int) -> list[dict]:
    args = caller_args(f"{stack.gateway_ws}/twilio/media", calls, turns)
    args.spread, args.connect_spread = 5.0, 2.0
    callers = loadgen.callers_for(args, utterances.paths()["fixed_ulaw"])
    async with loadgen.placed(callers, args) as (_, scripts):
        await asyncio.gather(*scripts)
    from dataclasses import asdict

    return [asdict(c.rec) for c in callers]


def judge(records: list[dict], turns: int) -> dict:
    refused = [r for r in records if not any(t["first_media"] for t in r["turns"]) and any("closed by the gateway" in f for f in r["failures"])]
    admitted = [r for r in records if r not in refused]
    answers = [(t["first_media"] - t["speech_end"]) * 1000 for r in admitted for t in r["turns"] if t["first_media"] and t["speech_end"]]
    return {
        "offered": len(records),
        "refused": len(refused),
        "admitted": len(admitted),
        "turns_answered": f"{len(answers)}/{len(admitted) * turns}",
        "failed_calls": sum(1 for r in admitted if r["failures"]),
        "underruns": sum(len(r["underruns"]) for r in admitted),
        "answer_p50_ms": pct(answers, 0.5),
        "answer_p99_ms": pct(answers, 0.99),
    }


CAPACITY = {"asr": "PARLEY_ASR_CAPACITY", "orchestrator": "PARLEY_ORCHESTRATOR_CAPACITY", "tts": "PARLEY_TTS_CAPACITY"}


def run(root: Path, offered: int, limit: int, turns: int, kind: str = "gateway", limited_only: bool = False) -> dict:
    import httpx

    out = {}
    for label, limited in (("limit", True), ("no limit", False))[: 1 if limited_only else 2]:
        env = {"PARLEY_PROVIDERS": "fixed", "PARLEY_TWILIO_INSECURE": "1", "PARLEY_MAX_CALLS": str(limit if limited and kind == "gateway" else 100_000)}
        env |= {var: str(limit if limited and k == kind else 0) for k, var in CAPACITY.items()}
        with Stack(root / label.replace(" ", "-"), env=env) as stack:
            records = asyncio.run(offer(stack, offered, turns))
            stats = httpx.get(f"{stack.gateway}/healthz", timeout=10, trust_env=False).json().get("stats", {})
        out[label] = {"limit_on": kind if limited else None, "limit": limit if limited else None, **judge(records, turns),
                      "refused_because": {k: v for k, v in stats.items() if k.startswith("busy_full_")}}  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--offered", type=int, default=60)
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--kind", choices=("gateway", *CAPACITY), default="gateway", help="the service whose capacity is the limit")
    ap.add_argument("--limited-only", action="store_true")
    ap.add_argument("--root", default=str(ROOT / "var" / "admission"))
    a = ap.parse_args(argv)
    result = run(Path(a.root) / time.strftime("%Y%m%d-%H%M%S"), a.offered, a.limit, a.turns, a.kind, a.limited_only)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
