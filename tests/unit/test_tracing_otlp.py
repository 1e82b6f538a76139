"""The gateway's OTLP encoder writes what OpenTelemetry's own encoder writes, field for field."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.otlp import encode_batch, encode_request, encode_span, env_headers, traces_url


def spans() -> tuple:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tandem-gateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tandem.gateway")
    a = tracer.start_span("chat support", kind=SpanKind.CLIENT)
    a.set_attributes(
        {
            "gen_ai.request.model": "support",
            "gen_ai.usage.input_tokens": 1234,
            "tandem.cost_usd": 0.000123,
            "tandem.fallback": False,
            "tandem.stream": True,
            "tandem.backends.tried": ("b", "a"),
            "tandem.negative": -5,
            "gen_ai.input.messages": '[{"role":"user","parts":[{"content":"héllo ✓"}]}]',
        }
    )
    a.end()
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    b = tracer.start_span("chat flaky", context=parent, kind=SpanKind.CLIENT)
    b.set_attribute("error.type", "upstream_error")
    b.set_status(Status(StatusCode.ERROR, "upstream_error"))
    b.end()
    other = TracerProvider(resource=Resource.create({"service.name": "other"}))
    other.add_span_processor(SimpleSpanProcessor(exporter))
    other.get_tracer("ray.serve", "2.60.0").start_span("replica").end()
    return exporter.get_finished_spans()


def test_the_bytes_decode_to_what_the_sdk_encodes() -> None:
    finished = spans()
    assert len(finished) == 3
    mine = ExportTraceServiceRequest.FromString(encode_request(finished))
    assert mine == encode_spans(finished)


def test_a_batch_of_encoded_spans_is_the_request_the_sdk_encodes() -> None:
    # the OTLP/HTTP processor encodes each span as it ends and joins them per batch
    first, second, _ = spans()  # the first two share a resource and scope
    joined = encode_batch(
        first.resource, first.instrumentation_scope, [encode_span(first), encode_span(second)]
    )
    assert ExportTraceServiceRequest.FromString(joined) == encode_spans([first, second])
    assert joined == encode_request([first, second])


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("collector:4318", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/otlp/v1/traces", "https://otlp.example.com/otlp/v1/traces"),
    ],
)
def test_a_bare_endpoint_gets_the_signal_path_and_a_full_url_is_kept(
    endpoint: str, url: str
) -> None:
    assert traces_url(endpoint) == url


def test_headers_come_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Authorization=Bearer%20abc, x-a=1")
    assert env_headers() == [("authorization", "Bearer abc"), ("x-a", "1")]
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "k=v")
    assert env_headers() == [("k", "v")]


def test_the_gateways_own_spans_encode_as_the_sdk_would() -> None:
    from gateway.config import Tracing
    from gateway.tracing import build_tracer, start_span

    exporter = InMemorySpanExporter()
    tracer = build_tracer(Tracing(), exporter)
    assert tracer is not None
    span = start_span(tracer, "chat.completions", "chat", "t")
    assert span is not None
    span.set_attributes({"tandem.backends.tried": ["a", "b"], "tandem.cost_usd": 0.5})
    span.end()
    finished = exporter.get_finished_spans()
    assert finished[0].attributes["tandem.backends.tried"] == ("a", "b")
    assert ExportTraceServiceRequest.FromString(encode_request(finished)) == encode_spans(finished)


def test_a_gateway_span_under_a_callers_trace_with_an_error_encodes_as_the_sdk_would() -> None:
    from opentelemetry.trace import Status, StatusCode

    from gateway.config import Tracing
    from gateway.tracing import _remote_parent, build_tracer, start_span

    exporter = InMemorySpanExporter()
    tracer = build_tracer(Tracing(), exporter)
    assert tracer is not None
    parent = _remote_parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    span = start_span(tracer, "chat.completions", "chat", "t", parent)
    assert span is not None and span.context.trace_id == parent.trace_id
    span.set_status(Status(StatusCode.ERROR, "upstream_error"))
    span.end()
    finished = exporter.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(encode_request(finished)) == encode_spans(finished)


def test_cached_fields_never_mix_values_that_compare_equal() -> None:
    """The encoder caches whole fields per key and value: True, 1, 1.0 and "1" must each
    encode as themselves however often they repeat, in whatever order."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tandem-gateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    values = (True, 1, 1.0, "1", True, "1", 1, False, 0, "", ("1",), (1,), (True,), ("1",), (1,))
    for value in values:
        span = provider.get_tracer("tandem.gateway").start_span("s")
        span.set_attribute("tandem.x", value)
        span.end()
    span = provider.get_tracer("tandem.gateway").start_span("s")
    span.set_attribute("tandem.x", ("a",))
    span.end()
    finished = exporter.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(encode_request(finished)) == encode_spans(finished)


