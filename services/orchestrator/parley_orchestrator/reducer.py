"""The reducer: every decision Parley makes about a conversation, in one file.

Theory of operation
-------------------
``reduce(state, event) -> (state, commands, outcome)`` is a pure function. It
does no I/O, reads no clock (time is ``event.at``), draws no random numbers and
mutates nothing: ``SessionState`` and everything in it is frozen. The runtime
feeds it every event of a session, in order, persists the new state (JetStream
KV, compare-and-set), logs the step, and executes the commands. Replaying the
logged events through ``reduce`` therefore yields the same commands, bit for
bit (``replay.py``).

The conversation is in one *phase* at a time (``contract.Phase``):

    Idle -> Listening <-> Transcribing -> Generating <-> AwaitingTool
                                              |
                                           Speaking <-> Paused
    Paused --words--> Interrupted -> Listening      (barge-in)
    Generating --final transcript differs--> Cancelled -> Generating
    (any) --SessionEnded / EndSession--> Ended

How to read a step. ``TRANSITIONS`` at the end of this file is the protocol:
one row per (phases, event type), naming the handler and its *outcomes*. A
handler returns the name of the outcome it took (with the new state and the
commands); the row maps that name to the phases the step goes through. So the
next phase is never set inside a handler: it is read from the table, and a
handler that takes an outcome its row does not declare is a bug.
Where a row has several outcomes, they are a named decision, defined once
below and listed in the table and in ``docs/state-diagram.md`` (generated
from the table by ``python -m parley_orchestrator.diagram``; a test fails if
they differ):

- ``TURN``: is the caller's turn over? (still speaking / wait / nothing said /
  answer);
- ``FLOOR``: which phase the agent's run is in (generating / awaiting a tool /
  speaking);
- ``RUN_END``: the run was heard to the end: back to listening, straight into
  the turn the caller already finished, or the goodbye was said;
- ``FALLBACK``: a provider failed: say so in a run of its own.

An event with no row for the current phase is *rejected*: the state stays as
it is and the outcome says so. An exception inside a handler is a bug, not a
rejection: ``reduce_or_end`` (what the runtime and replay call) ends the
session cleanly and records the error in the step, and the runtime logs it as
an error.

Runs. Every reply is a *run* with an id counted per session (``next_run``).
Provider events (LLM, TTS, playback) carry the run id; an event of a run that
is not the active run is *stale*: it changes nothing and emits nothing. There
is at most one active run, and there is one exactly while the agent has the
floor (Generating, AwaitingTool, Speaking, Paused). A run ends as *done*
(everything it said was heard) or *cancelled* (barge-in, superseded, timed
out, session over); either way its history is committed then, holding only
what the caller heard.

Tool results are the one exception to run scoping: a tool that ran is a fact
of the world, so its result is kept even when the run that asked for it is
gone, and it goes to the next generation. A tool call that repeats one whose
execution is the latest (same name and arguments, no other run's call since)
is not executed again: it gets that execution's result.

Timers are commands (``StartTimer``) whose firing comes back as an event
(``TimerFired``) with the token it was started with; a token that no longer
matches is stale. At most one timer of each name runs; whether a timer runs
is read from ``state.timers``, never kept in a second flag.

LLM streams are numbered. Each ``StartLLM`` names an *attempt*, and every
output of that stream carries the attempt and its position (``seq``). Output
of an older attempt is stale; a position already seen is a *duplicate*
(dropped); a position skipped is a *gap*: output was lost, so the step is
restarted as a new attempt. A restarted attempt (after a gap, or a
``Takeover``: the replica that ran the stream died) must first say again what
the step already said (``Run.echo``); past that, its tokens go on as usual.
If it says something else, the step ends with what was already cut into
chunks (the caller may have heard it), and the rest is dropped.

Helpers take and return an ``Fx``: a state with the commands (and note) that
led to it. It is immutable; ``fx.then(helper)`` returns a new one, so a
helper's effects are its return value, visible where it is called.
"""

from __future__ import annotations

import re
import traceback
from typing import Callable, NamedTuple

import msgspec

from parley.contract import (
    AnyCommand,
    AnyEvent,
    CallStatus,
    ToneHeard,
    CallTool,
    DigitsSent,
    FLOOR_WORDS,
    KEYPAD_OUT,
    SEND_DIGITS,
    SendDigits,
    CancelLLM,
    CancelTimer,
    CancelTTS,
    Dropped,
    END_CALL,
    TRANSFER_CALL,
    Dtmf,
    EndSession,
    FlushPlayback,
    Judgement,
    LLMDone,
    LLMError,
    LLMEvent,
    LLMToken,
    LLMToolCall,
    Message,
    PausePlayback,
    Phase,
    PlaybackProgress,
    ProviderFailed,
    ResumePlayback,
    RunEvent,
    SessionEnded,
    SessionStarted,
    SpeechOnset,
    SpeechOnsetEnded,
    SpeechStarted,
    SpeechStopped,
    StartLLM,
    StartTimer,
    Synthesize,
    Takeover,
    TimerFired,
    ToolCallItem,
    ToolResult,
    TranscriptFinal,
    TranscriptPartial,
    TTSChunkDone,
    TTSChunkStarted,
    TTSError,
    Usage,
)

from . import words
from .chunking import next_chunk

# ---------------------------------------------------------------------------
# Phases (the enum is in the contract: steps record them)

IDLE = Phase.IDLE
LISTENING = Phase.LISTENING
TRANSCRIBING = Phase.TRANSCRIBING
GENERATING = Phase.GENERATING
AWAITING_TOOL = Phase.AWAITING_TOOL
SPEAKING = Phase.SPEAKING
PAUSED = Phase.PAUSED  # the caller made a sound while the agent had the floor
INTERRUPTED = Phase.INTERRUPTED  # transient: barge-in confirmed, run cancelled
CANCELLED = Phase.CANCELLED  # transient: run superseded or timed out
ENDED = Phase.ENDED

PHASES = tuple(Phase)
USER = (LISTENING, TRANSCRIBING)  # the caller has the floor; no run
FLOOR_PHASES = (GENERATING, AWAITING_TOOL, SPEAKING)  # the agent has the floor
HELD = FLOOR_PHASES + (PAUSED,)  # a run exists
LIVE = USER + HELD
STREAMING = (GENERATING, SPEAKING)  # an LLM step may be streaming

# The version of the reducer's decisions, recorded in every step: bump it when
# the same events would now lead to different commands (replay then reports a
# log recorded under other rules as such, not as nondeterminism).
# 2: turn end from evidence, interruption judged from words (issue 9)
# 3: a tool call repeats an earlier one only while that execution is the latest
# 4: a yes answers only a question the caller heard begin; a lone word in a
#    very short sound is a noise; weak trailing words yield to the signals
# 5: up to noise_words words in under noise_sound of sound are a noise; digits
#    among the last words of number talk are dictation
# 6: the text signal weighs 3 to the audio's 1, and alone overrules a weak cue
# 7: a beep heard while the other end is still talking counts that talk (the
#    VAD may take the beep for the end of the greeting's utterance)
# 8: a caller who goes on before hearing any of the answer continues the turn
#    (the answer is withdrawn); a turn with a mid-turn pause waits
#    turn_wait_continued even when it looks complete
# 9: a voice onset pauses the agent (bounded by onset_hold); a partial of a
#    few words in a short sound holds instead of barging in; a sound whose
#    partial says sound or backchannel resumes when it stops
# 10: a voicemail greeting is the other end's stretch of talk (utterances less
#    than machine_gap apart), not its longest single utterance
# 11: what a recogniser writes for a hum (lone hum letters, a looped token)
#     is a backchannel; noise_sound 0.75 s
# 12: a partial of a few ordinary words never cancels (the final decides)
# 13: words that read complete but as an opening (a greeting alone, a value
#     shorter than its slot, "tell me"; a weak trailing word the text signal
#     calls complete, but only just) wait turn_wait_opening
# 14: an onset's pause ends on the ASR's evidence (SpeechOnsetEnded: the sound
#     faded), in order however late the ASR runs; onset_hold (1 s) only bounds
#     it when no evidence comes
# 15: a hum or a laugh in any spelling of its form ("Emm", "Hmhm", "Heheh";
#     words.hum) is a sound, or a backchannel when it agrees ("mm-hmm-hmm")
# 16: an answer decided on a short wait is prepared at once but heard only
#     from turn_release of silence (turn_release_short for a first fragment
#     that may go on: words.may_go_on); its audio waits at the gateway (the
#     run is ``held``), and a caller who goes on first never hears it
# 17: a voice background_db under the caller's own level (learned from its
#     turns) neither pauses nor interrupts the agent, nor drops a preemptive
#     guess; a final with no words ("." or "(laughs)" for a laugh) adds
#     nothing to the caller's turn
# 18: the held release by default only for first fragments that may go on,
#     at 1.5 s (turn_release 0, turn_release_short 1.5: measured)
# 19: openings and turns after a mid-turn pause are answered on the short
#     wait and held until turn_wait_opening / turn_wait_continued of silence
#     (were decision waits); words.may_go_on judges the turn's last sentence
#     without a greeting; every release 1.6 s (the 1.5 s pauses kept + ~0.1 s
#     to see the caller go on); a held (or paused) answer's tool calls run when it plays;
#     a caller who goes on before hearing an answer whose tool ran continues
#     the turn too (the answer is withdrawn; the tool's result is kept)
# 20: a mid-turn pause is counted to the voice's onset (turn_pause_min 0.5 s),
#     not to SpeechStarted, which lags under load
# 21: a caller who goes on within turn_continue_gap of its own voice's end,
#     having heard less than turn_continue_heard of the answer, continues the
#     turn: its words barge in however short (no noise rule), and the new turn
#     counts the pause; a caller who paused inside an earlier turn this call
#     has every later first fragment held (turn_release_short); a turn whose
#     last sentence is a statement, not an answer to the agent's question, is
#     held (turn_release_statement, off by default: RULES 30)
# 22: a talk-over final whose words say sound or noise still barges in when
#     the recogniser's own P(a floor word first) reaches floor_word (0.04):
#     phone-band "No." written "" or "Go.", "Hang on." written "And on."
# 23: and the other way: a short sound whose text begins with one of those
#     words (contract.FLOOR_WORDS) while the recogniser's own P of it was
#     under floor_word is a noise mis-heard (a hum sampled as "No, no, no")
# 24: a first fragment that answers the question the agent just asked ("The
#     first one, please." to "Which one?") is not held as one that may go on
# 25: a held (or paused) answer's tool calls that only read (the tool's
#     declaration: LLMToolCall.reads_only) run at once, so the hold costs
#     only its wait; tools that change something still wait until it plays
# 26: a talk-over final written as a loop or hum letters (words.looped: "Say,
#     say, say, say, say." for a fast phone-band "Hey, hey.") is no words:
#     with floor >= floor_word it barges in as a sound does (RULES 22)
# 27: a backchannel answers only a yes/no question ("Okay." over "Which time
#     suits you?" is a backchannel, not an answer: words.yes_no_question)
# 28: a SpeechStarted of an utterance that already stopped (its final not in
#     yet: an ASR worker that took over hears it again) is no pause in the turn
# 29: turn_release_statement 1.6 s by default (was off): RULES 25 lets a
#     held statement's look-ups run during its hold
# 30: turn_release_statement off again by default: in the whole scenario
#     suite with it on, every request said as a statement was heard after
#     ~1.7 s (voice-to-voice p50 1700 ms over /ws/pcm against the 700 ms
#     goal; BENCHMARKS 6, "The whole suite with session 7's rules")
# 31: before the caller has asked for anything in the call, a first sentence
#     that asks for nothing (a statement of circumstance, a thanks:
#     words.asks_nothing) is what callers say before the request: held to
#     turn_release_unasked (1.6 s); a request said as a statement is not
# 32: a talk-over is judged whole: a voice begun within overlap_gap of the
#     end of a talk-over's previous piece over the same reply is the same
#     talk-over ("Yes, | book it."): its pieces' words read together, its
#     sound from the first piece's start to the latest end; and a final is
#     judged with its own utterance's length, not the latest SpeechStopped's
# 33: a few words that open with an answer ("Yes, please.", "Sure, go
#     ahead.") while the caller hears a yes/no question answer it however
#     short (no noise rule), as a lone "Yes." does (RULES 4, 27)
RULES = 33

# ---------------------------------------------------------------------------
# Policy: the knobs of one session. Defaults here; SessionStarted.params may
# override any of them by name (see ``policy_from_params``).


