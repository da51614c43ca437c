"""The judge on calls built by hand: what the caller heard (20 ms frames on
its clock) and the reducer steps seen on parley.obs. No stack, no models."""

from __future__ import annotations

import json

import pytest

from parley import contract as c
from parley.scenarios import report
from parley.scenarios.judge import Action, Record, audible_stop, judge, normalise, stretches, words_check
from parley.scenarios.line import Seen
from parley.scenarios.runner import clock_mismatch, reply_length
from parley.scenarios.spec import Words, load

S = "sess-1"


def scenario(text: str):
    return load(text).scenarios[0]


def audio(start: float, end: float, db: float = -20.0) -> list[tuple[float, float, float]]:
    n = round((end - start) / 0.02)
    return [(start + k * 0.02, 0.02, db) for k in range(n)]


class Steps:
    """Reducer steps in order, each seen at a time on the caller's clock."""

    def __init__(self):
        self.seen: list[Seen] = []

    def add(self, at: float, event, *commands, to: str = "Speaking", dropped: str = "") -> "Steps":
        step = c.Step(index=len(self.seen), event=event, state_from=c.Phase.LISTENING, state_to=c.Phase(to), commands=tuple(commands), dropped=dropped)
        self.seen.append(Seen(at, step))
        return self

    def reply(self, at: float, run: int, texts: list[str], lengths_ms: list[int], user: str = "question") -> "Steps":
        self.add(at, c.TranscriptFinal(session=S, at=at, utterance=run, text=user), c.StartLLM(session=S, run=run, step=0, messages=()), to="Generating")
        for k, text in enumerate(texts):
            self.add(at + 0.01, c.LLMToken(session=S, at=at, run=run, step=0, text=text), c.Synthesize(session=S, run=run, chunk=k, text=text))
        self.add(at + 0.02, c.LLMDone(session=S, at=at, run=run, step=0))
        for k, ms in enumerate(lengths_ms):
            self.add(at + 0.05, c.TTSChunkStarted(session=S, at=at, run=run, chunk=k))
            self.add(at + 0.06, c.TTSChunkDone(session=S, at=at, run=run, chunk=k, audio_ms=ms))
        return self

    def cmd(self, at: float, *commands, to: str = "Paused") -> "Steps":
        return self.add(at, c.SpeechStarted(session=S, at=at, utterance=9), *commands, to=to)


def record(actions: list[tuple[int, str, float, float]], frames, steps: Steps | None = None, **kw) -> Record:
    return Record("x", "pcm", session=S, t0=0.0, actions=[Action(i, k, a, b) for i, k, a, b in actions], frames=frames, steps=steps.seen if steps else [], **kw)


def test_voice_to_voice_is_from_the_callers_last_sample_to_the_first_audible_agent_audio():
    sc = scenario("scenarios: [{name: x, steps: [{say: hello there}]}]")
    frames = audio(2.5, 2.8, db=-70) + audio(2.8, 4.0)  # a silent lead-in does not count
    steps = Steps()
    steps.add(2.5, c.SpeechStopped(session=S, at=2.5, utterance=0), to="Transcribing")
    steps.add(2.7, c.TranscriptFinal(session=S, at=2.7, utterance=0, text="hello there"), c.StartLLM(session=S, run=1, step=0, messages=()), to="Generating")
    res = judge(sc, record([(0, "say", 1.0, 2.0)], frames, steps))
    assert res.v2v_ms == [800.0]
    assert res.v2v_stages == [{"total": 800, "endpoint": 500, "asr": 200, "reply": 100}]
    assert res.mid_turn == [] and res.ok


def test_an_answer_inside_a_mid_turn_pause_is_caught_with_how_far_into_the_pause():
    sc = scenario(
        """
scenarios:
  - name: x
    steps: [{say: could you book me in for}, {pause: 1.2}, {say: um thursday}]
    expect: {answered_mid_turn: false, answered: true}
"""
    )
    steps = Steps().reply(2.4, 1, ["What day and time would suit you?"], [1500])
    frames = audio(2.6, 3.4) + audio(5.0, 6.0)
    res = judge(sc, record([(0, "say", 1.0, 2.0), (1, "pause", 2.0, 3.2), (2, "say", 3.2, 4.0)], frames, steps))
    assert res.pause_turns == 1
    assert res.mid_turn == [{"turn": 0, "onset": 2.6, "into_pause_ms": 600, "pause_turn": True, "kind": "mid-sentence"}]
    assert res.early_runs == [{"turn": 0, "run": 1, "into_pause_ms": 400, "pause_turn": True, "kind": "mid-sentence"}]
    assert res.v2v_ms == []  # the turn was answered before it ended: no voice-to-voice sample
    failed = {ch.name for ch in res.failed}
    assert failed == {"never answered mid-turn"}, res.checks


