"""Hypothesis properties of the reducer over random (but plausible) event sequences.

The generator looks at the current state to make events that reach deep paths
(tokens for the active run and step, playback of chunks that were sent, timers
that are running) and mixes in stale and out-of-order ones.
"""

from __future__ import annotations

import json

import msgspec

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley import contract as c
from parley_orchestrator import reducer as r, words

S = "prop"
SIGNAL = st.sampled_from([-1.0, 0.1, 0.5, 0.95])
PARTIALS = ["", "uh-huh", "wait", "book me in", "(coughs)", "Mm hmm", "yes", "in a moment", "M H M", "hold on", "book me in for friday please", "Emm..."]
FINALS = ["", "mm-hmm", "book tomorrow at 3", "no wait, Friday", "No, no, no, no, no,", "(coughs)", "Yeah.", "Yes.", "I'd like to book, um", "555 201", "[laughter]", "Ah.",
          "Hi there.", "Could you tell me", "Emm... Em.", "Hmhm.", "Hahahah.", "Say, say, say, say, say.", "Okay.", "My crown came loose."]
LEVELS = st.sampled_from([0.0, -15.0, -20.0, -40.0])  # dBFS (0: unknown)
# Draw re-heard utterances (RULES 28: a worker that took over hears the last one again, same id).
REHEARD = True
FLOORS = st.sampled_from([-1.0, -1.0, 0.01, 0.3])  # TranscriptFinal.floor: unknown, a cough's, a "No." written ""
WORDS = ["Sure", "okay,", "let", "me", "check.", "You're", "booked", "at", "3.30", "p.m.", "Dr.", "Smith", "sees", "you!", "Anything", "else?", "uh-huh", "e.g.", "fine", "Shall I book that?", "Which time suits you?"]


@st.composite
def sessions(draw, max_events=60):
    params = draw(st.fixed_dictionaries({}, optional={
        "greeting": st.sampled_from(["Hello. How can I help?", "Hi!"]),
        "preemptive": st.sampled_from(["true", "false"]),
        "turn_silence_unknown": st.sampled_from(["0", "0.5"]),
        "hold_max": st.sampled_from(["0.5", "3"]),
        "max_tool_steps": st.sampled_from(["1", "2"]),
        "voicemail_message": st.sampled_from(["Hi, this is the clinic calling back. Goodbye.", ""]),
        "direction": st.sampled_from(["outbound", "inbound"]),
        "dtmf_wait": st.sampled_from(["0", "1"]),
        "ivr_path": st.sampled_from(["1", "1,2w3"]),
        "consent_text": st.just("This call may be recorded."),
        "onset_hold": st.sampled_from(["0", "0.3"]),
        "resume_on_partial": st.sampled_from(["true", "false"]),
        "background_db": st.sampled_from(["0", "12"]),
        "turn_release_statement": st.sampled_from(["0", "1.6"]),
        "turn_release_unasked": st.sampled_from(["0", "1.6"]),
        "turn_continue_gap": st.sampled_from(["0", "1.5", "5"]),
        "overlap_gap": st.sampled_from(["0", "0.6", "5"]),
    }))
    state = r.initial_state()
    t = 0.0
    events: list[c.AnyEvent] = [c.SessionStarted(session=S, at=t, params=params, recorded=draw(st.booleans()))]
    state, _, _ = r.reduce(state, events[0])
    utterance = 0
    speaking = False
    call_n = 0
    issued_calls: list[str] = []
    for _ in range(draw(st.integers(0, max_events))):
        t += draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
        run = state.run
        rid = run.id if run else draw(st.integers(1, 3))
        if draw(st.integers(0, 9)) == 0:
            rid = draw(st.integers(0, state.next_run + 1))  # maybe stale
        step = run.step if run else 0
        kinds = ["speech", "onset", "onset_end", "partial", "final", "token", "tool", "done", "error", "tts", "play", "result", "timer", "dtmf", "status", "keys"]
        if run is not None and run.llm_active:
            kinds += ["token", "token", "tool", "done", "done"]
        if run is not None and run.waiting:
            kinds += ["result", "result"]
        if run is not None and run.sent:
            kinds += ["play", "play", "tts"]
        kind = draw(st.sampled_from(kinds))
        if kind == "speech":
            if speaking:
                end = draw(st.sampled_from([0.0, t - 0.2, t]))
                ev = c.SpeechStopped(session=S, at=t, utterance=utterance, speech_end_at=end, eot=draw(SIGNAL), speech_ms=draw(st.sampled_from([0, 360, 680, 1200])), level=draw(LEVELS))
                utterance += 1
            else:
                if REHEARD and utterance > 0 and draw(st.integers(0, 7)) == 0:
                    utterance -= 1  # an ASR worker that took over hears the last utterance again (same id)
                ev = c.SpeechStarted(session=S, at=t, utterance=utterance, level=draw(LEVELS))
            speaking = not speaking
        elif kind == "onset":
            ev = c.SpeechOnset(session=S, at=t, utterance=utterance, level=draw(LEVELS))
        elif kind == "onset_end":
            ev = c.SpeechOnsetEnded(session=S, at=t, utterance=utterance)
        elif kind == "partial":
            ev = c.TranscriptPartial(session=S, at=t, utterance=utterance, text=draw(st.sampled_from(PARTIALS)))
        elif kind == "final":
            u = draw(st.integers(max(0, utterance - 1), utterance))
            ev = c.TranscriptFinal(session=S, at=t, utterance=u, text=draw(st.sampled_from(FINALS)), complete=draw(SIGNAL), floor=draw(FLOORS))
        elif kind == "token":
            ev = c.LLMToken(session=S, at=t, run=rid, step=draw(st.sampled_from([step, step, step - 1])), text=draw(st.sampled_from(WORDS)) + " ")
        elif kind == "tool":
            call_n += 1
            args = json.dumps({"time": draw(st.sampled_from(["15:00", "15:30"]))})
            name, reads = draw(TOOL_KINDS)
            ev = c.LLMToolCall(session=S, at=t, run=rid, step=step, call_id=f"call{call_n}", name=name, arguments=args, reads_only=reads)
            issued_calls.append(f"call{call_n}")
        elif kind == "done":
            ev = c.LLMDone(session=S, at=t, run=rid, step=step, finish_reason=draw(st.sampled_from(["stop", "tool_calls"])))
        elif kind == "error":
            ev = c.LLMError(session=S, at=t, run=rid, step=step, message="boom")
        elif kind == "tts":
            n = len(run.chunks) if run else 1
            chunk = draw(st.integers(0, max(n, 1)))
            ev = draw(st.sampled_from([
                c.TTSChunkStarted(session=S, at=t, run=rid, chunk=chunk),
                c.TTSChunkDone(session=S, at=t, run=rid, chunk=chunk, audio_ms=draw(st.sampled_from([0, 400, 1200]))),
                c.TTSError(session=S, at=t, run=rid, chunk=chunk, message="x"),
            ]))
        elif kind == "play":
            sent = run.sent if run else 1
            chunk = draw(st.integers(0, max(sent, 1)))
            ev = c.PlaybackProgress(session=S, at=t, run=rid, chunk=chunk, finished=draw(st.booleans()))
        elif kind == "result":
            if not issued_calls:
                continue
            call_id = draw(st.sampled_from(issued_calls))
            ev = c.ToolResult(session=S, at=t, run=rid, call_id=call_id, name="book_appointment", result='{"booked": true}', ok=draw(st.booleans()))
        elif kind == "timer":
            running = [x for x in state.timers if x[0] != "max_call" or draw(st.integers(0, 30)) == 0]
            if running and draw(st.integers(0, 4)):
                name, token = draw(st.sampled_from(running))
            else:
                name, token = draw(st.sampled_from(["resume", "hold", "endpoint", "final", "onset"])), draw(st.integers(0, 50))
            ev = c.TimerFired(session=S, at=t, name=name, token=token)
        elif kind == "keys" and draw(st.booleans()):
            call_n += 1
            digits = draw(st.sampled_from(["1", "2#", "one"]))
            ev = c.LLMToolCall(session=S, at=t, run=rid, step=step, call_id=f"call{call_n}", name="send_digits", arguments=json.dumps({"digits": digits}))
            issued_calls.append(f"call{call_n}")
        elif kind == "keys":
            call_id = draw(st.sampled_from(issued_calls + [""]))
            ev = c.DigitsSent(session=S, at=t, digits="1", call_id=call_id, ok=draw(st.booleans()))
        elif kind == "status" and draw(st.booleans()):
            ev = c.ToneHeard(session=S, at=t, hz=1000, ms=draw(st.sampled_from([200, 500])))
        elif kind == "status":
            status, answered_by = draw(st.sampled_from([("ringing", ""), ("in-progress", "human"), ("in-progress", "machine_end_beep"), ("completed", ""), ("in-progress", "fax")]))
            ev = c.CallStatus(session=S, at=t, status=status, answered_by=answered_by)
        else:
            ev = c.Dtmf(session=S, at=t, digit=draw(st.sampled_from(["1", "#"])))
        events.append(ev)
        state, _, _ = r.reduce(state, ev)
    events.append(c.SessionEnded(session=S, at=t + 1, reason="test over"))
    return events


