"""Load reports and the gateway's view of them (parley.load): a kind of
service is full when its live replicas together are; a replica that stops
reporting takes its capacity with it after the TTL; one that says it is gone,
at once; calls let in since a kind's last report count against it."""

from hypothesis import given
from hypothesis import strategies as st

from parley import contract
from parley.load import LoadBoard, Reporter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def rep(kind, instance, active, capacity, gone=False):
    return contract.LoadReport(kind=kind, instance=instance, active=active, capacity=capacity, gone=gone)


def board(ttl=3.0):
    clock = Clock()
    return LoadBoard(ttl=ttl, clock=clock), clock


def test_a_kind_is_full_when_its_replicas_together_are():
    b, _ = board()
    b.note(rep("asr", "a", 2, 2))
    b.note(rep("asr", "b", 1, 2))
    assert b.full() is None  # 3 of 4
    b.note(rep("asr", "b", 2, 2))
    full = b.full()
    assert full is not None and (full.kind, full.active, full.capacity, full.replicas) == ("asr", 4, 4, 2)
    assert "asr" in full.describe() and "4 of 4" in full.describe()


def test_a_silent_replica_takes_its_capacity_with_it_after_the_ttl():
    b, clock = board(ttl=3.0)
    b.note(rep("tts", "a", 3, 4))
    b.note(rep("tts", "b", 3, 4))
    assert b.full() is None  # 6 of 8
    clock.now += 2.0
    b.note(rep("tts", "a", 3, 4))  # a goes on reporting, b died
    assert b.full() is None
    clock.now += 1.5  # b's last report is 3.5 s old
    t = b.totals()["tts"]
    assert (t.active, t.capacity, t.replicas) == (3, 4, 1)
    b.note(rep("tts", "a", 4, 4))
    assert b.full().kind == "tts"  # with b alive it had 8 places


def test_a_replica_that_says_it_is_gone_leaves_at_once():
    b, _ = board()
    b.note(rep("orchestrator", "a", 10, 10))
    b.note(rep("orchestrator", "b", 5, 10))
    assert b.full() is None
    b.note(rep("orchestrator", "b", 0, 10, gone=True))
    assert b.totals()["orchestrator"].capacity == 10 and b.full().kind == "orchestrator"


def test_calls_let_in_since_a_kind_reported_count_against_it():
    b, clock = board()
    b.note(rep("asr", "a", 8, 10))
    clock.now += 0.1
    b.let_in()
    assert b.full() is None  # 9 of 10
    b.let_in()
    assert b.full().kind == "asr"  # 10 of 10: the next report has not come yet
    clock.now += 0.5
    b.note(rep("asr", "a", 10, 10))  # it now counts both itself
    assert b.totals()["asr"].active == 10
    clock.now += 0.5
    b.note(rep("asr", "a", 7, 10))  # three calls ended
    assert b.full() is None


def test_unknown_kinds_unlimited_replicas_and_the_gateways_own_kind_never_refuse():
    b, _ = board()
    assert b.full() is None  # nobody reported: admission does not judge whether a stack works
    b.note(rep("gateway", "other", 100, 100))  # another gateway is full: not this one's business
    b.note(rep("tts", "a", 50, 0))  # 0: no limit of its own
    b.note(rep("tts", "b", 50, 10))
    assert b.full() is None
    assert b.full(skip=()).kind == "gateway"


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 20), st.integers(1, 20)), min_size=1, max_size=12))
def test_the_total_is_the_latest_report_of_each_replica(reports):
    b, _ = board()
    latest = {}
    for inst, active, cap in reports:
        b.note(rep("asr", inst, active, cap))
        latest[inst] = (active, cap)
    t = b.totals()["asr"]
    assert (t.active, t.capacity, t.replicas) == (sum(a for a, _ in latest.values()), sum(c for _, c in latest.values()), len(latest))
    assert (b.full() is not None) == (t.active >= t.capacity)


def test_a_reporter_reports_what_it_carries_and_that_it_is_gone():
    r = Reporter(nc=None, kind="asr", instance="asr-1", active=lambda: 7, capacity=40)
    assert r.make() == rep("asr", "asr-1", 7, 40)
    assert r.make(gone=True) == rep("asr", "asr-1", 0, 40, gone=True)
    assert contract.decode(contract.encode(r.make()), contract.LoadReport) == r.make()