class Policy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    system_prompt: str = "You are a helpful voice assistant. Keep replies short: they are spoken."
    greeting: str = ""
    # The session's TTS provider (its ``tts`` parameter), carried on every
    # Synthesize; "" the TTS worker's own (PARLEY_TTS).
    tts: str = ""
    # End of turn, decided from evidence (see ``_judge_turn``). Silence is
    # counted from when the caller's voice ended. A turn the evidence says is
    # complete is answered after ``turn_silence``; one it says is unfinished
    # ("could you book me in for", "um") waits ``turn_wait_unfinished``, and a
    # number or date being dictated in groups ``turn_wait_dictation``; a
    # caller who speaks again inside the wait continues the same turn. With
    # no end-of-turn signal at all (-1: a provider without the models), plain
    # silence timing: ``turn_silence_unknown``. Never while the caller talks.
    turn_silence: float = 0.2
    turn_silence_unknown: float = 0.5
    turn_wait_unfinished: float = 2.0
    turn_wait_dictation: float = 2.5
    # Turns that read complete but may go on are answered on the short wait
    # and *held* (``_judge_turn``): the answer is prepared at once (LLM and
    # TTS start), but its audio waits at the gateway until the caller's voice
    # has been silent for the turn's release (the run is ``held``); a caller
    # who goes on before that hears nothing of it, and the answer is
    # withdrawn (RULES 8). A release is how long a caller may pause and still
    # not be answered mid-thought, whatever the machine's speed: the
    # thinking pauses we keep are up to 1.5 s (issue 9's 0.5-1.5 s), and the
    # caller's resumed voice is seen ~0.1 s in (its SpeechOnset), hence 1.6 s.
    # The turns held, and their releases:
    # - ``turn_wait_continued``: a turn that looks complete after the caller
    #   already paused inside it and went on ("I'd like ... a cleaning").
    #   Synthetic and human fragments alike often read and sound finished.
    #   A pause is a silence of at least ``turn_pause_min`` from the voice's
    #   end to the next voice's SpeechOnset (~0.06-0.1 s into the new speech;
    #   SpeechStarted without one): the gaps between sentences and at commas
    #   (0.38-0.48 s to SpeechStarted in the scenario suite, ~0.1 s less to
    #   the onset) are not pauses; a thinking pause of 0.5 s or more is. Was
    #   0.6 s to SpeechStarted, which under load came up to 0.6 s after the
    #   onset, so a turn the VAD split in one breath counted as paused.
    # - ``turn_wait_opening``: words that read complete but as the opening
    #   callers go on from (``words.opening``: a greeting alone, "my address
    #   is 42", "the date is December", "could you tell me"; and a weak
    #   trailing word like "come in" that the text signal calls complete, but
    #   short of halfway from ``turn_threshold`` to certain).
    # - ``turn_release_short``: a first fragment of a turn that may go on
    #   (``words.may_go_on`` on its last sentence: at most ``short_words``
    #   words, or no sentence end written, and neither a question nor an
    #   answer): "I'm looking to both", "Hi, yes. I was wondering it."
    # - ``turn_release``: every answer on a short wait. Measured (BENCHMARKS.md
    #   section 6, pauses4): 0.6 s on every answer added ~200 ms p50 to the
    #   answers it held (audio was ready sooner) and kept no caller's pause.
    # Until RULES 19 the opening and continued waits were decision waits
    # (1.2 s): the answer was heard 1.2 s plus the pipeline into the silence,
    # so faster machines answered into longer pauses. 0 turns a release off.
    turn_wait_continued: float = 1.6
    turn_pause_min: float = 0.5
    turn_wait_opening: float = 1.6
    turn_release: float = 0.0
    turn_release_short: float = 1.6
    short_words: int = 4
    # The continuing caller: a voice that begins at most ``turn_continue_gap``
    # after the caller's own voice ended, when the caller has heard less than
    # ``turn_continue_heard`` of the answer (it began in the caller's pause),
    # is the turn going on, not an interruption of the answer: a few words
    # in it are a noise only under ``turn_continue_sound`` of sound (the
    # noise rule's bar, ``noise_sound``, is lowered to it; what reads as a
    # hum, a backchannel or a cough keeps its own rule), and the turn they
    # begin counts that pause (``turn_wait_continued``). Measured (BENCHMARKS
    # 6, pauses5): callers who went on into an answer had heard 0.1-0.5 s of
    # it, 0.8-1.3 s after their voice ended, with 0.68-0.70 s of words
    # ("four seven", "of December,") that the 0.75 s noise bar dropped; a
    # hummed mm-hmm that Whisper writes as words lasts 0.19-0.67 s, so a
    # hum of 0.5-0.67 s in the first half second of an answer now barges in.
    # turn_continue_gap 0 turns it off.
    turn_continue_gap: float = 1.5
    turn_continue_heard: float = 0.5
    turn_continue_sound: float = 0.5
    # - ``turn_release_statement``: a turn with no pause of its own whose last
    #   sentence is a statement (``words.statement``: not a question, nor an
    #   answer, a goodbye or a backchannel), unless it answers the question
    #   the agent just asked (``words.asks_for_an_answer``; "How can I help?"
    #   asks for none). Measured (BENCHMARKS 6, pauses5/pauses6): nearly every
    #   answer heard inside a caller's pause on held-out callers answered a
    #   closed statement ("I'd like to come on the 21st.", "I want to
    #   reschedule my check-up.", "My email address is anna underscore lee")
    #   that the caller went on from; whole questions are answered at once.
    #   The cost: a whole first request said as a statement ("I need to
    #   cancel my appointment on Thursday.") is heard after this silence.
    #   A held answer's look-ups run during the hold (RULES 25), so only a
    #   tool that changes something (book, cancel) runs at its release, after
    #   its filler. 1.6 keeps 1.5 s pauses. Off (0) by default (RULES 30):
    #   whole statement requests, the commonest first turn, all wait 1.6 s
    #   (BENCHMARKS 6, pauses7 and the whole suite of session 7).
    turn_release_statement: float = 0.0
    # - ``turn_release_unasked``: a first sentence of an inbound call's caller
    #   who has asked for nothing yet, that itself asks for nothing
    #   (``words.asks_nothing``: a statement with no want, need, order or
    #   question in it, or a thanks: "My appointment was on the third of
    #   March.", "It hurts when I drink something cold.", "Thanks for picking
    #   up so quickly."). Such words give the agent nothing to answer, and
    #   callers go on from them to the request. Measured (BENCHMARKS 6,
    #   pauses8): with the statement hold off, 9 of the 13 held-out callers of
    #   sets 3-4 answered inside their pause on /ws/pcm (all but the
    #   questions said first) had asked for nothing; every whole first
    #   statement there asked for something ("I'd like to cancel ...") and is
    #   still answered at once, unlike with ``turn_release_statement``.
    turn_release_unasked: float = 1.6
    # The signals: P(end of turn) from the audio (SpeechStopped.eot) and from
    # the text (TranscriptFinal.complete), averaged with these weights (the
    # text counts more: the acoustic model hears synthetic fragments as
    # finished, see services/asr/BENCHMARKS.md); the turn is complete at or
    # above ``turn_threshold``.
    eot_weight: float = 1.0
    complete_weight: float = 3.0
    turn_threshold: float = 0.5
    # Interruptions (see ``_judge_overlap``). Sound while the agent has the
    # floor pauses playback at once. Words cancel the run as soon as a
    # partial shows them; a backchannel ("mm-hmm", "okay") or a sound
    # ("(coughs)", "ah") never does: playback resumes when a final shows no
    # words, or ``resume_timeout`` after the sound stops. A backchannel that
    # answers the agent's question ("yes" to "shall I book that?") takes the
    # floor. A wordless sound that lasts ``hold_max`` (typing, a TV) is talked
    # over: playback resumes while it goes on, and words in it still cancel.
    resume_timeout: float = 1.0
    hold_max: float = 3.0
    # The VAD's earliest sign of a voice (SpeechOnset, tens of ms before
    # SpeechStarted) pauses playback at once, so the caller stops hearing the
    # agent sooner. The ASR then says which it was: SpeechStarted (the hold
    # goes on, words decide) or SpeechOnsetEnded (a click, a breath: playback
    # resumes at once). ``onset_hold`` bounds the pause if neither comes (a
    # lost event, a sound hovering at the VAD's threshold): it must outlast
    # the ASR's lag under load, measured at up to ~0.6 s between the two
    # events on a loaded 2-core machine (was 0.3, which resumed the agent
    # over callers there). 0: onsets ignored.
    onset_hold: float = 1.0
    # A sound that stops while its latest partial shows only a sound or a
    # backchannel resumes playback then, without waiting for its final (a
    # final with words still barges in: late words).
    resume_on_partial: bool = True
    # "Yes" answers the agent's question when the caller has heard the
    # question begin (estimated from where the chunk is in its audio), or it
    # ended less than this long before the caller spoke.
    question_window: float = 2.0
    # A few words (at most ``noise_words``, none of "no", "wait", "sorry"...)
    # in less sound than ``noise_sound`` are taken for a noise the recogniser
    # turned into words (Whisper hears "in the moment" in a hummed mm-hmm),
    # not an interruption. Measured (the VAD's length of the sound): one-word
    # backchannels in Piper and three espeak voices, 16 kHz and μ-law, 0.19-
    # 0.64 s offline and 0.67 s live ("Mhm." heard as "Emmicham"); two-word
    # requests without a floor word ("Book Monday") from 0.64 s: they overlap,
    # and a request taken for a noise costs less (the agent talks on, the
    # caller says it again) than an answer killed by a hum.
    noise_sound: float = 0.75
    noise_words: int = 3
    # A talk-over is judged whole (RULES 32): a voice that begins (its onset)
    # within ``overlap_gap`` of the end of the previous piece of a talk-over
    # of the same reply is the same talk-over ("Yes, | book it.", "One
    # moment, | please."): its words are read together and its sound runs
    # from the first piece's start to the latest piece's end. The ASR's VAD
    # ends an utterance after ~0.2 s of silence, so a comma's pause splits
    # one; measured live between the pieces of one breath: 0.0-0.37 s
    # (onset after the earlier end). 0: every utterance judged alone.
    overlap_gap: float = 0.6
    # A final the words call a sound or a noise (above) is still a real
    # interruption when the recogniser's probability that it begins with a
    # word that takes the floor (TranscriptFinal.floor: "no", "stop",
    # "wait"...) is at least this. Measured through the phone band (docs/
    # BENCHMARKS.md 6, barge6): coughs, laughs, hums and backchannels at most
    # 0.015; "No." written "" 0.16, "Hang on." written "And on." 0.05-0.16.
    # And the other way: a short sound (under noise_sound) whose text begins
    # with such a word the recogniser gave under floor_word is a noise
    # mis-heard (a hum that Whisper's temperature fallback sampled as "No,
    # no, no, no", P 0.011; real ones written so: 0.17 and above). 0: off.
    floor_word: float = 0.04
    # A voice this many dB below the caller's own (learned from the caller's
    # turns this call: SpeechStopped.level) does not take the floor from the
    # agent: a TV or another room, not the caller. Measured on the scenario
    # callers (docs/BENCHMARKS.md section 6, barge4): a TV across the room 25 dB
    # under the caller's turns, a quiet real interruption 2-3 dB under. 0: off.
    background_db: float = 12.0
    # Silence: re-prompt after this long with nothing said, end the call after
    # ``max_reprompts`` re-prompts in a row.
    reprompt_after: float = 10.0
    reprompt_text: str = "Are you still there?"
    max_reprompts: int = 2
    goodbye_text: str = "I haven't heard from you, so I'll hang up now. Goodbye!"
    max_call: float = 1800.0
    llm_first_token_timeout: float = 6.0
    tts_first_audio_timeout: float = 4.0
    fallback_text: str = "Sorry, I'm having trouble right now. Could you say that again?"
    # A run that finished synthesizing but whose playback is never reported
    # ends anyway this long after its audio should have finished (never stuck
    # "speaking" in silence).
    playback_grace: float = 3.0
    # A final transcript that never comes (an ASR worker died) must not leave
    # the turn waiting forever: go on without it after this long.
    final_timeout: float = 6.0
    max_tool_steps: int = 4
    first_chunk_min: int = 12
    chunk_min: int = 24
    chunk_max: int = 220
    # Start the LLM on SpeechStopped with the latest partial, before the final
    # transcript; a final that differs materially cancels it and starts over.
    preemptive: bool = False
    # Outbound calls: when an answering machine picks up (the provider's
    # answering-machine detection says so, after the beep), leave this
    # message and hang up; empty: hang up at once.
    voicemail_message: str = ""
    # "outbound" for calls Parley placed: Parley then also judges a machine
    # itself, when the other end talked without a break for at least
    # ``machine_monologue`` seconds (a voicemail greeting) and then beeped.
    direction: str = "inbound"
    machine_monologue: float = 3.0
    # Silences shorter than this inside the other end's talk keep it one
    # monologue (a greeting's sentence gaps are 0.3-0.8 s).
    machine_gap: float = 1.2
    # Transfer to a person (the transfer_call tool): the number to connect
    # the caller to; empty, the reducer does not handle transfer_call. Warm:
    # the person first hears the summary of the call.
    transfer_to: str = ""
    transfer_warm: bool = True
    # Keypad: 0 answers every key at once ("press 1 to confirm"). Above 0,
    # keys are collected into one entry (an account or phone number) that
    # ends with ``dtmf_terminator`` or after this many seconds without a key.
    dtmf_wait: float = 0.0
    dtmf_terminator: str = "#"
    # Recorded calls: said first, before the greeting ("This call may be
    # recorded."). The deployment's only (the runtime drops a session's own).
    consent_text: str = ""
    # Outbound calls to an automated line: the keys to press, one group per
    # menu it reads out, comma separated ("1,3": 1 at the first menu, 3 at
    # the next; w waits half a second). Until the last group is pressed the
    # agent says nothing: it listens, and presses a group whenever the other
    # end's turn asks for keys ("press", "dial", "enter"...).
    ivr_path: str = ""


_SPOKEN = ("reprompt_text", "goodbye_text", "fallback_text")
MAX_DIGITS = 32  # keys in one send (w pauses included)


def keypad_digits(raw: str) -> str:
    """Keys to send, from what a tool call or the policy wrote ("1", "4 2",
    "1-2-3", "#"); "" when it is not a keypad sequence."""
    digits = "".join(raw.split()).replace("-", "").replace("W", "w")
    return digits if 0 < len(digits) <= MAX_DIGITS and set(digits) <= KEYPAD_OUT and set(digits) != {"w"} else ""


def ivr_groups(path: str) -> tuple[str, ...]:
    """The groups of an IVR path ("1, 3" -> ("1", "3")); ValueError if one is not keys."""
    groups = tuple(keypad_digits(g) for g in path.split(","))
    if path.strip() and not all(groups):
        raise ValueError(path)
    return groups if path.strip() else ()


def policy_from_params(params: dict[str, str]) -> tuple[Policy, tuple[str, ...]]:
    """Build the policy from string parameters; returns the keys it could not use."""
    defaults = Policy()
    values: dict[str, object] = {}
    bad: list[str] = []
    for key, raw in params.items():
        if key not in Policy.__struct_fields__:
            continue
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                values[key] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif kind is int:
                values[key] = int(raw)
            elif kind is float:
                value = float(raw)
                if not value >= 0 or value == float("inf"):
                    raise ValueError(raw)
                values[key] = value
            elif key in _SPOKEN and not raw.strip():
                raise ValueError(raw)  # the agent would have nothing to say
            elif key == "ivr_path":
                ivr_groups(raw)
                values[key] = raw
            else:
                values[key] = raw
        except ValueError:
            bad.append(key)
    return msgspec.structs.replace(defaults, **values), tuple(bad)


# ---------------------------------------------------------------------------
# State


class ToolRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool call the session executed (or is executing)."""

    call_id: str
    name: str
    arguments: str
    run: int  # the run waiting for it (a later run may take over a running call)
    issued_by: int = -1  # the run that asked for it first, once another run waits for it (-1: ``run``)
    result: str | None = None  # None while running
    ok: bool = True
    committed: bool = False  # its call/result pair is in history already


class Run(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    user_text: str = ""  # the user turn this run answers
    utterance: int = -1  # the caller's last utterance of that turn (-1: the agent's own turn)
    started_at: float = 0.0  # when the turn began: the caller's speech start, or the run's start
    scripted: bool = False  # fixed text (greeting, re-prompt, fallback): no LLM
    end_after: str = ""  # a goodbye: the session ends, for this reason, once it was heard
    handoff: str = ""  # with end_after TRANSFERRED: the summary for the person taking the call
    digits: tuple[tuple[str, str], ...] = ()  # send_digits calls (call id, keys) to press once what was said is heard
    confirmed: bool = True  # False: preemptive, chunks wait for the final
    held: bool = False  # its audio waits at the gateway (paused) until the "release" timer: the turn may go on
    deferred: tuple[ToolCallItem, ...] = ()  # tool calls asked while held or paused (in ``waiting``): run at the release / resume
    step: int = 0  # LLM request number within the run (tool continuation)
    llm_active: bool = False
    got_token: bool = False  # in this step
    pending: str = ""  # LLM text not yet cut into chunks
    chunks: tuple[str, ...] = ()
    chunk_steps: tuple[int, ...] = ()  # the LLM step each chunk came from
    sent: int = 0  # chunks handed to TTS
    audio_ms: tuple[int, ...] = ()  # per chunk, -1 until TTS is done with it
    tts_started: bool = False
    audio_started: bool = False
    played: int = 0  # chunks the caller heard to the end, in order
    step_text: tuple[str, ...] = ()  # full text generated by each finished step
    step_calls: tuple[tuple[ToolCallItem, ...], ...] = ()  # tool calls per step
    calls: tuple[ToolCallItem, ...] = ()  # tool calls of the current step
    waiting: tuple[str, ...] = ()  # call ids of this step without a result
    results: tuple[tuple[str, str, str], ...] = ()  # (call_id, name, result)
    tool_steps: int = 0
    continue_due: bool = False  # tool step finished: the LLM goes on when results are in
    playing: int = -1  # the chunk the caller is hearing (its latest playback report)
    playing_since: float = 0.0  # when that chunk's audio began for the caller
    attempt: int = 0  # the LLM stream whose output counts (see "LLM streams are numbered")
    llm_seq: int = 0  # the position expected next from that stream
    received: str = ""  # the text the current step's LLM produced so far
    echo: str = ""  # what a restarted attempt must say again before it goes on


class SessionState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    session: str = ""
    phase: Phase = Phase.IDLE
    caller: str = ""  # the caller's number, when the transport knows it
    answered_by: str = ""  # the provider's answering-machine verdict, once it came
    # The other end's longest stretch of talk so far: utterances less than
    # Policy.machine_gap apart count as one (a voicemail greeting is long,
    # and its sentences are separate utterances to a 200 ms stop).
    longest_speech_ms: int = 0
    talk_from: float = 0.0  # when the current stretch of talk began
    keys: str = ""  # keypad digits of an entry still being typed (Policy.dtmf_wait)
    ivr_step: int = 0  # groups of Policy.ivr_path pressed so far
    policy: Policy = Policy()
    started_at: float = 0.0
    history: tuple[Message, ...] = ()
    next_run: int = 1
    run: Run | None = None
    # The user's turn in progress.
    user_speaking: bool = False
    utterance: int = -1  # last SpeechStarted's utterance id
    awaiting_finals: tuple[int, ...] = ()  # utterances stopped, final not yet in
    # The highest utterance whose final was reduced: ASR events of it or of an
    # earlier one are heard again (a worker that took over from a dead one
    # was given its unfinished audio), and dropped as duplicates.
    heard_upto: int = -1
    user_text: str = ""  # finals gathered for the next turn
    partial: str = ""  # latest partial of the current utterance
    speech_started_at: float = 0.0
    # End-of-turn evidence of the turn so far: when the voice last stopped,
    # and the signals of that stop and of the latest final (-1: unknown).
    silence_from: float = 0.0
    speech_ms: int = 0  # length of the caller's last utterance (its SpeechStopped)
    eot: float = -1.0
    complete: float = -1.0
    # The latest SpeechOnset (its utterance, when): the earliest sign that a
    # voice began. A pause is counted to it, not to SpeechStarted, which comes
    # later by up to ~0.6 s under load (a turn split by the VAD in one breath
    # then looked like a caller who paused).
    onset_utterance: int = -1
    onset_at: float = 0.0
    # Times the caller went on after a pause (Policy.turn_pause_min) inside
    # the turn in progress (also after an answer it had not heard yet, which
    # was withdrawn); 0 once the turn is answered.
    turn_pauses: int = 0
    # Turns of this call, already answered, that had a mid-turn pause (or were
    # continued over their answer): a caller who paused once may pause again,
    # so every later first fragment is held (Policy.turn_release_short).
    paused_turns: int = 0
    # The utterance judged the caller continuing its turn over an answer
    # begun in its pause (Policy.turn_continue_gap), -1: none.
    continuing: int = -1
    # The caller's own level (dBFS; 0: not heard yet): the loudest of its turns,
    # falling by LEVEL_FALL_DB a turn so that it follows a caller who moves.
    caller_level: float = 0.0
    # The latest utterance taken for a background voice (Policy.background_db)
    # at its onset and start: its words never take the floor, unless the
    # utterance as a whole (its SpeechStopped's level) was loud enough.
    background: int = -1
    # The talk-over in progress (Policy.overlap_gap, RULES 32): the reply it
    # is over (its run id; -1: none), its first utterance, its sound (from
    # the first piece's start, by the VAD: voice end minus length, to the
    # latest piece's voice end; 0: not stopped yet) and the words of its
    # pieces already final that did not take the floor.
    over_run: int = -1
    over_first: int = -1
    over_from: float = 0.0
    over_end: float = 0.0
    over_text: str = ""
    # Utterances stopped whose finals are not in yet, with their lengths (ms):
    # a final is judged with its own utterance's sound, not the latest one's.
    stopped_ms: tuple[tuple[int, int], ...] = ()
    reprompts: int = 0
    timers: tuple[tuple[str, int], ...] = ()  # running timers (name, token)
    next_token: int = 1
    tools: tuple[ToolRecord, ...] = ()


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a step did, for the log: the phase path and why nothing happened."""

    path: tuple[Phase, ...]  # phases visited, first = before, last = after
    taken: str = ""  # the outcome of the table row (see TRANSITIONS)
    dropped: Dropped = ""
    note: str = ""
    error: str = ""  # a bug in the reducer ended the session (see reduce_or_end)
    judgements: tuple[Judgement, ...] = ()
    trace: str = ""  # its traceback, for the runtime's error log

    def text(self) -> str:
        """The step's note for the log: the transient phases passed through
        ("via Interrupted"), the outcome taken, and the handler's note."""
        via = self.path[1:-1]
        parts = [f"via {' > '.join(via)}"] if via else []
        parts += [p for p in (self.taken, self.error, self.note) if p]
        return "; ".join(parts)