def run_all(events):
    """Strict: an exception in the reducer fails the property."""
    state = r.initial_state()
    steps = []
    for ev in events:
        before = state
        state, cmds, outcome = r.reduce(state, ev)
        steps.append((before, ev, cmds, outcome, state))
    return state, steps


def _turns_answered(events):
    """(before, event, after, the turn_end judgement) of each step that
    answered a caller's turn with words, other than at a SpeechStopped
    (a preemptive guess) or a key press."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        started = [x for x in cmds if isinstance(x, c.StartLLM) and x.step == 0 and x.attempt == 0]
        if not started or not after.run or not after.run.user_text or isinstance(ev, (c.SpeechStopped, c.Dtmf)):
            continue
        yield before, ev, after, [j for j in outcome.judgements if j.kind == "turn_end"][-1]


# A tool call's tool: one that changes something (waits for a held answer's
# release) or one declared to only read (runs at once, RULES 25).
TOOL_KINDS = st.sampled_from([("book_appointment", False), ("book_appointment", False), ("check_availability", True)])
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPS
@given(sessions())
def test_deterministic(events):
    a, sa = run_all(events)
    b, sb = run_all(events)
    assert a == b
    assert [s[2] for s in sa] == [s[2] for s in sb]
    assert r.encode_state(a) == r.encode_state(b)


@PROPS
@given(sessions())
def test_no_command_for_a_run_that_is_not_active(events):
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        live = {x.run.id for x in (before, after) if x.run is not None}
        for cmd in cmds:
            if isinstance(cmd, c.RunCommand):
                assert cmd.run in live, (ev, cmd)
                if isinstance(cmd, (c.StartLLM, c.Synthesize, c.CallTool)):
                    # New work only for the run that is active after the step.
                    assert after.run is not None and cmd.run == after.run.id, (ev, cmd)
        if outcome.dropped:
            assert cmds == [] and after == before


@PROPS
@given(sessions())
def test_runs_are_ordered_and_every_run_ends(events):
    final, steps = run_all(events)
    started, ended = set(), set()
    last = 0
    for before, ev, cmds, _, after in steps:
        if after.run is not None:
            assert after.run.id >= last
            last = after.run.id
            started.add(after.run.id)
        if before.run is not None and (after.run is None or after.run.id != before.run.id):
            ended.add(before.run.id)
    assert final.phase == r.ENDED
    assert final.run is None
    assert started <= ended
    assert final.timers == ()


@PROPS
@given(sessions())
def test_no_synthesis_after_flush(events):
    _, steps = run_all(events)
    flushed: set[int] = set()
    for _, ev, cmds, _, _ in steps:
        for cmd in cmds:
            if isinstance(cmd, c.Synthesize):
                assert cmd.run not in flushed, cmd
            if isinstance(cmd, c.FlushPlayback):
                assert {type(x) for x in cmds} >= {c.CancelLLM, c.CancelTTS, c.FlushPlayback}
                flushed.add(cmd.run)


@PROPS
@given(sessions())
def test_history_holds_only_heard_text(events):
    final, steps = run_all(events)
    texts: dict[tuple[int, int], str] = {}
    heard: dict[int, list[str]] = {}
    for before, ev, cmds, outcome, after in steps:
        for cmd in cmds:
            if isinstance(cmd, c.Synthesize):
                texts[(cmd.run, cmd.chunk)] = cmd.text
        if isinstance(ev, c.PlaybackProgress) and ev.finished and not outcome.dropped:
            run = before.run
            for i in range(run.played, min(ev.chunk + 1, len(run.chunks))):
                heard.setdefault(ev.run, []).append(run.chunks[i])
    all_heard = [t for chunks in heard.values() for t in chunks]
    for msg in final.history:
        if msg.role != "assistant" or not msg.content:
            continue
        rest = msg.content
        for piece in all_heard:
            if rest.startswith(piece):
                rest = rest[len(piece):].lstrip()
        assert rest == "", (msg.content, all_heard)


@PROPS
@given(sessions())
def test_tools_never_run_for_cancelled_runs_nor_repeated(events):
    _, steps = run_all(events)
    seen_ids: set[str] = set()
    issued: list[tuple[tuple[str, str], int]] = []  # (name and arguments, run), in order
    for before, ev, cmds, _, after in steps:
        for cmd in cmds:
            if isinstance(cmd, c.CallTool):
                deferred = before.run is not None and cmd.call_id in {d.call_id for d in before.run.deferred}  # held or paused till now
                assert deferred or (isinstance(ev, c.LLMToolCall) and before.run is not None and ev.run == before.run.id)
                assert after.run is not None and after.run.id == cmd.run
                key = (cmd.name, json.dumps(json.loads(cmd.arguments), sort_keys=True))
                assert cmd.call_id not in seen_ids
                # The same call again only once another run's call came between.
                last = max((i for i, (k, _) in enumerate(issued) if k == key), default=None)
                assert last is None or any(run != issued[last][1] for _, run in issued[last + 1 :])
                seen_ids.add(cmd.call_id)
                issued.append((key, cmd.run))


@PROPS
@given(sessions())
def test_every_tool_call_in_history_has_its_result(events):
    final, _ = run_all(events)
    answered = {m.tool_call_id for m in final.history if m.role == "tool"}
    for m in final.history:
        for call in m.tool_calls:
            assert call.call_id in answered


@PROPS
@given(sessions())
def test_state_survives_the_kv_round_trip(events):
    final, steps = run_all(events)
    for _, _, _, _, after in steps[:: max(1, len(steps) // 5)]:
        assert r.decode_state(r.encode_state(after)) == after


@PROPS
@given(sessions())
def test_every_step_takes_an_outcome_its_table_row_declares(events):
    _, steps = run_all(events)
    for before, ev, _, outcome, after in steps:
        if outcome.dropped:
            assert outcome.path == (before.phase,) and not outcome.taken
            continue
        row = r.row_for(before.phase, ev)
        assert row is not None, (before.phase, ev)
        assert outcome.taken in row.outcomes, (before.phase, type(ev).__name__, outcome.taken)
        assert outcome.path == r._path(before.phase, row.outcomes[outcome.taken])
        assert after.phase == outcome.path[-1]


@PROPS
@given(sessions())
def test_state_is_kept_once(events):
    """A run exists exactly while the agent has the floor, and the floor's
    phase is the run's own (generating, awaiting a tool, speaking)."""
    _, steps = run_all(events)
    for _, ev, _, _, after in steps:
        assert (after.run is not None) == (after.phase in r.HELD), (ev, after.phase)
        if after.phase in r.FLOOR_PHASES:
            assert r.FLOOR[r._floor(r.Fx(after)).outcome] == (after.phase,), (ev, after.phase, after.run)
        names = [name for name, _ in after.timers]
        assert len(names) == len(set(names)), names


