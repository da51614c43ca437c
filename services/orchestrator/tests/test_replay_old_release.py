"""Records written by an earlier release are still read, or refused with the reason.

The fixtures were recorded with ``fixtures/record_release.py`` against the
release in the file name (a real call over /ws/pcm with the real models:
greeting, a booking with a tool call, a question, a barge-in, a hang-up).
"""

from __future__ import annotations

import struct
from pathlib import Path

import msgspec
import pytest

from parley import contract
from parley_orchestrator import reducer
from parley_orchestrator.records import NewerSchema, Stored, decode_stored, read_step
from parley_orchestrator.replay import from_jsonl, replay, timeline

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD = "release-f79863b"


def raw_log(name: str) -> list[bytes]:
    data = (FIXTURES / f"{name}.log.bin").read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def without_statement_hold(steps):
    """The recorded call under this release's rules with RULES 21's
    statement hold off (Policy.turn_release_statement 0): a held answer
    plays at its "release" timer, which the old log never recorded, so with
    the hold on its first answer would wait forever in the replay."""
    first = steps[0]
    params = {**first.event.params, "turn_release_statement": "0"}
    return [msgspec.structs.replace(first, event=msgspec.structs.replace(first.event, params=params)), *steps[1:]]


def test_the_export_of_the_previous_release_replays_and_says_what_the_new_rules_changed():
    steps, digest = from_jsonl((FIXTURES / f"{OLD}.jsonl").read_text())
    steps = without_statement_hold(steps)
    assert len(steps) > 150 and digest
    result = replay(steps, digest)
    assert result.schemas == {1} and result.rules == {1} and not result.same_rules
    # Rules 2 (issue 9): a sound no longer barges in after 0.5 s (#126, the
    # "interrupt" timer); the partial "Sorry" does (#127). Everything before
    # and after those steps is decided as that release decided it.
    assert not result.ok and {m.index for m in result.mismatches} == {125, 126, 127}
    assert result.steps[125][0].event.__class__.__name__ == "SpeechStarted"
    assert result.steps[127][0].event.text == "Sorry" and result.steps[127][1].taken == "words: barge-in"
    # The state's encoding is part of the schema: an old digest is not compared.
    assert not result.digest_checked
    verdict = timeline(result).splitlines()[-1]
    assert f"difference(s) from #125 on, expected: recorded under rules 1, schema 1; this release: rules {reducer.RULES}" in verdict


def test_the_raw_log_and_kv_value_of_the_previous_release_are_read():
    steps, _ = from_jsonl((FIXTURES / f"{OLD}.jsonl").read_text())
    raw = [read_step(b) for b in raw_log(OLD)]
    assert raw[: len(steps)] == steps
    stored = decode_stored((FIXTURES / f"{OLD}.kv.bin").read_bytes())
    assert stored.schema == 1 and stored.consumed == len(raw)
    assert stored.state.phase is contract.Phase.ENDED
    # The history holds what the caller heard, under the old rules and the new.
    assert stored.state.history == replay(without_statement_hold(raw)).final_state.history


def test_a_record_of_a_newer_schema_is_refused_with_the_reason():
    step = read_step(raw_log(OLD)[0])
    newer = msgspec.structs.replace(step, schema=contract.SCHEMA + 1)
    with pytest.raises(NewerSchema, match=f"schema {contract.SCHEMA + 1}.*up to {contract.SCHEMA}"):
        read_step(contract.encode(newer))
    with pytest.raises(NewerSchema, match="line 1"):
        from_jsonl(contract.to_json(newer).decode())
    with pytest.raises(NewerSchema):
        replay([newer])
    state = Stored(consumed=1, state=reducer.initial_state(), schema=contract.SCHEMA + 1)
    with pytest.raises(NewerSchema, match="session state"):
        decode_stored(contract.encode(state))


def test_an_unreadable_line_names_the_line_and_its_schema():
    lines = (FIXTURES / f"{OLD}.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace('"type":"PlaybackProgress"', '"type":"PlaybackHeard"')
    with pytest.raises(ValueError, match=r"line 4: step of schema 1 does not fit schema \d+: .*PlaybackHeard"):
        from_jsonl("\n".join(lines))