Result = tuple[SessionState, list[AnyCommand], Outcome]
Cmds = tuple[AnyCommand, ...]

_replace = msgspec.structs.replace


class Fx:
    """A state, and the commands and note that led to it. Immutable: each
    method returns a new Fx. (A slotted class rather than a NamedTuple: its
    constructor is several times cheaper than NamedTuple._replace.)"""

    __slots__ = ("state", "commands", "note", "judgements")

    def __init__(self, state: SessionState, commands: Cmds = (), note: str = "", judgements: tuple[Judgement, ...] = ()):
        self.state = state
        self.commands = commands
        self.note = note
        self.judgements = judgements  # the step's judgements of the floor

    def set(self, **changes) -> "Fx":
        return Fx(_replace(self.state, **changes), self.commands, self.note, self.judgements)

    def set_run(self, **changes) -> "Fx":
        run = self.state.run
        assert run is not None
        return Fx(_replace(self.state, run=_replace(run, **changes)), self.commands, self.note, self.judgements)

    def emit(self, *commands: AnyCommand) -> "Fx":
        return Fx(self.state, self.commands + commands, self.note, self.judgements) if commands else self

    def judged(self, judgement: Judgement) -> "Fx":
        return Fx(self.state, self.commands, self.note, self.judgements + (judgement,))

    def noted(self, text: str) -> "Fx":
        return Fx(self.state, self.commands, f"{self.note}; {text}" if self.note else text, self.judgements)

    def to(self, outcome: str) -> "Next":
        return Next(outcome, self)


class Next(NamedTuple):
    """What a handler returns: the outcome it took (a name its table row maps
    to phases) and its effects."""

    outcome: str
    fx: Fx

    def after(self, prefix: str) -> "Next":
        """The same effects, named as the second part of a compound outcome."""
        return Next(f"{prefix}, {self.outcome}", self.fx)


# ---------------------------------------------------------------------------
# The entry points


def reduce(state: SessionState, event: AnyEvent) -> Result:
    """Consume one event. Pure. An exception is a bug in a handler and
    propagates; the runtime calls ``reduce_or_end``."""
    if state.session and event.session != state.session:
        return _dropped(state, "rejected", "event of another session")
    # A tool result is scoped by its call id instead (on_tool_result): a tool
    # that ran is a fact even when the run that asked for it is gone.
    if isinstance(event, RunEvent) and not isinstance(event, ToolResult) and (state.run is None or event.run != state.run.id):
        return _dropped(state, "stale", f"run {event.run} is not active")
    if isinstance(event, TimerFired) and (event.name, event.token) not in state.timers:
        return _dropped(state, "stale", f"timer {event.name}#{event.token}")
    if isinstance(event, ASR_EVENTS) and event.utterance <= state.heard_upto:
        return _dropped(state, "duplicate", f"utterance {event.utterance} was heard already")
    if isinstance(event, _CALLER_INPUT) and state.run is not None and state.run.end_after == VOICEMAIL_LEFT:
        return _dropped(state, "rejected", "an answering machine is recording the voicemail: what it plays is no turn")
    row = row_for(state.phase, event)
    if row is None:
        return _dropped(state, "rejected", f"{type(event).__name__} not valid in {state.phase}")
    fx = Fx(state)
    if isinstance(event, TimerFired):
        fx = fx.set(timers=tuple(t for t in state.timers if t[0] != event.name))  # it fired: no longer running
    if isinstance(event, LLMEvent):
        dropped = _llm_out_of_order(state, event)
        if dropped is not None:
            return dropped
        outcome, fx = _llm_gap(fx, event) or row.handler(_llm_counted(fx, event), event)
    else:
        outcome, fx = row.handler(fx, event)
    if outcome not in row.outcomes:
        raise AssertionError(f"{row.handler.__name__} took outcome {outcome!r}, which its row does not declare")
    path = _path(state.phase, row.outcomes[outcome])
    after = fx.state if fx.state.phase == path[-1] else _replace(fx.state, phase=path[-1])
    return after, list(fx.commands), Outcome(path=path, taken=outcome, note=fx.note, judgements=fx.judgements)


def reduce_or_end(state: SessionState, event: AnyEvent) -> Result:
    """``reduce``, except that a bug in a handler ends the session cleanly
    instead of raising: the run is cancelled, every timer stopped, the gateway
    told (``EndSession``), and the outcome carries the error. Deterministic, so
    replay reproduces it."""
    try:
        return reduce(state, event)
    except Exception as exc:  # noqa: BLE001 - any exception here is a reducer bug
        return _end_on_bug(state, event, exc)


def _end_on_bug(state: SessionState, event: AnyEvent, exc: Exception) -> Result:
    session = state.session or event.session
    error = f"reducer bug: {type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    if state.phase == ENDED:
        return state, [], Outcome(path=(ENDED,), error=error, trace=trace)
    cmds: list[AnyCommand] = []
    if state.run is not None:
        rid = state.run.id
        cmds += [CancelLLM(session=session, run=rid), CancelTTS(session=session, run=rid), FlushPlayback(session=session, run=rid)]
    cmds += [CancelTimer(session=session, name=name, token=token) for name, token in state.timers]
    cmds.append(EndSession(session=session, reason="internal error"))
    ended = _replace(state, session=session, phase=ENDED, run=None, timers=())
    return ended, cmds, Outcome(path=(state.phase, ENDED), error=error, trace=trace)


def _llm_out_of_order(s: SessionState, e: LLMEvent) -> Result | None:
    """An LLM output of an older attempt (stale) or seen already (duplicate)
    is dropped; see the header."""
    run = s.run
    assert run is not None
    if e.attempt != run.attempt:
        return _dropped(s, "stale", f"attempt {e.attempt} is not current")
    if 0 <= e.seq < run.llm_seq:
        return _dropped(s, "duplicate", f"LLM output {e.seq} seen already")
    return None


def _llm_gap(fx: Fx, e: LLMEvent) -> Next | None:
    """An output past the next expected one: some were lost, so the step
    starts again as a new attempt (the LLM rows declare this outcome)."""
    expected = fx.state.run.llm_seq  # type: ignore[union-attr]
    if e.seq <= expected:
        return None
    return _restart_llm(fx.noted(f"gap: LLM output {expected} never came (got {e.seq})")).to("output lost: step restarted")


def _llm_counted(fx: Fx, e: LLMEvent) -> Fx:
    """An in-order output is counted (an unnumbered producer, seq -1, is
    taken in the order delivered)."""
    return fx if e.seq < 0 else fx.set_run(llm_seq=e.seq + 1)


def _dropped(state: SessionState, why: Dropped, note: str) -> Result:
    return state, [], Outcome(path=(state.phase,), dropped=why, note=note)


def _path(start: Phase, targets: tuple[Phase, ...]) -> tuple[Phase, ...]:
    path = [start]
    for phase in targets:
        if phase != path[-1]:
            path.append(phase)
    return tuple(path)


# ---------------------------------------------------------------------------
# Timers: at most one of each name runs at a time


def _start_timer(fx: Fx, name: str, delay: float) -> Fx:
    fx = _cancel_timer(fx, name)
    s = fx.state
    token = s.next_token
    fx = fx.set(next_token=token + 1, timers=s.timers + ((name, token),))
    return fx.emit(StartTimer(session=s.session, name=name, token=token, delay=round(max(delay, 0.0), 3)))


def _cancel_timer(fx: Fx, *names: str) -> Fx:
    for name in names:
        s = fx.state
        fx = fx.emit(*(CancelTimer(session=s.session, name=name, token=token) for n, token in s.timers if n == name))
        fx = fx.set(timers=tuple(t for t in s.timers if t[0] != name))
    return fx


def _running(s: SessionState, name: str) -> bool:
    return any(n == name for n, _ in s.timers)


# ---------------------------------------------------------------------------
# Named decisions. Each maps its outcomes to the phases they lead to; the
# table composes them ("barge-in, answer": through Interrupted to Generating).

Outcomes = dict[str, tuple[Phase, ...]]
STAY: tuple[Phase, ...] = ()

# Is the caller's turn over? (_turn)
TURN: Outcomes = {
    "caller still speaking": (LISTENING,),
    "wait for the turn to end": (TRANSCRIBING,),
    "nothing said": (LISTENING,),
    "answer": (GENERATING,),
    # Outbound, on the way through an automated line's menus (Policy.ivr_path).
    "press the next keys": (LISTENING,),
    "no menu yet: listen on": (LISTENING,),
}
# Which phase the agent's run is in (_floor).
FLOOR: Outcomes = {"generating": (GENERATING,), "awaiting tool": (AWAITING_TOOL,), "speaking": (SPEAKING,)}
# The run was heard to the end (_maybe_finish).
RUN_END: Outcomes = {"goodbye heard": (ENDED,), **{f"heard, {k}": v for k, v in TURN.items()}}
# A provider failed: say so in a run of its own (_fallback).
FALLBACK: Outcomes = {"fallback": (CANCELLED, GENERATING), "fallback failed too": (CANCELLED, LISTENING)}


def _compound(prefix: str, outcomes: Outcomes, via: tuple[Phase, ...] = ()) -> Outcomes:
    return {f"{prefix}, {k}": via + v for k, v in outcomes.items()}


def _floor(fx: Fx) -> Next:
    """The phase of the agent's run: awaiting a tool's result, speaking (audio
    was heard), or generating. Outcomes: FLOOR."""
    run = fx.state.run
    assert run is not None
    if run.waiting and not run.llm_active:
        return fx.to("awaiting tool")
    return fx.to("speaking" if run.audio_started else "generating")


# ---------------------------------------------------------------------------
# Session lifetime


def on_session_started(fx: Fx, e: SessionStarted) -> Next:
    policy, bad = policy_from_params(e.params)
    fx = fx.set(session=e.session, caller=e.caller, policy=policy, started_at=e.at)
    if bad:
        fx = fx.noted(f"ignored invalid params: {', '.join(bad)}")
    fx = _start_timer(fx, "max_call", policy.max_call)
    # A recorded call is told so first, before the greeting.
    consent = policy.consent_text.strip() if e.recorded else ""
    if consent:
        fx = fx.noted("recorded: the consent sentence first")
    opening = _join(consent, policy.greeting.strip())
    if opening:
        return _start_scripted(fx, opening, e.at).to("greet")
    return _start_timer(fx, "reprompt", policy.reprompt_after).to("listen")


def on_session_ended(fx: Fx, e: SessionEnded) -> Next:
    return _end(fx, e.reason, tell_gateway=False).to("ended")


VOICEMAIL_LEFT = "voicemail left"
# What the other end says or presses: while a machine records the voicemail,
# none of it takes the floor (its greeting's transcript may still arrive).
_CALLER_INPUT = (SpeechOnset, SpeechOnsetEnded, SpeechStarted, SpeechStopped, TranscriptPartial, TranscriptFinal, Dtmf)


def on_call_status(fx: Fx, e: CallStatus) -> Next:
    """The provider's view of the call. A machine that answered gets the
    voicemail message (after the beep: the detection waits for it) or is hung
    up on; anything else is only recorded."""
    answered = f" (answered by {e.answered_by})" if e.answered_by else ""
    fx = fx.noted(f"call {e.status}{answered}")
    if e.answered_by and not fx.state.answered_by:
        fx = fx.set(answered_by=e.answered_by)
    if not e.machine:
        return fx.to("noted")
    return _machine_answered(fx, e.at)


def on_tone(fx: Fx, e: ToneHeard) -> Next:
    """Parley's own judgement, whatever the provider's detection: on a call
    it placed, a long monologue then a beep is a voicemail greeting."""
    s = fx.state
    talk = s.longest_speech_ms
    if s.user_speaking and s.talk_from:
        # The utterance still going on may be the greeting with the beep at
        # its end (the VAD hears the tone as more of it): the talk before it.
        talk = max(talk, round((e.at - e.ms / 1000 - s.talk_from) * 1000))
    fx = fx.noted(f"tone {e.hz} Hz, {e.ms} ms after {talk / 1000:.1f} s of talk at most")
    if s.policy.direction != "outbound" or s.answered_by or talk < s.policy.machine_monologue * 1000:
        return fx.to("noted")
    return _machine_answered(fx.set(answered_by="machine_end_beep (Parley)"), e.at)


def on_provider_failed(fx: Fx, e: ProviderFailed) -> Next:
    """A cloud ASR/TTS provider failed; the service already fell back (or
    reports the failed work with its own event). Recorded, nothing decided:
    the work's own events (a final, TTSChunkDone / TTSError) still come."""
    which = f" utterance {e.utterance}" if e.utterance >= 0 else f" run {e.run} chunk {e.chunk}" if e.run >= 0 else ""
    instead = f"; {e.fallback} took over" if e.fallback else "; nobody took over"
    return fx.noted(f"{e.service} provider {e.provider} failed{which}: {e.error}{instead}").to("noted")