def _words_judged(outcome):
    return [j for j in outcome.judgements if j.kind == "interruption"]


def _talk_over_text(before, ev):
    """What the reducer reads for this piece of a talk-over (RULES 32): the
    words of its earlier pieces that did not take the floor, then its own."""
    return r._join(before.over_text, ev.text.strip()) if r._in_talk_over(before, ev.utterance) else ev.text


@PROPS
@given(sessions())
def test_no_answer_starts_while_the_caller_is_speaking(events):
    _, steps = run_all(events)
    for before, ev, cmds, _, after in steps:
        for cmd in cmds:
            if isinstance(cmd, c.StartLLM) and cmd.step == 0 and cmd.attempt == 0:
                assert not after.user_speaking, (ev, cmd)


@PROPS
@given(sessions())
def test_a_sound_or_backchannel_never_cancels_a_held_answer(events):
    """Nothing but words (or a key press, a hang-up, a failure) cancels a run
    in a hold."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if before.phase != r.PAUSED or not any(isinstance(x, c.FlushPlayback) for x in cmds):
            continue
        if isinstance(ev, c.TranscriptFinal) and 0 < before.policy.floor_word <= ev.floor:
            # RULES 22: a floor word heard by its sound, whatever the text says
            assert any(j.verdict == "barge-in" for j in _words_judged(outcome)), (ev, outcome)
        elif isinstance(ev, (c.TranscriptPartial, c.TranscriptFinal)):
            assert any(j.verdict == "barge-in" and j.heard in ("words", "answer") for j in _words_judged(outcome)), (ev, outcome)
            # RULES 32: the talk-over's pieces read together are words; none of them alone need be
            said = _talk_over_text(before, ev)
            assert words.hearing(said, asked=True) in ("words", "answer"), (said, outcome)
        elif isinstance(ev, c.SpeechStarted):
            # Paused by a voice onset before any of the answer was heard: the
            # caller goes on with the turn (the unheard answer is withdrawn).
            assert outcome.taken == "caller went on: answer withdrawn" and before.run.played == 0, (ev, outcome)
        else:
            assert isinstance(ev, (c.Dtmf, c.SessionEnded, c.TimerFired, c.LLMError, c.CallStatus, c.ToneHeard)), ev
            if isinstance(ev, c.TimerFired):
                assert ev.name in ("max_call", "llm_first_token", "tts_first_audio", "playback"), ev


@PROPS
@given(sessions())
def test_a_yes_never_answers_a_question_it_cannot_answer(events):
    """RULES 27: over an answer whose only questions ask which, what, when...
    ("Which time suits you?"), a yes or an okay is a backchannel: unless the
    recogniser heard a floor word first (RULES 22), it never cancels the run."""
    import re

    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if before.phase not in r.HELD or before.run is None or not isinstance(ev, c.TranscriptFinal):
            continue
        if words.hearing(_talk_over_text(before, ev), asked=True) != "answer" or 0 < before.policy.floor_word <= ev.floor:
            continue
        questions = re.findall(r"[^.!?]*\?", " ".join(before.run.chunks))
        if questions and not any(words.yes_no_question(q) for q in questions):
            assert not any(isinstance(x, (c.FlushPlayback, c.CancelLLM)) for x in cmds), (ev, before.run.chunks, outcome)


@PROPS
@given(sessions())
def test_an_utterance_heard_again_is_no_pause(events):
    """RULES 28: a SpeechStarted of an utterance that stopped and whose final
    is not in yet (an ASR worker that took over hears it again) never counts
    a pause in the caller's turn."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if isinstance(ev, c.SpeechStarted) and ev.utterance in before.awaiting_finals:
            assert after.turn_pauses <= before.turn_pauses, (ev, outcome)


