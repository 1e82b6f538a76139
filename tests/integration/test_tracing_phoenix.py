"""Proof on real parts: the gateway exports its spans over OTLP (batched, as in production) to a
real Phoenix, with authentication on as the Tracing component deploys it, and the trace read
back from Phoenix's API has the prompt and response (opted in, redacted), cost, tokens and
latency; a route without capture leaves no text in Phoenix or in any log."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from tests.support.gateway_harness import RunningGateway, chat
from tests.support.phoenix import STACK_SECRET, Phoenix, phoenix_server
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory) -> Phoenix:
    with phoenix_server(tmp_path_factory.mktemp("phoenix")) as server:  # once per module
        yield server


@pytest.fixture(scope="module")
def upstream():
    up = Upstream("bob@example.com")  # the answer starts with the upstream's name: PII
    server = ServerThread(up.app).start()
    yield server
    server.stop()


def gateway_config(upstream, phoenix: Phoenix, capture: list[str], protocol: str) -> dict:
    route = {"backends": [{"backend": "a"}], "retries": {"attempts": 0}}
    return {
        "backends": {"a": {"url": upstream.url + "/v1"}},
        "routes": {"support": route, "internal": dict(route)},
        "prices": {"a": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}},
        "tracing": {
            "exporter": "otlp",
            "protocol": protocol,
            # Phoenix takes OTLP/gRPC on its own port and OTLP/HTTP at /v1/traces on its app's
            "endpoint": phoenix.otlp_grpc if protocol == "grpc" else phoenix.url,
            "service_name": "tandem-gateway-test",
            "capture": {"routes": capture},
        },
    }


def send(
    phoenix: Phoenix,
    upstream,
    monkeypatch,
    route: str,
    text: str,
    capture: list[str],
    protocol: str = "http/protobuf",
):
    # the OTLP exporter's standard header variable: here it carries Phoenix's admin secret, the
    # bearer token the collector sends in the cluster
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"authorization=Bearer%20{phoenix.admin_secret}"
    )
    with RunningGateway(gateway_config(upstream, phoenix, capture, protocol)) as gw:
        r = httpx.post(
            gw.url + "/v1/chat/completions", json=chat(route, text, max_tokens=32), timeout=30
        )
        assert r.status_code == 200
    # the gateway flushed its batch at shutdown; Phoenix inserts it asynchronously


def find(phoenix: Phoenix, marker: str, n_before: int) -> dict:
    spans = phoenix.wait_spans(n_before + 1)
    mine = [s for s in spans if marker in json.dumps(s)]
    assert len(mine) == 1, f"expected one span with {marker!r} among {len(spans)}"
    return mine[0]


def test_the_component_derives_the_same_admin_secret() -> None:
    from components.tracing import derive
    from tests.support import phoenix as support

    assert derive(STACK_SECRET, "phoenix-admin") == support._derive("phoenix-admin")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_traced_call_reads_back_from_phoenix(phoenix, upstream, monkeypatch, protocol) -> None:
    marker = f"ticket-{uuid.uuid4().hex[:12]}"
    text = f"{marker}: refund card 4111 1111 1111 1111 to jane@example.com"
    before = len(phoenix.spans())
    send(phoenix, upstream, monkeypatch, "support", text, ["support"], protocol)
    span = find(phoenix, marker, before)
    a = span["attributes"]
    assert span["name"] == "chat support" and span["span_kind"] == "LLM"
    # prompt and response, redacted, as the GenAI conventions put them ...
    (prompt,) = json.loads(a["gen_ai.input.messages"])
    assert prompt["parts"][0]["content"] == f"{marker}: refund card [CARD] to [EMAIL]"
    (answer,) = json.loads(a["gen_ai.output.messages"])
    assert answer["parts"][0]["content"].startswith("[EMAIL]: tok0")
    # ... which Phoenix also shows in its own (OpenInference) form
    assert a["llm.input_messages.0.message.content"] == f"{marker}: refund card [CARD] to [EMAIL]"
    dump = json.dumps(span)
    assert "4111" not in dump and "jane@example.com" not in dump and "bob@" not in dump
    # cost, tokens and latency
    tin, tout = a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]
    assert tin > 0 and tout > 0
    assert a["tandem.cost_usd"] == pytest.approx((tin * 2.0 + tout * 8.0) / 1e6)
    start = datetime.fromisoformat(span["start_time"])
    end = datetime.fromisoformat(span["end_time"])
    assert end > start
    assert a["tandem.route"] == "support" and a["tandem.backends.tried"] == ["a"]
    assert a["tandem.breaker.state"] == "closed" and a["tandem.fallback"] is False


def test_without_capture_no_text_reaches_phoenix_or_the_logs(
    phoenix, upstream, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"secret-{uuid.uuid4().hex[:12]}"
    before = phoenix.spans()
    send(phoenix, upstream, monkeypatch, "internal", f"{marker} my salary is 1", ["support"])
    spans = phoenix.wait_spans(len(before) + 1)
    new = [
        s for s in spans if s["context"]["span_id"] not in {b["context"]["span_id"] for b in before}
    ]
    assert len(new) == 1 and new[0]["attributes"]["tandem.route"] == "internal"
    assert "gen_ai.input.messages" not in new[0]["attributes"]
    assert "tok0" not in json.dumps(new[0])  # nor the answer
    assert marker not in json.dumps(spans)
    assert marker not in caplog.text
    assert marker not in phoenix.log.read_text(errors="replace")


def test_phoenix_refuses_spans_without_the_admin_secret(phoenix) -> None:
    provider = TracerProvider()
    refused = OTLPSpanExporter(endpoint=phoenix.otlp_grpc, timeout=10)
    results: list[SpanExportResult] = []

    class Recorder(SimpleSpanProcessor):
        def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
            results.append(refused.export([span]))

    provider.add_span_processor(Recorder(refused))
    provider.get_tracer("t").start_span("no-key").end()
    assert results == [SpanExportResult.FAILURE]
