"""Replay of recorded steps: identical when nothing changed, loud when anything did."""

from __future__ import annotations

import msgspec

from parley import contract as c
from parley_orchestrator import records, reducer as r
from parley_orchestrator.replay import from_jsonl, replay, state_digest, timeline, to_jsonl

from test_reducer_examples import Convo


def record(events):
    state = r.initial_state()
    steps = []
    for i, ev in enumerate(events):
        state, cmds, out = r.reduce(state, ev)
        steps.append(records.step(i, ev, cmds, out))
    return steps, state


def conversation():
    v = Convo(greeting="Hello.")
    events = []
    orig = v.send

    def spy(cls, **fields):
        out = orig(cls, **fields)
        events.append(cls(session="ex", at=v.t, **fields))
        return out

    v.send = spy
    v.play_all()
    v.user_says("book tomorrow at 3")
    v.llm("Let me check.", done=False)
    v.send(c.LLMToolCall, run=v.run, step=0, call_id="k", name="book_appointment", arguments="{}")
    v.send(c.LLMDone, run=v.run, step=0, finish_reason="tool_calls")
    v.send(c.LLMToken, run=99, step=0, text="stale")
    v.send(c.ToolResult, run=v.run, call_id="k", name="book_appointment", result="{}")
    v.llm("Booked for 3 p.m.")
    v.send(c.TTSChunkStarted, run=v.run, chunk=0)
    v.send(c.PlaybackProgress, run=v.run, chunk=0, finished=False)  # the caller hears it: a barge-in, not a withdrawal
    v.send(c.SpeechStarted, utterance=3)
    v.send(c.TranscriptPartial, utterance=3, text="no thanks, bye")
    return [c.SessionStarted(session="ex", at=0.05, params={"greeting": "Hello."})] + events


def test_replay_of_a_recording_is_identical_and_timeline_readable():
    steps, final = record(conversation())
    text = to_jsonl(steps, state_digest(final))
    steps2, digest = from_jsonl(text)
    result = replay(steps2, digest)
    assert result.ok and result.digest_checked
    out = timeline(result)
    assert "DROPPED (stale" in out and "Interrupted" in out and "identical" in out


def test_replay_detects_a_changed_command():
    steps, final = record(conversation())
    i = next(i for i, s in enumerate(steps) if any(isinstance(x, c.Synthesize) for x in s.commands))
    cmds = tuple(msgspec.structs.replace(x, text="something else") if isinstance(x, c.Synthesize) else x for x in steps[i].commands)
    steps[i] = msgspec.structs.replace(steps[i], commands=cmds)
    result = replay(steps, state_digest(final))
    assert not result.ok and result.mismatches[0].what == "commands"


def test_replay_detects_a_missing_event():
    steps, final = record(conversation())
    del steps[5]
    result = replay(steps, state_digest(final))
    assert not result.ok
    assert any(m.what.startswith("log index") for m in result.mismatches)
