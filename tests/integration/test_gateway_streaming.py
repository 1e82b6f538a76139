"""Streaming pass-through, the response-cache hook, traces, and no prompt text in logs."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest

import gateway.cache
from gateway.app import StartupError
from gateway.sse import replay_as_sse
from tests.support.gateway_harness import RunningGateway, chat
from tests.support.upstream import (
    ServerThread,
    Upstream,
    raw_stream_app,
    stream_events,
    styled,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def up():
    upstream = Upstream("a")
    server = ServerThread(upstream.app).start()
    yield upstream, server
    server.stop()


@pytest.fixture
def upstream(up):
    up[0].set(chunks=6)
    up[0].reset_counts()
    return up[0]


def cfg(up, **extra) -> dict:
    return {
        "backends": {"a": {"url": up[1].url + "/v1"}},
        "routes": {"chat": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}}},
        **extra,
    }


def stream(url: str, body: dict) -> bytes:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return b"".join(r.iter_bytes())


def test_stream_is_passed_through_byte_for_byte(up, upstream) -> None:
    body = chat("chat", "tell me", stream=True, stream_options={"include_usage": True})
    direct = stream(up[1].url, body)
    with RunningGateway(cfg(up)) as gw:
        via = stream(gw.url, body)
        assert via == direct
        # accounted once the stream has ended (its usage is known then): after the caller's EOF
        assert wait_until(lambda: gw.metric("tandem_gateway_tokens_total", direction="out") == 6)


def test_gateway_asks_for_usage_and_hides_the_extra_chunk(up, upstream) -> None:
    with RunningGateway(cfg(up)) as gw:
        via = stream(gw.url, chat("chat", "x" * 40, stream=True))
        assert via == b"".join(stream_events("a", "chat", 6, None))
        assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
        assert wait_until(lambda: gw.metric("tandem_gateway_tokens_total", direction="in") == 11)
        assert gw.metric("tandem_gateway_tokens_total", direction="out") == 6


HEAD = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
EVENTS = [
    {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {**HEAD, "choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {**HEAD, "choices": [], "usage": USAGE},
]


@pytest.mark.parametrize(
    "style",
    [
        pytest.param({"spaces": True, "reverse_keys": False, "line_end": b"\n"}, id="spaced"),
        pytest.param({"spaces": False, "reverse_keys": True, "line_end": b"\n"}, id="key-order"),
        pytest.param({"spaces": True, "reverse_keys": True, "line_end": b"\r\n"}, id="crlf"),
    ],
)
def test_usage_chunk_of_any_upstream_style_is_read_and_hidden(style: dict) -> None:
    """Whatever the upstream's JSON and line ends look like, the usage event the gateway asked
    for is charged and dropped: the openai SDK's `chunk.choices[0]` loop never meets it."""
    import openai

    with ServerThread(lambda: raw_stream_app(lambda: styled(EVENTS, **style))) as raw:
        config = {
            "backends": {"raw": {"url": raw.url + "/v1"}},
            "routes": {"chat": {"backends": [{"backend": "raw"}]}},
        }
        with RunningGateway(config) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
            chunks = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "capital?"}], stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
            assert text == "Paris"
            assert wait_until(lambda: gw.metric("tandem_gateway_tokens_total", direction="in") == 7)
            assert gw.metric("tandem_gateway_tokens_total", direction="out") == 3
            asked = chat("chat", "capital?", stream=True, stream_options={"include_usage": True})
            assert stream(gw.url, asked) == styled(EVENTS, **style)  # asked for: byte for byte


