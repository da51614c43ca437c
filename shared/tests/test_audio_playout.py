"""Playout and Framer: a table of examples, then hypothesis properties.

Every sample pushed for (run, chunk) carries the value ``label(run, chunk)``,
so each frame that comes out says whose audio it is; padding is zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.audio import Framer, Mark, Playout

RATE = 8000
FRAME = 160  # samples in 20 ms at 8 kHz


def label(run: int, chunk: int) -> int:
    return run * 100 + chunk + 1


def pcm(run: int, chunk: int, n: int) -> bytes:
    return np.full(n, label(run, chunk), dtype="<i2").tobytes()


def describe(frame: bytes | None) -> tuple[int, int, int] | None:
    """(run, chunk, audio samples) of a frame, checking it holds one chunk's
    audio followed only by zero padding."""
    if frame is None:
        return None
    x = np.frombuffer(frame, dtype="<i2")
    assert len(x) == FRAME
    n = int(np.count_nonzero(x))
    assert n > 0 and np.all(x[:n] == x[0]) and not x[n:].any(), x
    run, chunk = divmod(int(x[0]) - 1, 100)
    return run, chunk, n


def ms(n: int) -> int:
    return n * 1000 // RATE


# -- examples ----------------------------------------------------------------
# Steps: ("push", run, chunk, samples, last, accepted) | ("next", (run, chunk,
# samples) | None, [(run, chunk, kind, played_ms), ...]) | ("flush", run,
# frames) | ("pause", run) | ("resume", run) | ("state", current_run,
# buffered_ms, is_playing) | ("dropped", frames, pushes) | ("position", p)

S, F = "started", "finished"

EXAMPLES = {
    "one chunk; the last frame is padded": [
        ("push", 1, 0, 400, True, True),
        ("state", 1, 50, False),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("position", (1, 0, 20)),
        ("next", (1, 0, 160), []),
        ("next", (1, 0, 80), [(1, 0, F, 50)]),
        ("state", 1, 0, True),
        ("next", None, []),
        ("state", 1, 0, False),
        ("position", None),
    ],
    "chunk 1 arrives first and waits for chunk 0 to end": [
        ("push", 1, 1, 160, True, True),
        ("next", None, []),
        ("push", 1, 0, 100, False, True),
        ("next", None, []),
        ("push", 1, 0, 60, True, True),
        ("next", (1, 0, 160), [(1, 0, S, 20), (1, 0, F, 20)]),
        ("next", (1, 1, 160), [(1, 1, S, 20), (1, 1, F, 20)]),
        ("next", None, []),
    ],
    "a chunk with no audio still marks, and the next one plays": [
        ("push", 1, 0, 0, True, True),
        ("push", 1, 1, 10, True, True),
        ("next", (1, 1, 10), [(1, 0, S, 0), (1, 0, F, 0), (1, 1, S, 1), (1, 1, F, 1)]),
    ],
    "underrun inside a chunk waits for more audio": [
        ("push", 1, 0, 100, False, True),
        ("next", None, []),
        ("push", 1, 0, 100, False, True),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("next", None, []),
        ("push", 1, 0, 0, True, True),
        ("next", (1, 0, 40), [(1, 0, F, 25)]),
    ],
    "flush stops the run within one frame and refuses its later audio": [
        ("push", 1, 0, 800, True, True),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("flush", 1, 4),
        ("next", None, []),
        ("state", None, 0, False),
        ("push", 1, 0, 160, True, False),
        ("push", 1, 1, 170, True, False),
        ("dropped", 4 + 1 + 2, 2),
    ],
    "flush drops older runs too; a newer run plays next": [
        ("push", 1, 0, 320, True, True),
        ("push", 2, 0, 160, True, True),
        ("flush", 1, 2),
        ("next", (2, 0, 160), [(2, 0, S, 20), (2, 0, F, 20)]),
    ],
    "flush of a run not seen yet refuses it and every older run": [
        ("flush", 5, 0),
        ("push", 5, 0, 160, True, False),
        ("push", 4, 0, 160, True, False),
        ("push", 6, 0, 160, True, True),
        ("next", (6, 0, 160), [(6, 0, S, 20), (6, 0, F, 20)]),
    ],
    "a newer run waits until the older run's audio has played": [
        ("push", 1, 0, 320, True, True),
        ("push", 2, 0, 160, True, True),
        ("state", 1, 60, False),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("next", (1, 0, 160), [(1, 0, F, 40)]),
        ("next", (2, 0, 160), [(2, 0, S, 20), (2, 0, F, 20)]),
        ("state", 2, 0, True),
        # Once run 2 has played, run 1 can never play again.
        ("push", 1, 1, 160, True, False),
    ],
    "a newer run takes over an idle older run": [
        ("push", 1, 0, 160, False, True),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("next", None, []),
        ("push", 2, 0, 160, True, True),
        ("next", (2, 0, 160), [(2, 0, S, 20), (2, 0, F, 20)]),
        ("push", 1, 0, 160, True, False),
    ],
    "pause holds without losing audio; a newer run waits behind it": [
        ("push", 1, 0, 480, True, True),
        ("next", (1, 0, 160), [(1, 0, S, 20)]),
        ("pause", 1),
        ("next", None, []),
        ("next", None, []),
        ("state", 1, 40, False),
        ("push", 2, 0, 160, True, True),
        ("next", None, []),
        ("resume", 1),
        ("next", (1, 0, 160), []),
        ("next", (1, 0, 160), [(1, 0, F, 60)]),
        ("next", (2, 0, 160), [(2, 0, S, 20), (2, 0, F, 20)]),
    ],
    "pause before the audio arrives holds it too": [
        ("pause", 3),
        ("push", 3, 0, 160, True, True),
        ("next", None, []),
        ("resume", 3),
        ("next", (3, 0, 160), [(3, 0, S, 20), (3, 0, F, 20)]),
    ],
    "pause and resume of a flushed run do nothing": [
        ("flush", 1, 0),
        ("pause", 1),
        ("push", 2, 0, 160, True, True),
        ("resume", 1),
        ("next", (2, 0, 160), [(2, 0, S, 20), (2, 0, F, 20)]),
    ],
    "audio after a chunk's last piece is refused": [
        ("push", 1, 0, 160, True, True),
        ("push", 1, 0, 160, False, False),
        ("next", (1, 0, 160), [(1, 0, S, 20), (1, 0, F, 20)]),
        ("push", 1, 0, 10, True, False),
        ("dropped", 2, 2),
    ],
}


@pytest.mark.parametrize("steps", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_examples(steps):
    p = Playout(RATE)
    for step in steps:
        op, args = step[0], step[1:]
        if op == "push":
            run, chunk, n, last, accepted = args
            assert p.push(run, chunk, pcm(run, chunk, n), last) is accepted, step
        elif op == "next":
            frame, marks = p.next_frame()
            assert (describe(frame), marks) == (args[0], [Mark(*m) for m in args[1]]), step
        elif op == "flush":
            assert p.flush(args[0]) == args[1], step
        elif op == "pause":
            p.pause(args[0])
        elif op == "resume":
            p.resume(args[0])
        elif op == "state":
            assert (p.current_run, p.buffered_ms, p.is_playing) == args, step
        elif op == "dropped":
            assert (p.dropped_frames, p.dropped_pushes) == args, step
        elif op == "position":
            assert p.position == args[0], step
        else:
            raise AssertionError(op)


def test_frame_size_must_be_whole_samples():
    assert Playout(22050).frame_bytes == 882
    assert Playout(48000, frame_ms=10).frame_bytes == 960
    with pytest.raises(ValueError):
        Playout(22050, frame_ms=10)
    with pytest.raises(ValueError):
        Playout(8000).push(1, 0, b"\x00", True)


# -- properties --------------------------------------------------------------


@st.composite
def scenarios(draw):
    """Runs in increasing order, each with a few chunks of random length, each
    chunk cut into pieces (the last flagged), pieces of a run's chunks
    interleaved at random, and between pushes some frames, pauses, resumes."""
    run_ids = sorted(draw(st.sets(st.integers(0, 50), min_size=1, max_size=3)))
    runs, ops = [], []
    for run in run_ids:
        lengths = draw(st.lists(st.integers(0, 500), min_size=1, max_size=4))
        runs.append((run, lengths))
        queues = []
        for chunk, n in enumerate(lengths):
            cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
            bounds = [0, *cuts, n]
            pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
            queues.append([("push", run, chunk, a, b, i == len(pieces) - 1) for i, (a, b) in enumerate(pieces)])
        while any(queues):
            q = draw(st.sampled_from([q for q in queues if q]))
            ops.append(q.pop(0))
            ops.extend(draw(st.lists(st.sampled_from(["next", "next", "pause", "resume"]), max_size=3)))
    return runs, ops


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_everything_pushed_plays_once_in_order_with_its_marks(scenario):
    runs, ops = scenario
    p = Playout(RATE)
    frames, marks = [], []

    def tick():
        f, m = p.next_frame()
        marks.extend(m)
        if f is not None:
            frames.append(f)
        return f, m

    for op in ops:
        if op == "next":
            tick()
        elif op in ("pause", "resume") and p.current_run is not None:
            getattr(p, op)(p.current_run)
        elif isinstance(op, tuple):
            _, run, chunk, a, b, last = op
            assert p.push(run, chunk, pcm(run, chunk, b - a), last)
    for run, _ in runs:
        p.resume(run)
    while tick() != (None, []):
        pass

    # The caller heard every chunk, whole, in order, each padded to whole frames.
    expected, expected_marks = [], []
    for run, lengths in runs:
        for chunk, n in enumerate(lengths):
            padded = np.zeros(-(-n // FRAME) * FRAME, dtype="<i2")
            padded[:n] = label(run, chunk)
            expected.append(padded.tobytes())
            expected_marks += [Mark(run, chunk, "started", ms(min(n, FRAME))), Mark(run, chunk, "finished", ms(n))]
    assert b"".join(frames) == b"".join(expected)
    assert all(len(f) == 2 * FRAME for f in frames)
    assert marks == expected_marks
    assert (p.dropped_frames, p.dropped_pushes, p.buffered_ms) == (0, 0, 0)


ops_any = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 4), st.integers(0, 3), st.integers(0, 400), st.booleans()),
        st.just(("next",)),
        st.just(("next",)),
        st.tuples(st.just("flush"), st.integers(0, 4)),
        st.tuples(st.just("pause"), st.integers(0, 4)),
        st.tuples(st.just("resume"), st.integers(0, 4)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops_any)
def test_flushed_runs_stay_silent_and_order_holds_whatever_arrives(ops):
    p = Playout(RATE)
    flushed = -1
    played: list[tuple[int, int, int]] = []  # (run, chunk, samples) per frame
    marks: list[Mark] = []
    pushed: dict[tuple[int, int], int] = {}  # accepted samples per chunk
    for op in ops:
        if op[0] == "push":
            _, run, chunk, n, last = op
            ok = p.push(run, chunk, pcm(run, chunk, n), last)
            if run <= flushed or (played and run < played[-1][0]):
                assert not ok  # a flushed run, or older than one that played
            if ok:
                pushed[run, chunk] = pushed.get((run, chunk), 0) + n
        elif op[0] == "next":
            frame, m = p.next_frame()
            marks.extend(m)
            d = describe(frame)
            if d is not None:
                assert d[0] > flushed  # nothing of a flushed run, from the very next frame
                played.append(d)
        elif op[0] == "flush":
            p.flush(op[1])
            flushed = max(flushed, op[1])
        else:
            getattr(p, op[0])(op[1])

    # Frames come in (run, chunk) order; a chunk's frames are all full but its last.
    keys = [(r, c) for r, c, _ in played]
    assert keys == sorted(keys)
    for i in range(len(played) - 1):
        if keys[i] == keys[i + 1]:
            assert played[i][2] == FRAME
    # Marks: started then finished, at most once per chunk, in chunk order; a
    # finished chunk played all the audio it accepted.
    seen = [(m.run, m.chunk, m.kind) for m in marks]
    assert len(seen) == len(set(seen))
    assert [(r, c) for r, c, _ in seen] == sorted((r, c) for r, c, _ in seen)
    for m in marks:
        if m.kind == "finished":
            assert (m.run, m.chunk, "started") in seen
            total = sum(n for r, c, n in played if (r, c) == (m.run, m.chunk))
            assert total == pushed.get((m.run, m.chunk), 0)
            assert m.played_ms == ms(total)


@given(st.integers(1, 400), st.lists(st.binary(max_size=700), max_size=20))
def test_framer_cuts_whole_frames_and_keeps_the_rest(size, pieces):
    f = Framer(size)
    out = []
    for piece in pieces:
        out += f.push(piece)
        assert f.pending < size
    assert all(len(x) == size for x in out)
    assert b"".join(out) + f.remainder() == b"".join(pieces)
    assert f.pending == 0


# -- a chunk whose TTS worker died: stalled, abandoned, reset -----------------


def test_a_chunk_whose_audio_stops_is_stalled_and_abandoning_it_plays_the_next():
    p = Playout(RATE)
    p.push(1, 0, pcm(1, 0, FRAME * 2), last=False)  # the worker died after two frames
    p.push(1, 1, pcm(1, 1, FRAME), last=True)  # the next chunk is whole
    assert p.stalled() is None  # still playing
    assert [describe(p.next_frame()[0]) for _ in range(2)] == [(1, 0, FRAME)] * 2
    frame, _ = p.next_frame()
    assert frame is None and p.stalled() == (1, 0, True)
    assert p.chunk_state(1, 0) == "playing" and p.chunk_state(1, 1) == "queued"
    assert p.abandon(1, 0)
    frame, marks = p.next_frame()
    assert describe(frame) == (1, 1, FRAME)
    assert marks == [Mark(1, 0, "finished", 40), Mark(1, 1, "started", 20), Mark(1, 1, "finished", 20)]
    assert p.chunk_state(1, 0) == "played" and not p.abandon(1, 0)
    assert not p.push(1, 0, pcm(1, 0, FRAME), last=True)  # its redelivered audio comes too late


def test_a_chunk_with_no_audio_while_a_later_one_waits_is_stalled_not_an_idle_run():
    p = Playout(RATE)
    p.push(2, 0, b"", last=False)
    assert p.stalled() == (2, 0, False)
    q = Playout(RATE)
    q.push(2, 1, pcm(2, 1, FRAME), last=True)  # chunk 0 not here at all, chunk 1 waits
    assert q.stalled() == (2, 0, False) and q.chunk_state(2, 0) == "none"
    assert q.abandon(2, 0)  # given up: marks only, then chunk 1
    frame, marks = q.next_frame()
    assert describe(frame) == (2, 1, FRAME) and [m.kind for m in marks] == ["started", "finished", "started", "finished"]
    assert Playout(RATE).stalled() is None
    r = Playout(RATE)
    r.pause(3)
    r.push(3, 0, pcm(3, 0, 10), last=False)
    assert r.stalled() is None  # paused is not stalled


def test_reset_empties_a_chunk_that_has_not_started_so_it_can_come_again_whole():
    p = Playout(RATE)
    p.push(1, 0, pcm(1, 0, FRAME), last=True)
    p.push(1, 1, pcm(1, 1, FRAME // 2), last=False)  # half of chunk 1, from a worker that died
    assert p.reset(1, 1) == FRAME  # bytes
    assert p.buffered_ms == 20
    p.push(1, 1, pcm(1, 1, FRAME), last=True)  # again, whole, from another worker
    assert [describe(p.next_frame()[0]) for _ in range(3)] == [(1, 0, FRAME), (1, 1, FRAME), None]
    assert p.reset(1, 1) == 0 and p.reset(1, 0) == 0  # played: nothing to reset


# -- rewind: the client dropped what it had not played at a pause ------------


def test_a_rewind_inside_a_chunk_plays_the_taken_back_audio_again_on_resume():
    p = Playout(RATE)
    audio = np.arange(1, 801, dtype="<i2")
    p.push(1, 0, audio.tobytes(), True)
    out = [p.next_frame()[0] for _ in range(3)]
    p.pause(1)
    assert p.next_frame() == (None, [])
    back = p.rewind(1, 30)  # the client had not played the last 30 ms (240 samples)
    assert (back.samples, back.chunk, back.played_ms, back.reopened) == (240, 0, 30, False)
    assert p.rewind(2, 10) is None  # not the paused head run
    p.resume(1)
    assert p.rewind(1, 10) is None  # playing again: too late to take anything back
    rest = []
    while (f := p.next_frame()[0]) is not None:
        rest.append(f)
    heard = np.frombuffer(b"".join(out), dtype="<i2")[: 480 - 240]
    again = np.frombuffer(b"".join(rest), dtype="<i2")
    assert np.array_equal(np.concatenate([heard, again[again != 0]]), audio)


def test_a_rewind_over_a_chunk_boundary_reopens_the_finished_chunk():
    p = Playout(RATE)
    p.push(1, 0, np.arange(1, 201, dtype="<i2").tobytes(), True)  # 25 ms: two frames, the second padded
    p.push(1, 1, np.arange(1001, 1801, dtype="<i2").tobytes(), True)
    marks = []
    for _ in range(3):
        marks += p.next_frame()[1]
    assert [(m.chunk, m.kind) for m in marks] == [(0, "started"), (0, "finished"), (1, "started")]
    p.pause(1)
    back = p.rewind(1, 25)  # 20 ms of chunk 1 and the last 5 ms of chunk 0
    assert (back.samples, back.chunk, back.played_ms, back.reopened) == (200, 0, 20, True)
    assert np.array_equal(np.frombuffer(back.reopened_pcm, dtype="<i2"), np.arange(161, 201))
    assert p.chunk_state(1, 0) == "playing" and p.chunk_state(1, 1) == "queued"
    p.resume(1)
    frame, marks = p.next_frame()
    assert np.array_equal(np.frombuffer(frame, dtype="<i2")[:40], np.arange(161, 201)) and not np.frombuffer(frame, dtype="<i2")[40:].any()
    assert marks == [Mark(1, 0, "finished", 25)]
    frame, marks = p.next_frame()
    assert marks == [Mark(1, 1, "started", 20)] and np.frombuffer(frame, dtype="<i2")[0] == 1001


@st.composite
def rewinds(draw):
    """A few runs of chunks with position-coded samples, played with pauses in
    which the client drops 0-120 ms it had not played."""
    run_ids = sorted(draw(st.sets(st.integers(0, 9), min_size=1, max_size=3)))
    runs = [(run, draw(st.lists(st.integers(0, 500), min_size=1, max_size=4))) for run in run_ids]
    ops = draw(st.lists(st.one_of(st.just(("next",)), st.tuples(st.just("rewind"), st.integers(0, 120))), max_size=80))
    return runs, ops


@settings(max_examples=300, deadline=None)
@given(rewinds())
def test_what_the_client_dropped_plays_again_and_everything_is_heard_once_in_order(scenario):
    runs, ops = scenario
    p = Playout(RATE)
    pushed = []
    for run, lengths in runs:
        for chunk, n in enumerate(lengths):
            base = run * 2500 + chunk * 600 + 1
            samples = np.arange(base, base + n, dtype="<i2")
            pushed.append(samples)
            assert p.push(run, chunk, samples.tobytes(), True)
    heard: list[int] = []
    finished: list[tuple[int, int, int]] = []

    def tick():
        f, m = p.next_frame()
        finished.extend((x.run, x.chunk, x.played_ms) for x in m if x.kind == "finished")
        if f is not None:
            x = np.frombuffer(f, dtype="<i2")
            heard.extend(int(v) for v in x[x != 0])
        return f, m

    for op in ops:
        if op[0] == "next":
            tick()
        elif p.current_run is not None:
            run = p.current_run
            p.pause(run)
            back = p.rewind(run, op[1])
            assert back is not None and back.samples <= op[1] * RATE // 1000
            assert back.samples <= len(heard)
            del heard[len(heard) - back.samples :]  # the client never played them
            p.resume(run)
    while tick() != (None, []):
        pass
    assert heard == [int(v) for s in pushed for v in s]
    # Each chunk's last "finished" mark gives its whole length, in order.
    last = {}
    for run, chunk, played in finished:
        last[(run, chunk)] = played
    assert list(last) == [(run, chunk) for run, lengths in runs for chunk in range(len(lengths))]
    assert all(last[(run, chunk)] == ms(n) for run, lengths in runs for chunk, n in enumerate(lengths))
    assert p.buffered_ms == 0
