"""Concrete transitions, one scenario per rule of the reducer (see reducer.py)."""

from __future__ import annotations

import json

import msgspec
import pytest

from parley import contract as c
from parley_orchestrator import reducer as r
from parley_orchestrator import words

S = "ex"


class Convo:
    """Drives the reducer through a scripted conversation and keeps what it said."""

    def __init__(self, recorded: bool = False, **params: str):
        self.state = r.initial_state()
        self.t = 100.0
        self.due: dict = {}
        self.cmds: list = []
        self.last: list = []
        self.outcome: r.Outcome | None = None
        # The examples below answer at once; the held release (RULES 16) has
        # its own examples, which set these.
        params = {"turn_release": "0", "turn_release_short": "0", "turn_release_statement": "0", "turn_release_unasked": "0", **params}
        self.send(c.SessionStarted, params=params, recorded=recorded)

    def send(self, cls, **fields):
        self.t += 0.05
        ev = cls(session=S, at=self.t, **fields)
        self.state, self.last, self.outcome = r.reduce(self.state, ev)
        self.cmds += self.last
        for x in self.last:
            if isinstance(x, c.StartTimer):
                self.due[(x.name, x.token)] = self.t + x.delay
        return self.last

    @property
    def phase(self):
        return self.state.phase

    @property
    def run(self):
        return self.state.run.id if self.state.run else None

    def types(self):
        return [type(x).__name__ for x in self.last]

    def timer(self, name):
        """Fire a running timer, when it is due."""
        token = dict(self.state.timers)[name]
        self.t = max(self.t, self.due[(name, token)] - 0.05)
        return self.send(c.TimerFired, name=name, token=token)

    def user_says(self, text, u=None, eot=1.0, complete=1.0):
        """A whole utterance: the VAD stops 0.2 s after the voice ends (as the
        ASR does), with the end-of-turn signals; the final comes 0.05 s later."""
        u = self.state.utterance + 1 if u is None else u
        self.send(c.SpeechStarted, utterance=u)
        self.stop(u, eot=eot)
        return self.send(c.TranscriptFinal, utterance=u, text=text, complete=complete)

    def stop(self, u, eot=-1.0):
        return self.send(c.SpeechStopped, utterance=u, speech_end_at=self.t + 0.05 - 0.2, eot=eot)

    def llm(self, text, step=None, done=True):
        step = self.state.run.step if step is None else step
        run = self.run
        for word in text.split(" "):
            self.send(c.LLMToken, run=run, step=step, text=word + " ")
        if done:
            self.send(c.LLMDone, run=run, step=step)

    def play_all(self):
        run = self.state.run
        for i in range(run.sent):
            self.send(c.TTSChunkStarted, run=run.id, chunk=i)
            self.send(c.TTSChunkDone, run=run.id, chunk=i, audio_ms=500)
            self.send(c.PlaybackProgress, run=run.id, chunk=i, finished=False)
            self.send(c.PlaybackProgress, run=run.id, chunk=i, finished=True)

    def synthesized(self, run=None):
        return [x.text for x in self.cmds if isinstance(x, c.Synthesize) and (run is None or x.run == run)]


def test_a_turn_from_speech_to_heard_reply():
    v = Convo()
    assert v.phase == r.LISTENING
    cmds = v.user_says("I'd like to book an appointment")
    assert v.phase == r.GENERATING
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    assert start.run == 1 and start.step == 0
    assert start.messages[0].role == "system" and start.messages[-1] == c.Message(role="user", content="I'd like to book an appointment")
    v.llm("Sure. What day works for you?")
    assert v.synthesized() == ["Sure.", "What day works for you?"]
    v.play_all()
    assert v.phase == r.LISTENING and v.state.run is None
    assert [m.content for m in v.state.history] == ["I'd like to book an appointment", "Sure. What day works for you?"]
    assert not v.state.history[-1].interrupted


def test_run_scoping_drops_stale_events():
    v = Convo()
    v.user_says("hello")
    before = v.state
    assert v.send(c.LLMToken, run=7, step=0, text="stale") == []
    assert v.outcome.dropped == "stale" and v.state == before
    assert v.send(c.PlaybackProgress, run=0, chunk=0, finished=True) == []
    assert v.outcome.dropped == "stale"


def test_invalid_event_is_rejected_and_changes_nothing():
    v = Convo()
    before = v.state
    assert v.send(c.SessionStarted) == []
    assert v.outcome.dropped == "rejected" and v.state == before


def test_barge_in_cancels_llm_tts_and_playback_in_one_step():
    v = Convo()
    v.user_says("tell me about the clinic")
    v.llm("We are open on weekdays. We do cleanings, fillings and crowns. Parking is free.", done=False)
    run = v.run
    v.send(c.TTSChunkStarted, run=run, chunk=0)
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    assert v.phase == r.SPEAKING
    assert v.send(c.SpeechStarted, utterance=5) and v.types() == ["PausePlayback", "StartTimer"]
    assert v.phase == r.PAUSED
    v.send(c.TranscriptPartial, utterance=5, text="wait a second")
    assert {"CancelLLM", "CancelTTS", "FlushPlayback"} <= set(v.types())
    assert all(getattr(x, "run", run) == run for x in v.last)
    assert v.outcome.path == (r.PAUSED, r.INTERRUPTED, r.LISTENING)
    assert v.state.run is None
    # Nothing unheard went to history; later output of that run is stale.
    assert [m for m in v.state.history if m.role == "assistant"] == []
    v.send(c.LLMToken, run=run, step=0, text="more")
    assert v.outcome.dropped == "stale"


def test_interrupted_reply_is_stored_truncated_to_what_was_heard():
    v = Convo()
    v.user_says("what are your hours")
    v.llm("We are open Monday to Friday. From nine to five. Closed on holidays.")
    run = v.run
    assert v.synthesized(run) == ["We are open Monday to Friday.", "From nine to five. Closed on holidays."]
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=True)
    v.send(c.PlaybackProgress, run=run, chunk=1, finished=False)
    v.send(c.SpeechStarted, utterance=9)
    v.send(c.TranscriptPartial, utterance=9, text="and on that day")  # words: barge-in
    assert v.phase == r.LISTENING
    last = v.state.history[-1]
    assert last.role == "assistant" and last.content == "We are open Monday to Friday." and last.interrupted
    # The next run's prompt carries the truncated reply, never the unheard rest.
    v.stop(9, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=9, text="and on Saturday?", complete=0.9)
    prompt = [x for x in cmds if isinstance(x, c.StartLLM)][0].messages
    assert not any("nine to five" in m.content for m in prompt)


def test_a_chunk_the_caller_s_client_dropped_the_end_of_at_a_pause_is_not_heard():
    """The gateway reported chunk 0 finished as its last frame left, but the
    caller's client dropped its buffer at the pause with that end in it (the
    gateway says so: chunk 0 not finished): a barge-in then keeps it out of
    history; a resume plays it again and it is heard."""
    for then in ("barge-in", "resume"):
        v = Convo()
        v.user_says("what are your hours")
        v.llm("We are open Monday to Friday. From nine to five. Closed on holidays.")
        run = v.run
        v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
        v.send(c.PlaybackProgress, run=run, chunk=0, finished=True)
        v.send(c.PlaybackProgress, run=run, chunk=1, finished=False)
        v.send(c.SpeechStarted, utterance=9)
        assert v.phase == r.PAUSED
        v.send(c.PlaybackProgress, run=run, chunk=0, finished=False, played_ms=1400)
        assert v.state.run.played == 0 and "not heard whole" in v.outcome.note
        if then == "barge-in":
            v.send(c.TranscriptPartial, utterance=9, text="and on that day")
            assert v.phase == r.LISTENING
            assert not [m for m in v.state.history if m.role == "assistant" and m.content]
        else:
            v.stop(9)
            v.send(c.TranscriptFinal, utterance=9, text="uh-huh")
            assert v.phase == r.SPEAKING and "ResumePlayback" in v.types()
            v.send(c.PlaybackProgress, run=run, chunk=0, finished=True)
            assert v.state.run.played == 1


def test_false_interruption_resumes_without_losing_the_answer():
    v = Convo()
    v.user_says("book me in")
    v.llm("Sure, I can do that. Which day would you like?", done=False)
    run = v.run
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    v.send(c.SpeechStarted, utterance=3)
    assert v.phase == r.PAUSED and v.types() == ["PausePlayback", "StartTimer"]
    v.send(c.SpeechStopped, utterance=3)
    assert "StartTimer" in v.types()  # resume timeout
    v.send(c.TranscriptFinal, utterance=3, text="uh-huh")
    assert v.types().count("ResumePlayback") == 1 and v.phase == r.SPEAKING and v.run == run
    # ...and a cough with no transcript resumes on the timer.
    v.send(c.SpeechStarted, utterance=4)
    v.send(c.SpeechStopped, utterance=4)
    v.timer("resume")
    assert "ResumePlayback" in v.types() and v.phase == r.SPEAKING
    v.send(c.TranscriptFinal, utterance=4, text="")
    assert v.run == run


def test_a_word_while_paused_is_a_barge_in_even_if_short():
    v = Convo()
    v.user_says("what time do you open?")
    v.llm("Hello, how can I help you today?", done=False)
    v.send(c.TTSChunkStarted, run=v.run, chunk=0)
    v.send(c.PlaybackProgress, run=v.run, chunk=0, finished=False)  # the caller hears it
    v.send(c.SpeechStarted, utterance=2)
    v.stop(2, eot=0.9)
    v.send(c.TranscriptFinal, utterance=2, text="Stop.", complete=0.9)
    assert {"CancelLLM", "FlushPlayback"} <= set(v.types())
    assert [x for x in v.last if isinstance(x, c.StartLLM)][0].messages[-1].content == "Stop."


@pytest.mark.parametrize(
    "text,chunks",
    [
        ("Dr. Smith can see you at 3.30 p.m. tomorrow. Is that okay?", ["Dr. Smith can see you at 3.30 p.m. tomorrow.", "Is that okay?"]),
        ("Sure, e.g. a cleaning costs $80.50 and takes 30 minutes. Anything else?", ["Sure, e.g. a cleaning costs $80.50 and takes 30 minutes.", "Anything else?"]),
        ("Okay. I booked it.", ["Okay.", "I booked it."]),
    ],
)
def test_chunking_never_splits_numbers_or_abbreviations(text, chunks):
    v = Convo()
    v.user_says("question")
    v.llm(text)
    assert v.synthesized() == chunks
    assert [x.chunk for x in v.cmds if isinstance(x, c.Synthesize)] == list(range(len(chunks)))


def test_first_chunk_goes_early_at_a_clause():
    v = Convo()
    v.user_says("question")
    v.llm("Absolutely, let me look at the schedule, and then I will", done=False)
    assert v.synthesized() == ["Absolutely, let me look at the schedule,"]
    v.llm("tell you.", step=0)
    assert v.synthesized() == ["Absolutely, let me look at the schedule,", "and then I will tell you."]


def test_tool_call_continues_the_same_run_with_one_numbering():
    v = Convo()
    v.user_says("book tomorrow at 3 pm")
    run = v.run
    v.llm("Let me check that for you.", done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id="t1", name="book_appointment", arguments='{"time": "15:00"}')
    assert v.types() == ["CallTool"]
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    assert v.phase == r.AWAITING_TOOL
    cmds = v.send(c.ToolResult, run=run, call_id="t1", name="book_appointment", result='{"booked": true}')
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    assert start.run == run and start.step == 1
    assert [m.role for m in start.messages[-3:]] == ["user", "assistant", "tool"]
    assert start.messages[-2].content == "Let me check that for you." and start.messages[-2].tool_calls[0].call_id == "t1"
    v.llm("You're booked for 3 p.m. tomorrow.")
    assert [(x.chunk, x.text) for x in v.cmds if isinstance(x, c.Synthesize)] == [(0, "Let me check that for you."), (1, "You're booked for 3 p.m. tomorrow.")]
    v.play_all()
    roles = [(m.role, m.content) for m in v.state.history]
    assert roles == [("user", "book tomorrow at 3 pm"), ("assistant", "Let me check that for you."), ("tool", '{"booked": true}'), ("assistant", "You're booked for 3 p.m. tomorrow.")]


def test_tool_call_of_a_cancelled_run_is_never_executed():
    v = Convo()
    v.user_says("hang up please")
    run = v.run
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.TranscriptPartial, utterance=7, text="no wait")
    assert v.state.run is None
    assert v.send(c.LLMToolCall, run=run, step=0, call_id="x", name="end_call", arguments="{}") == []
    assert v.outcome.dropped == "stale"


def test_result_of_a_tool_that_ran_is_kept_and_never_run_twice():
    v = Convo()
    v.user_says("book friday at 10")
    run = v.run
    v.send(c.LLMToolCall, run=run, step=0, call_id="t1", name="book_appointment", arguments='{"date": "fri", "time": "10:00"}')
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    # The caller interrupts while the tool runs...
    v.send(c.SpeechStarted, utterance=8)
    v.send(c.TranscriptPartial, utterance=8, text="hmm actually also")
    assert v.state.run is None
    # ...the result arrives while they are still speaking: kept.
    v.send(c.ToolResult, run=run, call_id="t1", name="book_appointment", result='{"booked": true}')
    assert v.outcome.dropped == ""
    assert any(m.role == "tool" and m.tool_call_id == "t1" for m in v.state.history)
    v.stop(8, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=8, text="actually also book Monday", complete=0.9)
    prompt = [x for x in cmds if isinstance(x, c.StartLLM)][0].messages
    assert any(m.role == "tool" and m.content == '{"booked": true}' for m in prompt)
    # The model asks for the same booking again: reused, not executed.
    run2 = v.run
    v.send(c.LLMToolCall, run=run2, step=0, call_id="t2", name="book_appointment", arguments='{"time": "10:00", "date": "fri"}')
    assert not any(isinstance(x, c.CallTool) for x in v.last)
    assert "reused" in v.outcome.note
    cmds = v.send(c.LLMDone, run=run2, step=0, finish_reason="tool_calls")
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].step == 1
    assert sum(isinstance(x, c.CallTool) for x in v.cmds) == 1