def test_a_reply_started_but_not_heard_inside_the_pause_is_counted_on_the_system_side_only():
    sc = scenario("scenarios: [{name: x, steps: [{say: my number is}, {pause: 1.0}, {say: five five five}], expect: {answered_mid_turn: false}}]")
    steps = Steps().reply(2.9, 1, ["Sorry?"], [600])
    res = judge(sc, record([(0, "say", 1.0, 2.0), (1, "pause", 2.0, 3.0), (2, "say", 3.0, 4.0)], audio(4.9, 5.5), steps))
    assert res.mid_turn == [] and res.ok
    assert [r["run"] for r in res.early_runs] == [1]


def test_a_real_interruption_that_stops_the_agent_and_how_fast_the_caller_heard_it():
    sc = scenario(
        """
scenarios:
  - name: x
    steps:
      - say: what are your hours
      - wait: {agent: mid}
      - say: sorry can I book friday instead
        expect: stops
    expect: {interrupted: true}
"""
    )
    steps = Steps().reply(2.0, 1, ["We're open Monday to Friday,", "from 9 to 5."], [1500, 2000])
    steps.cmd(3.35, c.PausePlayback(session=S, run=1)).cmd(3.8, c.FlushPlayback(session=S, run=1), to="Interrupted")
    frames = audio(2.1, 3.44)  # the caller stops hearing the agent 0.24 s after it began to talk
    res = judge(sc, record([(0, "say", 1.0, 1.9), (1, "wait", 1.9, 3.2), (2, "say", 3.2, 4.8)], frames, steps))
    (o,) = res.overlaps
    assert o["outcome"] == "stops" and o["run"] == 1 and o["paused"] and not o["resumed"]
    assert o["stop_ms"] == 240 and o["flush_ms"] == 600
    assert res.ok, res.failed


def test_a_backchannel_that_kills_the_answer_fails_and_one_that_does_not_passes():
    text = """
scenarios:
  - name: x
    steps:
      - say: what are your hours
      - wait: {agent_audio: 1}
      - say: mm-hmm
        expect: keeps_talking
"""
    sc = scenario(text)
    acts = [(0, "say", 1.0, 1.9), (1, "wait", 1.9, 3.2), (2, "say", 3.2, 3.6)]
    # Kept talking: a pause of 300 ms, then the rest of the answer.
    steps = Steps().reply(2.0, 1, ["We're open Monday to Friday, from 9 to 5."], [4000])
    steps.cmd(3.4, c.PausePlayback(session=S, run=1)).cmd(4.0, c.ResumePlayback(session=S, run=1), to="Speaking")
    frames = audio(2.1, 3.5) + audio(3.8, 6.1)
    res = judge(sc, record(acts, frames, steps))
    (o,) = res.overlaps
    assert o["outcome"] == "keeps_talking" and o["paused"] and o["resumed"] and o["continued"]
    assert 290 <= o["gap_ms"] <= 310
    assert o["stop_ms"] == 300  # the pause counts as an audible stop too
    assert res.ok
    # Killed.
    steps = Steps().reply(2.0, 1, ["We're open Monday to Friday, from 9 to 5."], [4000])
    steps.cmd(3.4, c.PausePlayback(session=S, run=1)).cmd(4.2, c.FlushPlayback(session=S, run=1), to="Interrupted")
    res = judge(sc, record(acts, audio(2.1, 3.5), steps))
    assert res.overlaps[0]["outcome"] == "stops"
    assert [ch.name for ch in res.failed] == ["step 2 say 'mm-hmm': agent keeps_talking"]


