"""Stage 4, cache: answer from the response cache when it has the answer, and teach it the answers
that came from the backends.

The cache itself is gateway/cache/ (scoping, exact and semantic layers, Redis sharing); this stage
is its seam with the request path. A cache that fails is logged and skipped: the request is
answered from the backends, never refused because of the cache. A hit is served with
`X-Tandem-Cache: hit`, replayed as SSE when the caller asked for a stream, and counted with the
dollars it saved at the route's expected price. Every other answer says `miss` or why the cache
was bypassed (`BYPASS_REASONS`), in the same header and in `tandem_gateway_cache_status_total`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web

from gateway import tracing
from gateway.cache.api import CacheHit, CacheRequest, ResponseCache
from gateway.config import CompiledRoute
from gateway.metrics import Metrics
from gateway.sse import SSE_HEADERS, replay_as_sse, wants_usage
from gateway.stages.account import usage_tokens
from gateway.stages.call import Call

log = logging.getLogger("tandem.gateway")

Spawn = Callable[[Coroutine[Any, Any, None]], None]
# What the cache did, on every completion response from the forward stage on (docs/gateway.md):
# `hit`, `miss`, or `bypass; reason=R` with R one of BYPASS_REASONS.
CACHE_HEADER = "X-Tandem-Cache"
BYPASS_REASONS = {
    "off": "the gateway has no `cache:` section",
    "disabled": "the route's cache is off (`mode: off` or `enabled: false`)",
    "sampled": "the request samples: temperature unset (OpenAI's default is 1) or above "
    "max_temperature, or n > 1, and the route does not set allow_sampled",
    "error": "the cache failed; the backends answered",
    "endpoint": "Anthropic Messages and OpenAI Responses calls are not cached (their answers "
    "carry tool use and stored state the cache does not key on)",
}
HIT, MISS = "hit", "miss"
BYPASS = {reason: f"bypass; reason={reason}" for reason in BYPASS_REASONS}
BYPASS_OFF = BYPASS["off"]
BYPASS_ENDPOINT = BYPASS["endpoint"]
_HIT = {CACHE_HEADER: HIT}
_SSE_HIT = {**SSE_HEADERS, **_HIT}


class CacheStage:
    def __init__(self, cache: ResponseCache, metrics: Metrics, spawn: Spawn) -> None:
        self.cache = cache
        self.metrics = metrics
        self._spawn = spawn  # stores run after the answer, off the request's path

    async def lookup(self, call: Call) -> CacheHit | None:
        """The cached answer for this call, or None (also when the cache fails); what happened
        is left in `call.cache_status` and counted."""
        assert call.key is not None and call.route is not None
        creq = call.cache_request = CacheRequest(
            tenant=call.key.team,
            model=call.body["model"],
            endpoint=call.endpoint,
            body=call.body,
            stream=call.stream,
            route_policy=call.route.cache_policy,
        )
        m = self.metrics
        try:
            reason = self.cache.bypass_reason(creq)
            hit = None if reason is not None else await self.cache.lookup(creq)
        except Exception:
            log.warning("cache lookup failed; answering from the backend", exc_info=True)
            reason, hit = "error", None
        if reason is not None:
            call.cache_status = BYPASS[reason]
            m.child(m.cache_status, call.key.team, "bypass", reason).inc()
        elif hit is None:
            call.cache_status = MISS
            m.child(m.cache_status, call.key.team, MISS, "").inc()
        else:
            call.cache_status = HIT
            m.child(m.cache_status, call.key.team, HIT, hit.layer).inc()
        return hit

    async def answer(self, request: web.Request, call: Call, hit: CacheHit) -> web.StreamResponse:
        """Serve a hit: counted, traced, and shaped the way the caller asked (JSON or SSE)."""
        self.counted(call, hit)
        if not call.stream:
            return web.Response(
                body=orjson.dumps(hit.response), content_type="application/json", headers=_HIT
            )
        out = web.StreamResponse(status=200, headers=_SSE_HIT)
        await out.prepare(request)
        await out.write(replay_as_sse(hit.response, call.endpoint, wants_usage(call.body)))
        await out.write_eof()
        return out

    def counted(self, call: Call, hit: CacheHit) -> None:
        """A hit's metrics (hits, dollars saved) and the end of its trace span."""
        assert call.key is not None and call.route is not None
        m = self.metrics
        m.child(m.cache_hits, call.key.team, hit.layer).inc()
        saved = answer_cost(hit.response, call.route)
        if saved:
            m.child(m.cache_saved, call.key.team, hit.layer).inc(saved)
        if call.span is not None:
            tracing.end_cached(call, hit.layer, hit.response, saved)

    def store(self, creq: CacheRequest, response: dict) -> None:
        """Remember an upstream answer, in the background (the caller already has it)."""
        self._spawn(self._store(creq, response))

    async def _store(self, creq: CacheRequest, response: dict) -> None:
        try:
            await self.cache.store(creq, response)
        except Exception:
            log.warning("cache store failed", exc_info=True)


def answer_cost(response: dict, route: CompiledRoute) -> float:
    """What this answer would cost from the route's backends (0 without usage)."""
    tin, tout = usage_tokens(response.get("usage"))
    return tin * route.price_in + tout * route.price_out