def test_spans_of_equal_scopes_and_resources_share_one_group() -> None:
    """Distinct but equal Resource / scope objects group as the SDK groups them (by equality),
    whatever the order the spans come in."""
    exporter = InMemorySpanExporter()
    providers = [
        TracerProvider(resource=Resource.create({"service.name": name})) for name in ("a", "b", "a")
    ]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    for i in range(6):
        providers[i % 3].get_tracer("t", "1").start_span(f"s{i}").end()
    finished = exporter.get_finished_spans()
    mine = ExportTraceServiceRequest.FromString(encode_request(finished))
    assert mine == encode_spans(finished)
    assert len(mine.resource_spans) == 2


def _answered_spans(n: int) -> list:
    """`n` requests through the gateway's own span code, answered by one backend."""
    import time

    from gateway import tracing
    from gateway.config import Tracing, compile_config, parse_config
    from gateway.stages.call import Call

    compiled = compile_config(
        parse_config(
            {
                "backends": {"a": {"url": "http://127.0.0.1:1/v1"}},
                "routes": {"chat": {"backends": [{"backend": "a"}]}},
            }
        )
    )
    exporter = InMemorySpanExporter()
    tracer = tracing.build_tracer(Tracing(), exporter)
    assert tracer is not None
    for i in range(n):
        call = Call("chat.completions", time.monotonic(), compiled)
        call.body = {"model": "chat", "max_tokens": 10 + i, "messages": []}
        call.route = compiled.routes["chat"]
        call.cache_status = "miss"
        tracing.begin(call, tracer, "chat.completions", "chat", "team-a")
        call.tried.append("a")
        call.cost = 0.001 * i
        if i == 1:  # another stage sets an attribute of its own
            call.span.set_attribute("tandem.features", "svc")
        if i == 2:  # ... or overrides a shared one
            call.span.set_attribute("tandem.route", "renamed")
        if i == 3:  # ... or sets one the answer's shared block sets later (the later wins)
            call.span.set_attribute("tandem.backend", "early")
        tracing.end_answered(call, compiled.backends["a"], 5 + i, 7)
    return list(exporter.get_finished_spans())


def test_shared_attribute_blocks_encode_as_the_sdk_would() -> None:
    """The gateway encodes the attributes many spans share once and reuses the bytes; what it
    sends must still be exactly what the SDK's encoder makes of each span's attributes."""
    finished = _answered_spans(4)
    assert ExportTraceServiceRequest.FromString(encode_request(finished)) == encode_spans(finished)
    first, second, third, fourth = (dict(s.attributes) for s in finished)
    assert first["gen_ai.request.max_tokens"] == 10 and second["gen_ai.request.max_tokens"] == 11
    assert first["gen_ai.usage.input_tokens"] == 5 and third["gen_ai.usage.input_tokens"] == 7
    assert second["tandem.features"] == "svc" and "tandem.features" not in first
    assert third["tandem.route"] == "renamed" and first["tandem.route"] == "chat"
    assert first["tandem.backend"] == "a" and first["tandem.cache.status"] == "miss"
    assert fourth["tandem.backend"] == "a"


def test_a_spans_attributes_are_read_only_outside_set_attribute() -> None:
    span = _answered_spans(1)[0]
    with pytest.raises(TypeError):
        span.attributes["x"] = 1  # type: ignore[index]
