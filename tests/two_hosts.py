"""Parley on two "hosts" (issue 10 point 9): network namespaces made here
(``tests/hosts.py``), each with a NATS node and a set of services, in one
NATS cluster; a third namespace holds only the third NATS node (a cluster of
three keeps its quorum when one host dies).

    h1: nats-n1, media-gateway, orchestrator, asr, tts
    h2: nats-n2, orchestrator#2, asr#2, tts#2
    h3: nats-n3

Fixed-latency Twilio-protocol calls come from this namespace to h1's
gateway; while they hear answers, every process of h2 is killed with SIGKILL
(a host that dies), and h2 is started again a few seconds later. Every call
must go on, answered, its log whole and its history exact (the checks of
``tests/chaos.py``). Prints the figures for docs/BENCHMARKS.md and
docs/SCALING.md. Needs root (``ip netns``): ``make chaos`` runs it after the
chaos run.

    uv run python tests/two_hosts.py [--calls 10] [--turns 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hosts as hostlib  # noqa: E402
from chaos import run_chaos  # noqa: E402

PLACEMENT = {
    "media-gateway": "h1", "orchestrator": "h1", "asr": "h1", "tts": "h1",
    "orchestrator#2": "h2", "asr#2": "h2", "tts#2": "h2",
}  # fmt: skip
NATS_PLACEMENT = ["h1", "h2", "h3"]


def run_two_hosts(root: Path, calls: int, turns: int, kill_at: float = 6.0, answer_limit_ms: float = 14_000):
    with hostlib.Hosts(3) as hosts:
        return run_chaos(
            root, calls=calls, turns=turns, plan=[(kill_at, "host-h2")], answer_limit_ms=answer_limit_ms,
            replicas={"orchestrator": 2, "asr": 2, "tts": 2},
            stack_options={"hosts": hosts, "placement": dict(PLACEMENT), "nats_placement": list(NATS_PLACEMENT)},
        )  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--root", default=str(ROOT / "var" / "two-hosts"))
    a = ap.parse_args(argv)
    if not hostlib.available():
        print("two hosts: needs root and iproute2 (ip netns)", file=sys.stderr)
        return 2
    result = run_two_hosts(Path(a.root) / time.strftime("%Y%m%d-%H%M%S"), a.calls, a.turns)
    print(json.dumps(result.summary(), indent=2))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
