"""A call records through the telemetry its gateway hands it (the
``Switchboard``), never through a process-wide one it reaches for."""

from parley import telemetry
from parley_gateway.call import Call, Switchboard


class Recorded:
    def __init__(self):
        self.seen: list[tuple] = []

    def counter(self, name, unit="1", description=""):
        return _Instrument(self.seen, name)

    def histogram(self, name, unit="ms", description=""):
        return _Instrument(self.seen, name)

    def record_span(self, name, **kw):
        self.seen.append(("span", name, kw["session"], kw["attributes"]["run.id"]))


class _Instrument:
    def __init__(self, seen, name):
        self.seen, self.name = seen, name

    def add(self, n, attributes):
        self.seen.append(("count", self.name, n, attributes["reason"]))

    def record(self, value, attributes):
        self.seen.append(("record", self.name, value))


class Line:
    kind = "pcm"
    rate = 16000
    reports_playback = False


def test_a_call_counts_and_traces_through_the_telemetry_it_was_given(monkeypatch):
    def reached_for_the_global():
        raise AssertionError("the call reached for telemetry.current()")

    monkeypatch.setattr(telemetry, "current", reached_for_the_global)
    tel, stats = Recorded(), {}
    call = Call(Switchboard(nc=None, stats=stats, tel=tel), Line(), session="pcm-tel")
    call._count("frames_flushed", 3)
    call.playback_started[5] = 100.0
    call._playback_span(5, 101.0, interrupted=False)
    assert stats == {"frames_flushed": 3}
    assert tel.seen == [("count", "parley.frames.dropped", 3, "flushed"), ("span", "playback", "pcm-tel", 5)]
