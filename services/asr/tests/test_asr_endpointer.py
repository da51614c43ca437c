"""The endpointer: a table of examples, then properties over arbitrary probability streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_asr import endpointer as ep
import dataclasses
from dataclasses import replace

from parley_asr.endpointer import Config, Onset, OnsetLost, Start, State, Stop, run, speculation_due

CFG = Config(threshold=0.5, neg_threshold=0.35, start_windows=5, silence_windows=16, max_windows=782)
S, Q, A = 0.9, 0.05, 0.4  # speech, quiet, ambiguous (between the two thresholds)


def decisions(probs, cfg=CFG):
    return ep.run(probs, cfg)[1]


# ---------------------------------------------------------------- examples

EXAMPLES = [
    ("silence only", [Q] * 100, []),
    ("too short to start", [Q] * 3 + [S] * 4 + [Q] * 30, []),
    ("starts on the 5th speech window", [Q] * 3 + [S] * 5, [Start(0, begin=3, window=7)]),
    (
        "ambiguous windows hold the start count",
        [S, S, A, S, S, S],
        [Start(0, begin=0, window=5)],
    ),
    ("a quiet window resets the start count", [S, S, Q, S, S, S, S], []),
    (
        "stops after 16 windows of silence",
        [S] * 20 + [Q] * 16,
        [Start(0, begin=0, window=4), Stop(0, begin=0, end=20, window=35, reason="silence")],
    ),
    ("15 windows of silence are not enough", [S] * 20 + [Q] * 15 + [S] * 3, [Start(0, begin=0, window=4)]),
    (
        "speech in the silence restarts the count",
        [S] * 20 + [Q] * 10 + [S] + [Q] * 16,
        [Start(0, begin=0, window=4), Stop(0, begin=0, end=31, window=46, reason="silence")],
    ),
    ("ambiguous windows alone do not begin silence", [S] * 10 + [A] * 40, [Start(0, begin=0, window=4)]),
    (
        "once silence began, ambiguous windows count as silence",
        [S] * 10 + [Q] + [A] * 15,
        [Start(0, begin=0, window=4), Stop(0, begin=0, end=10, window=25, reason="silence")],
    ),
    (
        "two utterances count from 0",
        [S] * 10 + [Q] * 16 + [S] * 6 + [Q] * 16,
        [
            Start(0, begin=0, window=4),
            Stop(0, begin=0, end=10, window=25, reason="silence"),
            Start(1, begin=26, window=30),
            Stop(1, begin=26, end=32, window=47, reason="silence"),
        ],
    ),
]


@pytest.mark.parametrize("name,probs,expected", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_examples(name, probs, expected):
    assert decisions(probs) == expected


def test_max_length_forces_a_stop_and_speech_starts_again():
    cfg = Config(start_windows=2, silence_windows=3, max_windows=10)
    out = decisions([S] * 14, cfg)
    assert out == [
        Start(0, begin=0, window=1),
        Stop(0, begin=0, end=10, window=9, reason="max"),
        Start(1, begin=10, window=11),
    ]


def test_speech_ms_counts_speech_not_the_trailing_silence():
    out = decisions([S] * 20 + [Q] * 16)
    assert out[-1].speech_ms == 640


def test_finish_closes_an_utterance_in_progress():
    state, out = ep.run([S] * 8 + [Q] * 3, CFG)
    state, stop = ep.finish(state)
    assert stop == Stop(0, begin=0, end=8, window=10, reason="finish")
    assert not state.speaking and state.utterance == 1
    assert ep.finish(state)[1] is None


@pytest.mark.parametrize("ms,windows", [(500, 16), (160, 5), (100, 4), (96, 3), (250, 8), (1, 1)])
def test_windows_for(ms, windows):
    assert ep.windows_for(ms) == windows


def test_config_from_ms_defaults_neg_threshold_below_threshold():
    cfg = Config.from_ms(threshold=0.6, silence_ms=300)
    assert cfg.neg_threshold == pytest.approx(0.45) and cfg.silence_windows == 10


def test_partial_due_only_while_speech_goes_on():
    state, _ = ep.run([S] * 30, CFG)
    assert ep.partial_due(state, last_partial=0, every_windows=22)
    assert not ep.partial_due(state, last_partial=10, every_windows=22)
    in_silence, _ = ep.run([Q], CFG, state)
    assert in_silence.in_silence and not ep.partial_due(in_silence, 0, 22)
    assert not ep.partial_due(State(index=100), 0, 22)


def test_earliest_needed_covers_a_run_that_may_become_an_utterance():
    state, _ = ep.run([Q] * 10 + [S] * 3, CFG)
    assert state.earliest_needed == 10
    state, _ = ep.run([Q] * 10, CFG)
    assert state.earliest_needed == 10


# ---------------------------------------------------------------- properties

levels = st.sampled_from([0.0, 0.05, 0.2, 0.34, 0.35, 0.4, 0.49, 0.5, 0.6, 0.9, 1.0]) | st.floats(0, 1)
# Runs of one level, as a VAD produces them, so that utterances actually happen.
streams = st.lists(st.tuples(levels, st.integers(1, 30)), max_size=40).map(lambda runs: [p for p, n in runs for _ in range(n)])
CONFIG_FIELDS = dict(
    threshold=st.just(0.5),
    neg_threshold=st.sampled_from([0.35, 0.5, 0.2]),
    start_windows=st.integers(1, 8),
    silence_windows=st.integers(1, 20),
    max_windows=st.integers(10, 100),
)
configs = st.builds(Config, **CONFIG_FIELDS)


@settings(max_examples=400, deadline=None)
@given(streams, configs)
def test_every_start_gets_exactly_one_stop_in_order(probs, cfg):
    state, out = ep.run(probs, cfg)
    state, last = ep.finish(state)
    if last is not None:
        out.append(last)
    # Start, Stop, Start, Stop ... with utterance ids 0, 1, 2 ...
    assert [type(d) for d in out] == [Start, Stop] * (len(out) // 2)
    for n, (start, stop) in enumerate(zip(out[::2], out[1::2])):
        assert start.utterance == stop.utterance == n
        assert stop.begin == start.begin <= start.window < stop.window or stop.reason == "finish"
        assert start.begin <= stop.end and stop.speech_ms >= 0
    assert not state.speaking


@settings(max_examples=400, deadline=None)
@given(streams, configs)
def test_decisions_are_justified_by_the_probabilities(probs, cfg):
    _, out = ep.run(probs, cfg)
    start = None
    for d in out:
        if isinstance(d, Start):
            start = d
            span = probs[d.begin : d.window + 1]
            assert sum(p >= cfg.threshold for p in span) >= cfg.start_windows
            assert all(p >= cfg.neg_threshold for p in span)
            assert probs[d.window] >= cfg.threshold
        elif d.reason == "silence":
            assert probs[d.end] < cfg.neg_threshold
            assert all(p < cfg.threshold for p in probs[d.end : d.window + 1])
            assert d.window + 1 - d.end == cfg.silence_windows
        else:
            # Forced at the first window after the start that makes the utterance max_windows long.
            assert d.reason == "max"
            assert d.window == max(start.window + 1, d.begin + cfg.max_windows - 1)


@settings(max_examples=200, deadline=None)
@given(streams, configs, st.integers(0, 400))
def test_feeding_in_pieces_equals_feeding_at_once(probs, cfg, cut):
    whole_state, whole = ep.run(probs, cfg)
    mid, first = ep.run(probs[:cut], cfg)
    end, second = ep.run(probs[cut:], cfg, mid)
    assert first + second == whole and end == whole_state


def test_speculation_is_due_once_silence_has_lasted_and_names_the_stop_it_bets_on():
    cfg = Config(start_windows=2, silence_windows=7)
    state, _ = run([0.9] * 5 + [0.1] * 2, cfg)
    assert speculation_due(state, 3) is None  # two windows of silence: not yet
    state, _ = run([0.1], cfg, state)
    due = speculation_due(state, 3)
    assert due == 5
    state, decisions = run([0.1] * 4, cfg, state)
    assert decisions[-1].end == due  # the stop came with that silence: the bet holds
    state, _ = run([0.9] * 3 + [0.1] * 3 + [0.9], cfg, state)
    assert speculation_due(state, 3) is None  # speech again: no silence to bet on
    assert speculation_due(run([0.9] * 3 + [0.1] * 3, cfg)[0], 0) is None  # 0 = off


# ---------------------------------------------------------------- onsets (pause-only, before the start)

ONSET = replace(CFG, onset_windows=2)


def test_an_onset_comes_two_windows_in_then_the_start():
    assert decisions([Q] * 3 + [S] * 5, ONSET) == [Onset(0, begin=3, window=4), Start(0, begin=3, window=7)]


def test_an_onset_that_fades_emits_no_start_and_a_new_run_a_new_onset():
    out = decisions([S, S, S, Q, S, S, Q] + [Q] * 20, ONSET)
    assert out == [Onset(0, begin=0, window=1), OnsetLost(0, begin=0, window=3), Onset(0, begin=4, window=5), OnsetLost(0, begin=4, window=6)]


QUIET = replace(ONSET, onset_quiet_windows=10)


def test_a_faded_onset_is_lost_only_after_the_quiet_and_a_word_that_goes_on_keeps_it():
    # "Sor-" fades, "stop" comes 6 windows later: one Onset, then the Start, nothing lost in between.
    assert decisions([S, S, S, Q, Q, Q, Q, Q, Q, S, S, S, S, S], QUIET) == [Onset(0, begin=0, window=1), Start(0, begin=9, window=13)]
    # A click: lost after 10 quiet windows (counted from the reset, ambiguous ones included).
    assert decisions([S, S, S, Q, A, Q] + [Q] * 20, QUIET) == [Onset(0, begin=0, window=1), OnsetLost(0, begin=0, window=12)]
    # Two clicks 5 windows apart: one Onset, lost 10 windows after the second fades.
    out = decisions([S, S, Q, Q, Q, Q, Q, S, S, Q] + [Q] * 20, QUIET)
    assert out == [Onset(0, begin=0, window=1), OnsetLost(0, begin=0, window=18)]


def test_ambiguous_windows_hold_the_count_without_a_second_onset():
    assert decisions([S, S, A, A, S, S, S], ONSET) == [Onset(0, begin=0, window=1), Start(0, begin=0, window=6)]


def test_from_ms_onset():
    assert Config.from_ms(onset_ms=64).onset_windows == 2
    assert Config.from_ms(onset_ms=0).onset_windows == 0
    # An onset as late as the start adds nothing: the start comes first.
    assert decisions([S] * 8, replace(CFG, onset_windows=5)) == [Start(0, begin=0, window=4)]


onset_configs = st.builds(Config, **CONFIG_FIELDS, onset_windows=st.integers(0, 8), onset_quiet_windows=st.sampled_from([0, 1, 3, 10]))


@settings(max_examples=400, deadline=None)
@given(streams, onset_configs)
def test_onsets_change_no_other_decision(probs, cfg):
    """Onsets are extra: without them the decisions are those of the same
    endpointer with onsets off."""
    _, out = ep.run(probs, cfg)
    _, plain = ep.run(probs, replace(cfg, onset_windows=0))
    assert [d for d in out if not isinstance(d, (Onset, OnsetLost))] == plain


@settings(max_examples=400, deadline=None)
@given(streams, onset_configs)
def test_every_onset_ends_in_exactly_one_start_or_onset_lost(probs, cfg):
    """The pause an Onset asks for always gets its answer from the audio:
    the start of the utterance, or the sound fading (a window below the
    silence threshold) — unless the stream ends first."""
    _, out = ep.run(probs, cfg)
    open_onset = None
    for d in out:
        if isinstance(d, Onset):
            assert open_onset is None
            open_onset = d
        elif isinstance(d, OnsetLost):
            assert open_onset is not None and (open_onset.utterance, open_onset.begin) == (d.utterance, d.begin)
            # the quiet: the last onset_quiet_windows windows (at least the reset's) hold no count
            quiet = probs[max(open_onset.window + 1, d.window + 1 - max(cfg.onset_quiet_windows, 1)) : d.window + 1]
            assert quiet and all(p < cfg.threshold for p in quiet) and min(quiet) < cfg.neg_threshold
            open_onset = None
        elif isinstance(d, Start):
            open_onset = None
    # (an Onset still open at the end: the stream ended while its count went on)


@settings(max_examples=400, deadline=None)
@given(streams, onset_configs)
def test_every_start_after_a_long_enough_count_had_its_onset(probs, cfg):
    _, out = ep.run(probs, cfg)
    last_onset = None
    for d in out:
        if isinstance(d, Onset):
            assert 0 < cfg.onset_windows < cfg.start_windows
            span = probs[d.begin : d.window + 1]
            assert sum(p >= cfg.threshold for p in span) == cfg.onset_windows and probs[d.window] >= cfg.threshold
            assert last_onset is None or last_onset.begin != d.begin  # one per count
            last_onset = d
        elif isinstance(d, OnsetLost):
            last_onset = None
        elif isinstance(d, Start):
            if 0 < cfg.onset_windows < cfg.start_windows:
                # Its own count's Onset, or one still pending from a count that faded within the quiet.
                assert last_onset is not None and last_onset.utterance == d.utterance and last_onset.begin <= d.begin
                assert last_onset.begin == d.begin or cfg.onset_quiet_windows > 1
            last_onset = None


# ---------------------------------------------------------------- voiced starts (a short word Silero half believes)

VOICED = replace(CFG, onset_windows=2, voiced_windows=6, dip_floor=0.3)
# Measured (the scenario suite's rendered audio through the phone's μ-law, docs/BENCHMARKS.md section 6).
WAIT_ULAW = [0.057, 0.640, 0.347, 0.594, 0.481, 0.412, 0.437, 0.419, 0.200, 0.116] + [0.01] * 20
CHUCKLE_ULAW = [0.005, 0.002, 0.624, 0.754, 0.642, 0.374, 0.203, 0.207, 0.534, 0.820, 0.741, 0.723, 0.381, 0.220, 0.303,
                0.687, 0.856, 0.836, 0.740, 0.349, 0.209, 0.151, 0.096] + [0.02] * 20  # fmt: skip


def test_a_short_word_half_believed_starts_an_utterance_once_its_onset_has_lasted():
    assert decisions(WAIT_ULAW, ONSET) == []  # before: lost (the dip under 0.35 even reset its onset)
    out = decisions(WAIT_ULAW, VOICED)
    assert out[:2] == [Onset(0, begin=1, window=3), Start(0, begin=1, window=6)]
    assert isinstance(out[2], Stop) and out[2].end == 8


def test_a_laughs_bursts_end_at_each_gap_and_start_nothing():
    assert [type(d) for d in decisions(CHUCKLE_ULAW, VOICED)] == [Onset, OnsetLost] * 3


def test_only_one_dip_and_not_below_the_floor():
    assert [type(d) for d in decisions([S, S, 0.32, A, 0.32, A, A, A] + [Q] * 20, VOICED)] == [Onset, OnsetLost]  # a second dip ends the run
    assert [type(d) for d in decisions([S, S, 0.25, A, A, A, A, A] + [Q] * 20, VOICED)] == [Onset, OnsetLost]  # under the floor ends it
    assert [type(d) for d in decisions([S, A, A, A, A, A, A, A] + [Q] * 20, VOICED)] == []  # no onset: one window above


def test_from_ms_voiced():
    assert Config.from_ms(onset_ms=64, voiced_ms=192).voiced_windows == 6
    assert Config.from_ms(onset_ms=0, voiced_ms=192).voiced_windows == 0  # needs the onset


def _configs(least_onset: int, **more) -> st.SearchStrategy[Config]:
    """Endpointer configurations around the onset rules (``more``: further fields)."""
    return st.builds(
        Config,
        threshold=st.just(0.5),
        neg_threshold=st.sampled_from([0.35, 0.5, 0.2]),
        start_windows=st.integers(1, 8),
        silence_windows=st.integers(1, 20),
        max_windows=st.integers(10, 100),
        onset_windows=st.integers(least_onset, 4),
        voiced_windows=st.integers(0, 10),
        dip_floor=st.sampled_from([0.1, 0.3]),
        onset_quiet_windows=st.sampled_from([0, 3, 10]),
        **more,
    )


voiced_configs = _configs(1)


@settings(max_examples=400, deadline=None)
@given(streams, voiced_configs)
def test_voiced_starts_are_justified_and_keep_the_start_stop_order(probs, cfg):
    state, out = ep.run(probs, cfg)
    for d in out:
        if isinstance(d, Start):
            span = probs[d.begin : d.window + 1]
            dips = [p for p in span if p < cfg.neg_threshold]
            # With voiced_windows on, one window down to dip_floor does not end a run,
            # whichever count then starts it (its windows above the threshold, or its length).
            one_dip = cfg.voiced_windows > 0 and len(dips) <= 1 and all(p >= cfg.dip_floor for p in dips)
            strict = sum(p >= cfg.threshold for p in span) >= cfg.start_windows and (not dips or one_dip)
            voiced = 0 < cfg.voiced_windows <= len(span) and sum(p >= cfg.threshold for p in span) >= cfg.onset_windows and one_dip
            assert strict or voiced, (d, span)
            assert probs[d.begin] >= cfg.threshold
    _, last = ep.finish(state)
    utterances = [d for d in out + [last] if d is not None and not isinstance(d, (Onset, OnsetLost))]
    assert [type(d) for d in utterances] == [Start, Stop] * (len(utterances) // 2)
    if cfg.voiced_windows == 0:  # off: the decisions of the endpointer without it
        assert [d for d in out if not isinstance(d, (Onset, OnsetLost))] == decisions(probs, replace(cfg, onset_windows=0))


def test_a_start_counted_across_the_one_dip_a_voiced_run_allows():
    """Found by the property above on a new draw: with voiced_windows on, one
    window down to dip_floor does not end a run, so its windows above the
    threshold on both sides of it reach start_windows and start it."""
    cfg = Config(threshold=0.5, neg_threshold=0.35, start_windows=2, silence_windows=1, max_windows=10,
                 onset_windows=1, voiced_windows=4, dip_floor=0.1, onset_quiet_windows=0)  # fmt: skip
    assert [d for d in ep.run([0.5, 0.2, 0.5], cfg)[1] if isinstance(d, Start)] == [Start(utterance=0, begin=0, window=2)]
    assert not [d for d in ep.run([0.5, 0.05, 0.5], cfg)[1] if isinstance(d, Start)]  # under dip_floor: the run ended


@settings(max_examples=200, deadline=None)
@given(streams, voiced_configs, st.integers(0, 400))
def test_voiced_starts_do_not_depend_on_the_chunking(probs, cfg, cut):
    whole_state, whole = ep.run(probs, cfg)
    mid, first = ep.run(probs[:cut], cfg)
    end, second = ep.run(probs[cut:], cfg, mid)
    assert first + second == whole and end == whole_state


# ---------------------------------------------------------------- faded starts (a short word that fades before it starts)

FADED = replace(VOICED, faded_windows=4)
# Measured live (main 8077e18, just-wait over Twilio: the caller's "Wait!" after its first sentence and five
# seconds of the agent's answer, Silero's state warm): an onset, then under the silence threshold.
WAIT_ULAW_WARM = [0.15, 0.54, 0.45, 0.42, 0.52, 0.49, 0.26, 0.19, 0.12, 0.08] + [0.01] * 30


def test_a_short_word_that_fades_starts_an_utterance_as_it_fades():
    assert [type(d) for d in decisions(WAIT_ULAW_WARM, VOICED)] == [Onset, OnsetLost]  # before: the word was lost
    out = decisions(WAIT_ULAW_WARM, FADED)
    assert out[:2] == [Onset(0, begin=1, window=4), Start(0, begin=1, window=6)]
    # its silence began where it faded: the usual silence stops it there
    assert out[2] == Stop(0, begin=1, end=6, window=6 + FADED.silence_windows - 1, reason="silence")
    assert len(out) == 3


def test_a_faded_start_needs_its_onset_and_its_length():
    assert [type(d) for d in decisions([S, S, A, Q] + [Q] * 30, FADED)] == [Onset, OnsetLost]  # 3 windows: too short
    assert decisions([S, A, A, A, A, Q] + [Q] * 30, FADED) == []  # no onset: one window above the threshold
    assert decisions([S, S, A, A] + [Q] * 30, replace(FADED, onset_windows=0)) == []  # onsets off: off


def test_a_word_that_goes_on_after_a_faded_start_is_one_utterance():
    out = decisions([S, S, A, A, Q, Q, S, S, S, S, S, S] + [Q] * 30, FADED)
    assert [type(d) for d in out] == [Onset, Start, Stop] and out[1].begin == 0 and out[2].end == 12


def test_from_ms_faded():
    assert Config.from_ms(onset_ms=64, faded_ms=128).faded_windows == 4
    assert Config.from_ms(onset_ms=0, faded_ms=128).faded_windows == 0  # needs the onset


faded_configs = _configs(0, faded_windows=st.integers(0, 8))


@settings(max_examples=400, deadline=None)
@given(streams, faded_configs)
def test_faded_starts_are_justified_and_keep_every_order(probs, cfg):
    """A Start is either one of the other rules' or a faded one: a run with
    its onset, at least faded_windows long, ending at a window under the
    silence threshold where its silence begins. Starts and Stops alternate,
    every Onset is answered once, and the chunking does not matter."""
    state, out = ep.run(probs, cfg)
    _, without = ep.run(probs, replace(cfg, faded_windows=0))
    pending = None
    for n, d in enumerate(out):
        if isinstance(d, Onset):
            assert pending is None
            pending = d
        elif isinstance(d, (OnsetLost, Start)):
            if isinstance(d, OnsetLost):
                assert pending is not None
            pending = None
        if isinstance(d, Start) and probs[d.window] < cfg.neg_threshold:  # a faded start
            assert 0 < cfg.faded_windows <= d.window - d.begin and cfg.onset_windows > 0
            assert sum(p >= cfg.threshold for p in probs[d.begin : d.window]) >= cfg.onset_windows
            stop = out[n + 1] if n + 1 < len(out) else None
            assert stop is None or (isinstance(stop, Stop) and stop.end >= d.window)
    _, last = ep.finish(state)
    utterances = [d for d in out + [last] if d is not None and not isinstance(d, (Onset, OnsetLost))]
    assert [type(d) for d in utterances] == [Start, Stop] * (len(utterances) // 2)
    if cfg.faded_windows == 0:
        assert out == without
    mid, first = ep.run(probs[: len(probs) // 2], cfg)
    end, second = ep.run(probs[len(probs) // 2 :], cfg, mid)
    assert first + second == out and end == state


# ---------------------------------------------------------------- a phone line: lower thresholds to begin speech (IDLE only)

PHONE = replace(FADED, start_threshold=0.4, start_neg_threshold=0.25)
# Offline (barge5): Piper's "Wait, wait." rendered through the phone band, then the Twilio line (8 kHz μ-law),
# Silero from a settled state after 20 quiet windows: the first "wait" never reaches 0.5, the second twice under it.
WAIT_WAIT_PHONE = [0.00, 0.27, 0.47, 0.28, 0.30, 0.38, 0.38, 0.33, 0.30, 0.21, 0.14, 0.08, 0.04, 0.03, 0.02, 0.01,
                   0.11, 0.44, 0.49, 0.37, 0.27, 0.25, 0.34, 0.16, 0.11] + [0.01] * 30  # fmt: skip


def test_a_phone_line_begins_speech_at_its_own_threshold():
    assert decisions(WAIT_WAIT_PHONE, FADED) == []  # at 0.5: not even an onset, the request is lost
    out = decisions(WAIT_WAIT_PHONE, PHONE)
    assert out[:2] == [Onset(0, begin=17, window=18), Start(0, begin=17, window=22)]  # voiced: 6 windows over 0.25
    assert isinstance(out[2], Stop) and len(out) == 3


def test_a_phone_lines_utterance_ends_on_the_usual_thresholds():
    # In an utterance a window under 0.35 begins its silence and only one of 0.5 ends it, as on any line.
    probs = [S] * 10 + [0.3] + [0.45] * 15 + [Q] * 5
    assert decisions(probs, PHONE) == decisions(probs, FADED)
    assert decisions(probs, PHONE)[-1] == Stop(0, begin=0, end=10, window=25, reason="silence")


def test_from_ms_phone():
    cfg = Config.from_ms(threshold=0.5, start_threshold=0.4)
    assert (cfg.start_threshold, cfg.start_neg_threshold, cfg.idle_thresholds) == (0.4, pytest.approx(0.25), (0.4, pytest.approx(0.25)))
    assert Config.from_ms().idle_thresholds == (0.5, pytest.approx(0.35))  # 0: the usual ones


phone_configs = _configs(0, faded_windows=st.integers(0, 8), start_threshold=st.sampled_from([0.0, 0.3, 0.4, 0.45]),
                         start_neg_threshold=st.sampled_from([0.0, 0.15, 0.25, 0.3]))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(streams, phone_configs)
def test_phone_thresholds_change_only_what_falls_between_them_and_the_usual_ones(probs, cfg):
    """Where no window lies between a start threshold and its usual one, the
    decisions are those of the usual thresholds; and in any stream the
    starts are justified by the start thresholds, the stops by the usual
    ones, Starts and Stops alternate, and the chunking does not matter."""
    th, neg = cfg.idle_thresholds
    usual = replace(cfg, start_threshold=0.0, start_neg_threshold=0.0)
    outside = [cfg.neg_threshold if min(neg, cfg.neg_threshold) <= p < max(neg, cfg.neg_threshold) else p for p in probs]
    outside = [cfg.threshold if min(th, cfg.threshold) <= p < max(th, cfg.threshold) else p for p in outside]
    if all(not (min(neg, cfg.neg_threshold) <= p < max(neg, cfg.neg_threshold)) for p in outside):
        assert decisions(outside, cfg) == decisions(outside, usual)
    state, out = ep.run(probs, cfg)
    for n, d in enumerate(out):
        if isinstance(d, (Onset, Start)):
            assert probs[d.begin] >= th
            assert probs[d.window] >= neg or (isinstance(d, Start) and 0 < cfg.faded_windows <= d.window - d.begin) or cfg.dip_floor <= probs[d.window]
        if isinstance(d, Stop) and d.reason == "silence":
            assert probs[d.end] < cfg.neg_threshold and all(p < cfg.threshold for p in probs[d.end : d.window + 1])
    _, last = ep.finish(state)
    utterances = [d for d in out + [last] if d is not None and not isinstance(d, (Onset, OnsetLost))]
    assert [type(d) for d in utterances] == [Start, Stop] * (len(utterances) // 2)
    mid, first = ep.run(probs[: len(probs) // 2], cfg)
    end, second = ep.run(probs[len(probs) // 2 :], cfg, mid)
    assert first + second == out and end == state


@given(
    base=st.builds(State, index=st.integers(0, 10**6), speaking=st.booleans(), utterance=st.integers(0, 99), run=st.integers(0, 50),
                   run_begin=st.integers(-1, 10**6), silence_begin=st.integers(-1, 10**6), onset=st.booleans(),
                   onset_begin=st.integers(-1, 10**6), lost_since=st.integers(-1, 10**6), dipped=st.booleans()),
    changes=st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(State)]), st.integers(-1, 10**6)),
)  # fmt: skip
def test_the_fast_state_replace_is_dataclasses_replace(base, changes):
    fast, slow = ep.replace(base, **changes), dataclasses.replace(base, **changes)
    assert fast == slow and hash(fast) == hash(slow) and type(fast) is State
    assert base == dataclasses.replace(base)  # the original is untouched
    with pytest.raises(TypeError):
        ep.replace(base, not_a_field=1)
