"""Lanes: per-run queues and the memory of cancelled runs, by example and by property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parley_tts.lanes import Admit, Job, Lanes


def job(session="s", run=1, chunk=0, at=0.0) -> Job:
    return Job(session, run, chunk, f"chunk {chunk}", received=at)


def test_a_lane_starts_once_and_serves_its_chunks_in_order():
    lanes = Lanes()
    assert lanes.submit(job(chunk=0), 0) is Admit.START
    assert lanes.submit(job(chunk=1), 0) is Admit.QUEUED
    assert lanes.take(("s", 1)).chunk == 0
    assert lanes.submit(job(chunk=2), 0) is Admit.QUEUED  # the runner is still busy with chunk 0
    assert [lanes.take(("s", 1)).chunk for _ in range(2)] == [1, 2]
    assert lanes.live(("s", 1))
    assert lanes.take(("s", 1)) is None  # empty: the runner stops, the lane is gone
    assert not lanes.live(("s", 1))
    assert lanes.submit(job(chunk=3), 0) is Admit.START  # a later chunk starts a new runner


def test_a_late_chunk_goes_before_the_later_ones_queued():
    lanes = Lanes()
    key = ("s", 1)
    lanes.submit(job(chunk=1), 0)
    assert lanes.take(key).chunk == 1
    lanes.submit(job(chunk=3), 0)
    lanes.submit(job(chunk=2), 0)  # delivered again after its first worker died
    assert [lanes.take(key).chunk for _ in range(2)] == [2, 3]


def test_a_chunk_earlier_than_the_one_being_said_runs_beside_it_and_the_lane_lives_until_both_end():
    lanes = Lanes()
    key = ("s", 1)
    lanes.submit(job(chunk=1), 0)
    assert lanes.take(key).chunk == 1  # the runner speaks chunk 1...
    assert lanes.submit(job(chunk=0), 0) is Admit.AHEAD  # ...when chunk 0 comes again: said at once
    assert lanes.take(key) is None  # the runner is done with chunk 1
    assert lanes.live(key)  # chunk 0 still speaking
    assert lanes.submit(job(chunk=2), 0) is Admit.START  # the runner stopped: a new one
    assert lanes.take(key).chunk == 2
    lanes.done_ahead(key)
    assert lanes.live(key)  # chunk 2's runner
    assert lanes.take(key) is None
    assert not lanes.live(key)


def test_a_cancel_ends_a_lane_with_a_chunk_running_beside_it():
    lanes = Lanes()
    key = ("s", 1)
    lanes.submit(job(chunk=1), 0)
    lanes.take(key)
    assert lanes.submit(job(chunk=0), 0) is Admit.AHEAD
    lanes.cancel(key, 0)
    assert not lanes.live(key)
    lanes.done_ahead(key)  # the cancelled chunk's task ends afterwards: nothing comes back
    assert not lanes.live(key) and lanes.submit(job(chunk=0), 0) is Admit.CANCELLED


def test_runs_and_sessions_have_their_own_lanes():
    lanes = Lanes()
    assert lanes.submit(job("a", 1), 0) is Admit.START
    assert lanes.submit(job("a", 2), 0) is Admit.START
    assert lanes.submit(job("b", 1), 0) is Admit.START
    assert sorted(lanes.lanes()) == [("a", 1), ("a", 2), ("b", 1)]


def test_cancel_drops_the_queue_and_later_requests_of_that_run_only():
    lanes = Lanes()
    lanes.submit(job(chunk=0), 0)
    lanes.submit(job(chunk=1), 0)
    lanes.submit(job(chunk=2), 0)
    lanes.take(("s", 1))  # chunk 0 is being synthesized
    dropped = lanes.cancel(("s", 1), 1.0)
    assert [j.chunk for j in dropped] == [1, 2]
    assert not lanes.live(("s", 1))  # the running chunk must stop publishing
    assert lanes.take(("s", 1)) is None
    assert lanes.submit(job(chunk=3), 2.0) is Admit.CANCELLED
    assert lanes.submit(job(run=2), 2.0) is Admit.START


def test_cancel_of_an_unknown_run_still_blocks_it():
    lanes = Lanes()
    assert lanes.cancel(("s", 7), 0) == []
    assert lanes.submit(job(run=7), 0) is Admit.CANCELLED


def test_end_drops_every_run_of_the_session():
    lanes = Lanes()
    lanes.submit(job("a", 1, 0), 0)
    lanes.submit(job("a", 1, 1), 0)
    lanes.submit(job("a", 2, 0), 0)
    lanes.submit(job("b", 1, 0), 0)
    ended = lanes.end("a", 1.0)
    assert {k: [j.chunk for j in v] for k, v in ended.items()} == {("a", 1): [0, 1], ("a", 2): [0]}
    assert lanes.lanes() == [("b", 1)]
    assert lanes.submit(job("a", 3), 2.0) is Admit.ENDED


def test_cancelled_runs_are_forgotten_after_a_while():
    lanes = Lanes(forget_after=10.0)
    lanes.cancel(("s", 1), 0.0)
    lanes.end("t", 5.0)
    assert lanes.submit(job("s", 1), 9.9) is Admit.CANCELLED
    assert lanes.submit(job("s", 1), 10.0) is Admit.START
    assert lanes.submit(job("t", 1), 14.9) is Admit.ENDED
    assert lanes.submit(job("t", 1), 15.0) is Admit.START
    assert lanes.remembered() == 0


def test_at_most_remember_runs_are_kept_oldest_first_out():
    lanes = Lanes(remember=3)
    for run in range(5):
        lanes.cancel(("s", run), 0.0)
    assert lanes.remembered() == 3
    assert lanes.submit(job(run=1), 0.0) is Admit.START  # forgotten: one of the two oldest
    assert lanes.submit(job(run=4), 0.0) is Admit.CANCELLED


# ---------------------------------------------------------------- properties
# A run of random operations against a simple simulation of the worker: one
# runner per lane that takes jobs until told to stop.

SESSIONS = ["a", "b"]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(SESSIONS), st.integers(0, 3)),
        st.tuples(st.just("take"), st.sampled_from(SESSIONS), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.sampled_from(SESSIONS), st.integers(0, 3)),
        st.tuples(st.just("end"), st.sampled_from(SESSIONS), st.just(0)),
        st.tuples(st.just("wait"), st.just(""), st.integers(1, 30)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(OPS)
def test_order_cancel_and_memory_hold_under_any_interleaving(ops):
    forget = 20.0
    lanes = Lanes(forget_after=forget, remember=100)  # memory bound: see the example above
    now = 0.0
    runners: set = set()  # lanes with a runner (START seen, take not yet None)
    submitted: dict = {}  # key -> chunks admitted, in order
    taken: dict = {}  # key -> chunks taken, in order
    cancelled_at: dict = {}  # key -> when last cancelled
    ended_at: dict = {}  # session -> when last ended
    next_chunk: dict = {}  # key -> the chunk number its next submit gets
    dead_below: dict = {}  # key -> chunks below this were submitted before a cancel or end
    for op, session, n in ops:
        key = (session, n)
        if op == "submit":
            chunk = next_chunk.get(key, 0)
            next_chunk[key] = chunk + 1
            admit = lanes.submit(Job(session, n, chunk, "", now), now)
            if session in ended_at and now - ended_at[session] < forget:
                assert admit is Admit.ENDED
            elif key in cancelled_at and now - cancelled_at[key] < forget:
                assert admit is Admit.CANCELLED
            else:
                assert admit is (Admit.QUEUED if key in runners else Admit.START)
                runners.add(key)
                submitted.setdefault(key, []).append(chunk)
        elif op == "take" and key in runners:
            j = lanes.take(key)
            if j is None:
                runners.discard(key)
            else:
                assert j.chunk >= dead_below.get(key, 0)  # nothing from before a cancel
                taken.setdefault(key, []).append(j.chunk)
        elif op == "cancel":
            lanes.cancel(key, now)
            cancelled_at[key] = now
            dead_below[key] = next_chunk.get(key, 0)
            runners.discard(key)  # the shell cancels its runner task
            assert not lanes.live(key)
        elif op == "end":
            lanes.end(session, now)
            ended_at[session] = now
            for k in [k for k in next_chunk if k[0] == session]:
                dead_below[k] = next_chunk[k]
            runners -= {k for k in runners if k[0] == session}
        elif op == "wait":
            now += n
        # A lane is live exactly while it has a runner.
        assert set(lanes.lanes()) == runners
    # Every run's chunks came out in the order they went in, none twice, none invented.
    for key, chunks in taken.items():
        assert chunks == sorted(set(chunks))
        assert set(chunks) <= set(submitted[key])


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.floats(0, 100))
def test_a_remembered_cancel_always_wins(runs, elapsed):
    lanes = Lanes(forget_after=120.0, remember=1000)
    for r in runs:
        lanes.cancel(("s", r), 0.0)
    for r in runs:
        assert lanes.submit(job(run=r), elapsed) is Admit.CANCELLED
