"""The gateway's OTLP/HTTP export (`tracing.protocol: http/protobuf`) against a real receiver on
loopback: every answered request arrives as a span, decoded with OpenTelemetry's own protobuf
classes; batches hold at most BATCH_SIZE spans; a receiver that answers 503 first loses nothing
(retried); one that refuses, or is gone, costs the spans (counted on /metrics) but never a
request; a full queue drops and counts instead of growing."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from gateway.otlp import OtlpHttpProcessor
from gateway.tracing import BATCH_SIZE
from tests.support.gateway_harness import RunningGateway, blast, chat
from tests.support.otlp import OtlpReceiver, attributes, serve
from tests.support.upstream import ServerThread, Upstream
from vocabulary.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream():
    server = ServerThread(Upstream("a").app).start()
    yield server
    server.stop()


def config(upstream, endpoint: str, protocol: str = "http/protobuf") -> dict:
    return {
        "backends": {"a": {"url": upstream.url + "/v1"}},
        "routes": {"chat": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}}},
        "prices": {"a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "tracing": {"exporter": "otlp", "protocol": protocol, "endpoint": endpoint},
    }


def send(gw: RunningGateway, n: int) -> None:
    results = asyncio.run(blast(gw.url, [chat("chat")] * n))
    assert [status for status, _, _ in results] == [200] * n


def test_every_answer_arrives_as_a_span_in_batches_of_at_most_the_batch_size(
    upstream, monkeypatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t0ken")
    receiver = OtlpReceiver()
    server = serve(receiver)
    try:
        n = BATCH_SIZE + 44
        with RunningGateway(config(upstream, server.url)) as gw:
            send(gw, n)
        # shutdown sent what was left; the first BATCH_SIZE left as soon as they waited
        spans = receiver.spans()
        assert len(spans) == n
        assert all(
            len(s.spans) <= BATCH_SIZE
            for r in receiver.requests
            for rs in r.resource_spans
            for s in rs.scope_spans
        )
        assert len(receiver.requests) >= 2
        a = attributes(spans[0])
        assert a["tandem.route"] == "chat" and a["gen_ai.usage.output_tokens"] > 0
        assert (
            a["tandem.cost_usd"] > 0 and spans[0].end_time_unix_nano > spans[0].start_time_unix_nano
        )
        resource = {
            kv.key: kv.value.string_value
            for kv in receiver.requests[0].resource_spans[0].resource.attributes
        }
        assert resource["service.name"] == "tandem-gateway"
        h = receiver.headers[0]
        assert h["Content-Type"] == "application/x-protobuf"
        assert h["authorization"] == "Bearer t0ken"
        assert gw.metric("tandem_gateway_spans_total", outcome="exported") == n
    finally:
        server.stop()


def test_a_receiver_that_answers_503_first_loses_nothing(upstream) -> None:
    receiver = OtlpReceiver(fail_first=1, fail_status=503)
    server = serve(receiver)
    try:
        with RunningGateway(config(upstream, server.url)) as gw:
            send(gw, 5)
        assert len(receiver.spans()) == 5
        assert receiver.posts == 2  # the same batch, retried
    finally:
        server.stop()


def test_a_refusing_or_absent_receiver_costs_spans_not_requests(upstream) -> None:
    receiver = OtlpReceiver(fail_first=10**6, fail_status=400)  # not retryable: given up at once
    server = serve(receiver)
    try:
        with RunningGateway(config(upstream, server.url)) as gw:
            send(gw, 3)
        assert receiver.spans() == [] and receiver.posts == 1
        assert gw.metric("tandem_gateway_spans_total", outcome="failed") == 3
    finally:
        server.stop()
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, retried
    with RunningGateway(config(upstream, nobody)) as gw:
        send(gw, 2)
    assert gw.metric("tandem_gateway_spans_total", outcome="failed") == 2


def test_the_protocol_key_picks_the_transport(upstream) -> None:
    http = RunningGateway(config(upstream, "http://127.0.0.1:1"))
    grpc = RunningGateway(config(upstream, "http://127.0.0.1:1", protocol="grpc"))
    assert isinstance(http.gateway.tracer.processor, OtlpHttpProcessor)
    assert type(grpc.gateway.tracer.processor).__name__ == "BatchSpanProcessor"
    grpc.gateway.tracer.shutdown()


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    receiver = OtlpReceiver(hold_s=0.5)  # a slow receiver: the first batch stays in flight
    server = serve(receiver)
    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("t")
    for i in range(12):
        tracer.start_span(f"s{i}").end()
    spans = finished.get_finished_spans()

    async def run() -> OtlpHttpProcessor:
        p = OtlpHttpProcessor(
            server.url,
            spans[0].resource,
            InstrumentationScope("t"),
            max_queue=4,
            batch_size=2,
            delay_s=10.0,
        )
        for s in spans[:2]:
            p.on_end(s)  # a full batch: sent at once, and held by the receiver
        await asyncio.sleep(0.1)
        for s in spans[2:]:
            p.on_end(s)  # 4 wait, 6 find the queue full
        assert p.dropped == 6
        await p.aclose()  # the batch in flight, then the 4 waiting, in batches of 2
        return p

    try:
        p = asyncio.run(run())
        assert p.exported == 6 and p.dropped == 6 and p.failed == 0
        assert [len(r.resource_spans[0].scope_spans[0].spans) for r in receiver.requests] == [
            2,
            2,
            2,
        ]
        assert [s.name for s in receiver.spans()] == [s.name for s in spans[:6]]
    finally:
        server.stop()
