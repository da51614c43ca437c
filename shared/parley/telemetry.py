"""Traces and metrics that follow a session across the bus.

Every service's app factory calls ``telemetry.setup(service,
settings.otlp_endpoint)`` once and hands the ``Telemetry`` it returns to what
it builds (the workers, the runtime, the step observer, the gateway's calls),
which record through it. OpenTelemetry's providers and the
Prometheus registry are process-wide by their own design, so ``setup`` is
idempotent; ``current()`` returns that one for what a test builds without
one (a worker or runtime given no ``tel``). With
OTEL_EXPORTER_OTLP_ENDPOINT set, spans and metrics go out over OTLP/HTTP
(Jaeger, or any collector); without it nothing is exported, and the spans
recorded after the fact (``record_span``, ``span_with_id``: one per reducer
step in the orchestrator) are not even built. Metrics are also served in
Prometheus' text format by each service's ``/metrics`` (``metrics_response``).

One trace per session, one span per turn. A turn's span is created by the
orchestrator when the turn is over, but every service must parent its own
spans (ASR utterance, TTS chunk, playback) under it while the turn is still
going on. So the ids are *derived*, not remembered: the trace id is a hash of
the session id, and the session and turn span ids are hashes of (session,
name). Any process computes the same parent context from the ids it already
has (``session_context``, ``turn_context``), and ``span_with_id`` records a
span under a chosen id with explicit start and end times.

W3C trace context also travels in NATS headers on every message
(``inject``/``extract``), so spans stay connected where derivation does not
apply.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from typing import Mapping

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

log = logging.getLogger("parley.telemetry")

_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("parley_forced_ids", default=None)


class _DerivedIds(IdGenerator):
    """Random ids, unless ``span_with_id`` asked for specific ones."""

    def __init__(self):
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        forced = _forced_ids.get()
        return forced[1] if forced else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _forced_ids.get()
        return forced[0] if forced else self._random.generate_trace_id()


def _hash(text: str, nbytes: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:nbytes], "big")
    return value or 1


def trace_id(session: str) -> int:
    return _hash(f"parley-trace:{session}", 16)


def span_id(session: str, name: str) -> int:
    return _hash(f"parley-span:{session}:{name}", 8)


def _context(session: str, name: str) -> otel_context.Context:
    sc = SpanContext(trace_id(session), span_id(session, name), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(sc))


def session_context(session: str) -> otel_context.Context:
    """The parent context of everything in a session (the session's root span)."""
    return _context(session, "session")


def turn_key(run: int | None = None, utterance: int | None = None) -> str:
    """A turn is named by the caller's utterance that started it, or by the run
    for turns the agent starts itself (greeting, re-prompt)."""
    return f"turn:u{utterance}" if utterance is not None and utterance >= 0 else f"turn:r{run}"


def turn_context(session: str, key: str) -> otel_context.Context:
    return _context(session, key)


# ---------------------------------------------------------------- setup


class Telemetry:
    def __init__(self, service: str, tracer: trace.Tracer, meter: metrics.Meter, exporting: bool = True):
        self.service = service
        self.tracer = tracer
        self.meter = meter
        # False when ``setup`` configured no exporter: the spans recorded
        # after the fact (``record_span``, ``span_with_id``) would go nowhere,
        # so they are not built (the orchestrator records one per reducer
        # step). Metrics are unaffected (/metrics serves them either way).
        self.exporting = exporting
        self._instruments: dict[str, object] = {}

    def histogram(self, name: str, unit: str = "ms", description: str = ""):
        inst = self._instruments.get(name)
        if inst is None:
            inst = self._instruments[name] = self.meter.create_histogram(name, unit=unit, description=description)
        return inst

    def counter(self, name: str, unit: str = "1", description: str = ""):
        inst = self._instruments.get(name)
        if inst is None:
            inst = self._instruments[name] = self.meter.create_counter(name, unit=unit, description=description)
        return inst

    def span_with_id(
        self,
        name: str,
        *,
        session: str,
        key: str,
        parent: otel_context.Context | None,
        start: float,
        end: float,
        attributes: Mapping[str, object] | None = None,
    ) -> None:
        """Record a finished span whose id is derived from (session, key)."""
        if not self.exporting:
            return
        token = _forced_ids.set((trace_id(session), span_id(session, key)))
        try:
            span = self.tracer.start_span(name, context=parent or otel_context.Context(), start_time=int(start * 1e9), attributes=_attrs(session, attributes))
        finally:
            _forced_ids.reset(token)
        span.end(end_time=int(end * 1e9))

    def span(self, name: str, *, session: str, parent: otel_context.Context | None, start: float | None = None, attributes=None, kind=SpanKind.INTERNAL):
        """Start a span (end it yourself, or use it as a context manager)."""
        return self.tracer.start_span(
            name,
            context=parent,
            start_time=int(start * 1e9) if start else None,
            attributes=_attrs(session, attributes),
            kind=kind,
        )

    def record_span(self, name: str, *, session: str, parent, start: float, end: float, attributes=None, kind=SpanKind.INTERNAL) -> None:
        """Record a finished span (nothing when no exporter is configured)."""
        if not self.exporting:
            return
        span = self.span(name, session=session, parent=parent, start=start, attributes=attributes, kind=kind)
        span.end(end_time=int(end * 1e9))

    def metrics_response(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(), CONTENT_TYPE_LATEST

    def add_metrics_route(self, app) -> None:
        """``GET /metrics`` in Prometheus' text format, on a service's FastAPI/Starlette app."""
        from starlette.responses import Response

        async def metrics(_request):
            body, content_type = self.metrics_response()
            return Response(body, media_type=content_type)

        app.add_route("/metrics", metrics, methods=["GET"])


def _attrs(session: str, attributes: Mapping[str, object] | None) -> dict:
    out = {"session.id": session}
    if attributes:
        out.update({k: v for k, v in attributes.items() if v is not None})
    return out


_current: Telemetry | None = None


def setup(service: str, otlp_endpoint: str = "") -> Telemetry:
    """Configure tracing and metrics for this process (idempotent).
    ``otlp_endpoint``: the collector's base URL, from the service's settings
    (OTEL_EXPORTER_OTLP_ENDPOINT); empty: nothing is exported."""
    global _current
    if _current is not None:
        return _current
    resource = Resource.create({"service.name": f"parley-{service}", "service.namespace": "parley"})
    provider = TracerProvider(resource=resource, id_generator=_DerivedIds())
    readers = []
    endpoint = otlp_endpoint.strip().rstrip("/")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The signal paths OTLP/HTTP appends to a base endpoint.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=500))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=5000))
        log.info("exporting traces and metrics over OTLP", extra={"endpoint": endpoint})
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    readers.append(PrometheusMetricReader())  # /metrics (metrics_response)
    trace.set_tracer_provider(provider)
    # Latencies are in ms: buckets fine enough for percentiles around a second.
    latency_buckets = View(
        instrument_type=Histogram,
        aggregation=ExplicitBucketHistogramAggregation(
            (5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1400, 1600, 2000, 2500, 3000, 5000, 10000)
        ),
    )
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers, views=[latency_buckets]))
    _current = Telemetry(service, trace.get_tracer("parley"), metrics.get_meter("parley"), exporting=bool(endpoint))
    return _current


def current() -> Telemetry:
    return _current or setup("parley")


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.force_flush()
        provider.shutdown()
    mp = metrics.get_meter_provider()
    if hasattr(mp, "shutdown"):
        mp.shutdown()


# ---------------------------------------------------------------- propagation


def inject(ctx: otel_context.Context | None = None, headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying ``ctx`` (default: the current context), W3C traceparent."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier, context=ctx)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))

