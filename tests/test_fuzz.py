"""A short run of every fuzz target (fuzz/targets.py): no crash, no hang,
no cross-session effect in a few thousand coverage-guided inputs each. The
long runs (100,000 inputs per target) are in `make bench` (bench/fuzz.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fuzz as bench_fuzz  # noqa: E402  (bench/fuzz.py)

RUNS = 1500


@pytest.mark.parametrize("target", bench_fuzz.names())
def test_fuzz_target_briefly(target, tmp_path):
    r = bench_fuzz.run_target(target, RUNS, tmp_path)
    assert r["rc"] == 0, r["tail"]
    assert r["runs"] == RUNS and r["crashes"] == r["hangs"] == r["cross_session"] == 0
    assert r["cov"] > 0


def test_inputs_that_once_crashed_a_target_pass_through_it_now():
    """fuzz/regressions/<target>/: inputs atheris found crashing a target
    (since fixed), replayed through that target every run."""
    import subprocess

    found = sorted(p for p in (ROOT / "fuzz" / "regressions").glob("*/*") if p.is_file())
    assert found
    script = (
        "import sys, pathlib, targets\n"
        "for arg in sys.argv[1:]:\n"
        "    p = pathlib.Path(arg)\n"
        "    targets.TARGETS[p.parent.name](p.read_bytes())\n"
        "print('replayed', len(sys.argv) - 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *map(str, found)], cwd=ROOT / "fuzz", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"replayed {len(found)}" in proc.stdout