@PROPS
@given(sessions())
def test_a_continuing_callers_words_are_never_taken_for_a_noise(events):
    """RULES 21: in a hold, the final of a voice judged the caller going on
    with its turn (``continuing``) that has words, in at least
    turn_continue_sound of sound, takes the floor: the noise rule's bar is
    lowered for it, and only its own form (a hum, a backchannel, a sound)
    lets the answer play on. Once a turn is answered, the pauses a call has
    had are never forgotten."""
    _, steps = run_all(events)
    p = r.Policy()
    for before, ev, cmds, outcome, after in steps:
        assert after.paused_turns >= before.paused_turns
        if before.phase != r.PAUSED or not isinstance(ev, c.TranscriptFinal) or ev.utterance != before.continuing or before.continuing < 0:
            continue
        if before.user_speaking or ev.utterance == before.background or words.hearing(ev.text, asked=True) != "words":
            continue
        if words.hearing(_talk_over_text(before, ev), asked=True) != "words":
            continue  # RULES 32: read with the talk-over's earlier pieces, a backchannel or a sound
        own = dict(before.stopped_ms).get(ev.utterance, before.speech_ms)  # its own utterance's sound, or the talk-over's
        if own / 1000 >= p.turn_continue_sound:
            assert any(isinstance(x, c.FlushPlayback) for x in cmds) and after.turn_pauses >= 1, (ev, outcome)


@PROPS
@given(sessions())
def test_a_hum_in_any_spelling_never_cancels_a_held_answer(events):
    """Words that are hums or laughs by their form ("Emm... Em.", "Hahahah.";
    RULES 15) never cancel a run in a hold, partial or final (an agreeing
    hum, "Hmhm.", may answer the agent's question, as "mm-hmm" does)."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if before.phase == r.PAUSED and isinstance(ev, (c.TranscriptPartial, c.TranscriptFinal)) and words.tokens(ev.text):
            if isinstance(ev, c.TranscriptFinal) and ev.floor >= before.policy.floor_word:
                continue  # RULES 22: the recogniser heard a floor word first (written as a hum)
            said = _talk_over_text(before, ev)  # RULES 32: with the talk-over's earlier pieces
            if all(words.hum(w) and "mhm" not in w for w in words.tokens(said)):  # an agreeing hum may answer a question
                assert not any(isinstance(x, (c.FlushPlayback, c.CancelLLM)) for x in cmds), (ev, outcome)


@PROPS
@given(sessions())
def test_a_background_voice_never_takes_the_floor(events):
    """RULES 17: a voice background_db under the caller's learned level,
    while the agent has the floor, neither pauses nor interrupts it; nor do
    that utterance's words while a run holds the floor."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        stops = [x for x in cmds if isinstance(x, (c.PausePlayback, c.FlushPlayback, c.CancelLLM))]
        gate = before.policy.background_db
        if isinstance(ev, (c.SpeechOnset, c.SpeechStarted)) and before.phase in r.FLOOR_PHASES and not before.user_speaking:
            if gate > 0 and before.caller_level < 0 and ev.level < before.caller_level - gate:
                assert not stops, (ev, outcome)
                if isinstance(ev, c.SpeechStarted) and before.run is not None and before.run.confirmed and not outcome.dropped:
                    assert after.background == ev.utterance
        if isinstance(ev, (c.TranscriptPartial, c.TranscriptFinal)) and before.phase in r.HELD and ev.utterance == before.background >= 0:
            assert not stops, (ev, outcome)
        # the caller's level is learned only from its own turns
        if after.caller_level != before.caller_level:
            assert isinstance(ev, c.SpeechStopped) and before.phase in r.USER and ev.utterance != before.background
            assert after.caller_level in (round(ev.level, 2), round(before.caller_level - r.LEVEL_FALL_DB, 2))


@PROPS
@given(sessions())
def test_every_hold_ends_in_resume_or_barge_in(events):
    """...or, for an answer still held for its release (RULES 16), in the
    end of the hold with the audio still waiting for the release timer."""
    _, steps = run_all(events)
    for before, ev, cmds, _, after in steps:
        if before.phase == r.PAUSED and after.phase != r.PAUSED:
            kinds = {type(x) for x in cmds}
            still_held = after.run is not None and after.run.held and "release" in {name for name, _ in after.timers}
            assert c.ResumePlayback in kinds or c.FlushPlayback in kinds or still_held, (ev, cmds)


@PROPS
@given(sessions())
def test_an_answer_never_starts_before_the_wait_the_policy_requires(events):
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        started = [x for x in cmds if isinstance(x, c.StartLLM) and x.step == 0 and x.attempt == 0]
        if not started or not after.run or not after.run.user_text or isinstance(ev, c.SpeechStopped):
            continue  # the agent's own runs, and preemptive guesses (held until confirmed)
        turn = [j for j in outcome.judgements if j.kind == "turn_end"]
        assert turn and turn[-1].verdict == "answer", (ev, outcome)
        j, p = turn[-1], before.policy
        allowed = (p.turn_silence, p.turn_silence_unknown, p.turn_wait_unfinished, p.turn_wait_dictation)
        assert j.wait in (0.0, *allowed)  # openings and continued turns wait by their release (RULES 19)
        assert j.silence >= j.wait - 0.001
        if j.wait:  # not a key press: the silence is the event's time since the voice ended
            assert ev.at - after.silence_from >= j.wait - 0.002, (ev, j)


@PROPS
@given(sessions())
def test_a_caller_who_paused_mid_turn_is_never_heard_after_the_short_wait(events):
    """Words after words already in the turn (the caller paused and went on)
    are heard only after turn_wait_continued of silence: a longer wait, or an
    answer held until that release (RULES 19); a key press still answers at
    once."""
    for before, ev, after, j in _turns_answered(events):
        if before.turn_pauses > 0 and not j.reason.startswith("key"):
            _heard_from_at_least(after, j, before.policy.turn_wait_continued)


def _heard_from_at_least(after, j, silence):
    """The answer just started is heard only from ``silence`` after the
    caller's voice ended: decided that late, or held with its release timer
    running until then."""
    if j.silence >= silence - 0.001:
        return
    assert after.run.held and j.release >= silence - 0.001, j
    token = dict(after.timers)["release"]
    assert token, after.timers


TURN_TEXTS = ["Hi there.", "Hello?", "Could you tell me", "My address is 42.", "The date I want is December.", "Can I come in?",
              "What time do you open?", "Book me for Friday at ten.", "Elm Street.", "the eleventh", "I'd like to", "555 201",
              "Hi, yes. I was wondering it.", "Good morning. Book Friday.", "My crown came loose at lunch.", "Thanks for picking up so quickly.",
              "I need to cancel my cleaning."]


