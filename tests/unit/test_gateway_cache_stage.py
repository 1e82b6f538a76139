"""Stage 4, cache: the seam between the request path and the response cache. A hit is served and
counted; a cache that fails is skipped, never a refusal."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.cache.api import CacheHit, CacheRequest
from gateway.config import ANONYMOUS, compile_config, parse_config
from gateway.metrics import Metrics
from gateway.stages.cache import CacheStage
from gateway.stages.call import Call
from tests.support.cache_requests import answer

COMPILED = compile_config(
    parse_config(
        {
            "backends": {"a": {"url": "http://127.0.0.1:1/v1"}},
            "routes": {"chat": {"backends": [{"backend": "a"}], "cache": {"mode": "exact"}}},
            "prices": {"a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        }
    )
)


class DictCache:
    """The ResponseCache protocol over a dict keyed by the last message; can be told to fail."""

    registry = None

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.entries: dict[str, dict] = {}
        self.requests: list[CacheRequest] = []

    def attach_upstream(self, upstream: Any) -> None: ...

    async def start(self) -> None: ...

    def bypass_reason(self, request: CacheRequest) -> str | None:
        return "sampled" if request.body.get("temperature", 0) > 0.5 else None

    async def lookup(self, request: CacheRequest) -> CacheHit | None:
        self.requests.append(request)
        if self.fail:
            raise ConnectionError("cache down")
        hit = self.entries.get(request.body["messages"][-1]["content"])
        return CacheHit("exact", hit) if hit else None

    async def store(self, request: CacheRequest, response: dict) -> None:
        if self.fail:
            raise ConnectionError("cache down")
        self.entries[request.body["messages"][-1]["content"]] = response

    async def close(self) -> None: ...


def call(content: str = "q") -> Call:
    c = Call("chat.completions", time.monotonic(), COMPILED)
    c.key = ANONYMOUS
    c.route = COMPILED.routes["chat"]
    c.body = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    return c


def stage(cache: DictCache, spawned: list) -> tuple[CacheStage, Metrics]:
    metrics = Metrics()
    return CacheStage(cache, metrics, spawned.append), metrics


async def test_a_miss_asks_with_the_callers_scope_and_the_routes_policy() -> None:
    cache, spawned = DictCache(), []
    cached, _ = stage(cache, spawned)
    c = call()
    assert await cached.lookup(c) is None
    req = cache.requests[0]
    assert c.cache_request is req
    assert (req.tenant, req.model, req.endpoint, req.stream) == (
        "anonymous",
        "chat",
        "chat.completions",
        False,
    )
    assert req.route_policy is COMPILED.routes["chat"].cache_policy
    cached.store(req, answer("A"))
    for coro in spawned:
        await coro
    assert cache.entries == {"q": answer("A")}


async def test_a_hit_is_served_counted_and_priced() -> None:
    cache = DictCache()
    cache.entries["q"] = answer("A")  # usage: 10 in, 3 out
    cached, metrics = stage(cache, [])
    c = call()
    hit = await cached.lookup(c)
    assert hit is not None
    resp = await cached.answer(None, c, hit)  # type: ignore[arg-type]  # no request: not a stream
    assert resp.headers["X-Tandem-Cache"] == "hit"
    assert orjson.loads(resp.body) == answer("A")  # type: ignore[arg-type]
    labels = {"team": "anonymous", "layer": "exact"}
    assert metrics.registry.get_sample_value("tandem_gateway_cache_hits_total", labels) == 1
    saved = metrics.registry.get_sample_value("tandem_gateway_cache_saved_usd_total", labels)
    assert saved == (10 * 1.0 + 3 * 2.0) / 1e6


async def test_a_failing_cache_is_skipped_and_logged(caplog) -> None:
    spawned: list = []
    cached, _ = stage(DictCache(fail=True), spawned)
    c = call()
    with caplog.at_level(logging.WARNING, logger="tandem.gateway"):
        assert await cached.lookup(c) is None
        assert c.cache_request is not None
        cached.store(c.cache_request, answer("A"))
        await spawned[0]  # does not raise
    assert "cache lookup failed" in caplog.text and "cache store failed" in caplog.text
