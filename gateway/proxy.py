"""Getting an answer from the backends: weighted choice, retries, fallbacks, hedging, breakers.

One `Upstreams` object holds an aiohttp session and a circuit breaker per backend. `forward`
walks the route's precomputed chain (the route, then its fallbacks) and returns either a complete
answer or, for a stream, an open upstream response whose first chunk already arrived: until that
first chunk nothing has been sent to the caller, so every failure before it can still be retried
or routed elsewhere; after it, a failure ends the stream with an SSE error event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from bisect import bisect_right
from typing import Any

import aiohttp
import orjson

from gateway.breaker import CircuitBreaker
from gateway.config import Compiled, CompiledBackend, CompiledRoute
from gateway.errors import GatewayError
from gateway.metrics import Metrics

log = logging.getLogger("tandem.gateway")

OK, CLIENT, CONTEXT, RATE, FAIL = range(5)
_CONTEXT_MARKERS = (b"context_length_exceeded", b"maximum context length", b"context length")
_CLIENT_STATUSES = frozenset((400, 401, 403, 404, 405, 409, 413, 415, 422))


class Attempt:
    """The outcome of one upstream call."""

    __slots__ = (
        "kind",
        "status",
        "body",
        "obj",
        "resp",
        "first",
        "ttft",
        "err",
        "retry_after",
        "backend",
        "route",
    )

    def __init__(self, kind: int, backend: CompiledBackend, route: CompiledRoute) -> None:
        self.kind = kind
        self.backend = backend
        self.route = route
        self.status = 0
        self.body = b""
        self.obj: dict | None = None  # the parsed answer (OK, non-streamed)
        self.resp: aiohttp.ClientResponse | None = None
        self.first = b""
        self.ttft = 0.0
        self.err = ""
        self.retry_after = 0.0


def _retry_after(value: str | None) -> float:
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0  # an HTTP-date: not worth parsing for a cool-down


class Upstreams:
    def __init__(self, compiled: Compiled, metrics: Metrics) -> None:
        self.metrics = metrics
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._session_keys: dict[str, tuple] = {}
        self._retired: list[aiohttp.ClientSession] = []
        self.update(compiled)

    # -- lifecycle --------------------------------------------------------------------------
    def update(self, compiled: Compiled) -> None:
        """(Re)build sessions and breakers for a new config, keeping what did not change."""
        self.compiled = compiled
        for name, b in compiled.backends.items():
            skey = (b.spec.url, b.spec.max_connections, b.spec.timeouts.connect_s)
            if self._session_keys.get(name) != skey:
                old = self.sessions.get(name)
                if old is not None:
                    self._retired.append(old)
                connector = aiohttp.TCPConnector(
                    limit=b.spec.max_connections, ttl_dns_cache=300, keepalive_timeout=30
                )
                self.sessions[name] = aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=b.spec.timeouts.connect_s
                    ),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent",),
                )
                self._session_keys[name] = skey
            br = self.breakers.get(name)
            if br is None or br.policy != b.spec.breaker:
                gauge = self.metrics.breaker_state.labels(name)
                gauge.set(0)
                self.breakers[name] = CircuitBreaker(b.spec.breaker, on_change=gauge.set)
        for name in list(self.sessions):
            if name not in compiled.backends:
                self._retired.append(self.sessions.pop(name))
                self._session_keys.pop(name, None)
                self.breakers.pop(name, None)

    async def close(self) -> None:
        for s in list(self.sessions.values()) + self._retired:
            await s.close()
        self.sessions.clear()
        self._retired.clear()

    # -- choosing -------------------------------------------------------------------------
    def pick(self, route: CompiledRoute, tried: set[str]) -> CompiledBackend | None:
        backends = route.backends
        if len(backends) == 1:
            b = backends[0]
            return b if b.name not in tried and self.breakers[b.name].available() else None
        b = backends[bisect_right(route.cum_weights, random.random() * route.total_weight)]
        if b.name not in tried and self.breakers[b.name].available():
            return b
        # Slow path: re-draw among the backends still usable.
        pool = [
            (w, c)
            for w, c in zip(route.spec.backends, backends, strict=True)
            if c.name not in tried and self.breakers[c.name].available()
        ]
        if not pool:
            return None
        x = random.random() * sum(w.weight for w, _ in pool)
        for w, c in pool:
            x -= w.weight
            if x < 0:
                return c
        return pool[-1][1]

    # -- one call ---------------------------------------------------------------------------
    async def call(
        self,
        route: CompiledRoute,
        backend: CompiledBackend,
        endpoint: str,
        payload: bytes,
        stream: bool,
        budget_s: float,
    ) -> Attempt:
        """One upstream call; the breaker slot taken by `allow()` is always settled here."""
        br = self.breakers[backend.name]
        t = backend.spec.timeouts
        t0 = time.monotonic()
        resp = None
        phase = "first_token"
        try:
            async with asyncio.timeout(min(t.first_token_s, t.total_s, budget_s)):
                resp = await self.sessions[backend.name].post(
                    backend.urls[endpoint], data=payload, headers=backend.headers
                )
                status = resp.status
                if stream and status == 200:
                    if resp.content_type != "text/event-stream":
                        return self._failed(br, backend, route, "bad_response")
                    first = await resp.content.readany()
                    if not first:
                        raise aiohttp.ServerDisconnectedError("empty stream")
                    a = Attempt(OK, backend, route)
                    a.status, a.resp, a.first = 200, resp, first
                    a.ttft = time.monotonic() - t0
                    br.record_success(a.ttft)
                    resp = None  # handed over to the relay
                    return a
            phase = "total"
            async with asyncio.timeout(
                max(0.0, min(t.total_s, budget_s) - (time.monotonic() - t0))
            ):
                body = await resp.read()
        except TimeoutError:
            return self._failed(br, backend, route, f"timeout_{phase}")
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            log.debug("connect to %s failed: %s", backend.name, exc)
            return self._failed(br, backend, route, "connect")
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            log.debug("call to %s failed: %s", backend.name, exc)
            return self._failed(br, backend, route, "reset")
        except BaseException:
            br.release()
            raise
        finally:
            if resp is not None:
                resp.release()
        return self._classify(br, backend, route, status, body, resp.headers)

    def _failed(
        self, br: CircuitBreaker, backend: CompiledBackend, route: CompiledRoute, err: str
    ) -> Attempt:
        br.record_failure()
        self.metrics.child(self.metrics.upstream_errors, backend.name, err).inc()
        a = Attempt(FAIL, backend, route)
        a.err = err
        return a

    def _classify(
        self,
        br: CircuitBreaker,
        backend: CompiledBackend,
        route: CompiledRoute,
        status: int,
        body: bytes,
        headers: Any,
    ) -> Attempt:
        if status == 200:
            obj = loads_dict(body)
            if obj is None:
                return self._failed(br, backend, route, "bad_response")
            br.record_success()
            a = Attempt(OK, backend, route)
            a.obj = obj
        elif status == 429:
            ra = _retry_after(headers.get("Retry-After"))
            br.cool(ra)
            self.metrics.child(self.metrics.upstream_errors, backend.name, "rate_limited").inc()
            a = Attempt(RATE, backend, route)
            a.retry_after = ra
            a.err = "rate_limited"
        elif status in _CLIENT_STATUSES:
            br.release()
            low = body[:2048].lower()
            kind = (
                CONTEXT
                if status in (400, 413, 422) and any(m in low for m in _CONTEXT_MARKERS)
                else CLIENT
            )
            a = Attempt(kind, backend, route)
        else:
            return self._failed(br, backend, route, f"http_{status}")
        a.status = status
        a.body = body
        return a


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
    ) -> Attempt:
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
            a = await self._try_route(r, endpoint, body, raw, stream, inject_usage, deadline)
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
        self,
        r: CompiledRoute,
        endpoint: str,
        body: dict,
        raw: bytes,
        stream: bool,
        inject_usage: bool,
        deadline: float,
    ) -> Attempt | None:
        """Up to 1 + `retries.attempts` calls on one route; None if no backend was usable."""
        retries = r.spec.retries
        tried: set[str] = set()
        last: Attempt | None = None
        for n in range(retries.attempts + 1):
            backend = self.up.pick(r, tried) or (self.up.pick(r, set()) if tried else None)
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
            payload = _payload(body, raw, r, backend, inject_usage)
            if r.spec.hedge_after_s is not None and not stream:
                a = await self._hedged(r, backend, endpoint, payload, body, raw, remaining)
            else:
                a = await self.up.call(r, backend, endpoint, payload, stream, remaining)
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
        self,
        route: CompiledRoute,
        backend: CompiledBackend,
        endpoint: str,
        payload: bytes,
        body: dict,
        raw: bytes,
        budget_s: float,
    ) -> Attempt:
        """Start a second copy after `hedge_after_s`; the first good answer wins."""
        up = self.up
        first = asyncio.ensure_future(up.call(route, backend, endpoint, payload, False, budget_s))
        done, _ = await asyncio.wait((first,), timeout=route.spec.hedge_after_s)
        if done:
            return first.result()
        other = up.pick(route, {backend.name}) or backend
        if not up.breakers[other.name].allow():
            return await first
        p2 = _payload(body, raw, route, other, False)
        left = budget_s - route.spec.hedge_after_s  # type: ignore[operator]
        second = asyncio.ensure_future(up.call(route, other, endpoint, p2, False, left))
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


def loads_dict(body: bytes) -> dict | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


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