def on_usage(fx: Fx, e: Usage) -> Next:
    """Billable use of a provider: kept in the log for `parley usage`, nothing decided."""
    return fx.noted(f"usage: {e.service} {e.provider} {e.amount:g} {e.unit}").to("noted")


def _machine_answered(fx: Fx, at: float) -> Next:
    run = fx.state.run
    if fx.state.phase in (IDLE, ENDED) or (run is not None and run.end_after == VOICEMAIL_LEFT):
        return fx.to("noted")
    if run is not None:
        fx = _cancel_run(fx)
    if not fx.state.policy.voicemail_message.strip():
        return _end(fx, "answering machine: hung up", tell_gateway=True).to("machine: hang up")
    return _start_scripted(fx, fx.state.policy.voicemail_message, at, then_end=VOICEMAIL_LEFT).to("machine: leave the message")


def on_max_call_timer(fx: Fx, e: TimerFired) -> Next:
    return _end(fx, "max call duration reached", tell_gateway=True).to("ended")


def _end(fx: Fx, reason: str, tell_gateway: bool, handoff: str = "") -> Fx:
    if fx.state.run is not None:
        fx = _cancel_run(fx)
    fx = _cancel_timer(fx, *(name for name, _ in fx.state.timers))
    if tell_gateway:
        p = fx.state.policy
        if reason == TRANSFERRED:
            end = EndSession(session=fx.state.session, reason=reason, transfer_to=p.transfer_to, warm=p.transfer_warm, summary=handoff)
        else:
            end = EndSession(session=fx.state.session, reason=reason)
        fx = fx.emit(end)
    return fx.noted(reason)


TRANSFERRED = "transferred to a person"


def _argument(arguments: str, name: str) -> str:
    """One string argument of a tool call's JSON ("" if absent or not text)."""
    try:
        value = msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        return ""
    found = value.get(name) if isinstance(value, dict) else None
    return found.strip() if isinstance(found, str) else ""


# ---------------------------------------------------------------------------
# The caller's turn: speech, transcripts, end of turn


LEVEL_FALL_DB = 2.0  # how far the caller's learned level may fall per turn (SessionState.caller_level)
MIN_LEVEL_MS = 300  # an utterance shorter than this teaches nothing about the caller's level


def _background(s: SessionState, level: float) -> Judgement | None:
    """A voice far below the caller's own level, while the agent has the
    floor: a TV, another room. It does not pause nor interrupt the agent."""
    gate = s.policy.background_db
    if gate <= 0 or s.caller_level >= 0 or level >= 0 or level >= s.caller_level - gate:
        return None
    reason = f"a voice {s.caller_level - level:.0f} dB under the caller's own: background, the agent talks on"
    return Judgement(kind="interruption", verdict="resume", reason=reason, heard="sound", score=level, threshold=round(s.caller_level - gate, 2))


def _learn_level(fx: Fx, e: SpeechStopped) -> Fx:
    """The caller's own turns teach its level (see SessionState.caller_level)."""
    s = fx.state
    if s.phase not in USER or e.level >= 0 or e.speech_ms < MIN_LEVEL_MS or e.utterance == s.background:
        return fx
    return fx.set(caller_level=round(e.level if s.caller_level >= 0 else max(e.level, s.caller_level - LEVEL_FALL_DB), 2))


def on_speech_started(fx: Fx, e: SpeechStarted) -> Next:
    s = fx.state
    onset_pause = s.phase == PAUSED and _running(s, "onset")  # paused by this voice's onset, nothing else
    if (s.phase in FLOOR_PHASES or onset_pause) and not s.user_speaking and s.run is not None:
        # A preemptive (unconfirmed) run too: a background voice is not the caller going on.
        if e.utterance == s.background:
            return fx.to("background: noted")  # already judged from its start; its SpeechStopped judges it whole
        quiet = _background(s, e.level)
        if quiet is not None:
            fx = fx.judged(quiet).set(background=e.utterance)
            return _resume(fx, e.at).after("no words: resume") if onset_pause else fx.to("background: noted")
    fx = _count_pause(_talk_over(fx, e), e.at, e.utterance)
    s = fx.state
    same_stretch = s.talk_from and (s.user_speaking or e.at - s.silence_from < s.policy.machine_gap)
    fx = fx.set(user_speaking=True, utterance=e.utterance, partial="", speech_started_at=e.at, reprompts=0, eot=-1.0, complete=-1.0,
                talk_from=s.talk_from if same_stretch else e.at, continuing=e.utterance if _continues_turn(s, e) else -1)
    fx = _cancel_timer(fx, "reprompt", "endpoint")
    phase, run = fx.state.phase, fx.state.run
    if phase in USER:
        return fx.to("caller speaks")  # from Transcribing: the same turn goes on
    assert run is not None
    if _unheard_reply(fx.state):
        return _withdraw(fx).to("caller went on: answer withdrawn")
    if phase == PAUSED:
        return _cancel_timer(fx, "resume", "onset").to("more sound")  # the hold stays bounded by its first onset
    if not run.confirmed:
        # A preemptive run answers a turn that is still going on.
        return _cancel_run(fx).to("preemptive guess dropped")
    # Maybe words, maybe a cough: the caller stops hearing the agent at once,
    # and the words decide.
    fx = fx.emit(PausePlayback(session=fx.state.session, run=run.id))
    fx = _start_timer(fx, "hold", fx.state.policy.hold_max)
    fx = fx.judged(Judgement(kind="interruption", verdict="hold", reason="sound while the agent speaks: pause, wait for words"))
    return _cancel_timer(fx, "resume", "onset").to("hold")


def _talk_over(fx: Fx, e: SpeechStarted) -> Fx:
    """RULES 32: a voice begun while the agent has the floor starts a
    talk-over, or goes on with the one in progress when it began (its onset)
    within ``overlap_gap`` of that one's latest end, over the same reply."""
    s, run = fx.state, fx.state.run
    if s.phase not in HELD or run is None or not run.confirmed:
        return fx
    begun = s.onset_at if s.onset_utterance == e.utterance and 0 < s.onset_at <= e.at else e.at
    gap = s.policy.overlap_gap
    if s.over_run == run.id and s.over_end > 0 and gap > 0 and begun - s.over_end <= gap:
        return fx
    if s.over_run == run.id and s.over_first == e.utterance:
        return fx  # the same voice's start again (re-heard after an ASR take-over)
    return fx.set(over_run=run.id, over_first=e.utterance, over_from=0.0, over_end=0.0, over_text="")


def _in_talk_over(s: SessionState, utterance: int) -> bool:
    """Is ``utterance`` a piece of the talk-over in progress (RULES 32)?"""
    return s.run is not None and s.over_run == s.run.id and 0 <= s.over_first <= utterance


def on_speech_onset(fx: Fx, e: SpeechOnset) -> Next:
    """The VAD's first, least certain sign of a voice. While the agent
    speaks, pause at once (cheap and lossless: a resume plays on from where
    the caller stopped hearing it); SpeechStarted turns it into the usual
    hold, and without one within ``onset_hold`` playback resumes."""
    fx = fx.set(onset_utterance=e.utterance, onset_at=e.at)
    s, run = fx.state, fx.state.run
    if s.phase not in FLOOR_PHASES or run is None or not run.confirmed or s.policy.onset_hold <= 0:
        return fx.to("noted")
    if e.utterance == s.background:
        return fx.to("noted")  # a voice already taken for background: judged whole at its SpeechStopped
    quiet = _background(s, e.level)
    if quiet is not None:
        return fx.judged(quiet).to("noted")
    fx = fx.emit(PausePlayback(session=s.session, run=run.id))
    fx = _start_timer(_start_timer(fx, "hold", s.policy.hold_max), "onset", s.policy.onset_hold)
    reason = f"voice onset while the agent speaks: pause; resume in {s.policy.onset_hold:g} s unless speech starts"
    return fx.judged(Judgement(kind="interruption", verdict="hold", reason=reason, heard="sound", wait=s.policy.onset_hold)).to("hold")


def on_speech_onset_ended(fx: Fx, e: SpeechOnsetEnded) -> Next:
    """The sound whose onset paused the agent faded before it became speech
    (the ASR's count fell below its silence threshold): play on now. Only a
    pause that an onset began and nothing since has taken over (no
    SpeechStarted: its "onset" timer still runs) ends this way."""
    s = fx.state
    if s.phase != PAUSED or s.user_speaking or not _running(s, "onset"):
        return fx.to("noted")
    fx = fx.judged(Judgement(kind="interruption", verdict="resume", reason="the voice onset faded before it became speech", heard="sound"))
    return _resume(fx, e.at).after("no words: resume")


def _count_pause(fx: Fx, at: float, utterance: int) -> Fx:
    """The caller speaks again, with words of this turn already heard (or
    on their way, or answered but not heard): after a silence of at least
    ``turn_pause_min``, that was a pause inside the turn."""
    s = fx.state
    if utterance in s.awaiting_finals:
        return fx  # RULES 28: that utterance heard again (an ASR worker took over mid-final): no new voice, no pause
    going_on = (s.phase in USER and bool(s.user_text.strip() or s.awaiting_finals)) or (s.phase in HELD and _unheard_reply(s))
    begun = s.onset_at if s.onset_utterance == utterance and s.silence_from < s.onset_at <= at else at
    if not going_on or not s.silence_from or begun - s.silence_from < s.policy.turn_pause_min:
        return fx
    return fx.set(turn_pauses=s.turn_pauses + 1)


def _continues_turn(s: SessionState, e: SpeechStarted) -> bool:
    """Is this voice the caller going on with the turn the answer is for
    (RULES 21)? It began (its onset, else its start) at most
    ``turn_continue_gap`` after the caller's own voice ended, when the
    caller had heard less than ``turn_continue_heard`` of the answer: the
    answer began inside the caller's pause. (An answer not heard at all is
    withdrawn instead: ``_unheard_reply``.)"""
    p, run = s.policy, s.run
    if p.turn_continue_gap <= 0 or s.phase not in HELD or run is None or not run.confirmed or run.scripted or not run.user_text or s.user_speaking:
        return False
    begun = s.onset_at if s.onset_utterance == e.utterance and s.silence_from < s.onset_at <= e.at else e.at
    return bool(s.silence_from) and begun - s.silence_from <= p.turn_continue_gap and _heard_by(run, begun) < p.turn_continue_heard


def _heard_by(run: Run, at: float) -> float:
    """Seconds of the run's audio the caller had heard by ``at``: the chunks
    heard to the end, and the one playing since ``playing_since``."""
    done = sum(ms for ms in run.audio_ms[: run.played] if ms > 0) / 1000
    if run.playing >= run.played and run.playing_since > 0:
        done += max(0.0, at - run.playing_since)
    return done


def _unheard_reply(s: SessionState) -> bool:
    """The active run answers the caller's turn, and the caller has heard
    none of it yet (no playback reported) nor could it have acted: no keys
    pressed. A caller who speaks now was not done. A tool the answer already
    ran does not make it heard (RULES 19): its result is a fact that the
    next generation is given (``_withdraw``), and the caller's words go on
    the turn instead of being judged as an interruption ("of December"
    after "I'd like to come on the 21st." was taken for a noise)."""
    run = s.run
    return (
        run is not None
        and run.confirmed
        and not run.scripted
        and bool(run.user_text)
        and run.played == 0
        and run.playing < 0
        and not run.digits
    )


def _withdraw(fx: Fx) -> Fx:
    """Take back an answer nobody heard: cancel its run without a trace in
    history, and put the words it answered back into the turn in progress,
    which the caller is now continuing."""
    s = fx.state
    run = s.run
    assert run is not None
    fx = fx.emit(CancelLLM(session=s.session, run=run.id), CancelTTS(session=s.session, run=run.id), FlushPlayback(session=s.session, run=run.id))
    fx = _cancel_timer(fx, "llm_first_token", "tts_first_audio", "playback", "hold", "resume", "onset", "release")
    # Tools it ran are facts: their results go to the next generation as
    # late results (and to history with the next run), never run again.
    ran = tuple(_replace(t, committed=False) if t.result is not None and run.id in (t.run, t.issued_by) else t for t in s.tools)
    fx = fx.set(run=None, user_text=_join(run.user_text, s.user_text), tools=ran)
    return fx.judged(Judgement(kind="turn_end", verdict="wait", reason="the caller went on before hearing the answer: same turn", text=fx.state.user_text[-200:]))


def on_speech_stopped(fx: Fx, e: SpeechStopped) -> Next:
    fx = _learn_level(fx, e)
    s = fx.state
    if e.utterance == s.background:
        if s.phase in FLOOR_PHASES and _background(s, e.level) is not None:
            return fx.to("end of an earlier sound")  # quiet to its end: a background voice, nothing of the caller's ended
        fx = fx.set(background=-1)  # louder as a whole than its start: the caller after all, its words count
        s = fx.state
    voice_end = e.speech_end_at if 0 < e.speech_end_at <= e.at else e.at
    stretch = round((voice_end - s.talk_from) * 1000) if s.talk_from else 0
    fx = fx.set(user_speaking=False, awaiting_finals=s.awaiting_finals + (e.utterance,), silence_from=voice_end, eot=e.eot, speech_ms=e.speech_ms,
                longest_speech_ms=max(s.longest_speech_ms, e.speech_ms, stretch),
                stopped_ms=tuple(x for x in s.stopped_ms if x[0] in s.awaiting_finals and x[0] != e.utterance) + ((e.utterance, e.speech_ms),))
    if _in_talk_over(s, e.utterance):
        start = voice_end - e.speech_ms / 1000
        fx = fx.set(over_from=min(s.over_from, start) if s.over_from else start, over_end=max(s.over_end, voice_end))
    fx = _start_timer(fx, "final", s.policy.final_timeout)
    if s.phase in FLOOR_PHASES:
        return fx.to("end of an earlier sound")  # its final decides
    if s.phase == PAUSED:
        return _sound_ended(fx, e)
    guess = _join(s.user_text, s.partial)
    if s.policy.preemptive and guess.strip() and not _ivr_keys_left(s):
        return _start_run(fx, guess, e.at, confirmed=False).to("preemptive start")
    return _turn(fx, e.at).after("stopped")


def _sound_ended(fx: Fx, e: SpeechStopped) -> Next:
    """The sound that paused the agent stopped. If its partial already says
    it was only a sound or a backchannel, play on now (its final may still
    show words: they barge in late); otherwise wait ``resume_timeout`` for
    its words."""
    s = fx.state
    if s.policy.resume_on_partial and s.partial.strip():
        judgement = _judge_overlap(s, s.partial, final=True, at=e.at, utterance=e.utterance)
        if judgement.verdict == "resume":
            judgement = msgspec.structs.replace(judgement, reason=f"partial: {judgement.reason}")
            return _resume(fx.judged(judgement), e.at).after("no words: resume")
    return _start_timer(fx, "resume", s.policy.resume_timeout).to("wait for words")


def on_partial(fx: Fx, e: TranscriptPartial) -> Next:
    fx = fx.set(partial=e.text)
    s = fx.state
    if s.phase in USER or not s.user_speaking or s.run is None or not s.run.confirmed:
        return fx.to("partial")
    judgement = _judge_overlap(s, e.text, final=False, at=e.at, utterance=e.utterance)
    if judgement.verdict == "barge-in":
        return _barge_in(fx.judged(judgement), over_words=True).to("words: barge-in")
    return (fx.judged(judgement) if s.phase == PAUSED and e.text.strip() else fx).to("partial")


ASR_EVENTS = (SpeechOnset, SpeechOnsetEnded, SpeechStarted, SpeechStopped, TranscriptPartial, TranscriptFinal)


def on_final(fx: Fx, e: TranscriptFinal) -> Next:
    """Dispatch on who has the floor (each case is its own handler below)."""
    finals = tuple(u for u in fx.state.awaiting_finals if u != e.utterance)
    fx = fx.set(awaiting_finals=finals, partial="", heard_upto=max(fx.state.heard_upto, e.utterance))
    if not finals:
        fx = _cancel_timer(fx, "final")
    phase = fx.state.phase
    if phase == PAUSED:
        return _final_during_hold(fx, e)
    if phase in FLOOR_PHASES:
        return _final_while_agent_has_floor(fx, e)
    said = e.text.strip() if words.tokens(e.text) else ""  # "." or "(laughs)" for a laugh: no words, no turn
    fx = fx.set(user_text=_join(fx.state.user_text, said), complete=e.complete)
    return _turn(fx, e.at)


