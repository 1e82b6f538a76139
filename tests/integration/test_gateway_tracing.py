"""The gateway's GenAI spans against a real upstream: every span carries cost, tokens, cache
outcome, route, backends tried, fallback and breaker state; text is captured only for the routes
that opt in, redacted; the upstream sees the span's traceparent; sampling is parent-based."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.gateway_harness import RunningGateway, chat
from tests.support.upstream import ServerThread, Upstream, wait_until

pytestmark = pytest.mark.integration

SECRET = "my-secret-prompt-text-42"
PII = "Card 4111 1111 1111 1111, mail jane@example.com, key sk-abcdefghijklmnopqrstuv"


@pytest.fixture(scope="module")
def ups():
    # the answer's text starts with the upstream's name: an email, so the answer has PII too
    good, bad = Upstream("bob@example.com"), Upstream("bad", status=500)
    servers = [ServerThread(u.app).start() for u in (good, bad)]
    yield good, bad, servers
    for s in servers:
        s.stop()


@pytest.fixture
def good(ups):
    ups[0].reset_counts()
    return ups[0]


def config(ups, capture: list[str], **tracing) -> dict:
    good, bad, (s_good, s_bad) = ups
    return {
        "backends": {
            "a": {"url": s_good.url + "/v1"},
            "b": {"url": s_bad.url + "/v1"},
        },
        "routes": {
            "chat": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}},
            "quiet": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}},
            "flaky": {
                "backends": [{"backend": "b"}],
                "retries": {"attempts": 0},
                "fallbacks": ["chat"],
            },
        },
        "prices": {"a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "tracing": {"capture": {"routes": capture}, **tracing},
    }


def post(gw: RunningGateway, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def attrs(span) -> dict:
    return dict(span.attributes)


EVERY_SPAN = {
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "tandem.route",
    "tandem.route.answered",
    "tandem.fallback",
    "tandem.backends.tried",
    "tandem.breaker.state",
    "tandem.cache.status",
    "tandem.cost_usd",
    "tandem.team",
}


def test_an_answer_span_has_everything_and_the_captured_text_is_redacted(ups, good) -> None:
    exporter = InMemorySpanExporter()
    with RunningGateway(config(ups, ["chat"]), span_exporter=exporter) as gw:
        r = post(gw, chat("chat", PII, max_tokens=64, temperature=0.2))
        assert r.status_code == 200
    (span,) = exporter.get_finished_spans()
    a = attrs(span)
    assert set(a) >= EVERY_SPAN
    assert span.name == "chat chat" and span.kind.name == "CLIENT"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"]
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    tin, tout = a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]
    assert a["tandem.cost_usd"] == pytest.approx((tin * 1.0 + tout * 2.0) / 1e6)
    assert a["tandem.backends.tried"] == ("a",) and a["tandem.fallback"] is False
    assert a["tandem.route.answered"] == "chat" and a["tandem.breaker.state"] == "closed"
    assert a["tandem.cache.status"] == "bypass" and a["tandem.backend"] == "a"
    assert span.end_time > span.start_time  # the span's duration is the request's latency
    # the prompt and the answer, redacted, in the GenAI conventions' message format
    (message,) = json.loads(a["gen_ai.input.messages"])
    assert message["role"] == "user"
    assert message["parts"][0]["content"] == "Card [CARD], mail [EMAIL], key [KEY]"
    (answer,) = json.loads(a["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert answer["parts"][0]["content"].startswith("[EMAIL]: tok0")
    assert "jane@example.com" not in str(a) and "bob@example.com" not in str(a)
    # the upstream got the span's traceparent: Ray Serve's spans join this trace
    ctx = span.get_span_context()
    flags = f"{int(ctx.trace_flags):02x}"
    assert good.headers[-1]["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}"


def test_a_fallback_names_every_backend_tried(ups, good) -> None:
    exporter = InMemorySpanExporter()
    with RunningGateway(config(ups, []), span_exporter=exporter) as gw:
        assert post(gw, chat("flaky")).status_code == 200
    (span,) = exporter.get_finished_spans()
    a = attrs(span)
    assert set(a) >= EVERY_SPAN
    assert a["tandem.route"] == "flaky" and a["tandem.route.answered"] == "chat"
    assert a["tandem.fallback"] is True and a["tandem.backends.tried"] == ("b", "a")


def test_a_failed_request_span_is_an_error_with_the_breaker_state(ups, good) -> None:
    exporter = InMemorySpanExporter()
    cfg = config(ups, [])
    cfg["routes"]["flaky"]["fallbacks"] = []
    with RunningGateway(cfg, span_exporter=exporter) as gw:
        assert post(gw, chat("flaky")).status_code == 502
    (span,) = exporter.get_finished_spans()
    a = attrs(span)
    assert EVERY_SPAN - {"tandem.route.answered"} <= set(a)
    assert a["error.type"] == "upstream_error" and span.status.status_code.name == "ERROR"
    assert a["tandem.backends.tried"] == ("b",) and a["tandem.breaker.state"] == "closed"


def test_without_capture_no_text_reaches_spans_or_logs(ups, good, caplog) -> None:
    exporter = InMemorySpanExporter()
    caplog.set_level(logging.DEBUG)
    with RunningGateway(config(ups, ["chat"]), span_exporter=exporter) as gw:
        assert post(gw, chat("quiet", SECRET)).status_code == 200
        assert post(gw, chat("quiet", SECRET, stream=True)).status_code == 200
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        a = attrs(span)
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
        assert all(SECRET not in str(v) and "tok0" not in str(v) for v in a.values())
    assert SECRET not in caplog.text


def test_a_streamed_answer_is_captured_whole(ups, good) -> None:
    exporter = InMemorySpanExporter()
    with RunningGateway(config(ups, ["chat"]), span_exporter=exporter) as gw:
        body = chat("chat", "hello", stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
            assert r.status_code == 200
            r.read()
        assert wait_until(lambda: len(exporter.get_finished_spans()) == 1)
    a = attrs(exporter.get_finished_spans()[0])
    assert a["tandem.stream"] is True
    (answer,) = json.loads(a["gen_ai.output.messages"])
    assert answer["parts"][0]["content"].startswith("tok0 tok1")


def test_a_cache_hit_is_a_span_too(ups, good) -> None:
    exporter = InMemorySpanExporter()
    cfg = config(ups, ["chat"])
    cfg["cache"] = {"mode": "exact", "ttl_s": 60}
    with RunningGateway(cfg, span_exporter=exporter) as gw:
        question = chat("chat", "same question", temperature=0)  # a sampled answer is not kept
        assert post(gw, question).status_code == 200
        hit = None
        deadline = time.monotonic() + 30  # the store runs after the answer
        while time.monotonic() < deadline:
            hit = post(gw, question)
            if hit.headers["X-Tandem-Cache"] == "hit":
                break
            time.sleep(0.05)
        assert hit is not None and hit.headers["X-Tandem-Cache"] == "hit"
    span = exporter.get_finished_spans()[-1]
    a = attrs(span)
    assert set(a) >= EVERY_SPAN
    assert a["tandem.cache.status"] == "hit" and a["tandem.cache.layer"]
    assert a["tandem.backends.tried"] == () and a["tandem.cost_usd"] == 0.0
    assert a["tandem.cache.saved_usd"] > 0 and "gen_ai.output.messages" in a


def test_sampling_follows_the_callers_traceparent(ups, good) -> None:
    exporter = InMemorySpanExporter()
    with RunningGateway(config(ups, [], sampling=0.0), span_exporter=exporter) as gw:
        assert post(gw, chat("chat")).status_code == 200
        assert exporter.get_finished_spans() == ()
        assert "traceparent" not in good.headers[-1]
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert post(gw, chat("chat"), {"traceparent": parent}).status_code == 200
    # the caller's sampled trace is continued: same trace id, the caller's span as parent
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
