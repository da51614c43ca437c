"""Spans recorded after the fact are built only when something exports them."""

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from parley import telemetry


def _tel(exporting: bool) -> tuple[telemetry.Telemetry, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(id_generator=telemetry._DerivedIds())
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tel = telemetry.Telemetry("test", provider.get_tracer("test"), MeterProvider().get_meter("test"), exporting=exporting)
    return tel, spans


def _record(tel: telemetry.Telemetry) -> None:
    tel.record_span("reduce SpeechStopped", session="s1", parent=telemetry.session_context("s1"), start=10.0, end=10.5, attributes={"run.id": 3})
    tel.span_with_id("turn", session="s1", key="turn:u0", parent=telemetry.session_context("s1"), start=9.0, end=11.0)


def test_an_exporting_telemetry_records_finished_spans_under_the_session_trace():
    tel, spans = _tel(exporting=True)
    _record(tel)
    got = spans.get_finished_spans()
    assert [s.name for s in got] == ["reduce SpeechStopped", "turn"]
    assert {s.context.trace_id for s in got} == {telemetry.trace_id("s1")}
    assert got[1].context.span_id == telemetry.span_id("s1", "turn:u0")
    assert got[0].attributes["run.id"] == 3 and got[0].attributes["session.id"] == "s1"


def test_with_no_exporter_the_after_the_fact_spans_are_not_built():
    tel, spans = _tel(exporting=False)
    _record(tel)
    assert spans.get_finished_spans() == ()
    # Live spans (``span``) are still real: callers use them as parents and context managers.
    with tel.span("utterance", session="s1", parent=telemetry.session_context("s1")):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["utterance"]


def test_a_process_with_no_endpoint_does_not_export():
    # (Tests run with no OTEL_EXPORTER_OTLP_ENDPOINT; services get theirs from settings.)
    assert telemetry.current().exporting is False
