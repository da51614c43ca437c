"""The bounded chaos test (``make test``): ten fixed-latency calls on two
processes of every worker service; one orchestrator, one TTS worker and one
ASR worker are killed with SIGKILL in turn, each while calls are mid-answer.
Every call goes on, every turn is answered within the issue's 2 s (plus this
run's measured slowness, see tests/chaos.py), nothing is reduced out of order
or twice, and the heard history is exact.

The 2 s came back here on 2026-11-29 (session 6) once the takeover paths
stopped waiting out timeouts (partition hand-over and take-back, liveness
questions every 0.1 s, TTS peers handing a dead worker's requests back): in
dense chaos runs at load 5-11 the first turn answered after a kill had p99
<= 0.95 s (orchestrator), <= 1.38 s (ASR) and <= 1.09 s (TTS), the slowest
1.59 s (an ASR kill), none over 2 s (docs/BENCHMARKS.md section 7).
``make chaos`` runs the long random plan with the same bound."""

from __future__ import annotations

import json

from chaos import BOUNDED_PLAN, run_chaos

ANSWER_LIMIT_MS = 2000.0  # issue 10: every call's next turn within 2 s of a kill (tests/chaos.py adds the machine's slowness)


def test_calls_survive_kill_9_of_each_worker_kind(tmp_path, capsys):
    result = run_chaos(tmp_path / "stack", calls=10, turns=6, plan=list(BOUNDED_PLAN), answer_limit_ms=ANSWER_LIMIT_MS)
    with capsys.disabled():
        print("\n[chaos] " + json.dumps(result.summary(), indent=1))
    assert [k.key for k in result.kills] == ["orchestrator", "tts", "asr"]
    assert result.takeovers > 0, "the killed orchestrator's sessions were taken over"
    assert not result.problems, "\n".join(result.problems)