def _final_during_hold(fx: Fx, e: TranscriptFinal) -> Next:
    if e.utterance == fx.state.background:
        return fx.to("no words, caller still making a sound")  # a background voice's words: not the caller's
    judgement = _judge_overlap(fx.state, e.text, final=True, at=e.at, floor=e.floor, utterance=e.utterance)
    fx = fx.judged(judgement)
    if judgement.verdict == "barge-in":
        fx = _barge_in(fx, over_words=judgement.heard != "sound").set(complete=e.complete)
        fx = fx.set(user_text=_join(fx.state.user_text, _said(e, judgement)))
        return _turn(fx, e.at).after("words: barge-in")
    fx = _over_words(fx, e)
    if fx.state.user_speaking:
        return fx.to("no words, caller still making a sound")
    return _resume(fx, e.at).after("no words: resume")


def _over_words(fx: Fx, e: TranscriptFinal) -> Fx:
    """A piece of a talk-over that did not take the floor: its words are
    read with the pieces after it (RULES 32). A loop or hum letters (RULES
    26: no evidence of words) is not."""
    s = fx.state
    if not _in_talk_over(s, e.utterance) or not words.tokens(e.text) or words.looped(e.text):
        return fx
    return fx.set(over_text=_join(s.over_text, e.text.strip()))


def _said(e: TranscriptFinal, judgement: Judgement) -> str:
    """What a barge-in adds to the caller's turn: its words, but not a text
    the words call a sound (a floor word heard by its sound alone, written
    "" or "Go."): the agent stops and listens for what comes next."""
    return "" if judgement.heard == "sound" else e.text.strip()


def _final_while_agent_has_floor(fx: Fx, e: TranscriptFinal) -> Next:
    run = fx.state.run
    assert run is not None
    if e.utterance == fx.state.background:
        return fx.to("no words")  # a background voice's words (Policy.background_db), over a guess too
    if run.confirmed:
        judgement = _judge_overlap(fx.state, e.text, final=True, at=e.at, floor=e.floor, utterance=e.utterance)
        if judgement.verdict != "barge-in":
            return _over_words(fx, e).to("no words")  # a sound or backchannel: nothing to answer, nothing to keep
        # Words that came after the hold resolved (a slow transcript, or a
        # sound talked over): still the caller taking the floor.
        fx = _barge_in(fx.judged(judgement), over_words=judgement.heard != "sound").set(complete=e.complete)
        fx = fx.set(user_text=_join(fx.state.user_text, _said(e, judgement)))
        return _turn(fx, e.at).after("late words: barge-in")
    fx = fx.set(user_text=_join(fx.state.user_text, e.text.strip()), complete=e.complete)
    s = fx.state
    done = _judge_turn(s, e.at, s.user_text)
    if _same_words(run.user_text, s.user_text) and not s.awaiting_finals and done.verdict == "answer":
        # The preemptive guess was right and the turn is over: release what it has produced.
        fx = _hold_until_release(fx.judged(done).set_run(confirmed=True, user_text=s.user_text).set(user_text="", turn_pauses=0, paused_turns=s.paused_turns + (s.turn_pauses > 0)), done)
        fx = _pump_chunks(fx)
        return (_maybe_finish(fx, e.at) or _floor(_guard_playback(fx))).after("preemptive guess confirmed")
    return _turn(_cancel_run(fx), e.at).after("preemptive guess wrong")


def on_dtmf(fx: Fx, e: Dtmf) -> Next:
    # A key press interrupts at once. It is a turn of its own, or (with
    # dtmf_wait) one key of an entry that the terminator or a pause ends.
    barge = fx.state.phase in HELD
    if barge:
        fx = _barge_in(fx)
    p = fx.state.policy
    collecting = p.dtmf_wait > 0
    if collecting and e.digit == p.dtmf_terminator:
        done = True
    else:
        fx, done = fx.set(keys=fx.state.keys + e.digit), not collecting
    fx = _cancel_timer(fx.set(reprompts=0), "reprompt")
    nxt = _turn(_flush_keys(fx) if done else fx, e.at, keypad=True, keys_done=done)
    return nxt.after("key press: barge-in") if barge else nxt


def _flush_keys(fx: Fx) -> Fx:
    """The keys typed so far become words of the caller's turn."""
    keys = fx.state.keys
    if not keys:
        return fx
    said = f"(pressed {keys} on the keypad)" if len(keys) == 1 else f"(entered {keys} on the keypad)"
    return fx.set(keys="", user_text=_join(fx.state.user_text, said))


def _turn(fx: Fx, at: float, keypad: bool = False, keys_done: bool = True) -> Next:
    """Is the caller's turn over? Answer once they are really done: not
    speaking, every final in, and as much silence as the evidence asks for
    (``_judge_turn``); otherwise wait, on the endpoint timer when only
    silence is missing. Outcomes: TURN."""
    if not keypad and fx.state.keys:
        fx, keypad = _flush_keys(fx), True  # the pause after the last key ended the entry
    s = fx.state
    assert s.run is None
    if s.user_speaking:
        return fx.to("caller still speaking")
    if s.awaiting_finals:
        return fx.to("wait for the turn to end")  # the final (or its timeout) decides
    if keypad and not keys_done:
        fx = fx.judged(Judgement(kind="turn_end", verdict="wait", reason="keypad entry: more keys, the terminator or a pause", text=s.keys, silence=0.0, wait=s.policy.dtmf_wait))
        return _start_timer(fx, "endpoint", s.policy.dtmf_wait).to("wait for the turn to end")
    if not s.user_text.strip():
        # A sound without words: nothing to answer.
        return _start_timer(fx, "reprompt", s.policy.reprompt_after).to("nothing said")
    judgement = _keypad_turn(s) if keypad else _judge_turn(s, at, s.user_text)
    fx = fx.judged(judgement)
    if judgement.verdict == "wait":
        return _start_timer(fx, "endpoint", judgement.wait - judgement.silence).to("wait for the turn to end")
    if _ivr_keys_left(s):
        return _ivr_turn(_cancel_timer(fx, "endpoint"), s.user_text)
    fx = _start_run(_cancel_timer(fx, "endpoint").set(user_text="", turn_pauses=0, paused_turns=s.paused_turns + (s.turn_pauses > 0)), s.user_text, at, confirmed=True)
    return _hold_until_release(fx, judgement).to("answer")


def _hold_until_release(fx: Fx, judgement: Judgement) -> Fx:
    """Prepare the answer now, but keep its audio at the gateway (paused
    before any of it exists) until the judgement's ``release`` silence: then
    the "release" timer plays it. Speech before that withdraws it unheard."""
    if judgement.release <= judgement.silence + 0.001:
        return fx
    run = fx.state.run
    assert run is not None
    fx = fx.emit(PausePlayback(session=fx.state.session, run=run.id)).set_run(held=True)
    fx = _start_timer(fx, "release", judgement.release - judgement.silence)
    return fx.noted(f"answer prepared; heard from {judgement.release:g} s of silence")


def on_release_timer(fx: Fx, e: TimerFired) -> Next:
    """The caller stayed silent: the held answer may be heard. In a hold
    (a sound since) it stays paused: the hold decides."""
    run = fx.state.run
    assert run is not None
    if not run.held:
        return fx.to("released")
    fx = fx.set_run(held=False).noted("silence held: the answer is released")
    if fx.state.phase != PAUSED:  # in a hold, the resume plays it (and runs its tools)
        fx = _issue_deferred(fx.emit(ResumePlayback(session=fx.state.session, run=run.id)))
    return fx.to("released")


def _ivr_keys_left(s: SessionState) -> bool:
    return s.policy.direction == "outbound" and s.ivr_step < len(ivr_groups(s.policy.ivr_path))


def _ivr_turn(fx: Fx, text: str) -> Next:
    """The other end finished a turn while the IVR path has keys left: press
    the next group if it asked for keys, else listen on. Nothing is said
    either way; what it said, and the keys pressed, go to history.
    Outcomes: TURN (the two IVR ones)."""
    s = fx.state
    fx = fx.set(user_text="", turn_pauses=0, history=s.history + (Message(role="user", content=text),))
    if not words.keypad_prompt(text):
        fx = fx.noted("IVR path: no keys asked for yet")
        return _start_timer(fx, "reprompt", s.policy.reprompt_after).to("no menu yet: listen on")
    keys = ivr_groups(s.policy.ivr_path)[s.ivr_step]
    call = ToolCallItem(call_id=f"ivr-{s.ivr_step}", name=SEND_DIGITS, arguments=msgspec.json.encode({"digits": keys}).decode())
    said = Message(role="tool", tool_call_id=call.call_id, name=SEND_DIGITS, content=msgspec.json.encode({"sent": keys, "by": "the IVR path set for this call"}).decode())
    fx = fx.set(ivr_step=s.ivr_step + 1, history=fx.state.history + (Message(role="assistant", tool_calls=(call,)), said))
    fx = fx.emit(SendDigits(session=s.session, digits=keys)).noted(f"IVR path: pressed {keys} ({s.ivr_step + 1} of {len(ivr_groups(s.policy.ivr_path))})")
    return _start_timer(fx, "reprompt", s.policy.reprompt_after).to("press the next keys")


# long: the end-of-turn judgement is one ladder read top to bottom (words, signals, silence, then each hold of RULES 16-21); split, its order would hide
def _judge_turn(s: SessionState, at: float, text: str) -> Judgement:
    """How much silence the turn needs before the agent answers (``wait``),
    how much before the answer may be heard (``release``), and why: the
    words first (an unfinished clause, a number or date being dictated,
    ``words.unfinished``), then the end-of-turn signals (weighted, against
    the threshold), then, with no signal at all, plain silence timing.

    A turn that reads complete but may go on (an opening, a turn the caller
    already paused inside, a first fragment ``words.may_go_on`` flags) is
    answered on the short wait but *held*: prepared at once, heard only from
    its release silence, withdrawn unheard if the caller goes on first. So
    how long the caller may pause does not depend on how fast the answer is
    made, and an answer that is ready waits no longer than the release."""
    p = s.policy
    silence = round(max(0.0, at - s.silence_from), 3) if s.silence_from else 0.0
    score, weight = 0.0, 0.0
    for value, w in ((s.eot, p.eot_weight), (s.complete, p.complete_weight)):
        if value >= 0 and w > 0:
            score, weight = score + value * w, weight + w
    score = round(score / weight, 3) if weight else -1.0
    short_wait = p.turn_silence if score >= 0 else p.turn_silence_unknown
    # Someone answering the phone Parley called says hello and waits.
    why, kind = words.unfinished(text, words.asked_for(_agent_last_words(s)), greeting_opens=p.direction != "outbound")
    if kind == "maybe" and s.complete >= (1 + p.turn_threshold) / 2:
        why = ""  # a weak cue, overruled by a sure text signal
    elif kind == "maybe" and s.complete >= p.turn_threshold:
        why, kind = f"{why}, though the text reads complete", "opening"  # tempered by a borderline one
    release, held = p.turn_release, "the caller may go on"
    if kind == "opening":
        wait, reason = short_wait, f"reads complete, but may go on: {why}"
        release, held = max(release, p.turn_wait_opening), "an opening"
    elif why:
        wait = p.turn_wait_dictation if kind == "dictation" else p.turn_wait_unfinished
        reason = f"unfinished: {why}"
    elif score >= p.turn_threshold or score < 0:
        wait, reason = short_wait, ("complete by the signals" if score >= 0 else "no end-of-turn signal: silence timing")
    else:
        wait, reason = p.turn_wait_unfinished, "unfinished by the signals"
    if s.turn_pauses and (kind == "opening" or not why) and wait < p.turn_wait_continued:
        reason = f"{reason}, after {s.turn_pauses} mid-turn pause(s): the caller may pause again"
        release, held = max(release, p.turn_wait_continued), f"{s.turn_pauses} mid-turn pause(s)"
    # A first fragment (no pause of its own) that answers the question the
    # agent just asked ("The first one, please." to "Which one?") is whole.
    first = not s.turn_pauses and not words.asks_for_an_answer(_agent_last_words(s))
    short = words.may_go_on(text, p.short_words) if p.turn_release_short > 0 and first else ""
    if not short and s.paused_turns and first and p.turn_release_short > 0 and not words.whole_by_form(text):
        short = f"the caller paused inside {s.paused_turns} earlier turn(s) this call"
    if short and p.turn_release_short > release:
        release, held = p.turn_release_short, f"a first fragment that may go on: {short}"
    if first and p.turn_release_statement > release and words.statement(text):
        release, held = p.turn_release_statement, "a statement that starts the caller's turn: callers go on from one"
    if first and p.turn_release_unasked > release and p.direction != "outbound" and words.asks_nothing(text) and not _asked_yet(s):
        release, held = p.turn_release_unasked, "words that ask for nothing, before any request this call: callers go on to it"
    if release > wait + 0.001:
        reason = f"{reason}; heard from {release:g} s of silence ({held})"
    else:
        release = -1.0
    verdict = "answer" if silence >= wait - 0.001 else "wait"
    return Judgement(
        kind="turn_end", verdict=verdict, reason=reason, text=text[-200:], eot=s.eot, complete=s.complete,
        score=score, threshold=p.turn_threshold, silence=silence, wait=wait, release=release,
    )  # fmt: skip


def _keypad_turn(s: SessionState) -> Judgement:
    return Judgement(kind="turn_end", verdict="answer", reason="key press: a turn at once", text=s.user_text[-200:], silence=0.0, wait=0.0)


def _asked_yet(s: SessionState) -> bool:
    """Whether the caller asked for anything in an earlier turn of the call."""
    return any(m.role == "user" and m.content and words.requests(m.content) for m in s.history)


def _agent_last_words(s: SessionState) -> str:
    """What the caller last heard the agent say (for "it asked for a phone number")."""
    return next((m.content for m in reversed(s.history) if m.role == "assistant" and m.content), "")


_FLOOR_FIRST = frozenset(words.tokens(" ".join(FLOOR_WORDS)))  # folded as words.tokens folds them ("sorry" is "sory")


def _judge_overlap(s: SessionState, text: str, final: bool, at: float, floor: float = -1.0, utterance: int = -1) -> Judgement:
    """The caller made a sound while the agent had the floor: do its words
    take the floor? Words do, as soon as a partial shows them; a backchannel
    does only when it answers the question the agent is asking, and only on
    the final; a sound never does. A few words (none of "no", "wait"...) in
    a short sound are what a recogniser makes of a hum: a noise on the
    final, and on a partial not yet words (the rest of the sound decides).
    A final that reads as a sound still takes the floor when the recogniser
    itself heard a floor word first (``floor``, Policy.floor_word).

    A talk-over the VAD split ("Yes, | book it.") is judged whole: the words
    of its pieces together, its sound from the first piece's start (RULES
    31). A few words that open with an answer ("Yes, please.", "Sure, go
    ahead.") while the caller hears a yes/no question answer it, however
    short, as a lone "Yes." does (RULES 33)."""
    own = text
    if _in_talk_over(s, utterance if utterance >= 0 else s.utterance):
        text = _join(s.over_text, text.strip())
    asked = _asked_question(s)
    heard = words.hearing(text, asked=asked)
    p = s.policy
    if heard == "words" and asked and words.answer_first(text) and words.few_words(text, p.noise_words):
        heard = "answer"
    what = f"{heard} only"
    length = _sound_length(s, final, at, utterance)
    bar = min(p.noise_sound, p.turn_continue_sound) if s.continuing == s.utterance and s.continuing >= 0 else p.noise_sound
    said = words.tokens(own)
    if heard == "words" and words.few_words(text, p.noise_words) and 0 < length < bar:
        heard, what = "sound", f"{len(said)} word(s) in {length:.2f} s of sound, under {bar:g} s (a noise mis-heard?)"
    elif heard == "words" and final and 0 <= floor < p.floor_word and said[0] in _FLOOR_FIRST and 0 < length < bar:
        heard, what = "sound", f"'{said[0]}' written, but the recogniser's own P of a floor word first {floor:.3f} < {p.floor_word:g}, in {length:.2f} s of sound (a noise mis-heard?)"
    elif heard == "words" and not final and words.few_words(text, p.noise_words):
        # The agent is paused already, so waiting for the final costs the
        # caller nothing; a partial's few ordinary words are often a hum or a
        # backchannel misheard ("here here" for a slow "yeah, yeah").
        return Judgement(kind="interruption", verdict="hold", reason=f"{words.word_count(text)} ordinary word(s) so far: the final decides",
                         text=text[-200:], heard="words", score=round(length, 3), threshold=p.noise_sound)
    if heard == "backchannel" and final and words.looped(text) and 0 < p.floor_word <= floor:
        heard, what = "sound", f"'{text[:40]}' (a loop: no words)"  # RULES 26: no evidence of words, as a sound
    if heard == "words":
        verdict, reason = "barge-in", f"words: a real interruption ({_why_words(text, length, p)})"
    elif heard == "sound" and final and 0 < p.floor_word <= floor:
        verdict, reason = "barge-in", f"{what}, but a floor word by its sound (P {floor:.2f} >= {p.floor_word:g}): a real interruption"
    elif heard == "answer" and final:
        verdict, reason = "barge-in", "answers the agent's question"
    elif final and not s.user_speaking:
        verdict, reason = "resume", f"{what}: not an interruption"
    else:
        verdict, reason = "hold", f"{what} so far: wait for the rest"
    return Judgement(
        kind="interruption", verdict=verdict, reason=reason, text=text[-200:], heard=heard,
        score=round(length, 3) if length > 0 else -1.0, threshold=p.noise_sound if length > 0 else -1.0,
    )  # fmt: skip


