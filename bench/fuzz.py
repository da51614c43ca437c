"""The fuzz figures for docs/BENCHMARKS.md: every target of fuzz/targets.py,
``FUZZ_RUNS`` inputs each (default 100,000), coverage-guided (atheris,
libFuzzer), one process per target; prints a Markdown section.

    uv run python bench/fuzz.py            # FUZZ_RUNS=100000
    FUZZ_RUNS=2000 uv run python bench/fuzz.py

A crash is any exception the target does not document (the input is kept
by libFuzzer as crash-*); a hang is an input that runs longer than
``-timeout`` (10 s); a cross-session effect is the target's own check (a
message on another session's subject, a change in the victim call) failing,
which also ends the run.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "fuzz" / "targets.py"
HANG_S = 10


def run_target(name: str, runs: int, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, str(TARGETS), name, f"-runs={runs}", f"-timeout={HANG_S}", "-rss_limit_mb=4096", f"-artifact_prefix={workdir}/"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "FUZZ_CORPUS": str(workdir / "corpus")},
    )
    wall = time.monotonic() - t0
    out = p.stdout + p.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", out)
    covs = re.findall(r"cov: (\d+) ft: (\d+)", out)
    hang = "ALARM: working on the last Unit" in out or "timeout" in out.lower() and p.returncode != 0 and "Uncaught" not in out
    cross = p.returncode != 0 and ("cross-session" in out or "victim" in out or "another session" in out)
    crash = p.returncode != 0 and not hang and not cross
    return {
        "target": name,
        "runs": int(done.group(1)) if done else 0,
        "seconds": round(wall, 1),
        "exec_s": round(int(done.group(1)) / max(wall, 1e-9)) if done else 0,
        "cov": int(covs[-1][0]) if covs else 0,
        "features": int(covs[-1][1]) if covs else 0,
        "crashes": int(crash),
        "hangs": int(hang),
        "cross_session": int(cross),
        "rc": p.returncode,
        "tail": "" if p.returncode == 0 else out[-1500:],
    }


def names() -> list[str]:
    p = subprocess.run([sys.executable, str(TARGETS), "--list"], cwd=ROOT, capture_output=True, text=True, check=True)
    return p.stdout.split()


def markdown(rows: list[dict], runs: int) -> str:
    lines = [
        "## Fuzzing: every parser that takes outside input",
        "",
        f"Coverage-guided (atheris {_atheris()}, libFuzzer), {runs:,} inputs per target, one process each, on this machine "
        f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}). Targets in `fuzz/targets.py`: "
        "the gateway's real `TwilioSocket`/`Call` for Twilio streams and `/ws/pcm` frames, the `/webrtc/offer` body through aiortc's SDP parser, "
        "Twilio webhooks (form and JSON bodies, `bodySHA256`, the signature) with their query string as session parameters, every bus message "
        "type (events decoded and reduced from a live state, commands, steps, ASR claim/progress, TTS audio headers) and what the gateway does "
        "with each, the session-parameter allow-list (anything the gateway accepts, the orchestrator's policy takes), the ASR worker's bus input "
        "(claims, audio frames and headers, control, liveness) and the TTS worker's (Synthesize, cancels, control) through the real workers, and "
        "the orchestrator's intake of a stored event (the producer check, decoding, the reducer). The gateway and worker targets run "
        "a victim session on the same in-process bus: any message on another session's subject, or any change in the victim, fails the run. "
        f"A hang is an input running over {HANG_S} s.",
        "",
        "| target | inputs | time (s) | inputs/s | coverage (edges / features) | crashes | hangs | cross-session effects |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['target']} | {r['runs']:,} | {r['seconds']} | {r['exec_s']:,} | {r['cov']} / {r['features']} | {r['crashes']} | {r['hangs']} | {r['cross_session']} |")
    bad = [r for r in rows if r["rc"] != 0 or r["runs"] < runs]
    lines += ["", "Found while writing the targets and fixed: msgspec raises `UnicodeDecodeError` (not `DecodeError`) for a msgpack or JSON "
              "string that is not UTF-8, so one malformed bus message escaped every decoder's error handling (`contract._safely`), and a Twilio "
              "message given as bytes did the same in `twilio_protocol.parse`; a re-prompt or goodbye text of only white space passed the "
              "gateway's allow-list but not the orchestrator's policy (now refused at the gateway)."]
    for r in bad:
        lines += ["", f"**{r['target']} failed** (exit {r['rc']}):", "```", r["tail"].strip(), "```"]
    lines += ["", "Reproduce: `uv run python bench/fuzz.py` (`FUZZ_RUNS=...`), or one target: `uv run python fuzz/targets.py bus -runs=100000`. "
              "`make test` runs every target briefly (tests/test_fuzz.py)."]
    return "\n".join(lines) + "\n"


def _atheris() -> str:
    from importlib.metadata import version

    return version("atheris")


def main() -> int:
    runs = int(os.environ.get("FUZZ_RUNS", "100000"))
    work = ROOT / "var" / "bench" / "fuzz"
    rows = []
    for name in names():
        r = run_target(name, runs, work / name)
        print(f"[fuzz] {name}: {r['runs']} inputs in {r['seconds']} s, rc {r['rc']}", file=sys.stderr, flush=True)
        rows.append(r)
    print(markdown(rows, runs))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