def test_a_sound_in_the_silence_between_two_sentences_talks_over_the_agent():
    sc = scenario("scenarios: [{name: x, steps: [{say: hi}, {wait: {agent: mid}}, {sound: cough, expect: keeps_talking}]}]")
    steps = Steps().reply(2.0, 1, ["On Friday I have ten.", "Which time suits you?"], [2000, 1500])
    frames = audio(2.1, 4.0) + audio(4.0, 4.26, db=-120) + audio(4.26, 5.6)  # 260 ms of silence between the sentences
    res = judge(sc, record([(0, "say", 1.0, 1.5), (1, "wait", 1.5, 4.13), (2, "sound", 4.13, 4.93)], frames, steps))
    assert res.overlaps[0]["outcome"] == "keeps_talking" and res.mid_turn == [] and res.ok


def test_a_talk_over_that_found_the_agent_silent_is_reported_not_guessed():
    sc = scenario("scenarios: [{name: x, steps: [{say: hi}, {wait: 3}, {say: wait, expect: stops}]}]")
    res = judge(sc, record([(0, "say", 1.0, 1.5), (1, "wait", 1.5, 4.5), (2, "say", 4.5, 5.0)], audio(2.0, 3.0)))
    assert res.overlaps[0]["outcome"] == "not_over"
    assert not res.ok and "was not talking" in res.failed[0].detail


def test_tools_are_matched_in_order_with_argument_subsets():
    sc = scenario(
        """
scenarios:
  - name: x
    steps: [{say: book friday at ten}]
    expect:
      tools: [{name: check_availability}, {name: book_appointment, arguments: {time: "10:00", date: 2026-12-04}}]
      no_tools: [end_call]
"""
    )
    steps = Steps()
    steps.add(1, c.LLMToolCall(session=S, at=1, run=1, step=0, call_id="a", name="check_availability", arguments="{}"), c.CallTool(session=S, run=1, call_id="a", name="check_availability", arguments='{"date": "2026-12-04"}'))
    steps.add(2, c.LLMToolCall(session=S, at=2, run=1, step=1, call_id="b", name="book_appointment", arguments=""), c.CallTool(session=S, run=1, call_id="b", name="book_appointment", arguments='{"date": "2026-12-04", "time": "10:00", "patient_name": "Ann"}'))
    res = judge(sc, record([(0, "say", 0.5, 1.0)], [], steps))
    assert res.ok, res.failed
    steps.add(3, c.LLMToolCall(session=S, at=3, run=1, step=2, call_id="c", name="end_call", arguments="{}"))
    res = judge(sc, record([(0, "say", 0.5, 1.0)], [], steps))
    assert [ch.name for ch in res.failed] == ["no end_call"]
    wrong = scenario("scenarios: [{name: x, steps: [{say: hi}], expect: {tools: [{name: book_appointment, arguments: {time: '11:00'}}]}}]")
    res = judge(wrong, record([(0, "say", 0.5, 1.0)], [], steps))
    assert not res.ok and "no book_appointment" in res.failed[0].detail
    none = scenario("scenarios: [{name: x, steps: [{say: hi}], expect: {tools: []}}]")
    assert not judge(none, record([(0, "say", 0.5, 1.0)], [], steps)).ok
    assert judge(none, record([(0, "say", 0.5, 1.0)], [], Steps())).ok


def test_words_are_compared_as_a_caller_would_hear_them():
    assert normalise("You're booked for Thursday the 3rd, at 11 A.M.!") == "you're booked for thursday the 3rd at 11 am"
    assert normalise("eleven thirty p.m.") == "11 30 pm"
    ok, _ = words_check(Words(all=("eleven", "am"), any=("Thursday", "Friday"), none=("sunday",)), "Thursday at 11 a.m.")
    assert ok
    ok, why = words_check(Words(all=("friday",), none=("closed",)), "Sorry, we're closed on Sundays.")
    assert not ok and "missing ['friday']" in why and "should not have ['closed']" in why


