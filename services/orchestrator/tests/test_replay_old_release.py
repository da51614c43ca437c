"""Logs recorded by an earlier release still replay.

The fixtures were recorded with ``fixtures/record_release.py`` against the
release named in the file name (a real call over /ws/pcm: greeting, a booking
with a tool call, a question, a barge-in, a hang-up).
"""

from __future__ import annotations

from pathlib import Path

from parley_orchestrator.replay import from_jsonl, replay

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_the_log_recorded_by_release_f79863b_replays_identically():
    steps, digest = from_jsonl((FIXTURES / "release-f79863b.jsonl").read_text())
    assert len(steps) > 100
    result = replay(steps, digest)
    assert result.ok, result.mismatches[:3]
