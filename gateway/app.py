"""The HTTP service: aiohttp server, OpenAI-compatible endpoints, health, metrics, OpenAPI.

aiohttp (server and client) with orjson was chosen by measurement: on the 2-core build machine an
aiohttp pass-through handled about 2,400 requests/s where uvicorn + httpx managed 200-350 (see
docs/gateway.md). The request path does, in order: key lookup, body parse, route lookup, limit
checks, optional cache lookup, the upstream call, accounting. Nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config import (
    Budget,
    Compiled,
    CompiledBackend,
    CompiledKey,
    CompiledRoute,
    ConfigError,
    GatewayConfig,
    compile_config,
    load_config,
    resolve_keys_file,
)
from gateway.errors import GatewayError, sse_error_event
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.proxy import CLIENT, CONTEXT, OK, Attempt, Forwarder, Upstreams, loads_dict
from gateway.tenancy import MemoryUsage, RedisUsage, UsageStore, authenticate

log = logging.getLogger("tandem.gateway")

_REQUIRED = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}
_JSON = "application/json"
STREAM_KEEP_MAX = 1 << 20  # a streamed answer larger than this is relayed but not cached
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_KNOWN_PATHS = frozenset(
    (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    )
)


class StartupError(RuntimeError):
    """The gateway cannot start with this configuration (message says why)."""


def build_cache(section: dict[str, Any]) -> Any:
    """Import the response cache only when the config asks for one; fail loudly if it cannot load."""
    try:
        from gateway.cache import build_cache as _build
    except ImportError as exc:
        raise StartupError(
            f"routes config has a `cache:` section but the response cache cannot be imported: {exc}"
        ) from exc
    try:
        return _build(section)
    except Exception as exc:
        raise StartupError(f"routes config `cache:` section is invalid: {exc}") from exc


def build_tracer(cfg: GatewayConfig, exporter: Any = None) -> Any:
    if exporter is None and cfg.tracing.exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": cfg.tracing.service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif cfg.tracing.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.tracing.endpoint))
        )
    return provider.get_tracer("tandem.gateway")


class Gateway:
    def __init__(
        self,
        cfg: GatewayConfig,
        config_path: str | Path | None = None,
        *,
        span_exporter: Any = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.compiled: Compiled = compile_config(cfg)
        self.metrics = Metrics()
        self.tracer = build_tracer(cfg, span_exporter)
        self.cache = build_cache(cfg.cache) if cfg.cache is not None else None
        self.upstreams: Upstreams | None = None
        self.forwarder: Forwarder | None = None
        self.usage: UsageStore = MemoryUsage()
        self.ready = False
        self._tasks: set[asyncio.Task] = set()
        self._mtimes = self._watch_mtimes()
        for team, budget in self.compiled.budgets.items():
            self.metrics.budget_remaining.labels(team).set(budget.usd)

    # -- lifecycle --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.server.max_body_bytes)
        r = app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_get("/v1/models", self.models)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.prometheus)
        r.add_get("/openapi.json", self.openapi)
        r.add_route("*", "/{tail:.*}", self.not_found)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        self.upstreams = Upstreams(self.compiled, self.metrics)
        self.forwarder = Forwarder(self.upstreams)
        if self.cfg.redis is not None:
            self.usage = RedisUsage(self.cfg.redis.url, self.cfg.redis.prefix)
        if self.cache is not None:
            await self._start_cache()
        if self.config_path is not None and self.cfg.server.reload_interval_s > 0:
            self._spawn(self._watch())
        self.ready = True

    async def _cleanup(self, _app: web.Application) -> None:
        self.ready = False
        for t in list(self._tasks):
            t.cancel()
        if self.upstreams is not None:
            await self.upstreams.close()
        await self.usage.close()
        if self.cache is not None:
            await self.cache.close()

    async def _start_cache(self) -> None:
        """Expose the cache's metrics on /metrics, give its sampled re-check a way to ask the
        backends, and warm it from Redis before the first request rather than during it."""
        registry = getattr(self.cache, "registry", None)
        if registry is not None:
            self.metrics.registry.register(registry)
        if self.cache is not None and hasattr(self.cache, "upstream"):
            self.cache.upstream = self._recheck_answer
        start = getattr(self.cache, "start", None)
        if start is not None:
            await start()

    async def _recheck_answer(self, creq: Any) -> dict | None:
        """A fresh backend answer for a cached request (the cache's re-check). It goes through
        the route's chain like a caller's request but is not billed to the caller's team."""
        route = self.compiled.routes.get(creq.model)
        if route is None or self.forwarder is None:
            return None
        body = {**creq.body, "stream": False}
        a = await self.forwarder.forward(
            route, creq.endpoint, body, orjson.dumps(body), False, False
        )
        return a.obj if a.kind == OK else None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- hot reload -------------------------------------------------------------------------
    def _watch_mtimes(self) -> tuple[float, ...]:
        if self.config_path is None:
            return ()
        paths = [self.config_path]
        if self.cfg.keys_file:
            paths.append(resolve_keys_file(self.config_path, self.cfg.keys_file))
        out = []
        for p in paths:
            try:
                out.append(os.stat(p).st_mtime)
            except OSError:
                out.append(0.0)
        return tuple(out)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.server.reload_interval_s)
            mtimes = self._watch_mtimes()
            if mtimes != self._mtimes:
                self._mtimes = mtimes
                self.reload()

    def reload(self) -> bool:
        """Swap in the config file's current content; keep the running one if it is invalid."""
        assert self.config_path is not None
        try:
            cfg = load_config(self.config_path)
            compiled = compile_config(cfg)
        except ConfigError as exc:
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            return False
        for section in ("server", "redis", "cache", "tracing"):
            if getattr(cfg, section) != getattr(self.cfg, section):
                log.warning("config reload: `%s` changed; it takes effect on restart", section)
        if self.upstreams is not None:
            self.upstreams.update(compiled)
        self.cfg = cfg.model_copy(
            update={s: getattr(self.cfg, s) for s in ("server", "redis", "cache", "tracing")}
        )
        self.compiled = compiled
        log.info(
            "config reloaded: %d routes, %d backends, %d keys",
            len(compiled.routes),
            len(compiled.backends),
            len(compiled.keys),
        )
        return True

    # -- small endpoints --------------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def readyz(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return GatewayError(503, "The gateway is starting or stopping.", "not_ready").response()
        return web.Response(body=b'{"status":"ready"}', content_type=_JSON)

    async def prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(openapi_document()), content_type=_JSON)

    async def not_found(self, request: web.Request) -> web.Response:
        if request.path in _KNOWN_PATHS:
            return GatewayError(
                405,
                f"Method {request.method} is not allowed on {request.path}.",
                "method_not_allowed",
            ).response()
        return GatewayError(404, f"Unknown path {request.path}.", "unknown_url").response()

    async def models(self, request: web.Request) -> web.Response:
        try:
            key = authenticate(self.compiled, request.headers.get("Authorization"))
        except GatewayError as exc:
            return exc.response()
        payload = self.compiled.models_payload
        if not key.all_models:
            payload = {
                "object": "list",
                "data": [m for m in payload["data"] if m["id"] in key.models],
            }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    # -- the completion endpoints -----------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat.completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completions")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "embeddings")

    async def _serve(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        t0 = time.monotonic()
        compiled = self.compiled
        key: CompiledKey | None = None
        route: CompiledRoute | None = None
        span = None
        try:
            key = authenticate(compiled, request.headers.get("Authorization"))
            body, raw = await _read_body(request, endpoint, self.cfg.server.max_body_bytes)
            alias = body["model"]
            route = compiled.routes.get(alias)
            if route is None or endpoint not in route.endpoints:
                raise GatewayError(
                    404,
                    f"The model '{alias}' does not exist or does not serve {endpoint}.",
                    "model_not_found",
                    param="model",
                )
            if not key.all_models and alias not in key.models:
                raise GatewayError(
                    403,
                    f"This API key may not use the model '{alias}'.",
                    "model_not_allowed",
                    param="model",
                )
            stream = body.get("stream") is True
            budget = compiled.budgets.get(key.team)
            if key.rpm or key.tpm or budget:
                route = await self._admit(key, budget, route)
            if self.tracer is not None:
                span = self._start_span(endpoint, alias, key)
            creq = None
            if self.cache is not None:
                creq, hit = await self._cache_lookup(key, alias, endpoint, body, stream, route)
                if hit is not None:
                    self.metrics.child(self.metrics.cache_hits, key.team, hit.layer).inc()
                    saved = _answer_cost(hit.response, route)
                    if saved:
                        self.metrics.child(self.metrics.cache_saved, key.team, hit.layer).inc(saved)
                    if span is not None:
                        span.set_attribute("tandem.cache", hit.layer)
                        span.end()
                    return await _cached_answer(request, hit.response, endpoint, stream, body)
            inject = stream and endpoint != "embeddings" and not _wants_usage(body)
            assert self.forwarder is not None
            a = await self.forwarder.forward(route, endpoint, body, raw, stream, inject)
            if a.kind == CLIENT or a.kind == CONTEXT:
                self._count(key, a.backend, endpoint, str(a.status), t0)
                if span is not None:
                    span.set_attribute("error.type", str(a.status))
                    span.end()
                return web.Response(status=a.status, body=a.body, content_type=_JSON)
            if a.resp is not None:
                return await self._relay(
                    request, a, key, budget, endpoint, raw, inject, t0, span, creq
                )
            usage = a.obj.get("usage") if a.obj is not None else None
            await self._account(
                key,
                budget,
                a.backend,
                endpoint,
                usage if isinstance(usage, dict) else None,
                t0,
                span,
            )
            if creq is not None and a.obj is not None:
                self._spawn(self._cache_store(creq, a.obj))
            return web.Response(body=a.body, content_type=_JSON)
        except GatewayError as exc:
            self._reject(key, route, endpoint, exc, t0, span)
            return exc.response()
        except Exception:
            log.exception("internal error on %s", request.path)
            err = GatewayError(500, "The gateway failed to process the request.", "internal_error")
            self._reject(key, route, endpoint, err, t0, span)
            return err.response()

    async def _admit(
        self, key: CompiledKey, budget: Budget | None, route: CompiledRoute
    ) -> CompiledRoute:
        requests, tokens, spent = await self.usage.admit(key, budget)
        if key.rpm and requests > key.rpm:
            raise GatewayError(
                429,
                f"Rate limit reached: {key.rpm} requests per minute.",
                "rate_limit_exceeded",
                retry_after=60 - time.time() % 60,
            )
        if key.tpm and tokens >= key.tpm:
            raise GatewayError(
                429,
                f"Rate limit reached: {key.tpm} tokens per minute.",
                "tokens_per_minute_exceeded",
                retry_after=60 - time.time() % 60,
            )
        if budget is not None:
            if spent >= budget.usd:
                raise GatewayError(
                    429,
                    f"Team '{key.team}' has spent its budget of ${budget.usd:g} for this {budget.period}.",
                    "insufficient_quota",
                    err_type="insufficient_quota",
                )
            if spent >= budget.soft_fraction * budget.usd and route.degrade_to is not None:
                return route.degrade_to
        return route

    # -- streaming --------------------------------------------------------------------------
    async def _relay(
        self,
        request: web.Request,
        a: Attempt,
        key: CompiledKey,
        budget: Budget | None,
        endpoint: str,
        raw: bytes,
        strip_usage: bool,
        t0: float,
        span: Any,
        creq: Any = None,
    ) -> web.StreamResponse:
        """Pass the upstream stream through byte for byte (minus a usage chunk we asked for).

        With a cache, the stream is also kept (up to STREAM_KEEP_MAX bytes) and, if it ended
        normally, rebuilt into the complete answer and stored: chat clients mostly stream, and a
        cache that only learns from non-streamed calls stays empty in front of them."""
        up = a.resp
        assert up is not None
        out = web.StreamResponse(status=200, headers=_SSE_HEADERS)
        usage: dict | None = None
        events = 0
        tail = b""
        kept: list[bytes] | None = [] if creq is not None else None
        kept_bytes = 0
        complete = False
        try:
            await out.prepare(request)
            self.metrics.child(self.metrics.ttft, key.team, *a.backend.label_values).observe(
                time.monotonic() - t0
            )
            t = a.backend.spec.timeouts
            deadline = t0 + min(t.total_s, a.route.spec.deadline_s)
            buf = b""
            chunk = a.first
            try:
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
                ):
                    while chunk:
                        if kept is not None:
                            kept.append(chunk)
                            kept_bytes += len(chunk)
                            if kept_bytes > STREAM_KEEP_MAX:
                                kept = None
                        if strip_usage:
                            buf += chunk
                            parts = buf.split(b"\n\n")
                            buf = parts.pop()
                            keep = []
                            for ev in parts:
                                u = _event_usage(ev)
                                if u is not None:
                                    usage = u
                                    if b'"choices":[]' in ev:
                                        continue
                                keep.append(ev)
                            events += len(keep)
                            if keep:
                                await out.write(b"\n\n".join(keep) + b"\n\n")
                        else:
                            await out.write(chunk)
                            tail = (tail + chunk)[-16384:]
                        chunk = await up.content.readany()
                    if buf:
                        await out.write(buf)
                complete = True
            except ConnectionResetError:
                raise
            except Exception as exc:  # the upstream broke off or ran out of time mid-stream
                self.upstreams.breakers[a.backend.name].record_failure()  # type: ignore[union-attr]
                err = "timeout_total" if isinstance(exc, TimeoutError) else "stream_broken"
                self.metrics.child(self.metrics.upstream_errors, a.backend.name, err).inc()
                await out.write(sse_error_event("The backend stream ended early.", err))
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            up.close()
            raise
        finally:
            up.release()
        if not strip_usage:
            usage = _tail_usage(tail)
        if usage is None:  # the upstream ignores stream_options: estimate
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": max(0, events - 1)}
        await self._account(key, budget, a.backend, endpoint, usage, t0, span)
        if complete and kept:
            answer = assemble_stream(b"".join(kept), endpoint)
            if answer is not None:
                self._spawn(self._cache_store(creq, answer))
        return out

    # -- accounting -------------------------------------------------------------------------
    async def _account(
        self,
        key: CompiledKey,
        budget: Budget | None,
        backend: CompiledBackend,
        endpoint: str,
        usage: dict | None,
        t0: float,
        span: Any,
    ) -> None:
        m = self.metrics
        labels = (key.team, *backend.label_values)
        tin, tout = _usage_tokens(usage)
        cost = tin * backend.price_in + tout * backend.price_out
        m.child(m.requests, *labels, endpoint, "200").inc()
        m.child(m.latency, *labels, endpoint).observe(time.monotonic() - t0)
        m.child(m.tokens, *labels, "in").inc(tin)
        m.child(m.tokens, *labels, "out").inc(tout)
        if cost:
            m.child(m.cost, *labels).inc(cost)
        if key.tpm or budget is not None:
            await self.usage.charge(key, budget, tin + tout, cost)
            if budget is not None:
                spent = await self.usage.spend(key.team, budget)
                m.budget_remaining.labels(key.team).set(max(0.0, budget.usd - spent))
        if span is not None:
            span.set_attribute("gen_ai.response.model", backend.model or backend.label_values[1])
            span.set_attribute("gen_ai.usage.input_tokens", tin)
            span.set_attribute("gen_ai.usage.output_tokens", tout)
            span.set_attribute("server.address", backend.spec.url)
            span.set_attribute("tandem.backend", backend.name)
            span.end()

    def _count(
        self, key: CompiledKey, backend: CompiledBackend, endpoint: str, code: str, t0: float
    ) -> None:
        m = self.metrics
        labels = (key.team, *backend.label_values)
        m.child(m.requests, *labels, endpoint, code).inc()
        m.child(m.latency, *labels, endpoint).observe(time.monotonic() - t0)

    def _reject(
        self,
        key: CompiledKey | None,
        route: CompiledRoute | None,
        endpoint: str,
        exc: GatewayError,
        t0: float,
        span: Any,
    ) -> None:
        team = key.team if key is not None else "unknown"
        if route is not None and exc.status >= 500 and key is not None:
            self._count(key, route.backends[0], endpoint, str(exc.status), t0)
        else:
            self.metrics.child(self.metrics.rejected, team, exc.code or str(exc.status)).inc()
        if span is not None:
            span.set_attribute("error.type", exc.code or str(exc.status))
            span.end()

    def _start_span(self, endpoint: str, alias: str, key: CompiledKey) -> Any:
        op = (
            "embeddings"
            if endpoint == "embeddings"
            else ("chat" if endpoint == "chat.completions" else "text_completion")
        )
        span = self.tracer.start_span(f"{op} {alias}")
        span.set_attribute("gen_ai.operation.name", op)
        span.set_attribute("gen_ai.system", "openai")
        span.set_attribute("gen_ai.request.model", alias)
        span.set_attribute("tandem.team", key.team)
        return span

    # -- cache hook -------------------------------------------------------------------------
    async def _cache_lookup(
        self,
        key: CompiledKey,
        alias: str,
        endpoint: str,
        body: dict,
        stream: bool,
        route: CompiledRoute,
    ) -> tuple[Any, Any]:
        from gateway.cache.api import CacheRequest

        creq = CacheRequest(
            tenant=key.team,
            model=alias,
            endpoint=endpoint,
            body=body,
            stream=stream,
            route_policy=route.cache_policy,
        )
        assert self.cache is not None
        try:
            return creq, await self.cache.lookup(creq)
        except Exception:
            log.warning("cache lookup failed; answering from the backend", exc_info=True)
            return creq, None

    async def _cache_store(self, creq: Any, response: dict) -> None:
        assert self.cache is not None
        try:
            await self.cache.store(creq, response)
        except Exception:
            log.warning("cache store failed", exc_info=True)


