"""The bounded chaos test (``make test``): ten fixed-latency calls on two
processes of every worker service; one orchestrator, one TTS worker and one
ASR worker are killed with SIGKILL in turn, each while calls are mid-answer.
Every call goes on, every turn is answered within 2 s, nothing is reduced out
of order or twice, and the heard history is exact (see tests/chaos.py)."""

from __future__ import annotations

import json

from chaos import BOUNDED_PLAN, run_chaos


def test_calls_survive_kill_9_of_each_worker_kind(tmp_path, capsys):
    result = run_chaos(tmp_path / "stack", calls=10, turns=6, plan=list(BOUNDED_PLAN))
    with capsys.disabled():
        print("\n[chaos] " + json.dumps(result.summary(), indent=1))
    assert [k.key for k in result.kills] == ["orchestrator", "tts", "asr"]
    assert result.takeovers > 0, "the killed orchestrator's sessions were taken over"
    assert not result.problems, "\n".join(result.problems)