def _why_words(text: str, length: float, p: Policy) -> str:
    """Which evidence made words of ``text`` (for the inspector)."""
    said = words.tokens(text)
    floor = [w for w in said if w in words.TAKE_FLOOR]
    if floor:
        return f"'{floor[0]}' takes the floor"
    if words.word_count(text) > p.noise_words:
        return f"{words.word_count(text)} words, more than {p.noise_words}"
    if any(w.isdigit() for w in said):
        return "a number"
    return f"{length:.2f} s of sound, at least {p.noise_sound:g} s" if length > 0 else "sound length unknown"


def _sound_length(s: SessionState, final: bool, at: float, utterance: int = -1) -> float:
    """How long the caller's sound lasted: on a final, its utterance's
    SpeechStopped length (0 if unknown or a newer sound is going on); on a
    partial, at least the time since its SpeechStarted (the VAD heard some
    before). A piece of a talk-over counts from the talk-over's first
    piece's start (RULES 32)."""
    utterance = utterance if utterance >= 0 else s.utterance
    whole = _in_talk_over(s, utterance) and s.over_end > s.over_from > 0
    if final:
        if s.user_speaking:
            return 0.0
        if whole:
            return round(s.over_end - s.over_from, 3)
        return next((ms for u, ms in s.stopped_ms if u == utterance), s.speech_ms) / 1000
    if not (s.user_speaking and s.speech_started_at):
        return 0.0
    return max(0.001, at - (min(s.over_from, s.speech_started_at) if whole else s.speech_started_at))


def _asked_question(s: SessionState) -> bool:
    """Has the caller heard the agent ask a question a yes answers
    (``words.yes_no_question``: not "Which time suits you?"), as the latest
    thing it said (``_question_heard``)?"""
    question = _question_heard(s)
    return bool(question) and words.yes_no_question(question)


def _question_heard(s: SessionState) -> str:
    """The question the caller has heard the agent begin, as the latest thing
    it said ("" if none): the question in the chunk playing has begun (where
    the caller is in a chunk is estimated from when it began and its audio
    length, text spread evenly over it), or the chunk before ended with one a
    moment ago."""
    run = s.run
    if run is None or not run.audio_started or not run.chunks:
        return ""
    k = run.playing if 0 <= run.playing < len(run.chunks) else min(run.played, len(run.chunks) - 1)
    onset = s.speech_started_at
    before = run.chunks[k - 1] if k > 0 else ""
    if before.rstrip("\"') ").endswith("?") and onset - run.playing_since < s.policy.question_window:
        return before[max(0, _question_start(before)) :]
    text = run.chunks[k]
    start = _question_start(text)
    if start <= 0:
        return text if start == 0 else ""
    audio = run.audio_ms[k] if k < len(run.audio_ms) else -1
    if audio <= 0 or k != run.playing:
        return ""  # where the caller is in this chunk is unknown
    return text[start:] if (onset - run.playing_since) * 1000 >= audio * start / len(text) else ""


_SENTENCE_END = re.compile(r"[.!?][\"')]*\s+")


def _question_start(text: str) -> int:
    """Where the question that ends ``text`` begins (-1: it ends no question)."""
    text = text.rstrip("\"') ")
    if not text.endswith("?"):
        return -1
    ends = list(_SENTENCE_END.finditer(text[:-1]))
    return ends[-1].end() if ends else 0


def on_final_timer(fx: Fx, e: TimerFired) -> Next:
    fx = fx.noted(f"no final transcript for utterance(s) {list(fx.state.awaiting_finals)}: going on without").set(awaiting_finals=())
    if fx.state.phase in HELD:
        return fx.to("stop waiting for it")
    return _turn(fx, e.at)


def on_endpoint_timer(fx: Fx, e: TimerFired) -> Next:
    return _turn(fx, e.at)


def on_reprompt_timer(fx: Fx, e: TimerFired) -> Next:
    s = fx.state
    if s.reprompts >= s.policy.max_reprompts:
        return _start_scripted(fx, s.policy.goodbye_text, e.at, then_end="caller silent").to("goodbye")
    return _start_scripted(fx.set(reprompts=s.reprompts + 1), s.policy.reprompt_text, e.at).to("re-prompt")


def _same_words(a: str, b: str) -> bool:
    return words.tokens(a) == words.tokens(b)


def _join(a: str, b: str) -> str:
    return f"{a} {b}".strip() if a and b else (a or b)


# ---------------------------------------------------------------------------
# Runs: starting, generating, chunking


def _start_run(fx: Fx, user_text: str, at: float, confirmed: bool) -> Fx:
    s = fx.state
    run = Run(id=s.next_run, user_text=user_text, confirmed=confirmed, utterance=s.utterance, started_at=s.speech_started_at or at)
    fx = fx.set(next_run=run.id + 1, run=run)
    return _start_llm(_cancel_timer(fx, "reprompt"))


def _start_scripted(fx: Fx, text: str, at: float, then_end: str = "") -> Fx:
    """A run that speaks fixed text: greeting, re-prompt, fallback, goodbye."""
    s = fx.state
    assert text.strip(), "scripted text is never blank (policy_from_params)"
    run = Run(id=s.next_run, scripted=True, pending=text, end_after=then_end, started_at=at)
    fx = fx.set(next_run=run.id + 1, run=run)
    return _pump_chunks(_cancel_timer(fx, "reprompt"), final=True)


def _start_llm(fx: Fx) -> Fx:
    fx = fx.set_run(llm_active=True, got_token=False, llm_seq=0, received="", echo="")
    s = fx.state
    assert s.run is not None
    fx = fx.emit(StartLLM(session=s.session, run=s.run.id, step=s.run.step, messages=_prompt(s), attempt=s.run.attempt))
    return _start_timer(fx, "llm_first_token", s.policy.llm_first_token_timeout)


def _restart_llm(fx: Fx) -> Fx:
    """Run the current step again as a new attempt (the old stream is lost or
    untrusted); it must first repeat what the step already received."""
    run = fx.state.run
    assert run is not None
    if not run.llm_active:
        return fx
    fx = fx.emit(CancelLLM(session=fx.state.session, run=run.id, attempt=run.attempt))
    # Tool calls of the lost attempt are asked again by the new one; a call
    # that already runs is found by name and arguments, never run twice.
    fx = fx.set_run(attempt=run.attempt + 1, llm_seq=0, got_token=False, echo=run.received, calls=(), waiting=())
    s = fx.state
    fx = fx.emit(StartLLM(session=s.session, run=run.id, step=run.step, messages=_prompt(s), attempt=run.attempt + 1))
    return _start_timer(fx, "llm_first_token", s.policy.llm_first_token_timeout)


def on_takeover(fx: Fx, e: Takeover) -> Next:
    """A new owner: the LLM stream and the tool calls died with the old one."""
    fx = fx.noted(f"taken over by {e.owner}")
    if fx.state.run is not None:
        fx = _restart_llm(fx)
    s = fx.state
    # Tools are idempotent by call id (the registry's contract). Keys pressed
    # are the gateway's to report: pressing them again would press twice.
    fx = fx.emit(*(CallTool(session=s.session, run=r.run, call_id=r.call_id, name=r.name, arguments=r.arguments) for r in s.tools if r.result is None and r.name != SEND_DIGITS))
    return fx.to("work re-issued")


def _echo(echo: str, text: str) -> tuple[str, str] | None:
    """Match a restarted attempt's token against what it must repeat:
    (new text past the echo, echo left), or None when it said something else."""
    if echo.startswith(text):
        return "", echo[len(text) :]
    if text.startswith(echo):
        return text[len(echo) :], ""
    return None


def _prompt(s: SessionState) -> tuple[Message, ...]:
    """What the LLM sees: system, committed history, this run's turn so far."""
    run = s.run
    assert run is not None
    msgs = [Message(role="system", content=s.policy.system_prompt), *s.history]
    msgs += _late_tool_pairs(s)
    if run.user_text:
        msgs.append(Message(role="user", content=run.user_text))
    results = {call_id: (name, result) for call_id, name, result in run.results}
    for text, calls in zip(run.step_text, run.step_calls):
        msgs.append(Message(role="assistant", content=text, tool_calls=calls))
        for call in calls:
            name, result = results.get(call.call_id, (call.name, '{"error": "no result"}'))
            msgs.append(Message(role="tool", tool_call_id=call.call_id, name=name, content=result))
    return tuple(msgs)


def _late_tool_pairs(s: SessionState) -> list[Message]:
    """Results of tools from earlier, cancelled runs that arrived after the
    run ended: the next generation sees them (never dropped, never re-run)."""
    out: list[Message] = []
    for rec in s.tools:
        if rec.result is not None and not rec.committed and (s.run is None or rec.run != s.run.id):
            out += _tool_pair(rec)
    return out


def _tool_pair(rec: ToolRecord) -> list[Message]:
    call = ToolCallItem(call_id=rec.call_id, name=rec.name, arguments=rec.arguments)
    return [
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id=rec.call_id, name=rec.name, content=rec.result or ""),
    ]


def on_llm_token(fx: Fx, e: LLMToken) -> Next:
    run = fx.state.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        return fx.noted(f"token of step {e.step} ignored").to("token")
    if not run.got_token:
        fx = _cancel_timer(fx, "llm_first_token")
    text = e.text
    if run.echo:
        matched = _echo(run.echo, text)
        if matched is None:
            return _diverged(fx, e.at)
        text, echo = matched
        fx = fx.set_run(echo=echo)
    run = fx.state.run
    return _pump_chunks(fx.set_run(got_token=True, pending=run.pending + text, received=run.received + text)).to("token")


def _diverged(fx: Fx, at: float) -> Next:
    """A restarted attempt said something else than the lost one: end the step
    with what was cut into chunks already, drop the rest. Outcomes: STEP_DONE."""
    run = fx.state.run
    assert run is not None
    fx = fx.emit(CancelLLM(session=fx.state.session, run=run.id, attempt=run.attempt))
    fx = fx.set_run(pending="", echo="", got_token=True)
    return _step_done(fx.noted("restarted LLM said something else: the reply ends with what was already said"), at)


def _pump_chunks(fx: Fx, final: bool = False) -> Fx:
    """Cut what can be cut from the pending text into numbered chunks, and send
    chunks to TTS once the run is confirmed."""
    run = fx.state.run
    assert run is not None
    p = fx.state.policy
    pending, chunks, steps = run.pending, list(run.chunks), list(run.chunk_steps)
    while pending:
        n = next_chunk(pending, first=not chunks, final=final, first_min=p.first_chunk_min, min_len=p.chunk_min, max_len=p.chunk_max)
        if n == 0:
            break
        text, pending = pending[:n].strip(), pending[n:]
        if text:
            chunks.append(text)
            steps.append(run.step)
    fx = fx.set_run(pending=pending, chunks=tuple(chunks), chunk_steps=tuple(steps), audio_ms=run.audio_ms + (-1,) * (len(chunks) - len(run.chunks)))
    run = fx.state.run
    if not run.confirmed:
        return fx
    if run.sent < len(run.chunks) and run.sent == 0 and not run.tts_started:
        fx = _start_timer(fx, "tts_first_audio", p.tts_first_audio_timeout)
    provider = fx.state.policy.tts
    fx = fx.emit(*(Synthesize(session=fx.state.session, run=run.id, chunk=i, text=run.chunks[i], provider=provider) for i in range(run.sent, len(run.chunks))))
    return fx.set_run(sent=len(run.chunks))


def on_llm_tool_call(fx: Fx, e: LLMToolCall) -> Next:
    run = fx.state.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        return fx.noted(f"tool call of step {e.step} ignored").to("tool call")
    if e.name == TRANSFER_CALL and fx.state.policy.transfer_to:
        # Like end_call: the caller is put through once this reply was heard
        # in full; never from an interrupted reply or a cancelled run.
        summary = _argument(e.arguments, "summary")[:500]
        return fx.set_run(end_after=TRANSFERRED, handoff=summary).noted("transfer_call: put through after this reply is heard").to("tool call")
    if e.name == END_CALL:
        # Not executed now: the call ends once this reply has been heard in
        # full. A reply that is interrupted, or a run that is cancelled, never
        # hangs up on the caller.
        return fx.set_run(end_after="agent ended the call").noted("end_call: the call ends after this reply is heard").to("tool call")
    if run.tool_steps >= fx.state.policy.max_tool_steps:
        return fx.noted(f"tool call {e.name} refused: {run.tool_steps} tool steps already").to("tool call")
    call = ToolCallItem(call_id=e.call_id, name=e.name, arguments=e.arguments)
    fx = fx.set_run(calls=run.calls + (call,))
    if e.name == SEND_DIGITS and fx.state.policy.direction == "outbound":
        return _keys_asked(fx, e).to("tool call")
    same = _repeat_of(fx.state.tools, e.name, e.arguments)
    if same is None and (run.held or fx.state.phase == PAUSED) and not e.reads_only:
        # A held answer changes nothing in the world before it is released,
        # nor a paused one before it plays on: the caller may go on (or be
        # taking the floor), and then the answer is withdrawn or cancelled
        # (a booking made from half a request would stay made). Its tool
        # runs when it is released or resumed. A tool declared to only read
        # (RULES 25: availability, the caller's bookings) changes nothing,
        # so it runs now and its answer is ready when this one is heard.
        twin = next((d for d in run.deferred if d.name == e.name and _same_args(d.arguments, e.arguments)), None)
        if twin is not None:  # asked twice: one execution, both wait for it
            calls = tuple(_replace(c, call_id=twin.call_id) if c.call_id == e.call_id else c for c in fx.state.run.calls)
            return fx.set_run(calls=calls).noted(f"tool {e.name} already waits as {twin.call_id}").to("tool call")
        fx = fx.set_run(waiting=fx.state.run.waiting + (e.call_id,), deferred=run.deferred + (call,))
        return fx.noted(f"tool {e.name} runs once the answer is released").to("tool call")
    if same is None:
        return _call_tool(fx, e).to("tool call")
    if same.result is not None:
        # Already ran: reuse its result, never run it twice.
        fx = fx.noted(f"tool {e.name} already ran as {same.call_id}; result reused")
        fx = fx.set_run(results=fx.state.run.results + ((e.call_id, e.name, same.result),))
        return _commit_tool(fx, same.call_id).to("tool call")
    # Still running for an earlier run: wait for that execution.
    s = fx.state
    fx = fx.noted(f"tool {e.name} already running as {same.call_id}; waiting for it")
    fx = fx.set_run(
        waiting=s.run.waiting + (same.call_id,),
        calls=tuple(_replace(c, call_id=same.call_id) if c.call_id == e.call_id else c for c in s.run.calls),
    )
    taken_over = tuple(_replace(r, run=run.id, issued_by=_issuer(r)) if r.call_id == same.call_id else r for r in s.tools)
    return fx.set(tools=taken_over).to("tool call")