def test_book_cancel_and_book_the_same_slot_again_runs_every_call():
    """The same call is only a repeat while its execution is the latest: after
    another run's call (the cancel), booking the same slot runs again."""
    v = Convo()
    book = '{"date": "2026-11-27", "time": "10:00"}'
    for i, (name, args) in enumerate([("book_appointment", book), ("cancel_appointment", '{"appointment_id": 1}'), ("book_appointment", book)]):
        v.user_says(f"request {i}")
        run = v.run
        v.send(c.LLMToolCall, run=run, step=0, call_id=f"t{i}", name=name, arguments=args)
        assert [x.name for x in v.last if isinstance(x, c.CallTool)] == [name]
        v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
        v.send(c.ToolResult, run=run, call_id=f"t{i}", name=name, result="{}")
        v.llm("Done.", step=1)
        v.play_all()
    assert [x.name for x in v.cmds if isinstance(x, c.CallTool)] == ["book_appointment", "cancel_appointment", "book_appointment"]


def test_tool_result_during_a_hold_continues_after_resume():
    v = Convo()
    v.user_says("book it")
    run = v.run
    v.llm("One moment.", done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id="t1", name="book_appointment", arguments="{}")
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    v.send(c.SpeechStarted, utterance=4)
    assert v.phase == r.PAUSED
    v.send(c.ToolResult, run=run, call_id="t1", name="book_appointment", result='{"booked": true}')
    assert not any(isinstance(x, c.StartLLM) for x in v.last)
    v.send(c.SpeechStopped, utterance=4)
    v.send(c.TranscriptFinal, utterance=4, text="mm-hmm")
    assert any(isinstance(x, c.StartLLM) and x.step == 1 for x in v.last)


def test_max_tool_steps_per_run():
    v = Convo(max_tool_steps="1")
    v.user_says("book")
    run = v.run
    v.send(c.LLMToolCall, run=run, step=0, call_id="a", name="check_availability", arguments='{"d": 1}')
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    v.send(c.ToolResult, run=run, call_id="a", name="check_availability", result="[]")
    v.send(c.LLMToolCall, run=run, step=1, call_id="b", name="check_availability", arguments='{"d": 2}')
    assert v.last == [] and "refused" in v.outcome.note


def test_an_unfinished_turn_waits_and_a_caller_who_resumes_continues_it():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.95)  # the acoustic model hears a finished sentence...
    v.send(c.TranscriptFinal, utterance=0, text="Could you book me in for", complete=0.9)
    # ...but the words are not: wait, bounded.
    j = v.outcome.judgements[-1]
    assert v.phase == r.TRANSCRIBING and not any(isinstance(x, c.StartLLM) for x in v.cmds)
    assert j.verdict == "wait" and j.wait == r.Policy().turn_wait_unfinished and "ends in 'for'" in j.reason
    assert dict(v.state.timers).get("endpoint")
    v.t += 1.0
    v.send(c.SpeechStarted, utterance=1)  # the caller goes on inside the wait, after a pause
    assert "endpoint" not in dict(v.state.timers) and v.phase == r.LISTENING
    v.stop(1, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=1, text="um, Thursday at eleven?", complete=0.95)
    # Complete now: answered (prepared) at once; but a caller who paused once
    # may pause again, so it is heard only from the longer release (RULES 19).
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.release == r.Policy().turn_wait_continued and "after 1 mid-turn pause" in j.reason
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    assert start.messages[-1].content == "Could you book me in for um, Thursday at eleven?"
    assert v.state.run.held and v.state.turn_pauses == 0 and _release_delay(cmds) == pytest.approx(j.release - j.silence)


@pytest.mark.parametrize(
    "first,rest,why",
    [
        ("Hi there.", "I wanted to ask about your prices for a cleaning.", "a greeting alone"),
        ("My address is 42.", "Elm Street, Springfield.", "a house number without its street"),
        ("The date I want is December.", "The eleventh, at ten thirty.", "a month without its day"),
        ("Could you tell me?", "If Doctor Smith is in on Monday.", "'tell me' needs what follows"),
        ("My booking reference is K.", "4 7 9 2.", "a code begun"),
    ],
)
def test_words_that_read_complete_but_open_a_turn_are_heard_only_after_the_longer_release(first, rest, why):
    """The opening of a request often reads as a whole sentence; the caller
    pauses and goes on. Such a turn is answered on the short wait but held
    until turn_wait_opening of silence (RULES 19), so the pause is not
    answered: the caller who goes on withdraws it unheard; alone, it is
    heard once the release comes."""
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.95)  # the acoustic model hears it finished too
    cmds = v.send(c.TranscriptFinal, utterance=0, text=first, complete=0.85)
    j = v.outcome.judgements[-1]
    p = r.Policy()
    assert j.verdict == "answer" and j.wait == p.turn_silence and j.release == p.turn_wait_opening and why in j.reason, j
    assert v.state.run.held and c.PausePlayback in [type(x) for x in cmds]
    assert _release_delay(cmds) == pytest.approx(p.turn_wait_opening - j.silence)
    v.llm("Hello! How can I help?", done=False)
    v.t += 0.8  # a thinking pause, then the rest
    v.send(c.SpeechOnset, utterance=1)
    v.send(c.SpeechStarted, utterance=1)
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.state.history == ()
    assert not any(isinstance(x, c.ResumePlayback) for x in v.cmds)
    v.stop(1, eot=0.95)
    v.send(c.TranscriptFinal, utterance=1, text=rest, complete=0.85)
    if v.state.run is None:
        v.timer("endpoint")  # the rest is a number being dictated: its own wait
    start = [x for x in v.cmds if isinstance(x, c.StartLLM)]
    assert len(start) == 2 and start[1].messages[-1].content == f"{first} {rest}"
    # Alone, the opening is heard once the longer release is over.
    v = Convo()
    cmds = v.user_says(first, eot=0.95, complete=0.85)
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == first
    run = v.run
    v.llm("Hello! How can I help?")
    assert [x for x in v.timer("release") if isinstance(x, c.ResumePlayback)] == [c.ResumePlayback(session=S, run=run)]
    assert v.t - v.state.silence_from >= p.turn_wait_opening - 0.001


def _release_delay(cmds):
    return [x for x in cmds if isinstance(x, c.StartTimer) and x.name == "release"][0].delay


def test_the_other_end_answering_a_call_parley_placed_is_answered_at_once():
    v = Convo(direction="outbound")
    cmds = v.user_says("Hello?", eot=0.9, complete=0.95)
    assert any(isinstance(x, c.StartLLM) for x in cmds) and v.outcome.judgements[-1].wait == r.Policy().turn_silence


def test_an_unfinished_turn_is_answered_when_the_wait_is_over():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0)
    v.send(c.TranscriptFinal, utterance=0, text="I'd like to book, um")
    assert v.phase == r.TRANSCRIBING
    cmds = v.timer("endpoint")
    assert any(isinstance(x, c.StartLLM) for x in cmds)
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.silence >= j.wait == r.Policy().turn_wait_unfinished


def test_a_complete_turn_is_answered_after_a_short_silence():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.8)
    cmds = v.send(c.TranscriptFinal, utterance=0, text="What time do you open on Monday?", complete=0.9)
    assert any(isinstance(x, c.StartLLM) for x in cmds)
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.wait == r.Policy().turn_silence and j.score == round((0.8 + 3 * 0.9) / 4, 3)


def test_without_signals_the_turn_ends_on_silence_timing():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0)  # eot -1: a provider without the model
    v.send(c.TranscriptFinal, utterance=0, text="What time do you open on Monday?")
    j = v.outcome.judgements[-1]
    assert j.verdict == "wait" and j.wait == r.Policy().turn_silence_unknown and "silence timing" in j.reason
    assert any(isinstance(x, c.StartLLM) for x in v.timer("endpoint"))


def test_the_signals_can_say_the_turn_is_not_over():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.3)
    v.send(c.TranscriptFinal, utterance=0, text="So I was thinking maybe next week", complete=0.2)
    j = v.outcome.judgements[-1]
    assert j.verdict == "wait" and j.reason == "unfinished by the signals" and j.wait == r.Policy().turn_wait_unfinished


def test_a_phone_number_dictated_in_groups_waits_for_the_rest():
    v = Convo()
    v.user_says("I need a callback")
    v.llm("Sure. What is the best phone number to reach you?")
    v.play_all()
    v.send(c.SpeechStarted, utterance=5)
    v.stop(5, eot=0.9)
    v.send(c.TranscriptFinal, utterance=5, text="555 201", complete=0.9)
    j = v.outcome.judgements[-1]
    assert j.verdict == "wait" and j.wait == r.Policy().turn_wait_dictation and "6 digits" in j.reason
    v.t += 1.0
    v.send(c.SpeechStarted, utterance=6)
    v.stop(6, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=6, text="7788.", complete=0.9)
    assert v.outcome.judgements[-1].release == r.Policy().turn_wait_continued  # a number said in groups: maybe more
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == "555 201 7788." and v.state.run.held


def test_a_caller_who_goes_on_before_hearing_the_answer_continues_the_turn():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.95)
    v.send(c.TranscriptFinal, utterance=0, text="Yes, right.", complete=0.95)  # a comma pause, read as a whole turn
    first = v.run
    assert v.phase == r.GENERATING
    v.llm("Great.", done=False)
    v.send(c.TTSChunkStarted, run=first, chunk=0)  # synthesized, not yet heard
    cmds = v.send(c.SpeechStarted, utterance=1)  # 0.4 s after the voice ended: a comma's gap
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.phase == r.LISTENING and v.state.run is None
    assert {type(x) for x in cmds} >= {c.CancelLLM, c.CancelTTS, c.FlushPlayback} and not any(isinstance(x, c.PausePlayback) for x in cmds)
    assert v.state.history == () and v.state.user_text == "Yes, right."
    assert v.state.turn_pauses == 0  # a comma's gap is not a pause
    v.stop(1, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=1, text="I was wondering if you have anything on Monday.", complete=0.9)
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    assert [m.content for m in start.messages if m.role == "user"] == ["Yes, right. I was wondering if you have anything on Monday."]


def test_sentences_in_one_breath_are_answered_at_once_a_thinking_pause_makes_the_agent_wait_longer():
    v = Convo()
    v.user_says("That's all I needed.", complete=0.95)  # answered at once...
    v.send(c.SpeechStarted, utterance=1)  # ...but the caller goes on 0.1 s later: withdrawn, same turn
    v.stop(1, eot=0.9)
    v.send(c.TranscriptFinal, utterance=1, text="Thanks, goodbye.", complete=0.95)
    assert v.outcome.judgements[-1].verdict == "answer" and v.state.turn_pauses == 0
    v = Convo()
    v.user_says("I'd like", complete=0.12)
    assert v.outcome.judgements[-1].verdict == "wait"
    v.t += r.Policy().turn_pause_min
    v.send(c.SpeechStarted, utterance=1)
    assert v.state.turn_pauses == 1
    v.stop(1, eot=0.95)
    cmds = v.send(c.TranscriptFinal, utterance=1, text="a cleaning.", complete=0.85)  # reads finished; a pauser may go on
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.release == r.Policy().turn_wait_continued and v.state.run.held, j
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == "I'd like a cleaning."


def test_an_answer_the_caller_began_to_hear_is_not_withdrawn():
    v = Convo()
    v.user_says("What are your opening hours?")
    v.llm("We open at nine.", done=False)
    v.send(c.TTSChunkStarted, run=v.run, chunk=0)
    v.send(c.PlaybackProgress, run=v.run, chunk=0, finished=False)
    cmds = v.send(c.SpeechStarted, utterance=1)
    assert v.phase == r.PAUSED and any(isinstance(x, c.PausePlayback) for x in cmds)  # the interruption rules decide


def test_no_answer_while_the_caller_is_still_talking():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=1.0)
    v.send(c.SpeechStarted, utterance=1)  # talks again before the final
    cmds = v.send(c.TranscriptFinal, utterance=0, text="Book me for Friday.", complete=1.0)
    assert not any(isinstance(x, c.StartLLM) for x in cmds) and v.outcome.taken == "caller still speaking"


def test_silence_reprompts_then_ends_the_call():
    v = Convo(max_reprompts="1", reprompt_after="5")
    v.timer("reprompt")
    assert v.synthesized() == ["Are you still there?"]
    v.play_all()
    v.timer("reprompt")
    v.play_all()
    assert any(isinstance(x, c.EndSession) for x in v.cmds) and v.phase == r.ENDED


def test_max_call_duration_ends_the_session():
    v = Convo(max_call="60")
    v.user_says("what time do you open?")
    v.timer("max_call")
    assert {"CancelLLM", "EndSession"} <= set(v.types()) and v.phase == r.ENDED


def test_llm_first_token_timeout_speaks_a_fallback_and_listens():
    v = Convo()
    v.user_says("what time do you open?")
    run = v.run
    v.timer("llm_first_token")
    assert "CancelLLM" in v.types()
    assert any(x.startswith("Sorry, I'm having trouble") for x in v.synthesized())
    assert v.run == run + 1
    v.play_all()
    assert v.phase == r.LISTENING


def test_tts_first_audio_timeout_falls_back():
    v = Convo()
    v.user_says("what time do you open?")
    v.llm("Hi there, how can I help?")
    v.timer("tts_first_audio")
    assert "CancelTTS" in v.types() and any(x.startswith("Sorry") for x in v.synthesized())


def test_llm_error_falls_back():
    v = Convo()
    v.user_says("what time do you open?")
    v.send(c.LLMError, run=v.run, step=0, message="HTTP 500")
    assert any(x.startswith("Sorry") for x in v.synthesized()) and "HTTP 500" in v.outcome.note