# ---------------------------------------------------------------------------------------------
# Helpers without state.


async def _read_body(request: web.Request, endpoint: str, limit: int) -> tuple[dict, bytes]:
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(413, f"Request body larger than {limit} bytes.", "request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise GatewayError(
            413, f"Request body larger than {limit} bytes.", "request_too_large"
        ) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", "invalid_request")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise GatewayError(
            400, "'model' is required and must be a string.", "invalid_request", param="model"
        )
    field = _REQUIRED[endpoint]
    value = body.get(field)
    if endpoint == "chat.completions":
        if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
            raise GatewayError(
                400,
                "'messages' must be a non-empty array of message objects.",
                "invalid_request",
                param="messages",
            )
    elif not isinstance(value, (str, list)) or not value:
        raise GatewayError(
            400,
            f"'{field}' is required and must be a string or an array.",
            "invalid_request",
            param=field,
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, "'stream' must be a boolean.", "invalid_request", param="stream")
    if stream and endpoint == "embeddings":
        raise GatewayError(400, "Embeddings cannot be streamed.", "invalid_request", param="stream")
    return body, raw


def _usage_tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI `usage` object; (0, 0) without one."""
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _answer_cost(response: dict, route: CompiledRoute) -> float:
    """What this answer would cost from the route's backends (0 without usage)."""
    tin, tout = _usage_tokens(response.get("usage"))
    return tin * route.price_in + tout * route.price_out