def _keys_asked(fx: Fx, e: LLMToolCall) -> Fx:
    """send_digits on a call Parley placed: the keys are pressed once what the
    reply said before them has been heard (pressing replaces the call's
    audio), and only from a run that is still live (``_press_due``); the
    gateway's DigitsSent is the call's result. Keys that are not keys get
    their error at once."""
    digits = keypad_digits(_argument(e.arguments, "digits"))
    run = fx.state.run
    assert run is not None
    if not digits:
        error = msgspec.json.encode({"error": f"digits must be 1 to {MAX_DIGITS} of 0-9, *, # (w: wait half a second)"}).decode()
        return fx.set_run(results=run.results + ((e.call_id, e.name, error),)).noted("send_digits refused: not keypad keys")
    fx = fx.set_run(waiting=run.waiting + (e.call_id,), digits=run.digits + ((e.call_id, digits),))
    return fx.noted(f"send_digits: {digits} pressed once what was said before is heard")


def _press_due(fx: Fx) -> Fx:
    """Press the keys a send_digits call asked for, once the step that asked
    is over and the caller heard everything said before them. Never during a
    hold (callers check): the hold ends first, and a barge-in drops them
    with the run."""
    run = fx.state.run
    if run is None or not run.digits:
        return fx
    if run.llm_active or run.pending or run.sent < len(run.chunks) or run.played < len(run.chunks):
        return fx
    s = fx.state
    records = tuple(ToolRecord(call_id=cid, name=SEND_DIGITS, arguments=msgspec.json.encode({"digits": d}).decode(), run=run.id) for cid, d in run.digits)
    fx = fx.set(tools=s.tools + records).set_run(digits=())
    return fx.emit(*(SendDigits(session=s.session, digits=d, call_id=cid, run=run.id) for cid, d in run.digits))


def _call_tool(fx: Fx, e: LLMToolCall) -> Fx:
    fx = fx.set_run(waiting=fx.state.run.waiting + (e.call_id,))
    return _issue_tool(fx, ToolCallItem(call_id=e.call_id, name=e.name, arguments=e.arguments))


def _issue_tool(fx: Fx, call: ToolCallItem) -> Fx:
    """Execute a call of the active run (which already waits for it)."""
    s = fx.state
    assert s.run is not None
    rec = ToolRecord(call_id=call.call_id, name=call.name, arguments=call.arguments, run=s.run.id)
    fx = fx.set(tools=s.tools + (rec,))
    return fx.emit(CallTool(session=s.session, run=s.run.id, call_id=call.call_id, name=call.name, arguments=call.arguments))


def _issue_deferred(fx: Fx) -> Fx:
    """The answer is released and playing: its deferred tool calls run now."""
    run = fx.state.run
    assert run is not None and not run.held
    if not run.deferred:
        return fx
    for call in run.deferred:
        fx = _issue_tool(fx, call)
    return fx.set_run(deferred=()).noted(f"released: {len(run.deferred)} deferred tool call(s) run now")


def _issuer(rec: ToolRecord) -> int:
    return rec.issued_by if rec.issued_by >= 0 else rec.run


def _repeat_of(tools: tuple[ToolRecord, ...], name: str, arguments: str) -> ToolRecord | None:
    """The execution this call repeats, if any: the same tool and arguments,
    and no call asked for by another run since. (A run cancelled while its
    tool ran is asked again by the next generation: that is a repeat. Book,
    cancel, then book the same slot again is not.)"""
    for i in range(len(tools) - 1, -1, -1):
        rec = tools[i]
        if rec.name == name and _same_args(rec.arguments, arguments):
            return rec if all(_issuer(later) == _issuer(rec) for later in tools[i + 1 :]) else None
    return None


def _same_args(a: str, b: str) -> bool:
    try:
        return msgspec.json.decode(a) == msgspec.json.decode(b)
    except msgspec.DecodeError:
        return a.strip() == b.strip()


def _commit_tool(fx: Fx, call_id: str) -> Fx:
    return fx.set(tools=tuple(_replace(r, committed=True) if r.call_id == call_id else r for r in fx.state.tools))


def on_llm_done(fx: Fx, e: LLMDone) -> Next:
    run = fx.state.run
    assert run is not None
    if e.step != run.step or not run.llm_active:
        return fx.noted(f"done of step {e.step} ignored").to("step done")
    if run.echo:
        # The restarted attempt ended before repeating everything: keep what
        # was said; what was received but not cut yet is said too.
        fx = fx.set_run(echo="")
    return _step_done(fx, e.at)


def _step_done(fx: Fx, at: float) -> Next:
    """The LLM step ended: speak what it said, then run its tools, or finish.
    Outcomes: STEP_DONE."""
    run = fx.state.run
    assert run is not None
    fx = _cancel_timer(fx, "llm_first_token").set_run(
        llm_active=False,
        step_text=run.step_text + (_join(_text_of_step(run, run.step), run.pending.strip()),),
        step_calls=run.step_calls + (run.calls,),
        calls=(),
        tool_steps=run.tool_steps + (1 if run.calls else 0),
        continue_due=bool(run.calls),
    )
    # Speak what came before a tool call while the tool runs.
    fx = _pump_chunks(fx, final=True)
    held = fx.state.phase == PAUSED
    if not held:
        fx = _press_due(fx)
    if not fx.state.run.continue_due:
        if held:
            return fx.to("step done")
        return _maybe_finish(fx, at) or _guard_playback(fx).to("step done")
    if fx.state.run.waiting:
        return fx.to("step done" if held else "tools running")
    if held:
        return fx.to("step done")  # continues on resume
    return _continue_after_tools(fx).after("results known")  # every result was known already (reused)


def _text_of_step(run: Run, step: int) -> str:
    return " ".join(c for c, s in zip(run.chunks, run.chunk_steps) if s == step)


def on_tool_result(fx: Fx, e: ToolResult) -> Next:
    result = e.result if e.ok else msgspec.json.encode({"error": e.result}).decode()
    return _result_in(fx, e.call_id, e.name, result, e.ok)


def on_digits_sent(fx: Fx, e: DigitsSent) -> Next:
    """The gateway pressed keys (or could not). The IVR path's: noted, and a
    failed group is pressed at the next menu again. A send_digits call's:
    its result, as any tool's. Outcomes: those of a tool result."""
    if not e.call_id:
        if e.ok:
            return fx.noted(f"keys {e.digits} pressed").to("result kept")
        fx = fx.set(ivr_step=max(0, fx.state.ivr_step - 1))
        return fx.noted(f"keys {e.digits} could not be pressed ({e.error}): again at the next menu").to("result kept")
    if e.ok:
        result = {"sent": e.digits, "note": "the keys were pressed; listen to what the line says next"}
    else:
        result = {"error": f"the keys could not be pressed: {e.error}"}
    return _result_in(fx, e.call_id, SEND_DIGITS, msgspec.json.encode(result).decode(), e.ok)


def _result_in(fx: Fx, call_id: str, name: str, result: str, ok: bool) -> Next:
    """A tool's result (kept even when the run that asked is gone). Outcomes:
    "result kept", or "results in" then FLOOR when the step can go on."""
    rec = next((r for r in fx.state.tools if r.call_id == call_id), None)
    if rec is None or rec.result is not None:
        return fx.noted(f"no outstanding tool call {call_id}").to("result kept")
    fx = fx.set(tools=tuple(_replace(r, result=result, ok=ok) if r.call_id == call_id else r for r in fx.state.tools))
    run = fx.state.run
    if run is None:
        fx = fx.set(history=fx.state.history + tuple(_tool_pair(_replace(rec, result=result))))
        return _commit_tool(fx, call_id).noted(f"late result of {name} kept in history").to("result kept")
    if call_id not in run.waiting:
        return fx.noted(f"result of {name} kept for the next generation").to("result kept")
    name = next((c.name for c in run.step_calls[-1] if c.call_id == call_id), name) if run.step_calls else name
    fx = fx.set_run(waiting=tuple(w for w in run.waiting if w != call_id), results=run.results + ((call_id, name, result),))
    fx = _commit_tool(fx, call_id)
    run = fx.state.run
    if not run.waiting and run.continue_due and fx.state.phase != PAUSED:
        return _continue_after_tools(fx).after("results in")
    return fx.to("result kept")  # more to come, or during a hold: continues on resume


def _continue_after_tools(fx: Fx) -> Next:
    """Every result of the step is in: the LLM goes on. Outcomes: FLOOR."""
    run = fx.state.run
    assert run is not None and run.continue_due
    fx = fx.set_run(step=run.step + 1, continue_due=False)
    phase = _floor(fx)  # decided before the LLM is active again
    return Next(phase.outcome, _start_llm(fx))


def on_llm_error(fx: Fx, e: LLMError) -> Next:
    if e.step != fx.state.run.step:  # type: ignore[union-attr]
        return fx.noted(f"error of step {e.step} ignored").to("ignored")
    return _fallback(fx.noted(f"LLM error: {e.message}"), e.at)


def on_llm_timeout(fx: Fx, e: TimerFired) -> Next:
    return _fallback(fx.noted("LLM first token timed out"), e.at)


def on_tts_timeout(fx: Fx, e: TimerFired) -> Next:
    return _fallback(fx.noted("TTS first audio timed out"), e.at)


def _fallback(fx: Fx, at: float) -> Next:
    """Give up on this run and say so, in a run of its own (the failing run's
    TTS output, if it ever comes, is stale by then). Outcomes: FALLBACK."""
    scripted_failed = fx.state.run.scripted  # type: ignore[union-attr]
    fx = _cancel_run(fx)
    if scripted_failed:
        # TTS itself is failing: saying so would fail too.
        return _start_timer(fx, "reprompt", fx.state.policy.reprompt_after).to("fallback failed too")
    return _start_scripted(fx, fx.state.policy.fallback_text, at).to("fallback")


# ---------------------------------------------------------------------------
# Audio: TTS progress and what the caller actually heard


def on_tts_started(fx: Fx, e: TTSChunkStarted) -> Next:
    if not fx.state.run.tts_started:  # type: ignore[union-attr]
        fx = _cancel_timer(fx, "tts_first_audio")
    return fx.set_run(tts_started=True).to("audio")


def on_tts_done(fx: Fx, e: TTSChunkDone) -> Next:
    return _chunk_audio(fx, e.chunk, e.audio_ms, e.at)


def on_tts_error(fx: Fx, e: TTSError) -> Next:
    return _chunk_audio(fx.noted(f"TTS error on chunk {e.chunk}: {e.message}"), e.chunk, 0, e.at)


def _chunk_audio(fx: Fx, chunk: int, audio_ms: int, at: float) -> Next:
    run = fx.state.run
    assert run is not None
    if not 0 <= chunk < len(run.audio_ms):
        return fx.noted(f"chunk {chunk} unknown").to("audio")
    if run.audio_ms[chunk] >= 0:
        return fx.noted(f"chunk {chunk} was already reported done").to("audio")
    audio = list(run.audio_ms)
    audio[chunk] = audio_ms
    fx = fx.set_run(audio_ms=tuple(audio))
    if audio_ms == 0 and chunk == run.played:
        # Nothing to play for this chunk: it is "heard" as far as order goes.
        fx = _advance_played(fx, chunk)
    if fx.state.phase == PAUSED:
        return fx.to("audio")
    fx = _press_due(fx)
    return _maybe_finish(fx, at) or _guard_playback(fx).to("audio")


def on_playback(fx: Fx, e: PlaybackProgress) -> Next:
    run = fx.state.run
    assert run is not None
    if not run.audio_started:
        fx = fx.set_run(audio_started=True)
    if not e.finished and e.chunk < run.played:
        # The caller's client never played this chunk's end (it dropped its
        # buffer at a pause): it was reported finished too soon. Not heard.
        fx = fx.noted(f"chunk {e.chunk} not heard whole after all").set_run(played=e.chunk)
        run = fx.state.run
        assert run is not None
    if not e.finished and e.chunk != run.playing:
        fx = fx.set_run(playing=e.chunk, playing_since=e.at - e.played_ms / 1000)
    if e.finished and e.chunk >= run.played:
        fx = _advance_played(fx, e.chunk + 1)
    if fx.state.phase == PAUSED:
        return fx.to("heard")  # the run finishes after the hold, if at all
    fx = _press_due(fx)
    return _maybe_finish(fx, e.at) or _floor(_guard_playback(fx))


def _advance_played(fx: Fx, upto: int) -> Fx:
    """Chunks are heard in order; a chunk TTS produced no audio for (error)
    is passed over, and kept out of history."""
    run = fx.state.run
    assert run is not None
    played = max(run.played, min(upto, len(run.chunks)))
    while played < len(run.chunks) and run.audio_ms[played] == 0:
        played += 1
    return fx.set_run(played=played)


def _complete(run: Run | None) -> bool:
    """Nothing more will be said: the LLM is done, no tool is pending, and
    every chunk went to TTS."""
    return (
        run is not None
        and run.confirmed
        and not (run.llm_active or run.waiting or run.continue_due or run.pending)
        and run.sent == len(run.chunks)
        and bool(run.scripted or run.step_text)
    )


def _maybe_finish(fx: Fx, at: float) -> Next | None:
    """The run is done once it is complete and the caller heard all of it;
    None while it is not. (Never called during a hold.) Outcomes: RUN_END."""
    run = fx.state.run
    if not _complete(run) or run.played < len(run.chunks):  # type: ignore[union-attr]
        return None
    fx = _commit_run(fx, interrupted=False)
    fx = _cancel_timer(fx, "playback", "tts_first_audio")
    if run.end_after:  # type: ignore[union-attr]
        return _end(fx, run.end_after, tell_gateway=True, handoff=run.handoff).to("goodbye heard")  # type: ignore[union-attr]
    return _turn(fx, at).after("heard")


def _guard_playback(fx: Fx) -> Fx:
    """A complete run whose audio is all synthesized but not yet heard: if
    playback is never reported, do not stay "speaking" in silence forever."""
    run = fx.state.run
    if not _complete(run) or not run.audio_ms or any(ms < 0 for ms in run.audio_ms):  # type: ignore[union-attr]
        return fx
    remaining = sum(run.audio_ms[run.played :]) / 1000.0  # type: ignore[union-attr]
    return _start_timer(fx, "playback", remaining + fx.state.policy.playback_grace)


def on_playback_timer(fx: Fx, e: TimerFired) -> Next:
    fx = _cancel_run(fx.noted("playback never confirmed; run closed with what was heard"))
    return _start_timer(fx, "reprompt", fx.state.policy.reprompt_after).to("closed unheard")


# ---------------------------------------------------------------------------
# Interruptions


def on_hold_timer(fx: Fx, e: TimerFired) -> Next:
    s = fx.state
    reason = f"{s.policy.hold_max:g} s of sound without words: talk over it" if s.user_speaking else f"no words in {s.policy.hold_max:g} s: resume"
    fx = fx.judged(Judgement(kind="interruption", verdict="resume", reason=reason, heard="sound"))
    return _resume(fx, e.at).after("no words: resume")


def on_onset_timer(fx: Fx, e: TimerFired) -> Next:
    reason = f"no speech followed the voice onset in {fx.state.policy.onset_hold:g} s"
    fx = fx.judged(Judgement(kind="interruption", verdict="resume", reason=reason, heard="sound", wait=fx.state.policy.onset_hold))
    return _resume(fx, e.at).after("no words: resume")


def on_resume_timer(fx: Fx, e: TimerFired) -> Next:
    fx = fx.judged(Judgement(kind="interruption", verdict="resume", reason="the sound stopped and no words came", heard="sound", wait=fx.state.policy.resume_timeout))
    return _resume(fx, e.at).after("no words: resume")