def test_playback_never_confirmed_does_not_leave_the_agent_stuck():
    v = Convo()
    v.user_says("what time do you open?")
    v.llm("Hello there.")
    v.send(c.TTSChunkStarted, run=v.run, chunk=0)
    cmds = v.send(c.TTSChunkDone, run=v.run, chunk=0, audio_ms=800)
    assert any(isinstance(x, c.StartTimer) and x.name == "playback" for x in cmds)
    v.timer("playback")
    assert v.phase == r.LISTENING and v.state.run is None


def test_preemptive_generation_keeps_a_matching_guess():
    v = Convo(preemptive="true")
    v.send(c.SpeechStarted, utterance=0)
    v.send(c.TranscriptPartial, utterance=0, text="book me for Friday")
    cmds = v.stop(0, eot=0.9)
    assert any(isinstance(x, c.StartLLM) for x in cmds)
    run = v.run
    v.llm("Sure.", done=False)
    assert v.synthesized() == []  # held until the final confirms the guess
    v.send(c.TranscriptFinal, utterance=0, text="Book me for Friday.", complete=0.9)
    assert v.run == run and v.synthesized() == ["Sure."]


def test_preemptive_generation_restarts_when_the_final_differs():
    v = Convo(preemptive="true")
    v.send(c.SpeechStarted, utterance=0)
    v.send(c.TranscriptPartial, utterance=0, text="book me for Friday")
    v.stop(0, eot=0.9)
    run = v.run
    v.llm("Sure, Friday it is.", done=False)
    cmds = v.send(c.TranscriptFinal, utterance=0, text="book me for Monday", complete=0.9)
    assert {"CancelLLM", "CancelTTS", "FlushPlayback"} <= set(v.types())
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    assert start.run == run + 1 and start.messages[-1].content == "book me for Monday"
    assert v.synthesized() == []
    assert v.outcome.path == (r.GENERATING, r.CANCELLED, r.GENERATING)


def test_dtmf_is_a_turn():
    v = Convo()
    cmds = v.send(c.Dtmf, digit="5")
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == "(pressed 5 on the keypad)"


def test_greeting_is_spoken_first_and_heard_into_history():
    v = Convo(greeting="Hi, this is the clinic. How can I help?")
    assert v.synthesized() == ["Hi, this is the clinic.", "How can I help?"]
    v.play_all()
    assert v.state.history[0] == c.Message(role="assistant", content="Hi, this is the clinic. How can I help?")


def test_session_end_cancels_everything():
    v = Convo()
    v.user_says("what time do you open?")
    v.send(c.SessionEnded, reason="hangup")
    assert {"CancelLLM", "CancelTTS", "FlushPlayback"} <= set(v.types())
    assert v.phase == r.ENDED and v.state.timers == ()
    v.send(c.SpeechStarted, utterance=10)
    assert v.outcome.dropped == "rejected"


def test_bad_params_are_reported_not_fatal():
    v = Convo(resume_timeout="soon", max_tool_steps="x")
    assert "resume_timeout" in v.outcome.note and "max_tool_steps" in v.outcome.note
    assert v.phase == r.LISTENING
    assert v.state.policy.resume_timeout == r.Policy().resume_timeout


def test_event_of_another_session_is_rejected():
    v = Convo()
    state, cmds, out = r.reduce(v.state, c.SpeechStarted(session="other", at=1, utterance=0))
    assert out.dropped == "rejected" and cmds == [] and state == v.state


def test_end_call_hangs_up_only_after_the_goodbye_was_heard():
    v = Convo()
    v.user_says("thanks, bye")
    run = v.run
    v.llm("Thank you for calling. Goodbye!", done=False)
    assert v.send(c.LLMToolCall, run=run, step=0, call_id="e", name="end_call", arguments="{}") == []
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    assert not any(isinstance(x, c.EndSession) for x in v.cmds)
    v.play_all()
    assert any(isinstance(x, c.EndSession) and x.reason == "agent ended the call" for x in v.cmds)
    assert v.phase == r.ENDED


def test_end_call_of_an_interrupted_reply_never_hangs_up():
    v = Convo()
    v.user_says("thanks, bye")
    run = v.run
    v.llm("Thank you for calling. Goodbye!", done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id="e", name="end_call", arguments="{}")
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    v.send(c.SpeechStarted, utterance=6)
    v.send(c.TranscriptPartial, utterance=6, text="wait, one more thing")
    assert v.phase == r.LISTENING
    assert not any(isinstance(x, c.EndSession) for x in v.cmds)
    assert not any(isinstance(x, c.CallTool) for x in v.cmds)


def test_a_final_transcript_that_never_comes_does_not_leave_the_turn_waiting():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.send(c.SpeechStopped, utterance=0)
    v.send(c.TranscriptFinal, utterance=0, text="book me for Friday")
    v.play_all() if v.state.run and v.state.run.sent else None
    v.send(c.SpeechStarted, utterance=1)
    v.send(c.SpeechStopped, utterance=1)  # ...and the ASR worker dies here, its audio lost
    assert not any(isinstance(x, c.StartLLM) for x in v.last)
    cmds = v.timer("final")
    assert "no final transcript" in v.outcome.note
    assert v.state.awaiting_finals == ()
    del cmds


def test_an_utterance_heard_again_by_the_next_asr_worker_is_answered_once():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.send(c.SpeechStopped, utterance=0)
    v.send(c.TranscriptFinal, utterance=0, text="")  # a cough
    v.send(c.SpeechStarted, utterance=1)  # ...and the ASR worker dies here
    # The next worker is given the audio from utterance 1's start, and counts
    # on from 1 (AsrClaim.utterance); a replayed utterance 0 is a duplicate.
    assert v.send(c.SpeechStarted, utterance=0) == [] and v.outcome.dropped == "duplicate"
    cmds = v.user_says("book me for Friday", u=1)
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == "book me for Friday"
    # The dead worker's own final for it, if it got out, changes nothing.
    assert v.send(c.TranscriptFinal, utterance=1, text="book me for Friday") == [] and v.outcome.dropped == "duplicate"


def test_an_utterance_heard_again_before_its_final_is_no_pause_in_the_turn():
    """RULES 28 (chaos6): the worker transcribing utterance 0 dies after its SpeechStopped; the worker
    that takes over is given the audio from the utterance's start and hears it again (same id): its
    SpeechStarted a second later is the same voice, not the caller going on after a pause."""
    def turn(reheard: bool):
        v = Convo()
        v.send(c.SpeechStarted, utterance=0)
        v.stop(0, eot=0.95)
        if reheard:
            v.t += 1.0  # the take-over: a second of silence on the reducer's clock
            v.send(c.SpeechStarted, utterance=0)
            assert v.state.turn_pauses == 0 and v.state.user_speaking
            v.t += 1.2
            v.stop(0, eot=0.95)
        cmds = v.send(c.TranscriptFinal, utterance=0, text="What time do you open on Friday?", complete=0.95)
        return v, cmds
    plain, reheard = turn(False), turn(True)
    assert [j.verdict for j in plain[0].outcome.judgements] == [j.verdict for j in reheard[0].outcome.judgements] == ["answer"]
    assert any(isinstance(x, c.StartLLM) for x in reheard[1])
    assert plain[0].state.run.held == reheard[0].state.run.held
    # A new utterance after the same silence is a pause (turn_pause_min): the rule is about the same id only.
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.3)
    v.send(c.TranscriptFinal, utterance=0, text="I'd like to book", complete=0.2)
    v.t += 1.0
    v.send(c.SpeechStarted, utterance=1)
    assert v.state.turn_pauses == 1


# --- LLM streams are numbered (attempt, seq): duplicates, gaps, takeovers


def _tokens(v, words, attempt=0, first=0):
    for i, word in enumerate(words):
        v.send(c.LLMToken, run=v.run, step=0, attempt=attempt, seq=first + i, text=word)


def test_a_duplicate_llm_output_is_dropped_and_a_gap_restarts_the_step():
    v = Convo()
    v.user_says("what time do you open?")
    _tokens(v, ["Hello ", "there, "])
    before = v.state
    assert v.send(c.LLMToken, run=v.run, step=0, attempt=0, seq=1, text="there, ") == []
    assert v.outcome.dropped == "duplicate" and v.state == before
    cmds = v.send(c.LLMToken, run=v.run, step=0, attempt=0, seq=5, text="lost ")
    assert [type(x).__name__ for x in cmds if not isinstance(x, c.StartTimer | c.CancelTimer)] == ["CancelLLM", "StartLLM"]
    assert cmds[0].attempt == 0 and [x for x in cmds if isinstance(x, c.StartLLM)][0].attempt == 1
    assert "gap" in v.outcome.note
    # The old attempt is stale from now on.
    assert v.send(c.LLMToken, run=v.run, step=0, attempt=0, seq=2, text="late ") == [] and v.outcome.dropped == "stale"


def test_a_restarted_attempt_repeats_what_was_said_then_goes_on():
    v = Convo()
    v.user_says("what time do you open?")
    _tokens(v, ["Sure. ", "I have ", "booked "])
    assert v.synthesized() == ["Sure."]
    v.send(c.Takeover, owner="r2")
    assert v.state.run.attempt == 1 and v.state.run.echo == "Sure. I have booked "
    # The new stream says it all again, cut differently: nothing is said twice.
    _tokens(v, ["Sure. I ", "have booked ", "you in. "], attempt=1)
    v.send(c.LLMDone, run=v.run, step=0, attempt=1, seq=3)
    assert v.synthesized() == ["Sure.", "I have booked you in."]
    v.play_all()
    assert v.state.history[-1].content == "Sure. I have booked you in."


def test_a_restarted_attempt_that_says_something_else_ends_with_what_was_said():
    v = Convo()
    v.user_says("what time do you open?")
    _tokens(v, ["Sure. ", "I have "])
    v.send(c.Takeover, owner="r2")
    cmds = v.send(c.LLMToken, run=v.run, step=0, attempt=1, seq=0, text="Okay! ")
    assert any(isinstance(x, c.CancelLLM) and x.attempt == 1 for x in cmds)
    assert "something else" in v.outcome.note
    v.play_all()
    assert v.state.history[-1].content == "Sure." and v.phase == r.LISTENING


def test_a_takeover_reissues_tool_calls_without_a_result_and_nothing_else():
    v = Convo()
    v.user_says("book me at 3")
    v.send(c.LLMToolCall, run=v.run, step=0, call_id="t1", name="book_appointment", arguments='{"time": "15:00"}')
    v.send(c.LLMDone, run=v.run, step=0, finish_reason="tool_calls")
    cmds = v.send(c.Takeover, owner="r2")
    assert [(type(x).__name__, x.call_id) for x in cmds] == [("CallTool", "t1")]
    v.send(c.ToolResult, run=v.run, call_id="t1", name="book_appointment", result='{"booked": true}')
    # The result is in: the LLM goes on (step 1); a takeover now restarts that
    # step and runs no tool again.
    cmds = v.send(c.Takeover, owner="r3")
    assert [(type(x).__name__, getattr(x, "step", None)) for x in cmds if isinstance(x, c.StartLLM | c.CallTool)] == [("StartLLM", 1)]

def replace_handler(monkeypatch, phase, event_type, handler):
    key = (phase, event_type)
    monkeypatch.setitem(r._ROWS, key, msgspec.structs.replace(r._ROWS[key], handler=handler))


def test_a_bug_in_a_handler_ends_the_session_cleanly_and_says_so(monkeypatch):
    v = Convo()
    v.user_says("what time do you open?")
    run = v.run

    def broken(fx, e):
        raise KeyError("oops")

    replace_handler(monkeypatch, v.phase, c.LLMToken, broken)
    # reduce itself raises: a bug is never a quiet "rejected"...
    with pytest.raises(KeyError):
        r.reduce(v.state, c.LLMToken(session=S, at=1.0, run=run, step=0, text="Hi"))
    # ...and the runtime's entry point ends the call: run cancelled, timers
    # stopped, the gateway told.
    state, cmds, out = r.reduce_or_end(v.state, c.LLMToken(session=S, at=1.0, run=run, step=0, text="Hi"))
    assert state.phase == r.ENDED and state.run is None and state.timers == ()
    types = [type(x).__name__ for x in cmds]
    assert types[:3] == ["CancelLLM", "CancelTTS", "FlushPlayback"] and types[-1] == "EndSession"
    assert {x.name for x in cmds if isinstance(x, c.CancelTimer)} == {name for name, _ in v.state.timers}
    assert out.error.startswith("reducer bug: KeyError") and "broken" in out.trace
    assert out.dropped == "" and out.path == (r.GENERATING, r.ENDED)


def test_a_handler_that_takes_an_undeclared_outcome_is_a_bug(monkeypatch):
    v = Convo()
    replace_handler(monkeypatch, v.phase, c.Dtmf, lambda fx, e: fx.to("somewhere new"))
    with pytest.raises(AssertionError, match="does not declare"):
        r.reduce(v.state, c.Dtmf(session=S, at=1.0, digit="1"))


# --- interruption judgement: sounds and backchannels never cancel an answer


def _speaking(v, text="We are open Monday to Friday from nine to five. On Saturdays we open at ten. We close on Sundays."):
    v.user_says("what are your opening hours")
    v.llm(text)
    run = v.state.run
    v.send(c.TTSChunkStarted, run=run.id, chunk=0)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=False)
    assert v.phase == r.SPEAKING
    return run.id