@st.composite
def turns(draw):
    """Callers' turns only, one to three utterances each, with random signals,
    gaps and timer firings: the end-of-turn decisions, densely."""
    params = draw(st.fixed_dictionaries({}, optional={
        "direction": st.sampled_from(["outbound", "inbound"]),
        "turn_wait_opening": st.sampled_from(["0.8", "1.2"]),
        "turn_silence_unknown": st.sampled_from(["0.2", "0.5"]),
    }))
    events: list[c.AnyEvent] = [c.SessionStarted(session=S, at=0.0, params=params, recorded=False)]
    state, _, _ = r.reduce(r.initial_state(), events[0])
    t, u = 0.0, 0
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 3))):
            t += draw(st.sampled_from([0.1, 0.5, 0.9, 1.5]))
            batch: list[c.AnyEvent] = [c.SpeechStarted(session=S, at=t, utterance=u)]
            t += draw(st.sampled_from([0.4, 1.0]))
            batch.append(c.SpeechStopped(session=S, at=t + 0.2, utterance=u, speech_end_at=t, eot=draw(SIGNAL)))
            t += draw(st.sampled_from([0.2, 0.3, 0.6]))
            batch.append(c.TranscriptFinal(session=S, at=t, utterance=u, text=draw(st.sampled_from(TURN_TEXTS)), complete=draw(SIGNAL)))
            u += 1
            for ev in batch:
                events.append(ev)
                state, _, _ = r.reduce(state, ev)
            running = [x for x in state.timers if x[0] == "endpoint"]
            if running and draw(st.booleans()):
                t += draw(st.sampled_from([0.1, 0.5, 1.0, 2.5]))
                ev = c.TimerFired(session=S, at=t, name="endpoint", token=running[0][1])
                events.append(ev)
                state, _, _ = r.reduce(state, ev)
            if state.run is not None and state.run.held:
                # A held answer: the caller goes on (maybe an onset first, maybe
                # a faded one), or the silence holds and it is released.
                for what in draw(st.lists(st.sampled_from(["onset", "onset_end", "token", "release", "tool", "done", "result"]), max_size=4)):
                    t += draw(st.sampled_from([0.05, 0.2]))
                    release = [x for x in state.timers if x[0] == "release"]
                    if what == "release" and not release:
                        continue
                    if state.run is None:
                        break
                    issued = [x for x in state.tools if x.result is None]
                    if what == "result" and not issued:
                        continue
                    tool = draw(TOOL_KINDS)
                    ev = {
                        "tool": c.LLMToolCall(session=S, at=t, run=state.run.id, step=state.run.step, call_id=f"call-{t:.2f}", name=tool[0],
                                              arguments=draw(st.sampled_from(['{"date": "2026-12-03"}', '{"date": "2026-12-04"}'])), reads_only=tool[1]),
                        "done": c.LLMDone(session=S, at=t, run=state.run.id, step=state.run.step),
                        "result": c.ToolResult(session=S, at=t, run=issued[0].run if issued else 0, call_id=issued[0].call_id if issued else "", name="book_appointment", result='{"ok": true}'),
                        "onset": c.SpeechOnset(session=S, at=t, utterance=u),
                        "onset_end": c.SpeechOnsetEnded(session=S, at=t, utterance=u),
                        "token": c.LLMToken(session=S, at=t, run=state.run.id, step=0, text="Sure, I can help with that. "),
                        "release": c.TimerFired(session=S, at=t, name="release", token=release[0][1] if release else 0),
                    }[what]
                    events.append(ev)
                    state, _, _ = r.reduce(state, ev)
        t += 5.0  # the agent answers, or not; the next turn is another
        if state.run is not None:
            ev = c.LLMError(session=S, at=t, run=state.run.id, step=0, message="not needed")
            events.append(ev)
            state, _, _ = r.reduce(state, ev)
    events.append(c.SessionEnded(session=S, at=t + 1, reason="test over"))
    return events


@PROPS
@given(st.one_of(sessions(), turns()))
def test_words_that_open_a_turn_are_never_heard_after_the_short_wait(events):
    """A turn whose words read complete but as an opening (words.unfinished
    says "opening": "Hi there.", "Could you tell me") is heard only after
    turn_wait_opening of silence: a longer wait, or an answer held until that
    release (RULES 19); a key press still answers at once, and someone
    answering a call Parley placed may say hello."""
    for before, ev, after, j in _turns_answered(events):
        p = before.policy
        _, kind = words.unfinished(after.run.user_text, words.asked_for(r._agent_last_words(before)), greeting_opens=p.direction != "outbound")
        if kind == "opening" and not j.reason.startswith("key"):
            _heard_from_at_least(after, j, p.turn_wait_opening)


@PROPS
@given(st.one_of(sessions(), turns()))
def test_words_that_ask_for_nothing_before_any_request_are_not_heard_on_the_short_wait(events):
    """RULES 31: an inbound caller's first sentence that asks for nothing
    (words.asks_nothing: "My crown came loose at lunch.", "Thanks for picking
    up so quickly."), before the caller asked for anything this call, is
    heard only from turn_release_unasked of silence, unless it answers the
    agent's question; and that hold is never chosen for words that ask for
    something, nor once the caller has asked for something."""
    for before, ev, after, j in _turns_answered(events):
        p = before.policy
        if j.reason.startswith("key") or before.turn_pauses or p.direction == "outbound":
            continue
        asked = any(m.role == "user" and m.content and words.requests(m.content) for m in before.history)
        if "ask for nothing" in j.reason:
            assert not asked and not words.requests(after.run.user_text) and after.run.held, (ev, j)
        if p.turn_release_unasked <= 0 or words.asks_for_an_answer(r._agent_last_words(before)):
            continue
        if words.asks_nothing(after.run.user_text) and not asked:
            _heard_from_at_least(after, j, p.turn_release_unasked)


