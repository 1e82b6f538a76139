"""Stage 5, forward: an answer from the backends, surviving their failures within the deadline.

Walks the route's precomputed chain (the route, then its fallbacks depth-first): on each route up
to 1 + `retries.attempts` calls with jittered exponential backoff, each on a backend picked by
weight among those whose breaker lets a call through; a non-streamed call may be hedged (a second
copy after `hedge_after_s`, the first good answer wins). A prompt too long for the context window
jumps to the route's `context_fallback`. The calls themselves, and the breakers, are
gateway/proxy.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import orjson

from gateway.config import CompiledBackend, CompiledRoute
from gateway.errors import GatewayError
from gateway.proxy import CLIENT, CONTEXT, FAIL, OK, RATE, Attempt, Upstreams
from gateway.split import sticky_bucket

# (route, backend) -> (the backend's upstream endpoint, the payload, headers or None for the
# backend's own): the exchange stage's, for a request in another API than the backend speaks
Prepare = Callable[[CompiledRoute, CompiledBackend], tuple[str, bytes, dict[str, str] | None]]


class Forwarder:
    """Runs the route chain for one request."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.up = upstreams
        self.metrics = upstreams.metrics

    async def forward(
        self,
        route: CompiledRoute,
        endpoint: str,
        body: dict,
        raw: bytes,
        stream: bool,
        inject_usage: bool,
        prepare: Prepare | None = None,
    ) -> Attempt:
        """An answer (OK), or the backend's own client error (CLIENT, or CONTEXT once no
        context fallback is left) to pass on; GatewayError 502 / 503 / 504 when none came.
        Without `prepare` the body goes to each backend's `endpoint` as sent (model swapped)."""
        prep: Prepare = prepare or (
            lambda r, b: (endpoint, _payload(body, raw, r, b, inject_usage), None)
        )

        deadline = time.monotonic() + route.spec.deadline_s
        chain = route.chain
        last: Attempt | None = None
        i = 0
        while i < len(chain):
            r = chain[i]
            i += 1
            if endpoint not in r.endpoints:
                continue
            if r is not route:
                self.metrics.child(self.metrics.fallbacks, route.alias, r.alias).inc()
            a = await self._try_route(r, stream, deadline, prep, body)
            if a is None:
                continue
            if a.kind == OK or a.kind == CLIENT:
                return a
            last = a
            if a.kind == CONTEXT:
                if r.context_fallback is None:
                    return a
                chain, i = r.context_fallback.chain, 0
                route = r  # the fallback metric names the hop from the route that overflowed
        if last is None:
            waits = [self.up.breakers[b.name].retry_after() for r in chain for b in r.backends]
            raise GatewayError(
                503,
                "No backend is available for this model (circuit breakers open).",
                "backend_unavailable",
                retry_after=min((w for w in waits if w > 0), default=1.0),
            )
        raise _final_error(last, deadline)

    async def _try_route(
        self, r: CompiledRoute, stream: bool, deadline: float, prepare: Prepare, body: dict
    ) -> Attempt | None:
        """Up to 1 + `retries.attempts` calls on one route; None if no backend was usable."""
        retries = r.spec.retries
        tried: set[str] = set()
        last: Attempt | None = None
        # a route split by caller (an A/B experiment) sends this caller's first attempt to its
        # arm; a retry after a failure may use the other arm (an answer beats stickiness)
        bucket = sticky_bucket(r, body) if r.sticky is not None else None
        for n in range(retries.attempts + 1):
            backend = self.up.pick(r, tried, bucket) or (self.up.pick(r, set()) if tried else None)
            if backend is None or not self.up.breakers[backend.name].allow():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.up.breakers[backend.name].release()
                raise GatewayError(
                    504,
                    "The request deadline passed before any backend answered.",
                    "deadline_exceeded",
                )
            if n:
                self.metrics.child(self.metrics.retries, backend.name).inc()
            if r.spec.hedge_after_s is not None and not stream:
                a = await self._hedged(r, backend, remaining, prepare)
            else:
                ep, payload, headers = prepare(r, backend)
                a = await self.up.call(r, backend, ep, payload, stream, remaining, headers)
            if a.kind != FAIL and a.kind != RATE:
                return a
            last = a
            tried.add(backend.name)
            if a.kind == FAIL and n < retries.attempts:
                delay = min(retries.max_backoff_s, retries.backoff_s * (2**n))
                delay *= 1 - retries.jitter * random.random()
                if time.monotonic() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
        return last

    async def _hedged(
        self, route: CompiledRoute, backend: CompiledBackend, budget_s: float, prepare: Prepare
    ) -> Attempt:
        """Start a second copy after `hedge_after_s`; the first good answer wins."""
        up = self.up
        ep, payload, headers = prepare(route, backend)
        first = asyncio.ensure_future(
            up.call(route, backend, ep, payload, False, budget_s, headers)
        )
        done, _ = await asyncio.wait((first,), timeout=route.spec.hedge_after_s)
        if done:
            return first.result()
        other = up.pick(route, {backend.name}) or backend
        if not up.breakers[other.name].allow():
            return await first
        ep2, p2, h2 = prepare(route, other)
        left = budget_s - route.spec.hedge_after_s  # type: ignore[operator]
        second = asyncio.ensure_future(up.call(route, other, ep2, p2, False, left, h2))
        pending = {first, second}
        result: Attempt | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    result = t.result()
                    if result.kind in (OK, CLIENT, CONTEXT):
                        return result
            assert result is not None
            return result
        finally:
            for t in pending:
                t.cancel()


def _payload(
    body: dict, raw: bytes, route: CompiledRoute, backend: CompiledBackend, inject_usage: bool
) -> bytes:
    model = backend.model or route.alias
    if not inject_usage and body.get("model") == model:
        return raw
    out = dict(body)
    out["model"] = model
    if inject_usage:
        opts = out.get("stream_options")
        opts = dict(opts) if isinstance(opts, dict) else {}
        opts["include_usage"] = True
        out["stream_options"] = opts
    return orjson.dumps(out)


def _final_error(last: Attempt, deadline: float) -> GatewayError:
    if last.kind == CONTEXT:
        return GatewayError(
            400,
            "The prompt is longer than every backend's context window.",
            "context_length_exceeded",
        )
    if last.kind == RATE:
        return GatewayError(
            503,
            "Every backend for this model is rate limited.",
            "upstream_rate_limited",
            retry_after=last.retry_after,
        )
    if last.err.startswith("timeout") or time.monotonic() >= deadline:
        return GatewayError(504, "The backend did not answer in time.", "upstream_timeout")
    return GatewayError(502, f"The backend failed ({last.err}).", "upstream_error")