@pytest.mark.parametrize("heard", ["Mm-hmm.", "mhmm", "Uh huh", "Mmm.", "Yeah.", "Okay.", "I see.", "Right, right."])
def test_a_backchannel_never_cancels_the_answer(heard):
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    assert v.types() == ["PausePlayback", "StartTimer"] and v.phase == r.PAUSED
    v.send(c.TranscriptPartial, utterance=7, text=heard)
    assert v.phase == r.PAUSED and v.outcome.judgements[0].verdict == "hold"
    v.stop(7, eot=0.9)
    # The partial already said backchannel: playback resumes when the sound stops.
    assert "ResumePlayback" in v.types() and v.run == run and v.phase == r.SPEAKING
    assert v.outcome.judgements[0].heard == "backchannel" and v.outcome.judgements[0].verdict == "resume"
    assert v.outcome.judgements[0].reason.startswith("partial:")
    v.send(c.TranscriptFinal, utterance=7, text=heard, complete=1.0)
    assert v.types() == ["CancelTimer"] and v.phase == r.SPEAKING  # the final timer
    assert not any(isinstance(x, (c.CancelLLM, c.FlushPlayback)) for x in v.cmds)
    v.play_all()
    assert [m.role for m in v.state.history] == ["user", "assistant"]  # the backchannel is not a turn


@pytest.mark.parametrize("heard", ["Mm-hmm.", "Uh huh", "I see."])
def test_without_resume_on_partial_the_final_resumes(heard):
    v = Convo(resume_on_partial="false")
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.TranscriptPartial, utterance=7, text=heard)
    v.stop(7, eot=0.9)
    assert v.types() == ["StartTimer", "StartTimer"] and v.phase == r.PAUSED  # final, resume
    v.send(c.TranscriptFinal, utterance=7, text=heard, complete=1.0)
    assert "ResumePlayback" in v.types() and v.run == run and v.phase == r.SPEAKING
    assert v.outcome.judgements[0].heard == "backchannel" and v.outcome.judgements[0].verdict == "resume"


@pytest.mark.parametrize("heard", ["", "(coughs)", "[laughter]", "*sigh*", "Ah.", "Hmm...", "[BLANK_AUDIO]", "(door closes)"])
def test_a_sound_never_cancels_the_answer(heard):
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.5)
    v.send(c.TranscriptFinal, utterance=7, text=heard)
    assert "ResumePlayback" in v.types() and v.run == run and v.phase == r.SPEAKING
    assert v.outcome.judgements[0].heard == "sound"


@pytest.mark.parametrize(("heard", "kind"), [("Emm... Em.", "sound"), ("Hmmmm hm", "sound"), ("Hahahah.", "sound"), ("Mm-hmm-hmm.", "backchannel")])
def test_a_long_hum_in_any_spelling_never_cancels_the_answer(heard, kind):
    """RULES 15: a hum by its form, in a sound longer than noise_sound (so no noise rule excuses it)."""
    assert words.hearing(heard) == kind
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.t += 1.5
    v.send(c.TranscriptPartial, utterance=7, text=heard)
    assert v.phase == r.PAUSED and not any(isinstance(x, (c.CancelLLM, c.FlushPlayback)) for x in v.cmds)
    v.stop(7, eot=0.5)
    v.send(c.TranscriptFinal, utterance=7, text=heard)
    assert v.run == run and v.phase == r.SPEAKING
    assert not any(isinstance(x, (c.CancelLLM, c.FlushPlayback)) for x in v.cmds)


def test_a_sound_whose_final_never_comes_resumes_on_the_timer():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7)
    cmds = v.timer("resume")
    assert any(isinstance(x, c.ResumePlayback) for x in cmds) and v.run == run
    assert v.outcome.judgements[0].reason == "the sound stopped and no words came"


def test_a_long_wordless_sound_is_talked_over_and_words_in_it_still_cancel():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)  # typing, a TV...
    cmds = v.timer("hold")
    assert any(isinstance(x, c.ResumePlayback) for x in cmds) and v.phase == r.SPEAKING and v.run == run
    assert "talk over it" in v.outcome.judgements[0].reason
    v.send(c.TranscriptPartial, utterance=7, text="[music]")
    assert v.run == run
    v.send(c.TranscriptPartial, utterance=7, text="[music] hey, can you hear me")
    assert {"CancelLLM", "FlushPlayback"} <= set(v.types()) and v.outcome.path == (r.SPEAKING, r.INTERRUPTED, r.LISTENING)


def test_words_cancel_as_soon_as_a_partial_shows_them():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.TranscriptPartial, utterance=7, text="Wait")
    assert {"CancelLLM", "CancelTTS", "FlushPlayback"} <= set(v.types()) and v.state.run is None
    assert v.outcome.judgements[0].verdict == "barge-in" and v.outcome.judgements[0].heard == "words"
    assert v.outcome.taken == "words: barge-in"
    v.send(c.LLMToken, run=run, step=0, text="late")
    assert v.outcome.dropped == "stale"


def _question_playing(said: str, answer: str) -> tuple[Convo, r.Run]:
    """A caller's turn answered in two chunks, the second (the agent's question) playing."""
    v = Convo()
    v.user_says(said)
    v.llm(answer)
    run = v.state.run
    for i in range(2):
        v.send(c.TTSChunkDone, run=run.id, chunk=i, audio_ms=1500)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=True)
    v.send(c.PlaybackProgress, run=run.id, chunk=1, finished=False)  # the question is playing
    return v, run


def test_yes_to_the_agents_question_takes_the_floor():
    v, run = _question_playing("can I come on Friday at ten", "Friday at ten is free. Shall I book that for you?")
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.TranscriptPartial, utterance=7, text="Yes")
    assert v.phase == r.PAUSED  # a yes waits for its final
    v.stop(7, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=7, text="Yes.", complete=0.9)
    assert v.outcome.judgements[0].heard == "answer" and v.outcome.judgements[0].verdict == "barge-in"
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1] == c.Message(role="user", content="Yes.")


@pytest.mark.parametrize(
    ("question", "heard"),
    [("Which time suits you?", "backchannel"), ("What's the name on the booking?", "backchannel"), ("How about Tuesday at ten?", "answer"), ("Would you like one of those?", "answer")],
)
def test_okay_answers_only_a_question_a_yes_answers(question, heard):
    """RULES 27: "Okay." while the caller hears "Which time suits you?" says the caller is listening, not
    which time: a backchannel, the answer plays on; to "How about ...?" or "Would you like ...?" it answers."""
    v, run = _question_playing("what do you have on monday", f"Monday morning is free. {question}")
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="Okay.", complete=0.9)
    j = v.outcome.judgements[0]
    assert j.heard == heard and (j.verdict == "barge-in") == (heard == "answer"), j
    assert (v.state.run is not None and v.state.run.id == run.id) == (heard == "backchannel")


@pytest.mark.parametrize(("floor", "stops"), [(0.0423, True), (0.3, True), (0.01, False), (-1.0, False)])
def test_a_looped_transcript_is_no_words_and_its_floor_decides(floor, stops):
    """RULES 26: a fast phone-band "Hey, hey." came out "Say, say, say, say, say." (a loop, which the words
    call a backchannel) with Whisper's own P(a floor word first) 0.042: no evidence of words, so the floor
    decides as for a sound; the loop adds nothing to the caller's turn."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.SpeechStopped, utterance=7, speech_ms=640, speech_end_at=v.t, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="Say, say, say, say, say.", floor=floor)
    j = v.outcome.judgements[0]
    assert (v.run != run) == stops and j.verdict == ("barge-in" if stops else "resume"), j
    assert j.heard == ("sound" if stops else "backchannel") and v.state.user_text == ""


def test_yes_while_the_agent_is_not_asking_is_a_backchannel():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="Yes.", complete=0.9)
    assert v.run == run and v.outcome.judgements[0].heard == "backchannel"


def test_the_judgement_is_recorded_in_the_step():
    from parley_orchestrator import records

    v = Convo()
    _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    ev = c.TranscriptFinal(session=S, at=v.t + 0.05, utterance=7, text="mm-hmm")
    state, cmds, out = r.reduce(v.state, ev)
    step = records.step(3, ev, cmds, out)
    back = c.step_from_json(c.to_json(step))
    assert back.judgements == (c.Judgement(kind="interruption", verdict="hold", reason="backchannel only so far: wait for the rest", text="mm-hmm", heard="backchannel"),)


def _asking(v):
    """The agent's second chunk ends with a question, in 4 s of audio; it
    starts playing now."""
    v.user_says("can I come on Friday at ten")
    v.llm("Sure, let me see. Friday is free. Shall I book that for you?")
    run = v.state.run
    assert run.chunks == ("Sure, let me see.", "Friday is free. Shall I book that for you?")
    v.send(c.TTSChunkDone, run=run.id, chunk=0, audio_ms=1000)
    v.send(c.TTSChunkDone, run=run.id, chunk=1, audio_ms=4000)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=False, played_ms=20)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=True, played_ms=1000)
    v.send(c.PlaybackProgress, run=run.id, chunk=1, finished=False, played_ms=20)
    return run.id


def test_okay_before_the_question_is_heard_is_a_backchannel():
    v = Convo()
    run = _asking(v)
    v.t += 0.5  # an eighth into the chunk: the question is still to come
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="Okay.", complete=0.9)
    assert v.run == run and v.outcome.judgements[0].heard == "backchannel"


def test_okay_once_the_question_is_heard_answers_it():
    v = Convo()
    _asking(v)
    v.t += 3.0  # the question is being said
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=7, text="Okay.", complete=0.9)
    assert v.outcome.judgements[0].heard == "answer"
    assert [x for x in cmds if isinstance(x, c.StartLLM)][0].messages[-1].content == "Okay."


def test_a_weak_cue_is_tempered_by_the_text_signal_but_not_a_strong_one():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.9)
    v.send(c.TranscriptFinal, utterance=0, text="Can I come in?", complete=0.9)
    assert v.outcome.judgements[-1].verdict == "answer"  # a sure text signal overrules it
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=0, text="Can I come in?", complete=0.5)  # only just complete
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.release == r.Policy().turn_wait_opening and "may end in 'in', though the text reads complete" in j.reason
    assert any(isinstance(x, c.StartLLM) for x in cmds) and v.state.run.held
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0)
    v.send(c.TranscriptFinal, utterance=0, text="I'd like to come in on")
    assert v.outcome.judgements[-1].reason == "unfinished: may end in 'on'"


def test_a_few_words_in_a_short_sound_are_a_misheard_noise_but_no_still_cancels():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.SpeechStopped, utterance=7, speech_ms=360, speech_end_at=v.t, eot=0.5)
    v.send(c.TranscriptFinal, utterance=7, text="In the moment.")  # Whisper's words for a hummed mm-hmm
    assert v.run == run and "ResumePlayback" in v.types() and "mis-heard" in v.outcome.judgements[0].reason
    v.send(c.SpeechStarted, utterance=8)
    v.send(c.SpeechStopped, utterance=8, speech_ms=300, speech_end_at=v.t, eot=0.9)
    v.send(c.TranscriptFinal, utterance=8, text="No.")
    assert v.state.run is None or v.run != run
    assert v.outcome.judgements[0].verdict == "barge-in"


@pytest.mark.parametrize(("heard", "ms"), [("", 350), ("Go.", 350), ("And on.", 510), ("(coughs)", 300)])
def test_a_floor_word_heard_by_its_sound_cancels_though_the_words_say_noise(heard, ms):
    """RULES 22: phone-band "No." written "" or "Go.", "Hang on." written "And on.": the recogniser's
    own P(a floor word first) at floor_word or above takes the floor; the mis-heard text is no turn."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0  # well into the answer: no caller going on with its turn (RULES 21)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.SpeechStopped, utterance=7, speech_ms=ms, speech_end_at=v.t, eot=0.9)
    floor = r.Policy().floor_word
    v.send(c.TranscriptFinal, utterance=7, text=heard, floor=floor)
    j = v.outcome.judgements[0]
    assert j.verdict == "barge-in" and j.heard == "sound" and "floor word by its sound" in j.reason
    assert v.run != run and any(isinstance(x, c.CancelLLM) for x in v.cmds) and any(isinstance(x, c.FlushPlayback) for x in v.cmds)
    assert v.state.user_text == "" and v.phase == r.LISTENING  # the agent stops and listens; "Go." is not answered


@pytest.mark.parametrize("floor", [-1.0, 0.0, 0.015, 0.039])
def test_a_sound_under_the_floor_word_probability_still_resumes(floor):
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.SpeechStopped, utterance=7, speech_ms=300, speech_end_at=v.t, eot=0.5)
    v.send(c.TranscriptFinal, utterance=7, text="", floor=floor)  # a cough: at most 0.018 measured
    assert "ResumePlayback" in v.types() and v.run == run and v.phase == r.SPEAKING
    assert v.outcome.judgements[0].verdict == "resume"


def test_the_floor_word_probability_never_overrules_a_backchannel_or_works_when_off():
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="Okay.", floor=0.9)  # the text is sure: a backchannel
    assert v.run == run and v.phase == r.SPEAKING and v.outcome.judgements[0].heard == "backchannel"
    v = Convo(floor_word="0")
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.stop(7, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="", floor=0.9)
    assert v.run == run and v.phase == r.SPEAKING


def test_a_floor_word_the_recogniser_did_not_believe_in_a_short_sound_is_a_noise():
    """RULES 23: Whisper's temperature fallback sampled a hum as "No, no, no..." though its own first
    step gave a floor word P 0.011; real floor words written so scored 0.17 and above."""
    heard = "No, no, no, no, no, no,"
    outcomes = {}
    for floor in (0.011, -1.0, 0.3):
        v = Convo()
        run = _speaking(v)
        v.t += 2.0
        v.send(c.SpeechStarted, utterance=7)
        v.send(c.SpeechStopped, utterance=7, speech_ms=510, speech_end_at=v.t, eot=0.9)
        v.send(c.TranscriptFinal, utterance=7, text=heard, floor=floor)
        outcomes[floor] = (v.run == run, v.outcome.judgements[0].heard)
    assert outcomes == {0.011: (True, "sound"), -1.0: (False, "words"), 0.3: (False, "words")}
    v = Convo()
    run = _speaking(v)
    v.t += 2.0
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.SpeechStopped, utterance=7, speech_ms=900, speech_end_at=v.t, eot=0.9)  # a long sound: words decide
    v.send(c.TranscriptFinal, utterance=7, text="No, I said Thursday.", floor=0.011)
    assert v.run != run and v.outcome.judgements[0].heard == "words"