@PROPS
@given(sessions())
def test_only_a_long_enough_silence_inside_a_turn_counts_as_a_pause(events):
    """A pause is counted when the caller speaks again, with words of the turn
    in hand, after at least turn_pause_min of silence; gaps between sentences
    are not pauses. The count is cleared when the turn is answered."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if after.turn_pauses > before.turn_pauses and 0 <= before.continuing == before.utterance and after.continuing == -1:
            # RULES 21: the barge-in (words or a key press) of a caller judged going on with its turn
            # counts the pause it made (found on re-heard utterances' draws, barge7; pre-existing): once,
            # either as a new pause after earlier ones (+1) or as the turn's first (a draw of session 8
            # had one pause counted already, then a second silence and the barge-in: 1 -> 2)
            assert after.turn_pauses in (before.turn_pauses + 1, max(1, before.turn_pauses)), (ev, outcome)
        elif after.turn_pauses > before.turn_pauses:
            assert isinstance(ev, c.SpeechStarted) and after.turn_pauses == before.turn_pauses + 1
            begun = before.onset_at if before.onset_utterance == ev.utterance and before.silence_from < before.onset_at <= ev.at else ev.at
            assert begun - before.silence_from >= before.policy.turn_pause_min
            assert before.user_text.strip() or before.awaiting_finals or (before.run is not None and after.run is None)
            assert ev.utterance not in before.awaiting_finals  # RULES 28: an utterance heard again is no pause
        # A preemptive run (unconfirmed) may be withdrawn and the turn go on, so
        # its pauses stay counted until the turn is answered for real.
        answered = any(isinstance(x, c.StartLLM) and x.step == 0 and x.attempt == 0 for x in cmds) and after.run and after.run.user_text and after.run.confirmed
        confirmed = before.run is not None and not before.run.confirmed and after.run is not None and after.run.id == before.run.id and after.run.confirmed
        if answered or confirmed:
            assert after.turn_pauses == 0


def test_a_confirmed_preemptive_answer_clears_the_pauses_of_its_turn():
    """Found by the property above: a pause counted in a turn answered by a
    preemptive run that its final confirmed stayed counted into the next turn,
    which then waited as if the caller had paused in it."""
    params = {"greeting": "Hi!", "preemptive": "true", "onset_hold": "0"}
    events: list[c.AnyEvent] = [c.SessionStarted(session=S, at=0.0, params=params, recorded=False)]
    t = 0.0
    events += [c.SpeechStarted(session=S, at=t, utterance=1),
               c.TranscriptPartial(session=S, at=t + 0.5, utterance=1, text="book me in"),
               c.SpeechStopped(session=S, at=t + 1.0, utterance=1, speech_ms=1000, speech_end_at=t + 1.0, eot=-1.0),
               c.TranscriptFinal(session=S, at=t + 1.1, utterance=1, text="book me in", complete=False),
               # a pause of 1 s, then the turn goes on
               c.SpeechStarted(session=S, at=t + 2.1, utterance=2),
               c.TranscriptPartial(session=S, at=t + 2.5, utterance=2, text="for friday please"),
               c.SpeechStopped(session=S, at=t + 3.0, utterance=2, speech_ms=900, speech_end_at=t + 3.0, eot=0.95)]
    state, steps = run_all(events)
    assert state.turn_pauses == 1 and state.run is not None and not state.run.confirmed  # a preemptive guess
    # The final comes late, after the longer wait a paused turn gets: the guess stands.
    late = t + 3.0 + state.policy.turn_wait_continued + 0.1
    state, _, outcome = r.reduce(state, c.TranscriptFinal(session=S, at=late, utterance=2, text="for friday please", complete=True))
    assert state.run is not None and state.run.confirmed, outcome
    assert state.turn_pauses == 0


@PROPS
@given(sessions())
def test_an_answer_nobody_heard_is_withdrawn_without_a_trace(events):
    """A caller who speaks before hearing any of the answer to its turn goes
    on with that turn: the run is cancelled, history is unchanged, and the
    words it answered are back in the turn, ahead of anything said since."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if outcome.taken != "caller went on: answer withdrawn":
            continue
        run = before.run
        assert isinstance(ev, c.SpeechStarted) and run is not None and run.played == 0 and run.playing < 0 and not run.scripted
        assert {type(x) for x in cmds} >= {c.CancelLLM, c.CancelTTS, c.FlushPlayback}
        assert all(getattr(x, "run", run.id) == run.id for x in cmds)
        assert after.run is None and after.history == before.history and after.phase == r.LISTENING
        assert words.tokens(after.user_text)[: len(words.tokens(run.user_text))] == words.tokens(run.user_text)


@PROPS
@given(sessions())
def test_a_machine_gets_the_voicemail_once_or_is_hung_up_on(events):
    """When a machine answers a live call: no LLM starts in that step; the
    message (if any) is the one run speaking, and a second detection while it
    is spoken changes nothing; without a message the call ends there."""
    message = events[0].params.get("voicemail_message", "")
    _, steps = run_all(events)
    voicemail_run = None
    for before, ev, cmds, _, after in steps:
        machine = (isinstance(ev, c.CallStatus) and ev.machine) or (isinstance(ev, c.ToneHeard) and after.answered_by.endswith("(Parley)") and not before.answered_by)
        if not machine or before.phase in (r.IDLE, r.ENDED):
            continue
        assert not any(isinstance(cmd, c.StartLLM) for cmd in cmds)
        if voicemail_run is not None and before.run is not None and before.run.id == voicemail_run:
            assert cmds == []
            continue
        if not message:
            assert after.phase == r.ENDED and any(isinstance(cmd, c.EndSession) for cmd in cmds)
            continue
        said = " ".join(cmd.text for cmd in cmds if isinstance(cmd, c.Synthesize))
        assert said == message and after.run is not None and after.run.scripted
        voicemail_run = after.run.id


@PROPS
@given(sessions())
def test_keys_are_pressed_only_from_a_live_run_once_all_it_said_was_heard(events):
    """A send_digits call's keys go out once, from the run that asked, after
    its LLM step ended and every chunk it said was heard, never in a hold;
    the IVR path's only between turns (no run)."""
    _, steps = run_all(events)
    pressed: set[str] = set()
    for before, ev, cmds, _, after in steps:
        for cmd in cmds:
            if not isinstance(cmd, c.SendDigits):
                continue
            assert after.phase != r.PAUSED and r.keypad_digits(cmd.digits) == cmd.digits
            if not cmd.call_id:
                assert cmd.run == -1 and after.run is None and after.policy.direction == "outbound", (ev, cmd)
                continue
            assert cmd.call_id not in pressed
            pressed.add(cmd.call_id)
            assert before.run is not None and before.run.id == cmd.run, (ev, cmd)
            run = after.run
            assert after.policy.direction == "outbound"
            if run is not None and run.id == cmd.run:
                assert not run.llm_active and run.played >= len(run.chunks) and not run.digits, (ev, run)


@PROPS
@given(sessions())
def test_the_agent_says_nothing_of_its_own_while_the_ivr_path_has_keys_left(events):
    _, steps = run_all(events)
    for before, ev, cmds, _, after in steps:
        if before.policy.direction != "outbound" or before.ivr_step >= len(r.ivr_groups(before.policy.ivr_path)):
            continue
        for cmd in cmds:
            assert not (isinstance(cmd, c.StartLLM) and cmd.step == 0 and cmd.attempt == 0), (ev, cmd)


