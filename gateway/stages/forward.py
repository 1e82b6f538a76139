"""Stage 5, forward: an answer from the backends, surviving their failures within the deadline.

Walks the route's precomputed chain (the route, then its fallbacks depth-first): on each route up
to 1 + `retries.attempts` calls with jittered exponential backoff, each on a backend picked by
weight among those whose breaker lets a call through; a non-streamed call may be hedged (a second
copy after `hedge_after_s`, the first good answer wins). A 429 that is not provider-wide is
retried after its Retry-After (on another backend of the route at once, if one is usable), when
the wait fits the deadline and `max_backoff_s`; otherwise the fallbacks take that request. A
backend whose concurrency limit stays full (BUSY) is left for this request. A prompt too long for
the context window jumps to the route's `context_fallback`, before any call when the backends
declare a `context_window` the estimated prompt does not fit. The calls themselves, the breakers
and the concurrency limits are gateway/proxy.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import orjson

from gateway.config import CompiledBackend, CompiledRoute, Retries
from gateway.errors import GatewayError
from gateway.proxy import BUSY, CLIENT, CONTEXT, FAIL, OK, RATE, Attempt, Upstreams
from gateway.split import sticky_bucket

CHARS_PER_TOKEN = 4  # the pre-flight estimate of a prompt's tokens (a tokenizer is per model)
_PROMPT_PARAM = {
    "chat.completions": "messages",
    "messages": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "responses": "input",
}

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
        tried: list[str] | None = None,
        traceparent: str = "",
        *,
        need: int | None = None,
    ) -> Attempt:
        """An answer (OK) or the backend's own client error (CLIENT) to pass on; GatewayError
        400 `context_length_exceeded` when no backend could take the prompt, 502 / 503 / 504
        when no answer came. Without `prepare` the body goes to each backend's `endpoint` as
        sent (model swapped). A traced request passes `tried` (each backend called is appended)
        and its span's `traceparent`, sent upstream so the backend's spans join the trace. `need`:
        the request's tokens as the context budget counted them (gateway/stages/prompt.py);
        estimated here when not given."""
        prep: Prepare = prepare or (
            lambda r, b: (endpoint, _payload(body, raw, r, b, inject_usage), None)
        )
        if tried is not None:
            prep = _traced(prep, tried, traceparent)
        if need is None:
            need = estimate_tokens(body, endpoint) if any(r.windowed for r in route.chain) else 0
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
            a = await self._try_route(r, stream, deadline, prep, need, body)
            if a is None:
                continue
            if a.kind == OK or a.kind == CLIENT:
                return a
            last = a
            if a.kind == CONTEXT:
                if r.context_fallback is None:
                    break
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
        raise _final_error(last, deadline, endpoint)

    async def _try_route(
        self,
        r: CompiledRoute,
        stream: bool,
        deadline: float,
        prepare: Prepare,
        need: int,
        body: dict,
    ) -> Attempt | None:
        """Up to 1 + `retries.attempts` calls on one route; None if no backend was usable.
        `need`: the request's estimated tokens, for backends that declare a context window."""
        retries = r.spec.retries
        # left out for this request: windows too small for the prompt, then busy backends
        skip = _too_small(r, need) if r.windowed else set()
        if skip and len(skip) == len(r.backends):
            a = Attempt(CONTEXT, r.backends[0], r)
            a.status, a.err = 400, "context_window"
            return a
        tried = set(skip)  # ... and those that failed or throttled: others are preferred
        last: Attempt | None = None
        # a route split by caller (an A/B experiment) sends this caller's first attempt to its
        # arm; a retry after a failure may use the other arm (an answer beats stickiness)
        bucket = sticky_bucket(r, body) if r.sticky is not None else None
        for n in range(retries.attempts + 1):
            backend = self.up.pick(r, tried, bucket) or (
                self.up.pick(r, skip) if len(tried) > len(skip) else None
            )
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
            if a.kind != FAIL and a.kind != RATE and a.kind != BUSY:
                return a
            last = a
            tried.add(backend.name)
            if a.kind == BUSY:
                skip.add(backend.name)  # not again for this request: its queue was full
                continue
            if n == retries.attempts:
                break
            if a.kind == RATE:
                if a.provider_wide or self._usable(r, tried):
                    continue  # the breaker keeps it out now; or another backend, at once
                delay = _backoff(retries, n) if a.retry_after is None else a.retry_after
                if delay > retries.max_backoff_s:
                    break  # a long wait: the fallbacks take this request
            else:
                delay = _backoff(retries, n)
            if time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        return last

    def _usable(self, r: CompiledRoute, tried: set[str]) -> bool:
        """Whether a backend of the route not tried yet would take a call now."""
        return any(b.name not in tried and self.up.breakers[b.name].available() for b in r.backends)

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


def _traced(prepare: Prepare, tried: list[str], traceparent: str) -> Prepare:
    """`prepare`, noting each backend it prepares a call for and adding the traceparent."""

    def prep(r: CompiledRoute, b: CompiledBackend) -> tuple[str, bytes, dict[str, str] | None]:
        ep, payload, headers = prepare(r, b)
        tried.append(b.name)
        if traceparent:
            headers = {
                **(headers if headers is not None else b.headers),
                "traceparent": traceparent,
            }
        return ep, payload, headers

    return prep


def _backoff(retries: Retries, n: int) -> float:
    delay = min(retries.max_backoff_s, retries.backoff_s * (2**n))
    return float(delay * (1 - retries.jitter * random.random()))


def estimate_tokens(body: dict, endpoint: str) -> int:
    """The tokens a request needs, estimated before any call: its prompt's characters over
    CHARS_PER_TOKEN, plus the completion it asks room for (`max_tokens`)."""
    chars = 0
    if endpoint in ("chat.completions", "messages"):
        for m in body.get("messages") or ():
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    else:
        prompt = body.get("prompt" if endpoint == "completions" else "input")
        if isinstance(prompt, str):
            chars = len(prompt)
        elif isinstance(prompt, list):
            chars = sum(len(p) for p in prompt if isinstance(p, str))
    room = body.get("max_completion_tokens") or body.get("max_tokens")
    return chars // CHARS_PER_TOKEN + (room if isinstance(room, int) else 0)


def _too_small(r: CompiledRoute, need: int) -> set[str]:
    """The route's backends whose `context_window` a request of `need` tokens would not fit."""
    return {
        b.name
        for b in r.backends
        if b.spec.context_window is not None and need > b.spec.context_window
    }


def _final_error(last: Attempt, deadline: float, endpoint: str) -> GatewayError:
    if last.kind == CONTEXT:
        return GatewayError(
            400,
            "This request is longer than the context window of every backend that serves this "
            "model (including its context fallback). Shorten the prompt or lower max_tokens.",
            "context_length_exceeded",
            param=_PROMPT_PARAM.get(endpoint),
        )
    if last.kind == RATE:
        return GatewayError(
            503,
            "Every backend for this model is rate limited.",
            "upstream_rate_limited",
            retry_after=last.retry_after or 1.0,
        )
    if last.kind == BUSY:
        return GatewayError(
            503,
            "Every backend for this model is at its concurrency limit.",
            "backend_busy",
            retry_after=1.0,
        )
    if last.err.startswith("timeout") or time.monotonic() >= deadline:
        return GatewayError(504, "The backend did not answer in time.", "upstream_timeout")
    return GatewayError(502, f"The backend failed ({last.err}).", "upstream_error")