def test_a_floor_word_heard_after_the_hold_resumed_still_cancels():
    """The final comes after the sound's partial already resumed the answer (a slow transcript)."""
    v = Convo()
    run = _speaking(v)
    v.send(c.SpeechStarted, utterance=7)
    v.send(c.TranscriptPartial, utterance=7, text="Mm.")
    v.stop(7, eot=0.9)
    assert "ResumePlayback" in v.types() and v.phase == r.SPEAKING
    v.send(c.TranscriptFinal, utterance=7, text="", floor=0.3)
    assert v.run != run and v.outcome.judgements[0].verdict == "barge-in" and v.state.user_text == ""


# ---------------------------------------------------------------- call status, answering machines


def test_call_status_is_recorded_in_every_phase_and_decides_nothing_for_a_human():
    v = Convo()
    assert v.send(c.CallStatus, status="in-progress", answered_by="human") == []
    assert v.outcome.path == (r.LISTENING,) and "answered by human" in v.outcome.note
    idle = r.reduce(r.initial_state(), c.CallStatus(session=S, at=1.0, status="ringing"))
    assert idle[0].phase == r.IDLE and idle[1] == [] and idle[2].dropped == "" and idle[2].note == "call ringing"


def test_a_machine_cuts_the_greeting_and_gets_the_voicemail_after_the_beep_then_the_call_ends():
    v = Convo(greeting="Hello, this is Bright Smile Dental.", voicemail_message="Hi, this is Bright Smile Dental. Please call us back.")
    greeting = v.run
    cmds = v.send(c.CallStatus, status="in-progress", answered_by="machine_end_beep")
    assert {type(x).__name__ for x in cmds} >= {"CancelLLM", "CancelTTS", "FlushPlayback", "Synthesize"}
    assert v.outcome.path == (r.GENERATING, r.CANCELLED, r.GENERATING) and v.run != greeting
    assert [x.text for x in cmds if isinstance(x, c.Synthesize)] == ["Hi, this is Bright Smile Dental.", "Please call us back."]
    # A second detection changes nothing, nor does the late transcript of the
    # machine's own greeting; the message is heard, then the call ends.
    assert v.send(c.CallStatus, status="in-progress", answered_by="machine_end_beep") == []
    assert v.send(c.SpeechStarted, utterance=5) == [] and v.outcome.dropped == "rejected"
    assert v.send(c.TranscriptFinal, utterance=4, text="please leave a message after the tone") == []
    v.play_all()
    assert v.phase == r.ENDED and [x.reason for x in v.cmds if isinstance(x, c.EndSession)] == ["voicemail left"]


def test_a_machine_without_a_message_is_hung_up_on():
    v = Convo()
    cmds = v.send(c.CallStatus, status="in-progress", answered_by="machine_start")
    assert v.phase == r.ENDED and [x.reason for x in cmds if isinstance(x, c.EndSession)] == ["answering machine: hung up"]


def _monologue(v, seconds: float) -> None:
    v.send(c.SpeechStarted, utterance=1)
    v.send(c.SpeechStopped, utterance=1, speech_ms=int(seconds * 1000), speech_end_at=v.t)


def test_a_beep_heard_before_the_greetings_utterance_ends_counts_the_greeting():
    """The VAD may hear the beep as more of the greeting: the tone arrives while
    the other end is still "speaking". The talk before the beep counts."""
    v = Convo(direction="outbound", voicemail_message="Please call us back.")
    v.send(c.SpeechStarted, utterance=0)
    v.t += 6.0
    v.send(c.ToneHeard, hz=1000, ms=500)
    assert v.outcome.taken == "machine: leave the message" and "5.5 s of talk" in v.outcome.note
    v2 = Convo(direction="outbound", voicemail_message="Please call us back.")
    v2.send(c.SpeechStarted, utterance=0)
    v2.t += 1.5  # "Hello?" then a beep: no monologue
    v2.send(c.ToneHeard, hz=1000, ms=500)
    assert v2.outcome.taken == "noted"


def test_parley_judges_a_machine_itself_a_long_greeting_then_a_beep_on_a_call_it_placed():
    v = Convo(direction="outbound", voicemail_message="Please call us back.")
    _monologue(v, 4.5)
    cmds = v.send(c.ToneHeard, hz=1000, ms=480)
    assert [x.text for x in cmds if isinstance(x, c.Synthesize)] == ["Please call us back."]
    assert v.state.answered_by == "machine_end_beep (Parley)"
    # The provider's late verdict changes nothing: the message is being left.
    assert v.send(c.CallStatus, status="in-progress", answered_by="machine_end_beep") == []


def _sentences(v, lengths: list[float], gap: float) -> None:
    for i, seconds in enumerate(lengths):
        v.send(c.SpeechStarted, utterance=i)
        v.t += seconds
        v.send(c.SpeechStopped, utterance=i, speech_ms=int(seconds * 1000), speech_end_at=v.t)
        v.t += gap


def test_a_greeting_said_in_short_sentences_is_still_a_monologue():
    """ "Hi, you have reached Sam." (0.4 s) "I can't take your call right now."
    (0.4 s) "Please leave a message after the tone." then the beep: a 200 ms stop
    makes each sentence an utterance, none of them 3 s long; the stretch is."""
    v = Convo(direction="outbound", voicemail_message="Please call us back.")
    _sentences(v, [1.4, 1.6, 1.9], gap=0.4)
    cmds = v.send(c.ToneHeard, hz=1000, ms=480)
    assert [x.text for x in cmds if isinstance(x, c.Synthesize)] == ["Please call us back."]
    assert v.outcome.taken == "machine: leave the message" and float(v.outcome.note.split(" after ")[1].split()[0]) >= 5.5


def test_short_answers_with_long_silences_between_are_no_monologue():
    """ "Hello?" ... "Hello?" ... "Who is this?" with 1.5 s silences, then a beep
    (a person's phone beeping): no machine."""
    v = Convo(direction="outbound", voicemail_message="Please call us back.")
    _sentences(v, [0.6, 0.6, 0.9], gap=1.5)
    assert not any(isinstance(x, (c.Synthesize, c.EndSession)) for x in v.send(c.ToneHeard, hz=1000, ms=480))
    assert v.outcome.taken == "noted"


@pytest.mark.parametrize(
    ("params", "talk", "verdict"),
    [({"direction": "inbound"}, 4.5, ""), ({"direction": "outbound"}, 1.0, ""), ({"direction": "outbound"}, 4.5, "human")],
)
def test_a_beep_is_no_machine_inbound_after_short_talk_or_once_the_provider_said_human(params, talk, verdict):
    v = Convo(voicemail_message="Please call us back.", **params)
    if verdict:
        v.send(c.CallStatus, status="in-progress", answered_by=verdict)
    _monologue(v, talk)
    assert not any(isinstance(x, (c.Synthesize, c.EndSession)) for x in v.send(c.ToneHeard, hz=1000, ms=480))
    assert v.outcome.taken == "noted"


# ---------------------------------------------------------------- transfer to a person


def _asks_transfer(v, summary: str = "Ann wants to talk about her bill."):
    v.user_says("can I talk to a person")
    run = v.run
    v.llm("Sure, putting you through.", done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id="x1", name="transfer_call", arguments=json.dumps({"summary": summary}))
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    return run


def test_transfer_happens_once_the_reply_is_heard_to_the_deployments_number():
    v = Convo(transfer_to="+15550007777")
    _asks_transfer(v)
    assert not any(isinstance(x, (c.CallTool, c.EndSession)) for x in v.cmds)  # nothing executed, nothing yet
    v.play_all()
    (end,) = [x for x in v.cmds if isinstance(x, c.EndSession)]
    assert (end.transfer_to, end.warm, end.summary) == ("+15550007777", True, "Ann wants to talk about her bill.")
    assert v.phase == r.ENDED


def test_no_transfer_from_an_interrupted_reply():
    v = Convo(transfer_to="+15550007777")
    _asks_transfer(v)
    v.send(c.TTSChunkStarted, run=v.run, chunk=0)
    v.send(c.PlaybackProgress, run=v.run, chunk=0, finished=False)
    v.user_says("no wait, actually I want to book")
    assert not any(isinstance(x, c.EndSession) for x in v.cmds) and v.phase != r.ENDED


def test_without_a_destination_transfer_call_is_an_ordinary_tool_call():
    v = Convo()
    _asks_transfer(v)
    assert [x.name for x in v.cmds if isinstance(x, c.CallTool)] == ["transfer_call"]


# ---------------------------------------------------------------- keypad entries


def _prompts(v):
    return [m.content for x in v.cmds if isinstance(x, c.StartLLM) for m in x.messages[-1:] if m.role == "user"]


def test_each_key_is_a_turn_by_default():
    v = Convo()
    v.send(c.Dtmf, digit="1")
    assert _prompts(v) == ["(pressed 1 on the keypad)"]


def test_a_keypad_entry_ends_with_the_terminator():
    v = Convo(dtmf_wait="3")
    for d in "1234":
        assert not any(isinstance(x, c.StartLLM) for x in v.send(c.Dtmf, digit=d))
    assert v.phase == r.TRANSCRIBING and v.state.keys == "1234"
    v.send(c.Dtmf, digit="#")
    assert _prompts(v) == ["(entered 1234 on the keypad)"] and v.state.keys == ""


def test_a_keypad_entry_ends_after_a_pause():
    v = Convo(dtmf_wait="3")
    v.send(c.Dtmf, digit="5")
    v.send(c.Dtmf, digit="6")
    assert _prompts(v) == []
    v.timer("endpoint")
    assert _prompts(v) == ["(entered 56 on the keypad)"]


def test_a_key_during_the_agents_reply_interrupts_it_and_starts_an_entry():
    v = Convo(dtmf_wait="3")
    _speaking(v)
    cmds = v.send(c.Dtmf, digit="9")
    assert any(isinstance(x, c.FlushPlayback) for x in cmds) and v.state.run is None and v.state.keys == "9"


def test_the_audio_signal_alone_does_not_overrule_an_unfinished_text():
    v = Convo()
    v.send(c.SpeechStarted, utterance=0)
    v.stop(0, eot=0.78)
    v.send(c.TranscriptFinal, utterance=0, text="I'd like to come in on.", complete=0.4)
    assert v.outcome.judgements[-1].verdict == "wait" and v.outcome.judgements[-1].reason == "unfinished: may end in 'on'"


# ---------------------------------------------------------------- recordings: the consent sentence

CONSENT = "This call may be recorded."


def test_a_recorded_call_hears_the_consent_sentence_before_the_greeting():
    v = Convo(recorded=True, consent_text=CONSENT, greeting="Hi, this is the clinic. How can I help?")
    said = v.synthesized()
    assert said[0] == CONSENT and " ".join(said) == "This call may be recorded. Hi, this is the clinic. How can I help?"
    assert "consent" in v.outcome.note
    v.play_all()
    assert v.state.history[0].content == "This call may be recorded. Hi, this is the clinic. How can I help?"


def test_the_consent_sentence_is_said_even_without_a_greeting_and_only_when_recorded():
    v = Convo(recorded=True, consent_text=CONSENT)
    assert v.synthesized() == [CONSENT] and v.phase == r.GENERATING
    v = Convo(recorded=False, consent_text=CONSENT, greeting="Hello!")
    assert v.synthesized() == ["Hello!"]
    v = Convo(recorded=True, greeting="Hello!")  # no sentence configured: nothing added
    assert v.synthesized() == ["Hello!"]


# ---------------------------------------------------------------- keys out (IVRs on calls Parley placed)


def _asks_keys(v, digits="1", said="", call_id="k1"):
    """The other end read a menu; the LLM presses ``digits`` (after saying ``said``)."""
    v.user_says("For appointments, press 1. For billing, press 2.")
    run = v.run
    if said:
        v.llm(said, done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id=call_id, name="send_digits", arguments=json.dumps({"digits": digits}))
    v.send(c.LLMDone, run=run, step=0, finish_reason="tool_calls")
    return run


def _pressed(v):
    return [(x.digits, x.call_id) for x in v.cmds if isinstance(x, c.SendDigits)]


def test_keys_are_pressed_at_once_when_nothing_was_said_and_the_result_lets_the_llm_go_on():
    v = Convo(direction="outbound")
    run = _asks_keys(v, "1")
    assert _pressed(v) == [("1", "k1")] and not any(isinstance(x, c.CallTool) for x in v.cmds)
    assert v.phase == r.AWAITING_TOOL
    v.send(c.DigitsSent, digits="1", call_id="k1")
    start = v.last[-2] if isinstance(v.last[-1], c.StartTimer) else v.last[-1]
    assert isinstance(start, c.StartLLM) and start.run == run and start.step == 1
    assert json.loads(start.messages[-1].content)["sent"] == "1" and start.messages[-1].name == "send_digits"
    assert v.phase == r.GENERATING


def test_keys_wait_until_what_was_said_before_them_is_heard():
    v = Convo(direction="outbound")
    _asks_keys(v, "2", said="Let me press two for billing.")
    assert _pressed(v) == []  # the reply is not heard yet: pressing would cut it
    v.play_all()
    assert _pressed(v) == [("2", "k1")]


def test_keys_are_never_pressed_from_an_interrupted_reply():
    v = Convo(direction="outbound")
    run = _asks_keys(v, "2", said="Let me press two for billing.")
    v.send(c.TTSChunkStarted, run=run, chunk=0)
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=False)
    v.user_says("Sorry, our menu has changed. For billing, press 3.")
    assert _pressed(v) == [] and v.state.run.id != run
    # ... nor later, when that run's audio reports come in: they are stale.
    v.send(c.PlaybackProgress, run=run, chunk=0, finished=True)
    assert _pressed(v) == [] and v.outcome.dropped == "stale"


