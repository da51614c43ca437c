"""The simulated caller's ear: a far-end playout buffer, marks, clear, and the
audible-stop measure taken from what was heard."""

from __future__ import annotations

import numpy as np
import pytest

from parley.callers.ear import Ear, audible_stop, first_voiced, sound_spans

RATE = 8000
FRAME = 160


def pcm(value: int, samples: int = FRAME) -> bytes:
    return np.full(samples, value, "<i2").tobytes()


def run_clock(ear: Ear, start: float, until: float, step: float = 0.02) -> list[tuple[float, str]]:
    echoed = []
    t = start
    while t < until - 1e-9:
        echoed += [(round(t, 3), n) for n in ear.play(t)]
        t += step
    return echoed


def test_audio_plays_in_real_time_after_the_jitter_buffer():
    ear = Ear(RATE, delay=0.06)
    for _ in range(5):
        ear.receive(1.0, pcm(1000))
    run_clock(ear, 1.0, 1.3)
    starts = [round(t, 3) for t, _ in ear.heard]
    assert starts == [1.06, 1.08, 1.1, 1.12, 1.14]
    assert ear.last_heard_at() == pytest.approx(1.16)
    assert ear.buffered_ms == 0


def test_a_mark_is_echoed_when_the_audio_before_it_has_finished_playing():
    ear = Ear(RATE, delay=0.0)
    ear.receive(0.0, pcm(1000, FRAME * 2))
    assert ear.mark(0.0, "a") == []
    ear.receive(0.0, pcm(1000))
    assert ear.mark(0.0, "b") == []
    echoed = run_clock(ear, 0.0, 0.2)
    # "a" follows 40 ms of audio that starts at 0: it has played at 0.04.
    assert echoed == [(0.04, "a"), (0.06, "b")]
    assert ear.mark(0.3, "idle") == ["idle"]  # nothing buffered: at once


def test_clear_cuts_the_sound_where_it_is_and_echoes_what_it_dropped():
    ear = Ear(RATE, delay=0.0)
    for name in ("m1", "m2", "m3"):
        ear.receive(0.0, pcm(1000))
        ear.mark(0.0, name)
    echoed = run_clock(ear, 0.0, 0.03)  # plays 0.00-0.02 (m1 due at 0.02) and 0.02-0.04
    played, dropped = ear.clear(0.025)
    assert echoed == [(0.02, "m1")] and played == [] and dropped == ["m2", "m3"]
    assert ear.last_heard_at() == pytest.approx(0.025)  # cut 5 ms into the second frame
    assert len(ear.audio()) == int(0.025 * RATE) * 2
    assert ear.buffered == 0 and run_clock(ear, 0.04, 0.2) == []


def test_gaps_heard_are_recorded_but_not_the_pause_between_replies():
    ear = Ear(RATE, delay=0.0)
    ear.receive(0.0, pcm(1000))
    run_clock(ear, 0.0, 0.1)
    ear.receive(0.1, pcm(1000))  # 80 ms after it ran dry: a gap in the reply
    run_clock(ear, 0.1, 0.2)
    ear.receive(2.0, pcm(1000))  # much later: the next reply
    assert len(ear.gaps) == 1 and ear.gaps[0][0] == pytest.approx(0.02)


def test_first_voiced_finds_where_speech_begins():
    x = np.concatenate([np.zeros(800, np.int16), np.full(800, 3000, np.int16)])
    assert first_voiced(x, RATE) == pytest.approx(0.1)
    assert first_voiced(np.zeros(800, np.int16), RATE) is None


def test_audible_stop_is_measured_to_the_last_sample_heard():
    heard = [(1.0 + 0.02 * i, pcm(1000)) for i in range(20)]  # 1.00 .. 1.40 (the last ends at 1.385)
    heard[-1] = (heard[-1][0], pcm(1000, 40))  # cut 5 ms into the last frame
    heard.append((3.0, pcm(1000)))  # the next reply
    assert audible_stop(heard, RATE, onset=1.1) == pytest.approx(0.285)
    assert audible_stop(heard, RATE, onset=2.0) is None  # nothing was playing
    # With a threshold, silent frames at the end do not count as heard sound.
    quiet_tail = heard[:10] + [(1.2 + 0.02 * i, pcm(0)) for i in range(5)]
    assert audible_stop(quiet_tail, RATE, onset=1.1, threshold=0.01) == pytest.approx(0.1)
    assert sound_spans(quiet_tail, RATE) == [(1.0, pytest.approx(1.3))]


def test_hold_stops_the_sound_where_it_is_and_release_plays_the_rest():
    """A client holding its buffer while the agent is paused (/ws/pcm's "pause"): the sound stops at
    the hold, to the sample, and every sample not yet heard plays after the release."""
    ear = Ear(RATE, delay=0.0)
    audio = np.arange(FRAME * 4, dtype="<i2")
    ear.receive(0.0, audio.tobytes())
    run_clock(ear, 0.0, 0.03)  # 0.00-0.02 and 0.02-0.04 started
    ear.hold(0.025)
    assert ear.last_heard_at() == pytest.approx(0.025)
    assert run_clock(ear, 0.04, 0.5) == [] and ear.last_heard_at() == pytest.approx(0.025)  # held: nothing plays
    ear.release(0.5)
    run_clock(ear, 0.5, 0.6)
    assert np.array_equal(np.frombuffer(ear.audio(), "<i2"), audio)  # nothing lost, nothing twice
    assert ear.last_heard_at() == pytest.approx(0.5 + 0.055)


def test_drop_stops_the_sound_where_it_is_and_says_how_much_was_not_heard():
    """A client that stops at a pause and tells the gateway what it dropped (which sends it again)."""
    ear = Ear(RATE, delay=0.0)
    audio = np.arange(FRAME * 4, dtype="<i2")
    ear.receive(0.0, audio.tobytes())
    run_clock(ear, 0.0, 0.03)
    dropped = ear.drop(0.025)
    heard = np.frombuffer(ear.audio(), "<i2")
    assert ear.last_heard_at() == pytest.approx(0.025) and len(heard) + dropped == len(audio)
    assert np.array_equal(heard, audio[: len(heard)])
    assert run_clock(ear, 0.04, 0.3) == [] and ear.buffered == 0
    ear.receive(0.3, audio[len(heard) :].tobytes())  # the gateway's resume: from exactly there
    run_clock(ear, 0.3, 0.5)
    assert np.array_equal(np.frombuffer(ear.audio(), "<i2"), audio)
