"""SessionAudio: windows do not depend on how the audio was cut into messages."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_asr.audio import WINDOW, SessionAudio


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.lists(st.integers(0, 900), max_size=30), st.integers(1, 40))
def test_windows_are_the_same_however_the_stream_is_cut(total, cuts, limit):
    pcm = (np.arange(total) % 30000).astype(np.int16)
    bounds = sorted({0, total, *(c % (total + 1) for c in cuts)})
    audio = SessionAudio()
    taken = []
    for a, b in zip(bounds, bounds[1:]):
        audio.push(pcm[a:b].tobytes())
        taken.append(audio.take_windows(limit))
    while audio.pending_windows():
        taken.append(audio.take_windows(limit))
    got = np.concatenate(taken).reshape(-1) if taken else np.empty(0, np.int16)
    whole = total // WINDOW * WINDOW
    assert np.array_equal(got, pcm[:whole])
    assert audio.end == whole and len(audio.inbox) == 2 * (total - whole)
    # Any slice of what is held is exactly the stream's samples.
    assert np.array_equal(audio.slice(100, 1500), pcm[100 : min(1500, whole)])


def test_trim_keeps_what_a_later_cut_needs():
    audio = SessionAudio()
    for k in range(10):
        audio.push(np.full(WINDOW, k, np.int16).tobytes())
        audio.take_windows()
    audio.trim(3 * WINDOW + 10)
    assert audio.start == 3 * WINDOW
    assert np.array_equal(audio.slice(0, 4 * WINDOW), np.full(WINDOW, 3, np.int16))
    audio.trim(10 * WINDOW)
    assert audio.start == audio.end == 10 * WINDOW
    assert len(audio.slice(0, 10 * WINDOW)) == 0


def test_the_level_of_a_sound_is_its_loud_part_in_dbfs():
    from parley_asr.worker import level_db

    t = np.arange(16000) / 16000
    tone = (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    assert abs(level_db(tone) - 20 * np.log10(0.5 / np.sqrt(2))) < 0.1  # -9.0 dBFS
    quieter = (tone / 10).astype(np.int16)
    assert abs(level_db(tone) - level_db(quieter) - 20.0) < 0.1
    # quiet edges (the pre-roll, the fade) do not pull it down: the 80th percentile of its windows
    padded = np.concatenate([np.zeros(8000, np.int16), tone[:8000], np.zeros(2000, np.int16)])
    assert abs(level_db(padded) - level_db(tone)) < 0.1
    assert level_db(np.zeros(100, np.int16)) == 0.0  # shorter than a window: unknown
    assert level_db(np.zeros(4096, np.int16)) < -90