def test_a_stream_broken_mid_way_ends_with_an_error_event(up, upstream) -> None:
    upstream.set(reset_mid_stream=True)
    with RunningGateway(cfg(up)) as gw:
        data = stream(gw.url, chat("chat", stream=True))
        events = [e for e in data.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        assert orjson.loads(events[-2][6:])["error"]["code"] == "stream_broken"
        assert (
            gw.metric(
                "tandem_gateway_upstream_errors_total", backend="a", **{"class": "stream_broken"}
            )
            == 1
        )


class FakeCache:
    """The whole ResponseCache protocol (gateway/cache/api.py), answering from a dict."""

    registry = None

    def __init__(self, config) -> None:
        self.config = config
        self.entries: dict[str, dict] = {}
        self.requests: list = []
        self.upstream = None
        self.started = False
        self.closed = False

    def attach_upstream(self, upstream) -> None:
        self.upstream = upstream

    async def start(self) -> None:
        self.started = True

    def bypass_reason(self, request):
        return None

    async def lookup(self, request):
        from gateway.cache.api import CacheHit

        self.requests.append(request)
        hit = self.entries.get(request.body["messages"][-1]["content"])
        return CacheHit(layer="exact", response=hit) if hit else None

    async def store(self, request, response) -> None:
        self.entries[request.body["messages"][-1]["content"]] = response

    async def close(self) -> None:
        self.closed = True


def test_cache_hook_lookup_store_and_streamed_replay(up, upstream, monkeypatch) -> None:
    built: list[FakeCache] = []
    monkeypatch.setattr(
        gateway.cache,
        "build_cache",
        lambda c: built.append(FakeCache(c)) or built[-1],
        raising=False,
    )
    config = cfg(up, cache={"mode": "semantic", "ttl_s": 60})
    config["routes"]["chat"]["cache"] = {"mode": "exact"}
    with RunningGateway(config) as gw:
        cache = built[0]
        assert cache.config.model_dump(exclude_unset=True) == {"mode": "semantic", "ttl_s": 60}
        assert cache.started and cache.upstream == gw.gateway._recheck_answer
        first = httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", "q1")).json()
        import time

        time.sleep(0.1)  # the store runs after the answer
        second = httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", "q1"))
        assert second.headers["X-Tandem-Cache"] == "hit" and second.json() == first
        assert upstream.requests == 1
        req = cache.requests[0]
        assert (req.tenant, req.model, req.endpoint) == ("anonymous", "chat", "chat.completions")
        assert req.route_policy.model_dump(exclude_unset=True) == {"mode": "exact"}
        data = stream(gw.url, chat("chat", "q1", stream=True))
        assert upstream.requests == 1
        assert data == replay_as_sse(first, "chat.completions", False)
        text = "".join(
            orjson.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in data.split(b"\n\n")
            if e.startswith(b"data: {")
        )
        assert text == first["choices"][0]["message"]["content"]
    assert cache.closed


def test_no_cache_section_means_no_cache_and_a_broken_cache_stops_startup(
    up, upstream, monkeypatch
) -> None:
    with RunningGateway(cfg(up)) as gw:
        assert gw.gateway.cache is None

    def broken(_config):
        raise ValueError("embedding model not found")

    monkeypatch.setattr(gateway.cache, "build_cache", broken, raising=False)
    with pytest.raises(StartupError, match="cache.*embedding model not found"):
        RunningGateway(cfg(up, cache={"mode": "semantic"}))
    monkeypatch.delattr(gateway.cache, "build_cache", raising=False)
    with pytest.raises(StartupError, match="cannot be imported"):
        RunningGateway(cfg(up, cache={}))


def test_genai_spans_and_no_prompt_text_in_logs(up, upstream, caplog) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    secret = "my-secret-prompt-text-42"
    caplog.set_level(logging.DEBUG, logger="tandem.gateway")
    with RunningGateway(cfg(up), span_exporter=exporter) as gw:
        assert (
            httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", secret)).status_code
            == 200
        )
        upstream.set(status=500)
        assert (
            httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", secret)).status_code
            == 502
        )
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    attrs = dict(spans[0].attributes)
    assert spans[0].name == "chat chat"
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 6
    assert dict(spans[1].attributes)["error.type"] == "upstream_error"
    assert secret not in caplog.text
    assert all(secret not in str(v) for s in spans for v in s.attributes.values())