def _wants_usage(body: dict) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def _event_usage(event: bytes) -> dict | None:
    if b'"usage"' not in event or b'"usage":null' in event or b'"usage": null' in event:
        return None
    start = event.find(b"data:")
    if start < 0:
        return None
    obj = loads_dict(event[start + 5 :])
    usage = obj.get("usage") if obj else None
    return usage if isinstance(usage, dict) else None


def _tail_usage(tail: bytes) -> dict | None:
    for ev in reversed(tail.split(b"\n\n")):
        usage = _event_usage(ev)
        if usage is not None:
            return usage
    return None


async def _cached_answer(
    request: web.Request, response: dict, endpoint: str, stream: bool, body: dict
) -> web.StreamResponse:
    if not stream:
        return web.Response(
            body=orjson.dumps(response), content_type=_JSON, headers={"X-Tandem-Cache": "hit"}
        )
    include_usage = _wants_usage(body)
    out = web.StreamResponse(status=200, headers={**_SSE_HEADERS, "X-Tandem-Cache": "hit"})
    await out.prepare(request)
    await out.write(replay_as_sse(response, endpoint, include_usage))
    await out.write_eof()
    return out


def replay_as_sse(response: dict, endpoint: str, include_usage: bool) -> bytes:
    """A complete answer as the chunks a streaming upstream would have sent."""
    chat = endpoint == "chat.completions"
    base = {
        "id": response.get("id", "cache"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": response.get("created", int(time.time())),
        "model": response.get("model", ""),
    }
    events: list[dict] = []
    for i, choice in enumerate(response.get("choices") or []):
        idx = choice.get("index", i)
        if chat:
            msg = choice.get("message") or {}
            delta = {"role": msg.get("role", "assistant"), "content": msg.get("content")}
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{"index": n, **tc} for n, tc in enumerate(msg["tool_calls"])]
            events.append(
                {**base, "choices": [{"index": idx, "delta": delta, "finish_reason": None}]}
            )
            events.append(
                {
                    **base,
                    "choices": [
                        {"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason")}
                    ],
                }
            )
        else:
            events.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": idx,
                            "text": choice.get("text", ""),
                            "finish_reason": choice.get("finish_reason"),
                        }
                    ],
                }
            )
    if include_usage and response.get("usage"):
        events.append({**base, "choices": [], "usage": response["usage"]})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def assemble_stream(data: bytes, endpoint: str) -> dict | None:
    """The complete answer an SSE stream carried, shaped like the non-streamed response (the
    inverse of replay_as_sse). None when it cannot be rebuilt faithfully: no `[DONE]`, an error
    event, tool-call or logprob deltas (never cached anyway)."""
    chat = endpoint == "chat.completions"
    head: dict | None = None
    usage: dict | None = None
    choices: dict[int, dict] = {}
    done = False
    for event in data.split(b"\n\n"):
        lines = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            continue
        payload = b"\n".join(lines)
        if payload == b"[DONE]":
            done = True
            continue
        obj = loads_dict(payload)
        if obj is None or "error" in obj:
            return None
        head = head or obj
        if isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
        for ch in obj.get("choices") or []:
            c = choices.setdefault(
                int(ch.get("index", 0)), {"role": "assistant", "parts": [], "finish": None}
            )
            if ch.get("logprobs"):
                return None
            if chat:
                delta = ch.get("delta") or {}
                if delta.get("tool_calls") or delta.get("function_call"):
                    return None
                c["role"] = delta.get("role") or c["role"]
                c["parts"].append(delta.get("content") or "")
            else:
                c["parts"].append(ch.get("text") or "")
            c["finish"] = ch.get("finish_reason") or c["finish"]
    if not done or head is None or not choices:
        return None
    answer: dict[str, Any] = {
        "id": head.get("id", ""),
        "object": "chat.completion" if chat else "text_completion",
        "created": head.get("created", 0),
        "model": head.get("model", ""),
        "choices": [
            {
                "index": i,
                **(
                    {"message": {"role": c["role"], "content": "".join(c["parts"])}}
                    if chat
                    else {"text": "".join(c["parts"]), "logprobs": None}
                ),
                "finish_reason": c["finish"],
            }
            for i, c in sorted(choices.items())
        ],
    }
    if head.get("system_fingerprint"):
        answer["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        answer["usage"] = usage
    return answer


def serve(
    cfg: GatewayConfig,
    config_path: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        pass
    gw = Gateway(cfg, config_path)
    web.run_app(
        gw.app(),
        host=host or cfg.server.host,
        port=port if port is not None else cfg.server.port,
        access_log=None,
        print=lambda *_: None,
    )