def test_keys_pressed_before_a_barge_in_still_get_their_result_into_history():
    v = Convo(direction="outbound")
    run = _asks_keys(v, "1")
    v.user_says("Please hold while we connect you.")  # the line speaks while the keys are on their way
    assert v.phase == r.GENERATING and v.run != run  # the line's words are the new turn
    v.send(c.DigitsSent, digits="1", call_id="k1")
    assert "kept for the next generation" in v.outcome.note
    v.llm("Okay.")
    v.play_all()
    pairs = [(m.role, m.name, m.content) for m in v.state.history if m.role == "tool"]
    assert [json.loads(content)["sent"] for _, name, content in pairs if name == "send_digits"] == ["1"]


def test_keys_that_are_not_keys_get_an_error_result_and_press_nothing():
    v = Convo(direction="outbound")
    _asks_keys(v, "one")
    assert _pressed(v) == []
    start = [x for x in v.cmds if isinstance(x, c.StartLLM)][-1]
    assert start.step == 1 and "error" in json.loads(start.messages[-1].content)


def test_a_failed_press_is_the_calls_error_result():
    v = Convo(direction="outbound")
    _asks_keys(v, "1")
    v.send(c.DigitsSent, digits="1", call_id="k1", ok=False, error="the call has no REST credentials")
    start = [x for x in v.cmds if isinstance(x, c.StartLLM)][-1]
    assert "REST credentials" in json.loads(start.messages[-1].content)["error"]


def test_on_an_inbound_call_send_digits_is_an_ordinary_tool_call():
    v = Convo()
    _asks_keys(v, "1")
    assert _pressed(v) == [] and [x.name for x in v.cmds if isinstance(x, c.CallTool)] == ["send_digits"]


def test_a_takeover_never_presses_keys_again():
    v = Convo(direction="outbound")
    _asks_keys(v, "1")
    cmds = v.send(c.Takeover, owner="r2")
    assert not any(isinstance(x, (c.SendDigits, c.CallTool)) for x in cmds)


def test_the_ivr_path_presses_a_group_per_menu_then_the_agent_talks():
    v = Convo(direction="outbound", ivr_path="1, 3")
    v.user_says("Thank you for calling Acme Dental Supplies.")
    assert v.outcome.taken == "no menu yet: listen on" and _pressed(v) == [] and v.phase == r.LISTENING
    v.user_says("For orders, press 1. For billing, press 2.")
    assert v.outcome.taken == "press the next keys" and _pressed(v) == [("1", "")]
    v.send(c.DigitsSent, digits="1")
    v.user_says("For a new order, press 3. To speak to someone, press 0.")
    assert _pressed(v) == [("1", ""), ("3", "")]
    assert not any(isinstance(x, c.StartLLM) for x in v.cmds)  # the agent said nothing so far
    v.user_says("Orders desk, this is Pat speaking.")
    assert v.outcome.taken == "answer" and v.phase == r.GENERATING
    prompt = [x for x in v.cmds if isinstance(x, c.StartLLM)][-1].messages
    keys = [json.loads(call.arguments)["digits"] for m in prompt for call in m.tool_calls if call.name == "send_digits"]
    assert keys == ["1", "3"] and prompt[-1].content == "Orders desk, this is Pat speaking."


def test_a_group_that_could_not_be_pressed_is_pressed_at_the_next_menu():
    v = Convo(direction="outbound", ivr_path="2")
    v.user_says("For billing, press 2.")
    v.send(c.DigitsSent, digits="2", ok=False, error="Twilio refused the update")
    assert v.state.ivr_step == 0
    v.user_says("I did not get that. For billing, press 2.")
    assert _pressed(v) == [("2", ""), ("2", "")]


@pytest.mark.parametrize("path", ["1,x", "12345678901234567890123456789012345", ",", "ww"])
def test_an_ivr_path_that_is_not_keys_is_refused(path):
    v = Convo(direction="outbound", ivr_path=path)
    assert "ivr_path" in v.outcome.note and v.state.policy.ivr_path == ""


def test_the_ivr_path_is_for_calls_parley_placed():
    v = Convo(ivr_path="1")
    v.user_says("For orders, press 1.")
    assert v.outcome.taken == "answer" and _pressed(v) == []


# -- RULES 16: an answer prepared at once, heard only after its release silence


def test_a_complete_turn_is_prepared_at_once_and_heard_from_the_release_silence():
    v = Convo(turn_release="0.6", turn_release_short="1.0")
    cmds = v.user_says("Hi, I'd like to book a cleaning on Friday at ten.")  # complete, long, closed: turn_release
    kinds = [type(x) for x in cmds]
    assert c.StartLLM in kinds and c.PausePlayback in kinds and v.state.run.held and v.phase == r.GENERATING
    release = [x for x in cmds if isinstance(x, c.StartTimer) and x.name == "release"][0]
    assert abs(release.delay - (0.6 - (v.t - v.state.silence_from))) < 1e-6
    assert "heard from 0.6 s of silence" in v.outcome.judgements[-1].reason
    v.llm("Sure, Friday at ten works.", done=False)
    assert any(isinstance(x, c.Synthesize) for x in v.cmds)  # synthesized while held: ready at the release
    cmds = v.timer("release")
    assert [type(x) for x in cmds] == [c.ResumePlayback] and not v.state.run.held


def test_a_caller_who_goes_on_before_the_release_never_hears_the_answer():
    v = Convo(turn_release="0.6", turn_release_short="1.0")
    v.user_says("I'm looking to book", complete=0.85)  # Whisper's fragment reads complete; 4 words, no sentence end
    assert v.state.run.held and "a first fragment that may go on" in v.outcome.judgements[-1].reason
    release = dict(v.state.timers)["release"]
    assert abs(v.due[("release", release)] - (v.state.silence_from + 1.0)) < 1e-6
    first = v.run
    v.llm("What would you like to book?", done=False)
    v.send(c.SpeechOnset, utterance=1)  # the caller goes on: pause (it is paused already), hold
    assert v.phase == r.PAUSED
    v.send(c.SpeechStarted, utterance=1)
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.state.run is None and v.state.history == ()
    assert not any(isinstance(x, c.ResumePlayback) and x.run == first for x in v.cmds)
    v.stop(1, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=1, text="a cleaning for next week.", complete=0.9)
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]  # prepared at once, held: a pauser may pause again
    assert start.messages[-1].content == "I'm looking to book a cleaning for next week."
    assert v.state.run.held and v.outcome.judgements[-1].release == r.Policy().turn_wait_continued


def test_a_faded_onset_does_not_release_a_held_answer_early():
    v = Convo(turn_release="0.6", turn_release_short="1.0")
    v.user_says("What are your opening hours?")
    run = v.run
    v.send(c.SpeechOnset, utterance=1)  # a breath
    cmds = v.send(c.SpeechOnsetEnded, utterance=1)
    assert not any(isinstance(x, c.ResumePlayback) for x in cmds) and v.phase == r.GENERATING and v.state.run.held
    cmds = v.timer("release")
    assert [x for x in cmds if isinstance(x, c.ResumePlayback)] == [c.ResumePlayback(session=S, run=run)]


def test_answers_and_questions_are_not_first_fragments():
    for text in ("Yes, please.", "Nope.", "When's your earliest appointment?", "Mm-hmm.", "Thanks, bye!"):
        assert r.words.may_go_on(text, 4) == "", text
    for text in ("I'd like to earn", "I was wondering it.", "My mail is gay not Smith"):
        assert r.words.may_go_on(text, 4), text


@pytest.mark.parametrize(
    "text,last",
    [
        ("Hi, yes. I was wondering it.", "I was wondering it."),  # the greeting's sentence is not what may go on
        ("Hi, yes, I was wondering it.", "I was wondering it."),  # a greeting in front, in the same sentence
        ("Good morning! Um, I'm looking to vote.", "Um, I'm looking to vote."),  # a hesitation is no word
        ("I need to cancel. Actually, no, move it.", "Actually, no, move it."),
        ("Hello, yes. I need an appointment", "I need an appointment"),
    ],
)
def test_a_first_fragment_is_judged_on_its_last_sentence(text, last):
    assert r.words.last_sentence(text) == last
    assert r.words.may_go_on(text, 4)
    v = Convo(turn_release_short="1.6")
    cmds = v.user_says(text, complete=0.9)
    assert v.state.run.held and _release_delay(cmds) == pytest.approx(1.6 - v.outcome.judgements[-1].silence)


@pytest.mark.parametrize(
    "text",
    [
        "Hi, I'd like to book a cleaning on Friday at ten.",  # one long closed sentence after the greeting
        "I want to see Dr. Smith on Monday.",  # "Dr." does not end a sentence
        "Could you book me in for Friday at 10 a.m. please.",  # nor does "a.m."
        "I need to cancel my appointment. Thanks.",  # a thanks closes a turn
        "Hello? Are you open on Sundays?",  # a question
        "Hi there.",  # a greeting alone: the opening's release, not this one
    ],
)
def test_whole_last_sentences_are_not_first_fragments(text):
    assert r.words.may_go_on(text, 4) == "", r.words.last_sentence(text)


def test_a_held_answer_runs_its_tools_only_once_released():
    """RULES 19: the caller may still go on, and a booking made from half a
    request would stay made: a held answer's tool calls wait for its release."""
    v = Convo(turn_release_short="1.6")
    v.user_says("Book Thursday.", complete=0.9)  # a short first fragment: held
    run = v.run
    v.send(c.LLMToolCall, run=run, step=0, call_id="a", name="book_appointment", arguments='{"date": "2026-12-03"}')
    assert not any(isinstance(x, c.CallTool) for x in v.cmds) and v.state.run.deferred and "released" in v.outcome.note
    v.send(c.LLMDone, run=run, step=0)
    assert v.phase == r.AWAITING_TOOL
    v.send(c.SpeechStarted, utterance=1)  # the caller goes on: withdrawn, nothing was booked
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.state.tools == ()
    v.stop(1, eot=0.9)
    v.send(c.TranscriptFinal, utterance=1, text="at eleven.", complete=0.9)
    run = v.run
    assert v.state.run.held and v.state.run.user_text == "Book Thursday. at eleven."
    v.send(c.LLMToolCall, run=run, step=0, call_id="b", name="book_appointment", arguments='{"date": "2026-12-03", "time": "11:00"}')
    v.send(c.LLMDone, run=run, step=0)
    cmds = v.timer("release")
    calls = [x for x in cmds if isinstance(x, c.CallTool)]
    assert [x.call_id for x in calls] == ["b"] and c.ResumePlayback in [type(x) for x in cmds] and v.state.run.deferred == ()
    cmds = v.send(c.ToolResult, run=run, call_id="b", name="book_appointment", result='{"booked": true}')
    assert [x for x in cmds if isinstance(x, c.StartLLM)]  # the step goes on with the result


def test_a_held_answer_looks_things_up_during_its_hold():
    """RULES 25: a tool declared to only read (availability, the caller's
    bookings) changes nothing, so a held answer runs it at once: its result
    and the next step are ready when the hold ends, and the caller hears
    "Let me check." and the slots together. A tool that changes something,
    asked in the same step, still waits for the release (RULES 19)."""
    v = Convo(turn_release_short="1.6")
    v.user_says("Book Thursday.", complete=0.9)  # a short first fragment: held
    run = v.run
    cmds = v.send(c.LLMToolCall, run=run, step=0, call_id="a", name="check_availability", arguments='{"date": "2026-12-03"}', reads_only=True)
    assert [x.call_id for x in cmds if isinstance(x, c.CallTool)] == ["a"] and v.state.run.held
    cmds = v.send(c.LLMToolCall, run=run, step=0, call_id="b", name="book_appointment", arguments='{"date": "2026-12-03"}')
    assert not any(isinstance(x, c.CallTool) for x in cmds) and [d.call_id for d in v.state.run.deferred] == ["b"]
    v.send(c.LLMDone, run=run, step=0)
    cmds = v.send(c.ToolResult, run=run, call_id="a", name="check_availability", result='{"free": ["09:00"]}')
    assert not any(isinstance(x, c.StartLLM) for x in cmds)  # the booking is still to run: the step waits for both
    cmds = v.timer("release")
    assert [x.call_id for x in cmds if isinstance(x, c.CallTool)] == ["b"] and c.ResumePlayback in [type(x) for x in cmds]


def test_a_held_answer_that_only_reads_is_ready_at_its_release():
    """RULES 25: the look-up runs in the hold and the next step is generated
    and synthesized then; the release only lets it play."""
    v = Convo(turn_release_short="1.6")
    v.user_says("Thursday then.", complete=0.9)
    run = v.run
    v.llm("Let me check.", step=0, done=False)
    v.send(c.LLMToolCall, run=run, step=0, call_id="a", name="check_availability", arguments='{"date": "2026-12-03"}', reads_only=True)
    v.send(c.LLMDone, run=run, step=0)
    cmds = v.send(c.ToolResult, run=run, call_id="a", name="check_availability", result='{"free": ["09:00"]}')
    assert [x for x in cmds if isinstance(x, c.StartLLM)] and v.state.run.held  # the next step, still unheard
    v.llm("On Thursday I have 9 a.m. free.", step=1)
    run_state = v.state.run
    assert run_state.held and run_state.sent == len(run_state.chunks) >= 2 and "9 a.m." in " ".join(run_state.chunks)  # synthesized, unheard
    cmds = v.timer("release")
    assert c.ResumePlayback in [type(x) for x in cmds] and not any(isinstance(x, c.CallTool) for x in cmds)


