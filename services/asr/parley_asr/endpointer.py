"""Endpointing: turns a stream of VAD speech probabilities into utterances.

Theory of operation. The VAD scores every 32 ms window of a session's audio
with a speech probability. This module decides, one window at a time, when an
utterance starts and when it stops. It does no I/O and reads no clock: time is
the window index (window ``i`` covers samples ``[i*512, (i+1)*512)`` of the
stream), so the same probabilities always give the same decisions, whatever
the chunking of the audio or the load of the machine. The worker stamps the
decisions with wall-clock time when it publishes them.

Two phases, with hysteresis between a speech threshold and a lower silence
threshold (as Silero's own ``get_speech_timestamps`` does):

    IDLE --(onset_windows windows >= threshold)--> IDLE        emits Onset
    IDLE --(an Onset's count reset, then onset_quiet_windows
            without a new count)------------------> IDLE        emits OnsetLost
    IDLE --(start_windows windows >= threshold)--> SPEECH      emits Start
    IDLE --(voiced_windows in a row >= silence threshold,
            onset_windows of them >= threshold)--> SPEECH      emits Start
    IDLE --(a run with its onset that lasted faded_windows
            falls under the silence threshold)---> SPEECH      emits Start
                                                   (its silence began there)
    SPEECH --(silence_windows of silence)--------> IDLE        emits Stop
    SPEECH --(max_windows since it began)--------> IDLE        emits Stop (forced)

* In IDLE a window >= threshold counts towards the start, a window below the
  silence threshold resets the count, and one in between holds it. A count
  that reaches ``onset_windows`` (fewer than ``start_windows``) emits an
  Onset first: the earliest, least certain sign of a voice, for whoever
  would rather pause at once than wait for the start (the agent's playback).
  At most one Onset per count; a count that resets may emit another. A
  count that had its Onset and resets before the start, and is followed by
  ``onset_quiet_windows`` windows with no new count, emits OnsetLost: the
  sound faded (a click, a breath), so whoever paused on the Onset can go on,
  on evidence, instead of waiting out a timer that a loaded ASR can outlast.
  The quiet is asked for because a word's first syllable can fade too: on
  the phone's μ-law, "Sorry, stop." gave an Onset for "Sor-" that reset
  within 100 ms, and "stop" came 300 ms later. While an Onset waits for that
  quiet, a new count that reaches ``onset_windows`` emits no second Onset
  (the first still stands). Every Onset is followed by exactly one Start or
  OnsetLost.
* A short word that Silero only half believes (a firm "Wait!" through the
  phone's μ-law: 0.64 0.347 0.59 0.48 0.41 0.44 0.42) never has
  ``start_windows`` windows above the threshold. With ``voiced_windows``, a
  run with ``onset_windows`` above the threshold that has lasted that many
  windows without falling under the silence threshold starts an utterance
  too (one window just under it, down to ``dip_floor``, does not end such a
  run: the "Wait!" above); Whisper then decides whether it held words. A
  laugh's bursts (0.62 0.75 0.64 0.37 0.20 ...) still end at each gap.
* A short word that fades before any of those (the phone's "Wait!" after
  the caller's first sentence: 0.54 0.45 0.42 0.52 0.49 0.26, Silero's
  state warm) would only give an Onset and an OnsetLost, and the word
  would be lost. With ``faded_windows``, a run that had its onset
  (``onset_windows`` above the threshold) and lasted that many windows
  starts an utterance when it falls under the silence threshold, with its
  silence already begun at that window: the usual ``silence_windows`` then
  stop it (or the voice goes on and the utterance with it), and Whisper's
  words decide what it was (a cough is transcribed as nothing).
* In SPEECH silence begins at the first window below the silence threshold;
  from then on every window counts as silence until one >= threshold ends it.
* Every Start is followed by exactly one Stop: either from the rules above or
  from ``finish`` when the stream ends mid-utterance.
* ``start_threshold`` / ``start_neg_threshold`` (0: the same as in SPEECH)
  replace the two thresholds in IDLE only: what counts towards an onset or
  a start, and what resets the count. A phone line's μ-law makes Silero
  half believe short words (the "Wait!" above); a lower threshold there
  lets them begin an utterance (Whisper's words then decide), while the
  utterance's end is still judged on the usual thresholds, so a turn ends
  as it did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, Union

WINDOW_SAMPLES = 512
SAMPLE_RATE = 16000
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE  # 32 ms


def windows_for(ms: float) -> int:
    """The number of whole windows that cover at least ``ms`` milliseconds."""
    return max(1, math.ceil(ms / WINDOW_MS - 1e-9))


@dataclass(frozen=True)
class Config:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    start_windows: int = 5  # 160 ms of speech before an utterance starts
    silence_windows: int = 16  # 512 ms of silence ends it
    max_windows: int = 782  # 25 s: Whisper sees at most 30 s at once
    onset_windows: int = 0  # 0: no Onset; else this many windows >= threshold emit one
    voiced_windows: int = 0  # 0: off; else a run with its onset starts after this many windows >= neg_threshold
    dip_floor: float = 0.3  # with voiced_windows: one window down to this does not end a run
    onset_quiet_windows: int = 0  # an Onset whose count reset is lost after this many windows without a new count (0: at once)
    faded_windows: int = 0  # 0: off; else a run with its onset that lasted this many windows starts an utterance as it fades
    # IDLE only (0: threshold / neg_threshold): what counts towards an onset or a start, and what resets the count.
    start_threshold: float = 0.0
    start_neg_threshold: float = 0.0

    @property
    def idle_thresholds(self) -> tuple[float, float]:
        """(speech, silence) thresholds while no utterance is in progress. The
        start's silence threshold only ever lowers the usual one: a window the
        usual threshold calls voiced (>= neg_threshold) never fades a start,
        or a stop would end on a voiced window (a phone threshold with a
        deployment's low neg_threshold: 0.25 against 0.2)."""
        return self.start_threshold or self.threshold, min(self.start_neg_threshold or self.neg_threshold, self.neg_threshold)

    @classmethod
    def from_ms(
        cls,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        start_ms: float = 160,
        silence_ms: float = 500,
        max_ms: float = 25_000,
        onset_ms: float = 0,
        voiced_ms: float = 0,
        onset_quiet_ms: float = 0,
        faded_ms: float = 0,
        start_threshold: float = 0,
    ) -> "Config":
        return cls(
            start_threshold=start_threshold,
            start_neg_threshold=max(start_threshold - 0.15, 0.01) if start_threshold else 0.0,
            threshold=threshold,
            neg_threshold=max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold,
            start_windows=windows_for(start_ms),
            silence_windows=windows_for(silence_ms),
            max_windows=windows_for(max_ms),
            onset_windows=windows_for(onset_ms) if onset_ms > 0 else 0,
            voiced_windows=windows_for(voiced_ms) if voiced_ms > 0 and onset_ms > 0 else 0,
            onset_quiet_windows=windows_for(onset_quiet_ms) if onset_quiet_ms > 0 else 0,
            faded_windows=windows_for(faded_ms) if faded_ms > 0 and onset_ms > 0 else 0,
        )


@dataclass(frozen=True)
class Onset:
    utterance: int  # the id the utterance will have if it starts
    begin: int  # first window of the run of speech so far
    window: int  # the window whose score made the decision


@dataclass(frozen=True)
class OnsetLost:
    utterance: int  # as in the Onset it ends
    begin: int  # as in that Onset
    window: int  # the window below the silence threshold that reset the count


@dataclass(frozen=True)
class Start:
    utterance: int
    begin: int  # first window of the speech that triggered the start
    window: int  # the window whose score made the decision


@dataclass(frozen=True)
class Stop:
    utterance: int
    begin: int  # as in the matching Start
    end: int  # one past the last speech window (where silence began)
    window: int  # the window whose score made the decision
    reason: Literal["silence", "max", "finish"]

    @property
    def speech_ms(self) -> int:
        return int((self.end - self.begin) * WINDOW_MS)


Decision = Union[Onset, OnsetLost, Start, Stop]


@dataclass(frozen=True)
class State:
    index: int = 0  # windows fed so far
    speaking: bool = False
    utterance: int = 0  # id of the current utterance, or of the next one when idle
    run: int = 0  # IDLE: windows >= threshold counted towards a start
    run_begin: int = -1  # IDLE: first window of that run; SPEECH: begin of the utterance
    silence_begin: int = -1  # SPEECH: first window of the current silence, or -1
    onset: bool = False  # IDLE: an Onset was emitted and neither a Start nor an OnsetLost has answered it yet
    onset_begin: int = -1  # IDLE: that Onset's begin
    lost_since: int = -1  # IDLE: the window where that Onset's count reset (its quiet counts from there), or -1
    dipped: bool = False  # IDLE: the current run has had its one window under the silence threshold

    @property
    def in_silence(self) -> bool:
        """Speaking, but silence has begun (the utterance may be about to stop)."""
        return self.speaking and self.silence_begin >= 0

    @property
    def earliest_needed(self) -> int:
        """The first window whose audio a later Start or Stop may still refer to."""
        return self.run_begin if self.run_begin >= 0 else self.index


_STATE_FIELDS = frozenset(f.name for f in fields(State))


def replace(state: State, **changes) -> State:
    """``dataclasses.replace`` for ``State`` (no ``__post_init__``, every field
    in ``__init__``), in a fraction of its time: ``step`` makes one per VAD
    window of every session (3 us -> 0.7 us; 3,000 windows a second at 100
    calls)."""
    if not changes.keys() <= _STATE_FIELDS:
        raise TypeError(f"State has no field {sorted(changes.keys() - _STATE_FIELDS)}")
    new = object.__new__(State)
    d = new.__dict__
    d.update(state.__dict__)
    d.update(changes)
    return new


def step(state: State, prob: float, cfg: Config) -> tuple[State, Decision | None]:
    """Feed the probability of window ``state.index``."""
    i = state.index
    nxt = i + 1
    if not state.speaking:
        threshold, neg_threshold = cfg.idle_thresholds
        if prob >= threshold:
            begin = i if state.run == 0 else state.run_begin
            run = state.run + 1
            if run >= cfg.start_windows or _voiced(state, begin, run, i, cfg):
                start = Start(utterance=state.utterance, begin=begin, window=i)
                return State(index=nxt, speaking=True, utterance=state.utterance, run_begin=begin), start
            if 0 < cfg.onset_windows <= run and not state.onset:
                onset = Onset(utterance=state.utterance, begin=begin, window=i)
                return replace(state, index=nxt, run=run, run_begin=begin, onset=True, onset_begin=begin, lost_since=-1), onset
            return replace(state, index=nxt, run=run, run_begin=begin, lost_since=-1), None
        if prob < neg_threshold and (state.dipped or not state.run or not cfg.voiced_windows or prob < cfg.dip_floor):
            if _faded(state, i, cfg):
                start = Start(utterance=state.utterance, begin=state.run_begin, window=i)
                return State(index=nxt, speaking=True, utterance=state.utterance, run_begin=state.run_begin, silence_begin=i), start
            lost_since = i if state.run else state.lost_since  # a count reset here: an Onset's quiet starts
            return _maybe_lost(replace(state, index=nxt, run=0, run_begin=-1, dipped=False, lost_since=lost_since), i, cfg)
        if prob < neg_threshold:
            return replace(state, index=nxt, dipped=True), None
        if state.run and _voiced(state, state.run_begin, state.run, i, cfg):
            start = Start(utterance=state.utterance, begin=state.run_begin, window=i)
            return State(index=nxt, speaking=True, utterance=state.utterance, run_begin=state.run_begin), start
        return _maybe_lost(replace(state, index=nxt), i, cfg) if not state.run else (replace(state, index=nxt), None)

    silence_begin = state.silence_begin
    if prob >= cfg.threshold:
        silence_begin = -1
    elif silence_begin < 0 and prob < cfg.neg_threshold:
        silence_begin = i
    if silence_begin >= 0 and nxt - silence_begin >= cfg.silence_windows:
        return _stopped(state, nxt, end=silence_begin, window=i, reason="silence")
    if nxt - state.run_begin >= cfg.max_windows:
        end = silence_begin if silence_begin >= 0 else nxt
        return _stopped(state, nxt, end=end, window=i, reason="max")
    return replace(state, index=nxt, silence_begin=silence_begin), None


def _maybe_lost(state: State, i: int, cfg: Config) -> tuple[State, OnsetLost | None]:
    """IDLE with no count, after window ``i``: the pending Onset is lost once
    its count has been quiet ``onset_quiet_windows`` windows (at once if 0)."""
    if not state.onset or state.lost_since < 0 or i + 1 - state.lost_since < cfg.onset_quiet_windows:
        return state, None
    lost = OnsetLost(utterance=state.utterance, begin=state.onset_begin, window=i)
    return replace(state, onset=False, onset_begin=-1, lost_since=-1), lost


def _voiced(state: State, begin: int, run: int, i: int, cfg: Config) -> bool:
    """A run with its onset (``onset_windows`` above the threshold) that has
    lasted ``voiced_windows`` windows (every window since ``begin``: a fall
    under the silence threshold, beyond the one dip allowed, ends the run)."""
    return 0 < cfg.voiced_windows <= i - begin + 1 and run >= cfg.onset_windows > 0


def _faded(state: State, i: int, cfg: Config) -> bool:
    """A run with its onset that lasted ``faded_windows`` windows (up to
    window ``i``, which ends it)."""
    return 0 < cfg.faded_windows <= i - state.run_begin and state.run >= cfg.onset_windows > 0


def finish(state: State) -> tuple[State, Stop | None]:
    """The stream ended: close the utterance in progress, if any."""
    if not state.speaking:
        return replace(state, run=0, run_begin=-1, onset=False, onset_begin=-1, lost_since=-1, dipped=False), None
    end = state.silence_begin if state.silence_begin >= 0 else state.index
    return _stopped(state, state.index, end=end, window=state.index - 1, reason="finish")


def _stopped(state: State, nxt: int, *, end: int, window: int, reason) -> tuple[State, Stop]:
    stop = Stop(utterance=state.utterance, begin=state.run_begin, end=end, window=window, reason=reason)
    return State(index=nxt, speaking=False, utterance=state.utterance + 1), stop


def run(probs, cfg: Config, state: State | None = None) -> tuple[State, list[Decision]]:
    """Feed many probabilities; the decisions in order."""
    state = state or State()
    out: list[Decision] = []
    for p in probs:
        state, d = step(state, float(p), cfg)
        if d is not None:
            out.append(d)
    return state, out


def speculation_due(state: State, after_windows: int) -> int | None:
    """The silence that may be about to end the utterance, once it has lasted
    ``after_windows``: its first window (the Stop's ``end`` if the silence
    goes on), else None. The final can be transcribed from here on: if the
    Stop comes with this ``end``, that transcript is the final's."""
    if after_windows <= 0 or not state.in_silence or state.index - state.silence_begin < after_windows:
        return None
    return state.silence_begin


def partial_due(state: State, last_partial: int, every_windows: int) -> bool:
    """Whether to transcribe the utterance so far.

    Only while speech goes on: once silence has begun the final may be a few
    hundred ms away, and a partial started now would hold the CPU it needs.
    ``last_partial`` is the window index of the previous request (or the
    utterance's begin).
    """
    return state.speaking and not state.in_silence and state.index - last_partial >= every_windows