@PROPS
@given(sessions())
def test_an_onset_only_pauses_and_the_pause_is_bounded(events):
    """A voice onset never cancels nor answers anything: while a confirmed
    run has the floor it pauses playback with the onset and hold timers
    running (the pause always ends); otherwise it does nothing."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if not isinstance(ev, c.SpeechOnset) or outcome.dropped:
            continue
        run = before.run
        background = ev.utterance == before.background or r._background(before, ev.level) is not None  # RULES 17: noted only
        if before.phase in r.FLOOR_PHASES and run is not None and run.confirmed and before.policy.onset_hold > 0 and not background:
            assert [type(x) for x in cmds] == [c.PausePlayback, c.StartTimer, c.StartTimer], cmds
            assert after.phase == r.PAUSED and {"onset", "hold"} <= {name for name, _ in after.timers}
        else:
            assert cmds == [] and after.phase == before.phase, (before.phase, cmds)


@PROPS
@given(sessions())
def test_a_faded_onset_resumes_only_the_pause_it_began(events):
    """SpeechOnsetEnded resumes playback exactly when the pause is an onset's
    that nothing has taken over (no SpeechStarted since: its timer runs);
    anything else it leaves alone. It never cancels, answers or flushes; the
    one LLM step it may start is the paused answer's own next step, whose
    tool results came in during the pause (a look-up runs while an answer is
    paused, RULES 25; that step goes on when it plays on)."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if not isinstance(ev, c.SpeechOnsetEnded) or outcome.dropped:
            continue
        assert not any(isinstance(x, (c.CancelLLM, c.CancelTTS, c.FlushPlayback, c.Synthesize)) for x in cmds), cmds
        step_due = before.run is not None and before.run.continue_due and not before.run.waiting
        starts = [x for x in cmds if isinstance(x, c.StartLLM)]
        assert not starts or (step_due and after.run is not None and all(x.run == before.run.id and x.step == before.run.step + 1 for x in starts)), cmds
        onset_pause = before.phase == r.PAUSED and not before.user_speaking and "onset" in {name for name, _ in before.timers}
        if onset_pause:
            # A held answer (RULES 16/19) stays silent until its release timer: no ResumePlayback yet.
            held = before.run is not None and before.run.held
            assert any(isinstance(x, c.ResumePlayback) for x in cmds) != held and after.phase != r.PAUSED, (cmds, after.phase)
            assert not {"onset", "hold"} & {name for name, _ in after.timers}
        else:
            assert cmds == [] and after.phase == before.phase, (before.phase, cmds)


@PROPS
@given(sessions())
def test_every_pause_has_a_timer_that_ends_it(events):
    """A hold's pause ends on its hold timer; a held answer's (paused before
    any of its audio exists, RULES 16) on its release timer."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if any(isinstance(x, c.PausePlayback) for x in cmds):
            timers = {name for name, _ in after.timers}
            held = after.run is not None and after.run.held and after.phase in r.FLOOR_PHASES
            assert (after.phase == r.PAUSED and "hold" in timers) or (held and "release" in timers), (ev, after.timers)


@PROPS
@given(sessions())
def test_a_partial_barges_in_only_on_words_that_confirm_it(events):
    """A partial cancels only when its words take the floor: a floor word
    ("wait", "no", "hold"...), a number, or more than noise_words words; a
    few ordinary words may be a hum the recogniser turned into words, and
    the final decides (the agent is paused meanwhile)."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if not isinstance(ev, c.TranscriptPartial) or not any(isinstance(x, c.FlushPlayback) for x in cmds):
            continue
        said, p = words.tokens(ev.text), before.policy
        assert words.hearing(ev.text, asked=True) in ("words", "answer")
        assert any(w in words.TAKE_FLOOR or w.isdigit() for w in said) or words.word_count(ev.text) > p.noise_words, ev


def _release_due(before, run, judgement):
    """The silence from which the answer decided in this step may be heard."""
    return judgement.release