def test_a_held_answer_withdrawn_keeps_what_it_looked_up():
    """RULES 25 with RULES 19: the caller goes on before hearing a held
    answer whose look-up already ran: the answer is withdrawn, the result is
    kept for the next answer (which does not look it up again)."""
    v = Convo(turn_release_short="1.6")
    v.user_says("Thursday then.", complete=0.9)
    run = v.run
    v.send(c.LLMToolCall, run=run, step=0, call_id="a", name="check_availability", arguments='{"date": "2026-12-03"}', reads_only=True)
    v.send(c.LLMDone, run=run, step=0)
    v.send(c.ToolResult, run=run, call_id="a", name="check_availability", result='{"free": ["09:00"]}')
    v.send(c.SpeechStarted, utterance=1)
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.state.run is None
    assert [t.result for t in v.state.tools] == ['{"free": ["09:00"]}']


def test_a_caller_who_goes_on_after_the_answer_ran_a_tool_continues_the_turn():
    """RULES 19: "I'd like to come on the 21st." is answered at once and its
    look-up runs; the caller goes on ("of December,") before hearing any of
    it. Their words join the turn (not judged as an interruption, where a
    few words in a short sound are a noise), and the look-up's result is
    given to the next answer, never run again."""
    v = Convo()
    v.user_says("I'd like to come on the 21st.", complete=0.85)
    first = v.run
    v.send(c.LLMToolCall, run=first, step=0, call_id="a", name="check_availability", arguments='{"date": "2026-12-21"}')
    v.send(c.LLMDone, run=first, step=0)
    v.send(c.ToolResult, run=first, call_id="a", name="check_availability", result='{"free": ["09:00"]}')
    v.llm("On the 21st I have 9 a.m. free.", step=1, done=False)
    v.send(c.TTSChunkStarted, run=first, chunk=0)  # synthesized, not heard
    v.send(c.SpeechStarted, utterance=1)
    assert v.outcome.taken == "caller went on: answer withdrawn" and v.state.run is None
    v.stop(1, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=1, text="of December, in the afternoon.", complete=0.9)
    start = [x for x in cmds if isinstance(x, c.StartLLM)][0]
    contents = [(m.role, m.content) for m in start.messages[1:]]
    assert contents[-1] == ("user", "I'd like to come on the 21st. of December, in the afternoon.")
    assert ("tool", '{"free": ["09:00"]}') in contents  # the look-up's result, kept
    v.send(c.LLMToolCall, run=v.run, step=0, call_id="b", name="check_availability", arguments='{"date": "2026-12-21"}')
    assert not any(isinstance(x, c.CallTool) and x.call_id == "b" for x in v.cmds)  # never run twice


def test_a_pause_is_counted_to_the_voice_onset_not_to_a_late_speech_start():
    """RULES 20: under load SpeechStarted came 0.57 s after the onset of the
    caller's next words ("Hi." split from the rest of one breath by the VAD):
    counted to SpeechStarted that looked like a 0.86 s pause, and the whole
    turn got the continued release. Counted to the onset, it is no pause; a
    real thinking pause still is."""
    for gap, paused in ((0.3, 0), (0.9, 1)):
        v = Convo()
        v.send(c.SpeechStarted, utterance=0)
        v.stop(0, eot=0.6)  # the voice ended 0.15 s before this
        v.t += gap - 0.2
        v.send(c.SpeechOnset, utterance=1)  # the next words begin `gap` after the voice ended
        v.send(c.TranscriptFinal, utterance=0, text="Hi.", complete=0.95)
        v.t += 0.5  # SpeechStarted lags behind the onset
        v.send(c.SpeechStarted, utterance=1)
        assert v.state.turn_pauses == paused, (gap, v.state.turn_pauses)


def test_a_release_of_zero_answers_as_before():
    v = Convo(turn_release="0", turn_release_short="0")
    cmds = v.user_says("I'm looking to book", complete=0.85)
    assert c.PausePlayback not in [type(x) for x in cmds] and not v.state.run.held
# --- a background voice (RULES 17): far below the caller's own level, it never takes the floor


def _speaking_after_a_loud_turn(level=-15.0, **params):
    v = Convo(**params)
    v.send(c.SpeechStarted, utterance=0, level=level)
    v.send(c.SpeechStopped, utterance=0, speech_ms=1400, speech_end_at=v.t - 0.15, eot=1.0, level=level)
    assert v.state.caller_level == level
    v.send(c.TranscriptFinal, utterance=0, text="what are your opening hours", complete=1.0)
    v.llm("We are open Monday to Friday from nine to five. On Saturdays we open at ten. We close on Sundays.")
    run = v.state.run
    v.send(c.TTSChunkStarted, run=run.id, chunk=0)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=False)
    assert v.phase == r.SPEAKING
    return v, run.id


def test_a_tv_across_the_room_never_pauses_nor_interrupts_the_agent():
    v, run = _speaking_after_a_loud_turn()
    assert v.send(c.SpeechOnset, utterance=1, level=-41.0) == [] and v.phase == r.SPEAKING
    assert v.send(c.SpeechStarted, utterance=1, level=-40.5) == [] and v.outcome.taken == "background: noted"
    j = v.outcome.judgements[0]
    assert j.verdict == "resume" and j.score == -40.5 and j.threshold == -27.0
    v.send(c.TranscriptPartial, utterance=1, text="and in tonight's news the council")
    v.send(c.SpeechStopped, utterance=1, speech_ms=3400, speech_end_at=v.t, level=-40.5)
    v.send(c.TranscriptFinal, utterance=1, text="and in tonight's news the council has approved the new bridge")
    assert v.run == run and v.phase == r.SPEAKING
    assert not any(isinstance(x, (c.PausePlayback, c.FlushPlayback, c.CancelLLM)) for x in v.cmds)
    assert v.state.caller_level == -15.0  # the TV taught nothing


def test_a_tv_across_the_room_never_drops_a_preemptive_guess():
    """RULES 17 over a guess: a background voice after the caller's stop is
    not the caller going on; the guess waits for the caller's own final."""
    v = Convo(preemptive="true")
    v.send(c.SpeechStarted, utterance=0, level=-15.0)
    v.send(c.TranscriptPartial, utterance=0, text="book me for Friday")
    cmds = v.send(c.SpeechStopped, utterance=0, speech_ms=1400, speech_end_at=v.t - 0.15, eot=0.9, level=-15.0)
    assert any(isinstance(x, c.StartLLM) for x in cmds) and v.state.caller_level == -15.0
    run = v.run
    v.llm("Sure.", done=False)
    assert v.send(c.SpeechStarted, utterance=1, level=-40.5) == [] and v.outcome.taken == "background: noted"
    v.send(c.TranscriptFinal, utterance=0, text="Book me for Friday.", complete=0.9)
    assert v.run == run and v.synthesized() == ["Sure."]
    v.send(c.SpeechStopped, utterance=1, speech_ms=2000, speech_end_at=v.t, level=-40.5)
    v.send(c.TranscriptFinal, utterance=1, text="and in tonight's news")
    assert v.run == run and v.outcome.taken == "no words"
    assert not any(isinstance(x, (c.PausePlayback, c.FlushPlayback, c.CancelLLM)) for x in v.cmds)


def test_a_quiet_caller_still_interrupts():
    v, run = _speaking_after_a_loud_turn()
    v.send(c.SpeechOnset, utterance=1, level=-24.0)
    assert v.types() == ["PausePlayback", "StartTimer", "StartTimer"]
    v.send(c.SpeechStarted, utterance=1, level=-22.0)
    v.stop(1)
    v.send(c.TranscriptFinal, utterance=1, text="Tuesday morning would be good.")
    assert "FlushPlayback" in v.types() and v.state.run is None or v.state.run.id != run


def test_an_onset_loud_enough_to_pause_then_a_background_start_resumes():
    v, run = _speaking_after_a_loud_turn()
    v.send(c.SpeechOnset, utterance=1, level=-20.0)
    assert v.phase == r.PAUSED
    v.send(c.SpeechStarted, utterance=1, level=-35.0)
    assert "ResumePlayback" in v.types() and v.phase == r.SPEAKING and v.run == run
    v.send(c.SpeechStopped, utterance=1, speech_ms=900, speech_end_at=v.t, level=-35.0)
    v.send(c.TranscriptFinal, utterance=1, text="no no no")
    assert v.run == run and not any(isinstance(x, (c.FlushPlayback, c.CancelLLM)) for x in v.cmds)


@pytest.mark.parametrize("params", [{}, {"background_db": "0"}])
def test_without_a_known_caller_level_or_with_the_gate_off_every_voice_counts(params):
    v = Convo(**params)
    if params:
        v, _ = _speaking_after_a_loud_turn(**params)
    else:
        _speaking(v)  # levels unknown
    v.send(c.SpeechOnset, utterance=7, level=-45.0)
    assert v.phase == r.PAUSED


def test_the_callers_level_follows_its_loudest_turns_falling_slowly():
    v = Convo()
    for u, (level, ms) in enumerate([(-15.0, 1200), (-30.0, 1200), (-30.0, 1200), (-10.0, 200), (-12.0, 800)]):
        v.send(c.SpeechStarted, utterance=u, level=level)
        v.send(c.SpeechStopped, utterance=u, speech_ms=ms, speech_end_at=v.t, level=level)
    # -15, then -17 and -19 (at most 2 dB a turn), a 200 ms click teaches nothing, then -12
    assert v.state.caller_level == -12.0


@pytest.mark.parametrize("text", [".", "...", "(laughs)", "[Laughter]", "♪"])
def test_a_final_with_no_words_is_no_turn(text):
    """RULES 17: Whisper writes "." for a laugh the VAD took for speech; nothing to answer."""
    v = Convo()
    v.user_says(text)
    assert v.phase == r.LISTENING and not any(isinstance(x, c.StartLLM) for x in v.cmds)
    v.user_says("Are you open on Saturdays?")
    start = [x for x in v.cmds if isinstance(x, c.StartLLM)][-1]
    assert start.messages[-1].content == "Are you open on Saturdays?"


def test_a_caller_whose_first_words_were_quiet_still_interrupts_once_the_whole_utterance_is_heard():
    """A soft start ("Ex-cuse me", espeak en-gb: its first 160 ms 12 dB under the caller's turn) is taken for a
    background voice, but the utterance as a whole (its SpeechStopped) is the caller's level: its words count."""
    v, run = _speaking_after_a_loud_turn()
    v.send(c.SpeechOnset, utterance=1, level=-19.6)
    v.send(c.SpeechStarted, utterance=1, level=-28.5)
    assert v.phase == r.SPEAKING and v.state.background == 1  # resumed: a background voice, so far
    v.send(c.TranscriptPartial, utterance=1, text="Excuse me, I only need to know if you're open on")
    v.send(c.SpeechStopped, utterance=1, speech_ms=3000, speech_end_at=v.t - 0.2, level=-17.6)
    assert v.state.background == -1
    v.send(c.TranscriptFinal, utterance=1, text="Excuse me, I only need to know if you're open on Saturday.")
    assert "FlushPlayback" in v.types() and v.outcome.taken.startswith("late words: barge-in")


# ---------------------------------------------------------------- RULES 21: the continuing caller, the caller who paused


def _answer_begun_in_a_pause(v, first="I need to cancel my appointment.", heard_for=0.2):
    """The caller said a first fragment that reads whole; the answer began
    inside the caller's pause and has played ``heard_for`` seconds."""
    v.user_says(first, complete=0.9)
    v.llm("Sorry, I didn't catch that. Could you say it again?", done=False)
    run = v.state.run
    v.send(c.TTSChunkStarted, run=run.id, chunk=0)
    v.send(c.PlaybackProgress, run=run.id, chunk=0, finished=False)
    v.t += heard_for
    return run.id


def test_a_caller_who_goes_on_over_an_answer_just_begun_continues_the_turn_with_short_words():
    v = Convo()
    run = _answer_begun_in_a_pause(v)
    assert v.t - v.state.silence_from < r.Policy().turn_continue_gap
    v.send(c.SpeechOnset, utterance=1)
    v.send(c.SpeechStarted, utterance=1)
    assert v.phase == r.PAUSED and v.state.continuing == 1
    v.send(c.SpeechStopped, utterance=1, speech_ms=680, speech_end_at=v.t, eot=0.9)
    v.send(c.TranscriptFinal, utterance=1, text="four seven", complete=0.6)  # two words in 0.68 s: under noise_sound
    j = v.outcome.judgements[0]
    assert j.verdict == "barge-in" and j.heard == "words", j  # not a noise: the caller's turn goes on
    assert v.state.run is None or v.run != run
    assert v.state.user_text == "four seven" or v.state.run.user_text == "four seven"
    # The caller paused and went on: the turn it goes on with counts the pause, and the call remembers it.
    assert v.state.turn_pauses == 1 and v.state.paused_turns == 1


@pytest.mark.parametrize(
    "heard_for, late",
    [(0.8, 0.0), (0.1, 1.6)],  # heard more than turn_continue_heard; began after turn_continue_gap
)
def test_short_words_over_an_answer_heard_longer_or_later_are_still_a_noise(heard_for, late):
    v = Convo()
    run = _answer_begun_in_a_pause(v, heard_for=heard_for)
    if late:  # the caller's voice ended long before: move it back
        v.state = msgspec.structs.replace(v.state, silence_from=v.t - late)
    v.send(c.SpeechStarted, utterance=1)
    assert v.state.continuing == -1
    v.send(c.SpeechStopped, utterance=1, speech_ms=680, speech_end_at=v.t, eot=0.9)
    v.send(c.TranscriptFinal, utterance=1, text="four seven", complete=0.6)
    assert v.run == run and "ResumePlayback" in v.types() and "mis-heard" in v.outcome.judgements[0].reason


def test_a_hum_at_the_start_of_an_answer_is_still_a_noise_under_the_continuation_bar():
    v = Convo()
    run = _answer_begun_in_a_pause(v, heard_for=0.1)
    v.send(c.SpeechStarted, utterance=1)
    assert v.state.continuing == 1
    v.send(c.SpeechStopped, utterance=1, speech_ms=360, speech_end_at=v.t, eot=0.5)
    v.send(c.TranscriptFinal, utterance=1, text="In the moment.")  # Whisper's words for a hummed mm-hmm, 0.36 s
    assert v.run == run and "ResumePlayback" in v.types() and "under 0.5 s" in v.outcome.judgements[0].reason
    assert v.state.paused_turns == 0


