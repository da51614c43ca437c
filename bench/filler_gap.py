"""Silence after a filler, from the caller's side: does a held answer that
says "One moment." or "Let me check." go on without a long gap?

A held answer (reducer RULES 16-21, 25) is prepared while the caller may
still go on. Its tools that change something (book, cancel, reschedule) run
only once it is heard, so after its filler the caller waits for the tool,
the next LLM step and its first audio; tools that only read run during the
hold (RULES 25), so that answer is ready at the release. This script calls
the demo receptionist over Twilio Media Streams (a real stack: gateway, ASR,
orchestrator, TTS, real models; Piper caller speech, μ-law 8 kHz, real time),
the way tests/test_receptionist_e2e.py does, and measures for each caller
turn what the caller heard after it stopped talking: when the first agent
audio played (voice-to-voice) and the longest silence between the answer's
voiced stretches (20 ms frames under -45 dBFS), i.e. the gap after a filler.

    uv run python bench/filler_gap.py [--calls 2] [--out FILE.json]

Policy values come from the environment as for any stack
(``PARLEY_POLICY_TURN_RELEASE_STATEMENT=1.6``...): run it once per arm, from
each arm's worktree, alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

FRAME = 160  # 20 ms at 8 kHz
VOICED_DBFS = -45.0

# Each call: the caller's turns, said one after the other. The first call is
# test_receptionist_e2e's (book, cancel, book again); the second looks up.
CALLS = [
    [
        "Hi, I'd like to book a check-up on Thursday at eleven a.m.",
        "Sorry, I need to cancel my appointment.",
        "Yes please. Thursday at eleven a.m. again.",
    ],
    [
        "I'd like to come in on Friday.",
        "I want to move my appointment to Friday at ten.",
    ],
]


def voiced_spans(pcm: bytes, t0: float, times: list[float]) -> list[tuple[float, float]]:
    """Voiced stretches (start, end) of the played frames, on the caller's clock."""
    spans: list[tuple[float, float]] = []
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    for i, at in enumerate(times):
        frame = audio[i * FRAME : (i + 1) * FRAME]
        if frame.size == 0:
            break
        level = 20 * np.log10(max(float(np.sqrt(np.mean(frame**2))), 1e-9))
        if level < VOICED_DBFS:
            continue
        if spans and at - spans[-1][1] <= 0.021:
            spans[-1] = (spans[-1][0], at + 0.02)
        else:
            spans.append((at, at + 0.02))
    return spans


def measure(caller, spoke_until: float) -> dict:
    frames = [(t, pcm) for t, pcm in caller.rec.played if t >= spoke_until]
    # Split played pieces into 20 ms frames with their own play times.
    times: list[float] = []
    pcm = b""
    for t, piece in frames:
        n = len(piece) // (2 * FRAME)
        times += [t + k * 0.02 for k in range(n)]
        pcm += piece[: n * 2 * FRAME]
    spans = voiced_spans(pcm, spoke_until, times)
    if not spans:
        return {"v2v_ms": None, "max_gap_ms": None, "spans": 0}
    gaps = [(b[0] - a[1]) for a, b in zip(spans, spans[1:])]
    big = max(gaps) if gaps else 0.0
    at = gaps.index(big) if gaps else -1
    return {
        "v2v_ms": round((spans[0][0] - spoke_until) * 1000),
        "max_gap_ms": round(big * 1000),
        "gap_after_ms": round((spans[at][1] - spans[0][0]) * 1000) if at >= 0 else None,  # how far into the answer
        "spans": len(spans),
        "heard_ms": round((spans[-1][1] - spans[0][0]) * 1000),
    }


async def one_call(stack, lines_pcm, dial, settle) -> list[dict]:
    caller, _ = await dial(stack, caller_number="+1555" + str(secrets.randbelow(10**7)).zfill(7))
    out = []
    try:
        await settle(caller)
        for text, pcm in lines_pcm:
            _, spoke_until = await caller.say(pcm)
            await caller.wait_audio(after=spoke_until, timeout=40)
            await caller.wait_quiet(quiet=3.0, timeout=60, after=spoke_until)
            out.append({"said": text, **measure(caller, spoke_until)})
    finally:
        await caller.hang_up()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2, help="rounds over CALLS")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from speech import say
    from stack import Stack
    from test_twilio_e2e import AUTH_TOKEN, dial, settle

    lines = [[(t, say(t, rate=8000)) for t in call] for call in CALLS]  # Piper blocks the loop: before the calls
    results = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="filler-gap-") as tmp, Stack(Path(tmp) / "stack", env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN}) as stack:
        for _ in range(args.calls):
            for call in lines:
                results += asyncio.run(one_call(stack, call, dial, settle))
    report = {"at": time.strftime("%H:%M:%S", time.gmtime()), "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
              "env": {k: v for k, v in os.environ.items() if k.startswith("PARLEY_POLICY")}, "turns": results}
    for r in results:
        print(f"{r['said'][:48]:48} v2v {r['v2v_ms']} ms  longest gap {r['max_gap_ms']} ms (at {r.get('gap_after_ms')} ms into {r.get('heard_ms')} ms heard)")
    gaps = [r["max_gap_ms"] for r in results if r["max_gap_ms"] is not None]
    print(f"longest gap inside an answer: max {max(gaps)} ms, over 1 s: {sum(g > 1000 for g in gaps)}/{len(gaps)}; load {report['load']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