def test_history_of_a_cut_reply_is_checked_against_what_the_caller_heard_whole():
    sc = scenario(
        """
scenarios:
  - name: x
    steps:
      - say: what are your hours
      - wait: {agent_audio: 1.2}
      - say: stop, book friday
        expect: stops
    expect: {history_heard: true}
"""
    )
    acts = [(0, "say", 1.0, 1.9), (1, "wait", 1.9, 3.4), (2, "say", 3.4, 4.4)]

    def call(held: str) -> list:
        steps = Steps().reply(2.0, 1, ["We're open Monday to Friday,", "from 9 to 5."], [1200, 2000])
        steps.cmd(3.5, c.PausePlayback(session=S, run=1)).cmd(3.9, c.FlushPlayback(session=S, run=1), to="Interrupted")
        msgs = (c.Message(role="user", content="what are your hours"), c.Message(role="assistant", content=held, interrupted=True))
        steps.add(5.0, c.TranscriptFinal(session=S, at=5.0, utterance=2, text="stop, book friday"), c.StartLLM(session=S, run=2, step=0, messages=msgs))
        # The first chunk (1.2 s) was heard whole, the second only in part.
        return judge(sc, record(acts, audio(2.1, 3.6), steps)).checks

    good = [ch for ch in call("We're open Monday to Friday,") if ch.name.startswith("history")]
    assert good and good[0].ok, good
    bad = [ch for ch in call("We're open Monday to Friday, from 9 to 5.") if ch.name.startswith("history")]
    assert bad and not bad[0].ok and "1 of 2 chunks" in bad[0].detail


def test_the_clock_the_stack_runs_on_is_compared_with_the_pinned_date():
    steps = Steps()
    steps.add(1, c.TranscriptFinal(session=S, at=1, utterance=0, text="hi"), c.StartLLM(session=S, run=1, step=0, messages=(c.Message(role="system", content="Today is 2026-11-28 (Saturday)."),)))
    assert "PARLEY_NOW=2026-12-01T09:30:00" in clock_mismatch("2026-12-01T09:30:00", steps.seen)
    assert clock_mismatch("2026-11-28T17:00:00", steps.seen) == ""
    assert clock_mismatch("2026-11-28T17:00:00", []) == ""
    sc = scenario("scenarios: [{name: x, steps: [{say: hi}]}]")
    res = judge(sc, record([(0, "say", 0.5, 1.0)], [], steps, clock="the stack's clock says ..."))
    assert not res.ok and res.failed[0].name == "clock pinned"


def test_a_reply_has_a_length_only_once_it_is_complete():
    steps = Steps().reply(1.0, 1, ["One moment.", "You're booked."], [700, 1300])
    assert reply_length(steps.seen, 1) == 2.0
    partial = Steps()
    partial.add(1, c.TranscriptFinal(session=S, at=1, utterance=0, text="x"), c.StartLLM(session=S, run=1, step=0, messages=()))
    partial.add(1.1, c.LLMToken(session=S, at=1, run=1, step=0, text="One moment."), c.Synthesize(session=S, run=1, chunk=0, text="One moment."))
    partial.add(1.2, c.LLMDone(session=S, at=1, run=1, step=0, finish_reason="tool_calls"))
    partial.add(1.3, c.TTSChunkDone(session=S, at=1, run=1, chunk=0, audio_ms=700))
    assert reply_length(partial.seen, 1) is None  # a tool result will bring more


def test_stretches_and_audible_stop():
    frames = audio(1.0, 2.0) + audio(2.1, 2.5) + audio(3.0, 3.5)
    assert [(round(a, 2), round(b, 2)) for a, b in stretches(frames)] == [(1.0, 2.5), (3.0, 3.5)]
    assert round(audible_stop(frames, 1.5), 2) == 1.0
    assert audible_stop(frames, 2.8) is None


def test_a_record_survives_json():
    steps = Steps().reply(2.0, 1, ["Hello."], [500])
    rec = record([(0, "say", 1.0, 1.5)], audio(2.1, 2.6), steps, transcripts={"after_first": "hello"})
    back = Record.from_json(json.loads(json.dumps(rec.to_json())))
    assert back.actions == rec.actions and back.frames == rec.frames and back.transcripts == rec.transcripts
    assert [s.step for s in back.steps] == [s.step for s in rec.steps]
    sc = scenario("scenarios: [{name: x, steps: [{say: hi}]}]")
    assert judge(sc, back).v2v_ms == judge(sc, rec).v2v_ms == [600.0]