def _resume(fx: Fx, at: float) -> Next:
    """The hold was a false interruption: play on from where it stopped.
    Outcomes: RESUMED (the run's phase, or its end if it was all heard)."""
    run = fx.state.run
    assert run is not None
    fx = _cancel_timer(fx, "hold", "resume", "onset")
    if not run.held:  # a held answer waits for its release timer still
        fx = _issue_deferred(fx.emit(ResumePlayback(session=fx.state.session, run=run.id)))
    if run.continue_due and not run.waiting:
        return _continue_after_tools(fx)  # a tool result came during the hold
    fx = _press_due(fx)
    return _maybe_finish(fx, at) or _floor(_guard_playback(fx))


def _barge_in(fx: Fx, over_words: bool = False) -> Fx:
    """The caller takes the floor: cancel the run in one step. A caller
    continuing its turn (RULES 21) paused inside it: the turn it goes on
    with counts that pause, and the call remembers it. With ``over_words``
    the words of the talk-over's earlier pieces ("Yes," of "Yes, | book
    it.") begin the caller's turn (RULES 32)."""
    s = fx.state
    said = s.over_text if over_words and s.run is not None and s.over_run == s.run.id else ""
    fx = fx.set(user_text=_join(s.user_text, said), over_run=-1, over_first=-1, over_from=0.0, over_end=0.0, over_text="")
    fx = _cancel_run(_cancel_timer(fx, "hold", "resume", "onset"))
    if s.continuing >= 0 and s.continuing == s.utterance:
        fx = fx.set(turn_pauses=max(1, s.turn_pauses), paused_turns=s.paused_turns + 1, continuing=-1)
    return fx


def _cancel_run(fx: Fx) -> Fx:
    """Cancel the active run: LLM, TTS and playback together; commit what was
    heard."""
    run = fx.state.run
    assert run is not None
    sid = fx.state.session
    fx = fx.emit(CancelLLM(session=sid, run=run.id), CancelTTS(session=sid, run=run.id), FlushPlayback(session=sid, run=run.id))
    fx = _cancel_timer(fx, "llm_first_token", "tts_first_audio", "playback", "hold", "resume", "onset", "release")
    return _commit_run(fx, interrupted=True) if run.confirmed else fx.set(run=None)


def _commit_run(fx: Fx, interrupted: bool) -> Fx:
    """Move the run into history, keeping only the assistant text the caller
    heard; tool calls that completed are kept with their results."""
    s = fx.state
    run = s.run
    assert run is not None
    msgs = [Message(role="user", content=run.user_text)] if run.user_text else []
    msgs += _heard_messages(run)
    truncated = interrupted and (run.played < len(run.chunks) or bool(run.pending) or run.llm_active)
    last_with_text = max((i for i, m in enumerate(msgs) if m.role == "assistant" and m.content), default=-1)
    if truncated and last_with_text >= 0:
        msgs[last_with_text] = _replace(msgs[last_with_text], interrupted=True)
    elif truncated and run.played == 0 and run.user_text:
        fx = fx.noted("interrupted before any audio was heard")
    fx = fx.set(history=s.history + tuple(msgs) + tuple(_late_tool_pairs(s)), run=None)
    for rec in s.tools:
        if rec.result is not None and not rec.committed:
            fx = _commit_tool(fx, rec.call_id)
    return fx


def _heard_messages(run: Run) -> list[Message]:
    """Per LLM step: the assistant text that was heard, its completed tool
    calls, and their results."""
    heard = [i for i in range(run.played) if run.audio_ms[i] != 0]
    results = {call_id: (name, result) for call_id, name, result in run.results}
    n_steps = 1 if run.scripted else max(len(run.step_calls), (max(run.chunk_steps) + 1) if run.chunk_steps else 0)
    msgs: list[Message] = []
    for step in range(n_steps):
        text = " ".join(run.chunks[i] for i in heard if run.chunk_steps[i] == step)
        calls = tuple(c for c in (run.step_calls[step] if step < len(run.step_calls) else ()) if c.call_id in results)
        if not text and not calls:
            continue
        msgs.append(Message(role="assistant", content=text, tool_calls=calls))
        for c in calls:
            name, result = results[c.call_id]
            msgs.append(Message(role="tool", tool_call_id=c.call_id, name=name, content=result))
    return msgs


# ---------------------------------------------------------------------------
# The transition table: the protocol. One row per (phases, event type): the
# handler, and where each of its outcomes leads (a path of phases; STAY keeps
# the phase). Interrupted and Cancelled are transient: the run is cancelled
# there and the step lands in the phase after them. docs/state-diagram.md is
# drawn from this table.


class Row(msgspec.Struct, frozen=True):
    phases: tuple[Phase, ...]
    event: type
    handler: Callable[[Fx, AnyEvent], Next]
    outcomes: Outcomes
    when: str = ""  # the label on the diagram's edge
    timer: str = ""  # for TimerFired: the timer's name ("*": any other)


def on_spent_timer(fx: Fx, e: TimerFired) -> Next:
    """A timer whose purpose passed with the phase it was set in."""
    return fx.noted(f"timer {e.name} not applicable in {fx.state.phase}").to("spent")


def _timer(phases: tuple[Phase, ...], name: str, handler: Callable, outcomes: Outcomes, when: str) -> Row:
    return Row(phases, TimerFired, handler, outcomes, when, timer=name)


ENDS: Outcomes = {"ended": (ENDED,)}
ENDS_RUN: Outcomes = {"ended": (CANCELLED, ENDED)}
BARGE_IN_TURN = _compound("words: barge-in", TURN, via=(INTERRUPTED,))
RESUMED: Outcomes = {**FLOOR, **RUN_END}
# An LLM step ended (_step_done).
STEP_DONE: Outcomes = {"step done": STAY, "tools running": (AWAITING_TOOL,), **_compound("results known", FLOOR), **RUN_END}
STEP_DONE_HELD: Outcomes = {"step done": STAY}
GAP: Outcomes = {"output lost: step restarted": STAY}

TRANSITIONS: tuple[Row, ...] = (
    # -- the session
    Row((IDLE,), SessionStarted, on_session_started, {"listen": (LISTENING,), "greet": (GENERATING,)}, "start (greeting?)"),
    Row(USER, SessionEnded, on_session_ended, ENDS, "hang-up"),
    Row(HELD, SessionEnded, on_session_ended, ENDS_RUN, "hang-up"),
    _timer(USER, "max_call", on_max_call_timer, ENDS, "max duration"),
    _timer(HELD, "max_call", on_max_call_timer, ENDS_RUN, "max duration"),
    # -- the caller's turn
    Row(USER, SpeechStarted, on_speech_started, {"caller speaks": (LISTENING,)}, "caller speaks"),
    Row(USER + (PAUSED,), SpeechOnset, on_speech_onset, {"noted": STAY}, "voice onset"),
    Row(USER + FLOOR_PHASES, SpeechOnsetEnded, on_speech_onset_ended, {"noted": STAY}, "voice onset faded"),
    Row(USER, SpeechStopped, on_speech_stopped, {**_compound("stopped", TURN), "preemptive start": (GENERATING,)}, "silence: turn over? (preemptive?)"),
    Row(USER, TranscriptPartial, on_partial, {"partial": STAY}, "partial"),
    Row(USER, TranscriptFinal, on_final, TURN, "final: turn over?"),
    Row(USER, Dtmf, on_dtmf, TURN, "key press"),
    _timer((TRANSCRIBING,), "endpoint", on_endpoint_timer, TURN, "endpoint"),
    _timer(USER, "final", on_final_timer, TURN, "no final: go on without it"),
    _timer(HELD, "final", on_final_timer, {"stop waiting for it": STAY}, "no final: stop waiting for it"),
    _timer((LISTENING,), "reprompt", on_reprompt_timer, {"re-prompt": (GENERATING,), "goodbye": (GENERATING,)}, "silence: re-prompt"),
    Row(USER, ToolResult, on_tool_result, {"result kept": STAY}, "late tool result"),
    Row(USER, DigitsSent, on_digits_sent, {"result kept": STAY}, "keys pressed"),
    # -- the agent has the floor: a sound holds it
    Row(FLOOR_PHASES, SpeechOnset, on_speech_onset, {"hold": (PAUSED,), "noted": STAY}, "voice onset: pause"),
    Row(
        FLOOR_PHASES,
        SpeechStarted,
        on_speech_started,
        {
            "hold": (PAUSED,),
            "background: noted": STAY,
            "preemptive guess dropped": (CANCELLED, LISTENING),
            "caller went on: answer withdrawn": (CANCELLED, LISTENING),
        },
        "sound: hold (nothing heard yet: the turn goes on)",
    ),
    Row(FLOOR_PHASES, SpeechStopped, on_speech_stopped, {"end of an earlier sound": STAY}, "end of an earlier sound"),
    Row(FLOOR_PHASES, TranscriptPartial, on_partial, {"partial": STAY, "words: barge-in": (INTERRUPTED, LISTENING)}, "partial: words barge in"),
    Row(
        FLOOR_PHASES,
        TranscriptFinal,
        on_final,
        {
            "no words": STAY,
            **_compound("late words: barge-in", TURN, via=(INTERRUPTED,)),
            **_compound("preemptive guess confirmed", {**FLOOR, **RUN_END}),
            **_compound("preemptive guess wrong", TURN, via=(CANCELLED,)),
        },
        "final: late words barge in; preemptive guess checked",
    ),
    Row(FLOOR_PHASES, Dtmf, on_dtmf, _compound("key press: barge-in", TURN, via=(INTERRUPTED,)), "key press: barge-in"),
    # -- a hold: barge-in or false interruption
    Row(
        (PAUSED,),
        SpeechStarted,
        on_speech_started,
        {"more sound": STAY, "caller went on: answer withdrawn": (CANCELLED, LISTENING), **_compound("no words: resume", RESUMED)},
        "more sound (a background voice: resume)",
    ),
    Row((PAUSED,), SpeechStopped, on_speech_stopped, {"wait for words": STAY, **_compound("no words: resume", RESUMED)}, "sound ended: wait for words (a partial says none: resume)"),
    Row((PAUSED,), TranscriptPartial, on_partial, {"partial": STAY, "words: barge-in": (INTERRUPTED, LISTENING)}, "words: barge-in"),
    Row(
        (PAUSED,),
        TranscriptFinal,
        on_final,
        {"no words, caller still making a sound": STAY, **BARGE_IN_TURN, **_compound("no words: resume", RESUMED)},
        "words: barge-in; none: resume",
    ),
    Row((PAUSED,), Dtmf, on_dtmf, _compound("key press: barge-in", TURN, via=(INTERRUPTED,)), "key press: barge-in"),
    _timer((PAUSED,), "hold", on_hold_timer, _compound("no words: resume", RESUMED), "long wordless sound: talk over it"),
    _timer((PAUSED,), "resume", on_resume_timer, _compound("no words: resume", RESUMED), "no words: resume"),
    _timer((PAUSED,), "onset", on_onset_timer, _compound("no words: resume", RESUMED), "onset without speech: resume"),
    Row((PAUSED,), SpeechOnsetEnded, on_speech_onset_ended, {"noted": STAY, **_compound("no words: resume", RESUMED)}, "onset faded: resume"),
    # -- the run: LLM, tools, TTS, playback
    Row(STREAMING, LLMToken, on_llm_token, {"token": STAY, **GAP, **STEP_DONE}, "token (a restart that diverges ends the step)"),
    Row((PAUSED,), LLMToken, on_llm_token, {"token": STAY, **GAP, **STEP_DONE_HELD}, "token"),
    Row(STREAMING + (PAUSED,), LLMToolCall, on_llm_tool_call, {"tool call": STAY, **GAP}, "tool call"),
    Row(STREAMING, LLMDone, on_llm_done, {**GAP, **STEP_DONE}, "LLM done"),
    Row((PAUSED,), LLMDone, on_llm_done, {**GAP, **STEP_DONE_HELD}, "LLM done"),
    Row(HELD, LLMError, on_llm_error, {"ignored": STAY, **GAP, **FALLBACK}, "LLM error: fallback"),
    Row(FLOOR_PHASES, ToolResult, on_tool_result, {"result kept": STAY, **_compound("results in", FLOOR)}, "tool result: continue"),
    Row((PAUSED,), ToolResult, on_tool_result, {"result kept": STAY}, "tool result"),
    Row(FLOOR_PHASES, DigitsSent, on_digits_sent, {"result kept": STAY, **_compound("results in", FLOOR)}, "keys pressed: continue"),
    Row((PAUSED,), DigitsSent, on_digits_sent, {"result kept": STAY}, "keys pressed"),
    Row(HELD, TTSChunkStarted, on_tts_started, {"audio": STAY}, "first audio"),
    Row(HELD, TTSChunkDone, on_tts_done, {"audio": STAY, **RUN_END}, "chunk synthesized"),
    Row(HELD, TTSError, on_tts_error, {"audio": STAY, **RUN_END}, "chunk failed"),
    Row(FLOOR_PHASES, PlaybackProgress, on_playback, {**FLOOR, **RUN_END}, "heard / all heard"),
    Row((PAUSED,), PlaybackProgress, on_playback, {"heard": STAY}, "heard"),
    _timer(HELD, "llm_first_token", on_llm_timeout, FALLBACK, "LLM timeout: fallback"),
    _timer(HELD, "tts_first_audio", on_tts_timeout, FALLBACK, "TTS timeout: fallback"),
    _timer(HELD, "playback", on_playback_timer, {"closed unheard": (CANCELLED, LISTENING)}, "playback never confirmed"),
    _timer(HELD, "release", on_release_timer, {"released": STAY}, "silence held: the answer may be heard"),
    _timer(LIVE, "*", on_spent_timer, {"spent": STAY}, "spent timer"),
    # -- the provider's view of the call (outbound: status, answering machine)
    Row((IDLE, ENDED), CallStatus, on_call_status, {"noted": STAY}, "call status"),
    Row(USER, CallStatus, on_call_status, {"noted": STAY, "machine: leave the message": (GENERATING,), "machine: hang up": (ENDED,)}, "call status: machine?"),
    Row(HELD, CallStatus, on_call_status, {"noted": STAY, "machine: leave the message": (CANCELLED, GENERATING), "machine: hang up": (CANCELLED, ENDED)}, "call status: machine?"),
    Row((IDLE, ENDED), ToneHeard, on_tone, {"noted": STAY}, "tone"),
    Row(USER, ToneHeard, on_tone, {"noted": STAY, "machine: leave the message": (GENERATING,), "machine: hang up": (ENDED,)}, "beep after a monologue: machine?"),
    Row(HELD, ToneHeard, on_tone, {"noted": STAY, "machine: leave the message": (CANCELLED, GENERATING), "machine: hang up": (CANCELLED, ENDED)}, "beep after a monologue: machine?"),
    # -- providers: failures (and who took over) and usage, recorded only
    Row(PHASES, ProviderFailed, on_provider_failed, {"noted": STAY}, "provider failed: noted"),
    Row(PHASES, Usage, on_usage, {"noted": STAY}, "provider usage: noted"),
    # -- ownership: the replica running this session's streams changed
    Row(LIVE, Takeover, on_takeover, {"work re-issued": STAY}, "new owner: restart the LLM step, re-issue tool calls"),
)


def _index(rows: tuple[Row, ...]) -> dict[tuple, Row]:
    """(phase, event type) or (phase, TimerFired, timer name) -> row; two
    rows for one key are a mistake in the table."""
    index: dict[tuple, Row] = {}
    for row in rows:
        for phase in row.phases:
            key = (phase, row.event, row.timer) if row.timer else (phase, row.event)
            assert key not in index, f"two rows for {key}"
            index[key] = row
    return index


_ROWS = _index(TRANSITIONS)


def row_for(phase: Phase, event: AnyEvent) -> Row | None:
    """The table row that handles ``event`` in ``phase``."""
    if isinstance(event, TimerFired):
        return _ROWS.get((phase, TimerFired, event.name)) or _ROWS.get((phase, TimerFired, "*"))
    return _ROWS.get((phase, type(event)))


def initial_state() -> SessionState:
    return SessionState()


def encode_state(state: SessionState) -> bytes:
    return msgspec.msgpack.encode(state)


_state_decoder = msgspec.msgpack.Decoder(SessionState)


def decode_state(data: bytes) -> SessionState:
    return _state_decoder.decode(data)