def test_after_a_pause_inside_a_turn_every_later_first_fragment_is_held():
    v = Convo(turn_release_short="1.6")
    v.user_says("I'd like", complete=0.3)  # unfinished: waits
    v.t += 0.9
    v.user_says("a cleaning on Friday at ten.", complete=0.95)  # went on after a pause: held, answered
    assert v.state.run.held and v.state.paused_turns == 1
    v.llm("Done, you're booked.")
    v.timer("release")
    v.play_all()
    assert v.phase == r.LISTENING
    v.user_says("Can I also bring my son along with me?", complete=0.95)  # a closed question, 9 words
    j = v.outcome.judgements[-1]
    assert j.release == r.Policy().turn_release_short and "paused inside 1 earlier turn(s)" in j.reason and v.state.run.held, j


@pytest.mark.parametrize("said", ["Yes, please.", "No, that's fine.", "Thanks, bye!"])
def test_a_caller_who_paused_before_still_gets_answers_and_goodbyes_at_once(said):
    v = Convo(turn_release_short="1.6")
    v.state = msgspec.structs.replace(v.state, paused_turns=1)
    v.user_says(said, complete=0.95)
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.release == -1.0 and not v.state.run.held, j


def test_a_caller_who_never_paused_gets_a_closed_first_fragment_answered_at_once():
    v = Convo(turn_release_short="1.6")
    v.user_says("Can I also bring my son along with me?", complete=0.95)
    assert v.outcome.judgements[-1].release == -1.0 and not v.state.run.held


@pytest.mark.parametrize(
    "said, held",
    [
        ("I'd like to come on the twenty-first.", True),  # a closed statement: callers go on from one
        ("Hi, I want to reschedule my check-up.", True),  # the greeting in front is not what was said last
        ("Put me down for ten thirty on Friday.", True),  # a request said as an order
        ("What are your opening hours.", False),  # a question, without the "?" Whisper left out
        ("So, um, do you take new patients?", False),
        ("Yes, please.", False),  # an answer, a goodbye: whole by form
        ("Thanks, bye!", False),
    ],
)
def test_a_statement_that_starts_a_turn_is_held_to_turn_release_statement(said, held):
    v = Convo(turn_release_statement="1.6")
    v.user_says(said, complete=0.95)
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and v.state.run.held == held, j
    if held:
        assert j.release == 1.6 and "a statement that starts the caller's turn" in j.reason


def test_a_statement_that_answers_the_agents_question_is_not_held_but_one_after_how_can_i_help_is():
    v = Convo(turn_release_statement="1.6", greeting="Hello, Bright Smile Dental. How can I help?")
    v.play_all()
    v.user_says("I need to cancel my appointment.", complete=0.95)  # "How can I help?" asks for no short answer
    assert v.state.run.held and v.outcome.judgements[-1].release == 1.6
    v.llm("I have nine and half past nine on Friday. Which one would you like?")
    v.timer("release")
    v.play_all()
    v.user_says("The first one, please.", complete=0.95)  # answers the agent's question: at once
    assert not v.state.run.held and v.outcome.judgements[-1].release == -1.0


def test_a_short_answer_to_the_agents_question_is_not_held_as_a_fragment_that_may_go_on():
    v = Convo(turn_release_short="1.6")
    v.user_says("Do you have anything free on Friday?", complete=0.95)
    v.llm("I have nine and half past nine. Which one would you like?")
    v.play_all()
    v.user_says("The first one, please.", complete=0.95)  # four words: a fragment, but it answers "Which one?"
    assert not v.state.run.held and v.outcome.judgements[-1].release == -1.0
    v2 = Convo(turn_release_short="1.6")
    v2.user_says("The first one, please.", complete=0.95)  # the same words opening a call may go on
    assert v2.state.run.held and "a first fragment that may go on" in v2.outcome.judgements[-1].reason


@pytest.mark.parametrize(
    "said, held",
    [
        ("My appointment was on the third of March.", True),  # a circumstance: the request comes next
        ("It hurts when I drink something cold.", True),
        ("Thanks for picking up so quickly.", True),  # a thanks before the agent did anything opens the call
        ("Hi, thank you for calling me back.", True),
        ("I have a question about my insurance.", True),  # announces a request, asks for nothing yet
        ("I'd like to cancel my appointment on Monday morning.", False),  # a request said as a statement
        ("I need to see somebody soon.", False),
        ("I'm calling about the bill that came last week.", False),  # the reason for the call
        ("Book me in for Friday at ten.", False),  # an order
        ("Are you open on Saturdays?", False),  # a question
        ("What are your opening hours.", False),  # a question Whisper wrote without its "?"
        ("I have a toothache, can you see me today.", False),  # a request in any sentence
        ("Thanks, bye!", False),  # a goodbye
        ("Yes.", False),
    ],
)
def test_words_that_ask_for_nothing_open_a_call_and_are_held_to_turn_release_unasked(said, held):
    """RULES 31."""
    v = Convo(turn_release_unasked="1.6")
    v.user_says(said, complete=0.95)
    j = v.outcome.judgements[-1]
    assert j.verdict == "answer" and j.wait == r.Policy().turn_silence and v.state.run.held == held, j
    if held:
        assert j.release == 1.6 and "ask for nothing, before any request" in j.reason, j
        v.llm("Sorry to hear that. How can I help?")
        assert not any(isinstance(x, c.ResumePlayback) for x in v.last)
        v.timer("release")  # the caller stayed silent: the answer is heard
        assert any(isinstance(x, c.ResumePlayback) for x in v.last) and not v.state.run.held


def test_words_that_ask_for_nothing_are_answered_at_once_once_the_caller_has_asked_for_something():
    v = Convo(turn_release_unasked="1.6")
    v.user_says("Do you have anything free on Friday?", complete=0.95)
    assert not v.state.run.held
    v.llm("I have nine and half past nine on Friday.")
    v.play_all()
    v.user_says("Thanks so much for checking.", complete=0.95)  # a thanks after the agent did something: whole
    assert not v.state.run.held and v.outcome.judgements[-1].release == -1.0


def test_a_caller_who_goes_on_after_words_that_ask_for_nothing_never_hears_the_answer_to_them():
    """The point of RULES 31: "My crown came loose at lunch." ... "Could somebody look at it today?" is one turn."""
    v = Convo(turn_release_unasked="1.6")
    v.user_says("My crown came loose at lunch.", complete=0.95)
    assert v.state.run.held
    v.llm("Oh no, I'm sorry to hear that.")
    v.t += 0.9  # a 1.1 s pause: the release (1.6 s of silence) has not come
    v.send(c.SpeechOnset, utterance=v.state.utterance + 1)
    v.user_says("Could somebody look at it today?", complete=0.95)
    assert "ResumePlayback" not in [type(x).__name__ for x in v.cmds]  # nothing of the first answer was heard
    assert v.state.run is not None and "crown" in v.state.run.user_text and "today" in v.state.run.user_text


@pytest.mark.parametrize("params", [{"direction": "outbound"}, {"greeting": "Hi, this is Bright Smile Dental. Is that Sam?"}])
def test_words_that_ask_for_nothing_are_not_held_on_a_call_placed_or_as_an_answer_to_the_agents_question(params):
    v = Convo(turn_release_unasked="1.6", **params)
    if v.state.run is not None:
        v.play_all()
    v.user_says("Thanks for calling me back.", complete=0.95)
    assert not v.state.run.held and v.outcome.judgements[-1].release == -1.0


# --- a talk-over judged whole (RULES 32) and an answer that opens a few words (RULES 33)


def _piece(v, u, text, speech_ms, gap_before=0.0, onset=True):
    """One piece of a talk-over: its onset ``gap_before`` after the previous voice end (v.t is kept
    there), its voice of ``speech_ms``, the VAD's stop 0.2 s later, then its final."""
    v.t += gap_before
    if onset:
        v.send(c.SpeechOnset, utterance=u)
    v.send(c.SpeechStarted, utterance=u)
    v.t += speech_ms / 1000 - 0.1
    end = v.t
    v.t += 0.2
    v.send(c.SpeechStopped, utterance=u, speech_ms=speech_ms, speech_end_at=end, eot=0.9)
    cmds = v.send(c.TranscriptFinal, utterance=u, text=text, complete=0.9)
    v.t = end + 0.05  # the next gap counts from this voice's end
    return cmds


def test_a_talk_over_split_in_one_breath_is_judged_whole():
    """RULES 32, live on Twilio (yes-over-the-question, 16:00): "Yes, book it." over the agent came as
    "Yes?" (0.29 s) and, 0.37 s later, "book it." (0.32 s): each alone a backchannel / a noise, the
    answer played on and nothing was booked. As one talk-over: 3 words in 0.9 s of sound, the
    caller's turn is "Yes? book it."."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0  # not a caller going on with its turn (RULES 21)
    _piece(v, 7, "Yes?", 290)
    assert v.run == run and v.outcome.judgements[0].heard == "backchannel"  # alone: plays on
    cmds = _piece(v, 8, "book it.", 320, gap_before=0.37)
    j = v.outcome.judgements[0]
    assert j.verdict == "barge-in" and j.heard == "words" and j.text == "Yes? book it." and j.score >= 0.75, j
    assert v.state.run is None or v.run != run
    llm = [x for x in cmds if isinstance(x, c.StartLLM)]
    assert llm and llm[0].messages[-1] == c.Message(role="user", content="Yes? book it.")


def test_a_second_sound_after_a_real_gap_is_a_talk_over_of_its_own():
    """The same pieces a second apart are two talk-overs: "book it." alone in 0.32 s is a noise."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0  # not a caller going on with its turn (RULES 21)
    _piece(v, 7, "Yes?", 290)
    _piece(v, 8, "book it.", 320, gap_before=1.0)
    assert v.run == run and v.outcome.judgements[0].verdict == "resume" and v.outcome.judgements[0].text == "book it."


@pytest.mark.parametrize(("first", "second"), [("Yeah.", "Yeah."), ("Mm-hmm.", "Okay."), ("Right.", "(coughs)"), ("Hi. Hi. Hi. Hi.", "Mm.")])
def test_a_talk_over_of_floor_keeping_pieces_plays_on(first, second):
    """RULES 32 never makes words of pieces that are not: backchannels, sounds and loops read together
    are still that, and the reply plays on after each."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0  # not a caller going on with its turn (RULES 21)
    _piece(v, 7, first, 400)
    _piece(v, 8, second, 450, gap_before=0.2)
    assert v.run == run and v.phase == r.SPEAKING, v.outcome
    assert not any(isinstance(x, (c.CancelLLM, c.FlushPlayback)) for x in v.cmds)


def test_a_final_is_judged_with_its_own_talk_overs_sound():
    """barge7 OPEN 1 (hp3-one-moment pcm): "One moment, | please." split with no gap; the first
    piece's final "let me know." came after the second piece stopped and was judged with the
    SECOND piece's 0.38 s: a noise. Now with the talk-over's sound (1.1 s): words."""
    v = Convo()
    run = _speaking(v)
    v.t += 2.0
    v.send(c.SpeechOnset, utterance=7)
    v.send(c.SpeechStarted, utterance=7)
    v.t += 0.6
    v.send(c.SpeechStopped, utterance=7, speech_ms=700, speech_end_at=v.t - 0.2, eot=0.3)
    v.send(c.SpeechOnset, utterance=8)
    v.send(c.SpeechStarted, utterance=8)
    v.t += 0.3
    v.send(c.SpeechStopped, utterance=8, speech_ms=380, speech_end_at=v.t - 0.2, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="let me know.", complete=0.5)
    j = v.outcome.judgements[0]
    assert j.verdict == "barge-in" and j.score > 1.0 and v.run != run, j


def test_without_whole_talk_overs_a_final_keeps_its_own_utterances_length():
    """overlap_gap 0: each piece alone, but a final is judged with its own utterance's sound (0.7 s
    here), not the latest SpeechStopped's (0.38 s)."""
    v = Convo(overlap_gap="0")
    _speaking(v)
    v.t += 2.0
    v.send(c.SpeechStarted, utterance=7)
    v.t += 0.6
    v.send(c.SpeechStopped, utterance=7, speech_ms=700, speech_end_at=v.t - 0.2, eot=0.3)
    v.send(c.SpeechStarted, utterance=8)
    v.t += 0.3
    v.send(c.SpeechStopped, utterance=8, speech_ms=380, speech_end_at=v.t - 0.2, eot=0.9)
    v.send(c.TranscriptFinal, utterance=7, text="let me know.", complete=0.5)
    j = v.outcome.judgements[0]
    assert j.score == 0.7 and j.verdict != "barge-in", j


@pytest.mark.parametrize("said", ["Yes, please.", "Sure, go ahead.", "Okay, book it.", "Yep, that one."])
def test_a_few_words_opening_with_an_answer_answer_the_question_however_short(said):
    """RULES 33: a lone "Yes." over "Shall I book that?" answers it (RULES 4) however short; so do a few
    words that open with it, which the noise rule (a few words in under 0.75 s) used to drop."""
    v, run = _question_playing("can I come on Friday at ten", "Friday at ten is free. Shall I book that for you?")
    v.t += 2.0  # the question has begun for the caller, whose own turn ended well before
    _piece(v, 7, said, 520)
    j = v.outcome.judgements[0]
    assert j.heard == "answer" and j.verdict == "barge-in" and v.run != run.id, j


def test_a_few_words_opening_with_yes_over_no_question_are_still_a_noise():
    v = Convo()
    run = _speaking(v)
    v.t += 2.0  # not a caller going on with its turn (RULES 21)
    _piece(v, 7, "Yes, please.", 520)
    assert v.run == run and v.outcome.judgements[0].verdict == "resume"
