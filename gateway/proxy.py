"""The backends: one pooled aiohttp session and one circuit breaker per backend, the weighted
choice between a route's backends, and one upstream call with its outcome classified.

`Upstreams.call` returns an `Attempt`: a complete answer, or for a stream an open upstream
response whose first chunk already arrived (until that first chunk nothing has been sent to the
caller, so every failure before it can still be retried or routed elsewhere: the forward stage,
gateway/stages/forward.py, does that). Every failure is recorded here, on the backend's breaker,
including a stream that breaks off later (`stream_failed`, called by the relay stage).

A call first takes a slot of the backend's adaptive concurrency limit (gateway/concurrency.py),
waiting up to `concurrency.queue_s`; a backend whose limit stays full answers BUSY and the
forward stage moves on. A streamed answer keeps its slot until the relay stage calls `finished`.
A 429 is classified here: provider-wide (the answer's `x-ratelimit-remaining-requests` or
`-tokens` is 0, or most recent answers were 429s: the breaker decides) cools the backend for the
provider's reset time; any other 429 lowers the backend's concurrency limit and is retried by the
forward stage after its `Retry-After` (`retry-after-ms` when the provider sends it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from bisect import bisect_right
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from gateway.breaker import CircuitBreaker
from gateway.concurrency import AdaptiveLimit
from gateway.config import Compiled, CompiledBackend, CompiledRoute
from gateway.metrics import Metrics
from gateway.sse import loads_dict

log = logging.getLogger("tandem.gateway")

OK, CLIENT, CONTEXT, RATE, FAIL, BUSY = range(6)
_CONTEXT_MARKERS = (
    b"context_length_exceeded",
    b"maximum context length",
    b"context length",
    b"prompt is too long",  # Anthropic's
)
_CLIENT_STATUSES = frozenset((400, 401, 403, 404, 405, 409, 413, 415, 422))
# The failure classes a backend's errors counter starts at 0 for (the 5xx a server commonly
# answers among them): Prometheus's increase() cannot count a series' first increment, so a
# backend that fails from its first call (a bad canary) would read as error-free for one window.
ERROR_CLASSES = (
    "bad_response",
    "timeout_first_token",
    "timeout_total",
    "connect",
    "reset",
    "rate_limited",
    "provider_limited",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
)


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
        "provider_wide",
        "backend",
        "route",
        "slot",
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
        self.retry_after: float | None = None  # RATE: what the provider asked for, if it did
        self.provider_wide = False  # RATE: the whole backend was cooled
        self.slot: AdaptiveLimit | None = None  # a stream's concurrency slot, until `finished`


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after_s(headers: Any) -> float | None:
    """The wait a 429 asks for: `retry-after-ms` (OpenAI, Azure), else `Retry-After` in seconds
    or as an HTTP date; None when the answer names none."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def duration_s(value: str | None) -> float | None:
    """A rate-limit reset time: seconds (`1.5`) or Go-style durations (`20ms`, `6m0s`)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT_S[u] for n, u in parts) if parts else None


def provider_limit_s(headers: Any) -> float | None:
    """Seconds until a provider-wide limit resets, when the answer says the key or account is
    exhausted (`x-ratelimit-remaining-requests` or `-tokens` is 0); None when it does not."""
    for dim in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{dim}") == "0":
            reset = duration_s(headers.get(f"x-ratelimit-reset-{dim}"))
            if reset is None:
                reset = retry_after_s(headers)
            return 1.0 if reset is None else reset
    return None


class Upstreams:
    def __init__(self, compiled: Compiled, metrics: Metrics) -> None:
        self.metrics = metrics
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limits: dict[str, AdaptiveLimit] = {}
        self._session_keys: dict[str, tuple] = {}
        self._breaker_keys: dict[str, tuple] = {}
        self._retired: list[aiohttp.ClientSession] = []
        self.update(compiled)

    # -- lifecycle --------------------------------------------------------------------------
    def update(self, compiled: Compiled) -> None:
        """(Re)build sessions, breakers and limits for a new config, keeping what did not change."""
        self.compiled = compiled
        for name, b in compiled.backends.items():
            if name not in self.sessions:
                for err in ERROR_CLASSES:
                    self.metrics.child(self.metrics.upstream_errors, name, err)
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
            # a breaker judges one model version: a rollout that puts another version behind the
            # same backend (gateway/split.py labels it) starts it closed, so a rolled-back bad
            # canary's open breaker does not keep the next candidate from any traffic
            bkey = (b.spec.breaker, b.spec.labels.model_version)
            if name not in self.breakers or self._breaker_keys.get(name) != bkey:
                gauge = self.metrics.breaker_state.labels(name)
                gauge.set(0)
                self.breakers[name] = CircuitBreaker(b.spec.breaker, on_change=gauge.set)
                self._breaker_keys[name] = bkey
            lim = self.limits.get(name)
            if (
                lim is None
                or lim.policy != b.spec.concurrency
                or lim.max_limit != b.spec.max_connections
            ):
                gauge = self.metrics.concurrency_limit.labels(name)
                self.limits[name] = AdaptiveLimit(
                    b.spec.concurrency, b.spec.max_connections, on_change=gauge.set
                )
        for name in list(self.sessions):
            if name not in compiled.backends:
                self._retired.append(self.sessions.pop(name))
                self._session_keys.pop(name, None)
                self.breakers.pop(name, None)
                self.limits.pop(name, None)
                self._breaker_keys.pop(name, None)
                # a gauge of a backend that is gone would go on saying its last state (a rolled-back
                # canary's open breaker) to the next one of that name; its counters stay, counting on
                self.metrics.forget_gauges(name)

    async def close(self) -> None:
        for s in list(self.sessions.values()) + self._retired:
            await s.close()
        self.sessions.clear()
        self._retired.clear()

    # -- choosing -------------------------------------------------------------------------
    def pick(
        self, route: CompiledRoute, tried: set[str], bucket: float | None = None
    ) -> CompiledBackend | None:
        """A backend by weight among the usable ones; `bucket` (a caller's fixed point in
        [0, 1), gateway/split.py) replaces the random draw for the first choice."""
        backends = route.backends
        if len(backends) == 1:
            b = backends[0]
            return b if b.name not in tried and self.breakers[b.name].available() else None
        x = random.random() if bucket is None else bucket
        b = backends[bisect_right(route.cum_weights, x * route.total_weight)]
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
        headers: dict[str, str] | None = None,
    ) -> Attempt:
        """One upstream call; the breaker slot taken by `allow()` is always settled here, and
        the concurrency slot too (a stream's: by `finished`, once the relay is done with it).
        `endpoint` names the backend's URL; `headers` replace the backend's own when given."""
        br = self.breakers[backend.name]
        lim = self.limits[backend.name]
        t = backend.spec.timeouts
        t0 = time.monotonic()
        epoch = lim.try_acquire()
        if epoch is None:
            try:
                epoch = await lim.acquire(min(backend.spec.concurrency.queue_s, budget_s))
            except BaseException:
                br.release()
                raise
            if epoch is None:
                br.release()
                self.metrics.child(self.metrics.shed, backend.name).inc()
                a = Attempt(BUSY, backend, route)
                a.err = "busy"
                return a
            budget_s -= time.monotonic() - t0
        resp = None
        held = True  # the concurrency slot, until released here or handed to a stream
        phase = "first_token"
        try:
            async with asyncio.timeout(min(t.first_token_s, t.total_s, budget_s)):
                resp = await self.sessions[backend.name].post(
                    backend.urls[endpoint], data=payload, headers=headers or backend.headers
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
                    lim.succeeded()
                    a.slot, held = lim, False
                    resp = None  # handed over to the relay
                    return a
            phase = "total"
            async with asyncio.timeout(
                max(0.0, min(t.total_s, budget_s) - (time.monotonic() - t0))
            ):
                body = await resp.read()
            return self._classify(br, lim, epoch, backend, route, status, body, resp.headers)
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
            if held:
                lim.release()

    def finished(self, a: Attempt) -> None:
        """The relay is done with a streamed answer: its concurrency slot is free again."""
        if a.slot is not None:
            a.slot.release()
            a.slot = None

    def stream_failed(self, backend: CompiledBackend, err: str) -> None:
        """A stream broke off after its first chunk (too late to retry): the backend's breaker
        counts it as a failure and the error is counted by class."""
        self.breakers[backend.name].record_failure()
        self.metrics.child(self.metrics.upstream_errors, backend.name, err).inc()

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
        lim: AdaptiveLimit,
        epoch: int,
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
            lim.succeeded()
            a = Attempt(OK, backend, route)
            a.obj = obj
        elif status == 429:
            a = Attempt(RATE, backend, route)
            a.retry_after = retry_after_s(headers)
            reset = provider_limit_s(headers)
            cool_s = reset if reset is not None else (a.retry_after or 1.0)
            a.provider_wide = br.record_throttle(reset is not None, cool_s)
            if a.provider_wide:
                a.retry_after = cool_s
                a.err = "provider_limited"
            else:
                lim.throttled(epoch)
                a.err = "rate_limited"
            self.metrics.child(self.metrics.upstream_errors, backend.name, a.err).inc()
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