@PROPS
@given(st.one_of(sessions(), turns()))
def test_an_answer_on_a_short_wait_is_heard_only_after_its_release(events):
    """RULES 16: an answer decided before its release silence is prepared at
    once, but its audio is paused before any of it exists and stays paused
    until the release timer fires, at least that silence after the voice
    ended; a faded onset's resume does not release it early."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        run = after.run
        started = [x for x in cmds if isinstance(x, c.StartLLM) and x.step == 0 and x.attempt == 0]
        turn = [j for j in outcome.judgements if j.kind == "turn_end"]
        if started and run is not None and run.user_text and run.confirmed and turn and not turn[-1].reason.startswith("key"):
            due = _release_due(before, run, turn[-1])
            if due > turn[-1].silence + 0.001:
                kinds = [type(x) for x in cmds]
                assert run.held and c.PausePlayback in kinds and c.Synthesize not in kinds[: kinds.index(c.PausePlayback)], cmds
                timer = [x for x in cmds if isinstance(x, c.StartTimer) and x.name == "release"]
                assert timer and abs(timer[0].delay - (due - turn[-1].silence)) < 0.002, (timer, due)
            else:
                assert not run.held
        if before.run is not None and before.run.held:
            resumed = [x for x in cmds if isinstance(x, c.ResumePlayback) and x.run == before.run.id]
            if resumed:
                assert isinstance(ev, c.TimerFired) and ev.name == "release", (ev, cmds)
                assert after.run is not None and not after.run.held


@PROPS
@given(st.one_of(sessions(), turns()))
def test_a_caller_who_goes_on_before_the_release_never_hears_the_answer(events):
    """Speech while an answer is held (no tool called for it yet) withdraws
    it: nothing of it reaches history, and its words rejoin the turn. (A
    transport that reports the held run playing anyway, a frame that left
    just before the pause, has let the caller hear it: the interruption
    rules judge that.)"""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        run = before.run
        if not isinstance(ev, c.SpeechStarted) or run is None or not run.held or outcome.dropped:
            continue
        if run.playing >= 0 or run.played > 0:
            continue
        if not any(t.run == run.id or t.issued_by == run.id for t in before.tools) and not run.digits:
            assert outcome.taken == "caller went on: answer withdrawn", outcome
            assert after.run is None and after.history == before.history


@PROPS
@given(st.one_of(sessions(), turns()))
def test_a_held_answer_changes_nothing_in_the_world_before_its_release(events):
    """RULES 19/25: a tool that changes something, asked for by a held (or
    paused) answer, runs only once the answer is released and playing (an
    answer withdrawn because the caller went on never ran one); every call it
    deferred runs then, once. A tool declared to only read runs at once."""
    _, steps = run_all(events)
    reading: set[str] = set()  # call ids whose tool only reads
    for before, ev, cmds, outcome, after in steps:
        if isinstance(ev, c.LLMToolCall) and ev.reads_only:
            reading.add(ev.call_id)
        for call in (x for x in cmds if isinstance(x, c.CallTool)):
            assert after.run is not None and after.run.id == call.run, (ev, call)
            if call.call_id in reading:
                continue
            assert not after.run.held and after.phase != r.PAUSED, (ev, call)
        if isinstance(ev, c.LLMToolCall) and ev.reads_only and before.run is not None and ev.run == before.run.id and not outcome.dropped:
            assert not any(d.call_id == ev.call_id for d in after.run.deferred), ev  # never waits for a release
        run = before.run
        if run is not None and run.deferred and (after.run is None or after.run.id != run.id):
            assert not any(isinstance(x, c.CallTool) for x in cmds)  # withdrawn or cancelled: never run
        if run is not None and run.deferred and after.run is not None and after.run.id == run.id and not after.run.deferred:
            issued = [x.call_id for x in cmds if isinstance(x, c.CallTool)]
            assert issued == [d.call_id for d in run.deferred], (ev, cmds)


@PROPS
@given(st.one_of(sessions(), turns()))
def test_a_first_fragment_that_may_go_on_waits_for_the_longer_release(events):
    """A turn answered on its first fragment (no pause in it) that
    words.may_go_on flags is held for at least turn_release_short, unless
    it answers the question the agent just asked (RULES 21)."""
    for before, ev, after, j in _turns_answered(events):
        p = before.policy
        if j.reason.startswith("key") or before.turn_pauses or not words.may_go_on(after.run.user_text, p.short_words):
            continue
        if words.asks_for_an_answer(r._agent_last_words(before)):
            continue
        if p.turn_release_short > j.silence + 0.001 and p.turn_release_short > j.wait + 0.001:
            assert after.run.held, (ev, j)
            due = [d for name, tok in after.timers if name == "release" for d in [tok]]
            assert due, after.timers
@st.composite
def talk_over_a_learned_caller(draw):
    """A caller whose turns taught its level, the agent answering, then
    arbitrary sounds over the answer at arbitrary levels (RULES 17)."""
    caller = draw(st.floats(-40.0, -6.0))
    params = {"background_db": draw(st.sampled_from(["0", "6", "12", "20"]))}
    t = 0.0
    events: list[c.AnyEvent] = [c.SessionStarted(session=S, at=t, params=params)]
    events += [
        c.SpeechStarted(session=S, at=0.5, utterance=0, level=caller),
        c.SpeechStopped(session=S, at=2.0, utterance=0, speech_ms=1300, speech_end_at=1.8, eot=0.95, level=caller),
        c.TranscriptFinal(session=S, at=2.1, utterance=0, text="What are your opening hours?", complete=0.95),
    ]
    state = r.initial_state()
    for ev in events:
        state, _, _ = r.reduce(state, ev)
    t = 3.0
    for i, word in enumerate("We are open nine to five. On Saturdays we open at ten.".split()):
        events.append(c.LLMToken(session=S, at=t, run=1, step=0, text=word + " "))
    events += [c.LLMDone(session=S, at=t, run=1, step=0), c.TTSChunkStarted(session=S, at=t, run=1, chunk=0),
               c.PlaybackProgress(session=S, at=t + 0.1, run=1, chunk=0, finished=False)]  # fmt: skip
    utterance = 1
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([0.01, 0.1, 0.5]))
        kind = draw(st.sampled_from(["onset", "start", "stop", "partial", "final", "onset_end", "timer"]))
        level = draw(st.sampled_from([0.0, caller, caller - 3, caller - 15, caller - 30]) | st.floats(-90.0, -0.5))
        if kind == "onset":
            events.append(c.SpeechOnset(session=S, at=t, utterance=utterance, level=level))
        elif kind == "start":
            events.append(c.SpeechStarted(session=S, at=t, utterance=utterance, level=level))
        elif kind == "stop":
            events.append(c.SpeechStopped(session=S, at=t, utterance=utterance, speech_ms=draw(st.sampled_from([100, 900])), speech_end_at=t - 0.2, level=level))
            utterance += 1
        elif kind == "partial":
            events.append(c.TranscriptPartial(session=S, at=t, utterance=utterance, text=draw(st.sampled_from(PARTIALS))))
        elif kind == "final":
            events.append(c.TranscriptFinal(session=S, at=t, utterance=draw(st.integers(max(1, utterance - 1), utterance)), text=draw(st.sampled_from(FINALS))))
        elif kind == "onset_end":
            events.append(c.SpeechOnsetEnded(session=S, at=t, utterance=utterance))
        else:
            events.append(c.TimerFired(session=S, at=t, name=draw(st.sampled_from(["hold", "resume", "onset", "final"])), token=draw(st.integers(0, 30))))
    return events


@PROPS
@given(talk_over_a_learned_caller())
def test_a_background_voice_over_an_answer_never_takes_the_floor(events):
    """Every voice that starts background_db under the caller's own level
    while the agent speaks: no pause, no cancel, from its onset, its start or
    its words; a voice above that line is heard as before (it may pause)."""
    _, steps = run_all(events)
    assert any(before.phase == r.SPEAKING and before.caller_level < 0 for before, *_ in steps)  # the setup reached its point
    test_a_background_voice_never_takes_the_floor.hypothesis.inner_test(events)


@PROPS
@given(sessions())
def test_a_floor_word_probability_under_the_policy_never_cancels(events):
    """RULES 22 cancels only at floor_word and above; under it (RULES 23) a
    final may only lose a cancel the same final with no probability (-1)
    would have made, never gain one, and only when its text begins with a
    floor word; otherwise it steps exactly as that final."""
    _, steps = run_all(events)
    for before, ev, cmds, outcome, after in steps:
        if isinstance(ev, c.TranscriptFinal) and ev.floor != -1.0 and ev.floor < before.policy.floor_word:
            plain = r.reduce(before, msgspec.structs.replace(ev, floor=-1.0))
            said = words.tokens(ev.text)
            if not said or said[0] not in r._FLOOR_FIRST:
                assert plain == (after, cmds, outcome), ev
            elif plain != (after, cmds, outcome):
                cancels = lambda xs: [x for x in xs if isinstance(x, (c.CancelLLM, c.FlushPlayback))]  # noqa: E731
                assert cancels(plain[1]) and not cancels(cmds), (ev, outcome)