def test_the_summary_counts_by_transport_against_the_goals():
    sc = scenario(
        """
scenarios:
  - name: x
    steps: [{say: a}, {pause: 1}, {say: b}, {wait: {agent_audio: 1}}, {say: mm-hmm, expect: keeps_talking}]
"""
    )
    acts = [(0, "say", 1.0, 2.0), (1, "pause", 2.0, 3.0), (2, "say", 3.0, 3.5), (3, "wait", 3.5, 5.0), (4, "say", 5.0, 5.4)]
    steps = Steps().reply(4.0, 1, ["A long answer."], [3000])
    steps.cmd(5.3, c.PausePlayback(session=S, run=1)).cmd(5.7, c.FlushPlayback(session=S, run=1), to="Interrupted")
    killed = judge(sc, record(acts, audio(4.2, 5.5), steps))
    kept = judge(sc, record(acts, audio(4.2, 7.0), Steps().reply(4.0, 1, ["A long answer."], [3000])))
    twilio = judge(sc, record(acts, audio(2.4, 2.6) + audio(4.2, 7.0), Steps().reply(4.0, 1, ["A long answer."], [3000])))
    twilio.transport = "twilio"
    s = report.summary([killed, kept, twilio])
    assert s["pcm"]["killed"] == 1 and s["pcm"]["keep_n"] == 2 and s["pcm"]["killed_rate"] == 0.5
    assert s["pcm"]["v2v_p50_ms"] == 700.0 and s["pcm"]["mid_turn_rate"] == 0.0
    assert s["twilio"]["mid_turn_heard"] == 1 and s["twilio"]["mid_turn_into_pause_ms"] == [400]
    table = report.table(s)
    assert "| answers killed by a noise or backchannel | 0 | 1/2 (50.0 %) ✗ | 0/1 (0.0 %) ✓ |" in table


def test_pauses_are_counted_by_where_they_sit_in_the_callers_sentence():
    """A pause inside a sentence ("for Tuesday, ... at ten") and one after a
    whole sentence ("Do you open Saturdays? ... I work weekdays.") are counted
    apart; the total stays the measure with the goal."""
    acts = [(0, "say", 1.0, 2.0), (1, "pause", 2.0, 3.2), (2, "say", 3.2, 4.0)]
    inside = scenario("scenarios: [{name: a, steps: [{say: 'Could you put me in for Tuesday,'}, {pause: 1.2}, {say: 'at ten?'}]}]")
    after = scenario("scenarios: [{name: b, steps: [{say: 'Do you open on Saturdays?'}, {pause: 1.2}, {say: I work weekdays.}]}]")
    answered_in_pause = audio(2.6, 3.4) + audio(5.0, 6.0)
    waited = audio(4.6, 5.6)
    results = [
        judge(inside, record(acts, waited, Steps().reply(4.3, 1, ["Yes."], [900]))),
        judge(after, record(acts, answered_in_pause, Steps().reply(2.4, 1, ["We are."], [800]))),
    ]
    assert [r.pause_kinds for r in results] == [["mid-sentence"], ["after-sentence"]]
    assert results[1].mid_turn[0]["kind"] == "after-sentence"
    s = report.summary(results)["pcm"]
    assert s["mid_turn_heard"] == 1 and s["pause_calls"] == 2
    assert s["mid_turn_by_kind"] == {"mid-sentence": (0, 1), "after-sentence": (1, 1)}
    table = report.table(report.summary(results))
    assert "| agent heard inside a caller's pause | <= 5 % | 1/2 (50.0 %) ✗ |" in table
    assert "inside a pause mid-sentence" in table and "0/1 (0.0 %)" in table


def test_the_callers_onset_and_the_ears_own_stop_are_used_when_recorded():
    sc = scenario("scenarios: [{name: x, steps: [{say: hours}, {wait: {agent: mid}}, {say: stop there, expect: stops}]}]")
    steps = Steps().reply(2.0, 1, ["We're open Monday to Friday."], [3000])
    steps.cmd(3.5, c.PausePlayback(session=S, run=1)).cmd(3.9, c.FlushPlayback(session=S, run=1), to="Interrupted")
    acts = [Action(0, "say", 1.0, 1.9), Action(1, "wait", 1.9, 3.2), Action(2, "say", 3.2, 4.4, onset=3.25)]
    rec = Record("x", "pcm", session=S, actions=acts, frames=audio(2.1, 3.6), steps=steps.seen, stops={2: 0.337})
    (o,) = judge(sc, rec).overlaps
    assert o["onset"] == 3.25 and o["stop_ms"] == 337 and o["flush_ms"] == 650
    del rec.stops[2]
    assert judge(sc, rec).overlaps[0]["stop_ms"] == 350  # the frames' own measure, from the onset


def test_the_runners_audible_stop_spans_the_silence_between_sentences():
    import numpy as np

    from parley.scenarios.line import Heard
    from parley.scenarios.runner import audible_stops

    rate = 16000
    loud = (np.sin(np.arange(320) / 5) * 8000).astype(np.int16)
    quiet = np.zeros(320, np.int16)
    # 1.0-2.0 s speech, 2.0-2.3 s silence (still playing), 2.3-2.6 s speech, then the caller's clear cut it.
    frames = [(1.0 + k * 0.02, loud) for k in range(50)] + [(2.0 + k * 0.02, quiet) for k in range(15)] + [(2.3 + k * 0.02, loud) for k in range(15)]
    stops = audible_stops([Action(2, "say", 2.1, 3.0, onset=2.1), Action(4, "say", 3.5, 4.0, onset=3.5)], Heard(rate, frames))
    assert stops[2] == pytest.approx(0.5, abs=0.006)
    assert stops[4] is None


def test_history_of_a_reply_cut_after_its_tool_call_holds_only_the_last_steps_words():
    sc = scenario(
        """
scenarios:
  - name: x
    steps: [{say: sunday}, {wait: {agent: late}}, {say: hang on, expect: stops}]
    expect: {history_heard: true}
"""
    )
    S2 = S
    steps = Steps()
    steps.add(2.0, c.TranscriptFinal(session=S2, at=2.0, utterance=0, text="sunday?"), c.StartLLM(session=S2, run=1, step=0, messages=()), to="Generating")
    steps.add(2.01, c.LLMToken(session=S2, at=2.0, run=1, step=0, text="Let me check."), c.Synthesize(session=S2, run=1, chunk=0, text="Let me check."))
    steps.add(2.02, c.ToolResult(session=S2, at=2.0, run=1, call_id="a", name="check_availability", result="{}"), c.StartLLM(session=S2, run=1, step=1, messages=()), to="Generating")
    for k, text in enumerate(["Sorry, we're closed on Sundays.", "We're open Monday to Friday.", "Shall I book Monday?"], start=1):
        steps.add(2.03, c.LLMToken(session=S2, at=2.0, run=1, step=1, text=text), c.Synthesize(session=S2, run=1, chunk=k, text=text))
    steps.add(2.04, c.LLMDone(session=S2, at=2.0, run=1, step=1))
    for k, ms in enumerate([1000, 2000, 2000, 1500]):
        steps.add(2.05, c.TTSChunkStarted(session=S2, at=2.0, run=1, chunk=k))
        steps.add(2.06, c.TTSChunkDone(session=S2, at=2.0, run=1, chunk=k, audio_ms=ms))
    steps.cmd(7.6, c.PausePlayback(session=S2, run=1)).cmd(8.0, c.FlushPlayback(session=S2, run=1), to="Interrupted")
    msgs = (
        c.Message(role="assistant", content="Let me check."),
        c.Message(role="assistant", content="Sorry, we're closed on Sundays. We're open Monday to Friday.", interrupted=True),
    )
    steps.add(9.0, c.TranscriptFinal(session=S2, at=9.0, utterance=1, text="hang on"), c.StartLLM(session=S2, run=2, step=0, messages=msgs))
    acts = [(0, "say", 1.0, 1.9), (1, "wait", 1.9, 7.4), (2, "say", 7.4, 8.0)]
    res = judge(sc, record(acts, audio(2.1, 7.6), steps))  # 5.5 s heard: chunks 0-2 whole
    (check,) = [ch for ch in res.checks if ch.name.startswith("history")]
    assert check.ok, check
    # Cut inside chunk 1 (the first of the tool step): the message with text
    # that was heard is the one before the tool call.
    steps.seen[-1] = Seen(9.0, c.Step(index=steps.seen[-1].step.index, event=steps.seen[-1].step.event, state_from=c.Phase.LISTENING, state_to=c.Phase.GENERATING,
                                     commands=(c.StartLLM(session=S2, run=2, step=0, messages=(c.Message(role="assistant", content="Let me check.", interrupted=True),)),)))
    acts = [(0, "say", 1.0, 1.9), (1, "wait", 1.9, 3.5), (2, "say", 3.5, 4.1)]
    res = judge(sc, record(acts, audio(2.1, 3.6), steps))  # 1.5 s heard: chunk 0 whole
    (check,) = [ch for ch in res.checks if ch.name.startswith("history")]
    assert check.ok, check
