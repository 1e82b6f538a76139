"""The HTTP service: aiohttp server, OpenAI-compatible endpoints, Anthropic's Messages API and
OpenAI's Responses API, health, metrics, OpenAPI, hot reload. A completion request goes through
the stages of gateway/stages/ (see `_serve`); a Messages or Responses request through the same
stages plus the exchange stage, which passes it through or translates it per backend.

aiohttp (server and client) with orjson was chosen by measurement: on the 2-core build machine an
aiohttp pass-through handled about 2,400 requests/s where uvicorn + httpx managed 200-350 (see
docs/gateway.md). Everything a request needs is built here once, at start-up (the stages, the
compiled routes, metric children on first use), so the request path does its stages' work only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import tracing
from gateway.assistants import Sessions, ToolClassifier, session_id
from gateway.audit import AuditLog
from gateway.cache.api import CacheRequest, ResponseCache
from gateway.config import (
    RESTART_SECTIONS,
    Compiled,
    CompiledKey,
    ConfigError,
    RoutesConfig,
    compile_config,
    load_config,
    resolve_keys_file,
)
from gateway.errors import GatewayError
from gateway.internal import Answer, call_route
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.proxy import OK, Upstreams
from gateway.response_store import MemoryStore, RedisStore, ResponseStore
from gateway.split import SplitWatcher, compile_splits, overlay, split_keys
from gateway.stages.account import Accounting
from gateway.stages.admit import Admission
from gateway.stages.authenticate import authenticate, developer_of
from gateway.stages.cache import (
    BYPASS_ENDPOINT,
    BYPASS_OFF,
    CACHE_HEADER,
    CacheStage,
    answer_cost,
)
from gateway.stages.call import Call
from gateway.stages.exchange import CountTokensExchange, MessagesExchange, ResponsesExchange
from gateway.stages.features import FeatureStage
from gateway.stages.forward import Forwarder
from gateway.stages.parse import parse
from gateway.stages.prompt import PromptStage
from gateway.stages.relay import Relay
from gateway.stages.signals import Signals
from gateway.tracing import build_tracer
from gateway.translate.messages import count_tokens_estimate
from vocabulary.cache import CacheSection

log = logging.getLogger("tandem.gateway")

_JSON = "application/json"
# Connections the kernel holds for the gateway before it accepts them. aiohttp's default (128)
# overflows when a burst of new connections meets a busy moment: the client's SYN is dropped and
# retried a second (then three) later, a latency no stage of the gateway explains. uvicorn's
# default; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 2048
_KNOWN_PATHS = frozenset(
    (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/models",
        "/v1/feedback",
        "/drift/signals",
        "/drift/nearest",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    )
)
# sections a reload cannot change: they shape what was built at start-up


class StartupError(RuntimeError):
    """The gateway cannot start with this configuration (message says why)."""


class Extension(Protocol):
    """More API on the gateway's server (the Batch API, pipelines/api.py): its routes are added
    before the catch-all, and it starts and stops with the gateway."""

    def add_routes(self, app: web.Application) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def build_cache(section: CacheSection) -> ResponseCache:
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


class GatewayService:
    """The gateway process: one routes config, its stages, and the aiohttp app that serves them."""

    def __init__(
        self,
        cfg: RoutesConfig,
        config_path: str | Path | None = None,
        *,
        span_exporter: Any = None,
    ) -> None:
        self.cfg = cfg
        split_routes = sorted(a for a, r in cfg.routes.items() if r.split is not None)
        if split_routes and cfg.redis is None:
            raise StartupError(
                f"routes {split_routes} have a split: (a rollout) but the config has no redis: "
                "section; the rollout controller writes the live split to Redis"
            )
        self.config_path = Path(config_path) if config_path else None
        self.splits: dict = {}  # alias -> the live TrafficSplit laid over the file (split.py)
        self.compiled: Compiled = compile_config(cfg)
        self.split_watcher: SplitWatcher | None = None
        self.metrics = Metrics()
        self.max_body_bytes = cfg.server.max_body_bytes
        self.tracer = build_tracer(cfg.tracing, span_exporter)
        if self.tracer is not None and hasattr(self.tracer.processor, "collect"):
            self.metrics.registry.register(self.tracer.processor)  # spans exported / dropped
        self.admission = Admission(self.metrics, self.compiled.budgets)
        self.sessions = Sessions()
        self.audit = AuditLog(cfg.audit.path) if cfg.audit is not None else None
        self.accounting = Accounting(
            self.metrics, self.admission, self.sessions, self.audit, self._spawn
        )
        self.tools = ToolClassifier()
        self.signals = Signals(self.metrics, cfg.server.signal_log_events)
        self.signals.routes = lambda: self.compiled.routes
        self._developers_gauge()
        self.messages_exchange = MessagesExchange()
        self.count_tokens_exchange = CountTokensExchange()
        self.cache: ResponseCache | None = build_cache(cfg.cache) if cfg.cache is not None else None
        self.prompt_stage = PromptStage(self.metrics)
        self.signals.cache = self.cache
        self.cache_stage = (
            CacheStage(self.cache, self.metrics, self._spawn) if self.cache is not None else None
        )
        # built at start-up, on the server's event loop (their HTTP sessions live there)
        self.features: FeatureStage | None = None
        self.upstreams: Upstreams | None = None
        self.forwarder: Forwarder | None = None
        self.relay: Relay | None = None
        self.response_store: ResponseStore | None = None
        self.responses_exchange: ResponsesExchange | None = None
        self.ready = False
        self.extensions: list[Extension] = []
        self._tasks: set[asyncio.Task] = set()
        self._mtimes = self._watch_mtimes()
        self._openapi = orjson.dumps(openapi_document())

    # -- lifecycle --------------------------------------------------------------------------
    def extend(self, extension: Extension) -> None:
        self.extensions.append(extension)

    def app(self) -> web.Application:
        if self.cfg.batch is not None and not self.extensions:
            raise StartupError(
                "the routes file has a `batch:` section but the Batch API is not mounted: "
                "serve it with `tandem gateway serve` (pip install 'tandem[pipelines]')"
            )
        app = web.Application(client_max_size=self.cfg.server.max_body_bytes)
        r = app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_post("/v1/messages", self.messages)
        r.add_post("/v1/messages/count_tokens", self.count_tokens)
        r.add_post("/v1/responses", self.responses)
        r.add_get("/v1/responses/{id}", self.stored_response)
        r.add_delete("/v1/responses/{id}", self.stored_response)
        r.add_get("/v1/responses/{id}/input_items", self.stored_response)
        r.add_post("/v1/feedback", self.feedback)
        r.add_get("/drift/signals", self.signals.export)
        r.add_post("/drift/nearest", self.signals.nearest)
        r.add_get("/v1/models", self.models)
        # [\s\S]: an id or path with a newline (%0A) still matches, and gets a JSON answer
        r.add_get(r"/v1/models/{model_id:[\s\S]+}", self.model)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.prometheus)
        r.add_get("/openapi.json", self.openapi)
        for extension in self.extensions:
            extension.add_routes(app)
        r.add_route("*", r"/{tail:[\s\S]*}", self.not_found)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        await self.start()
        for extension in self.extensions:
            await extension.start()
        self.ready = True

    async def _cleanup(self, _app: web.Application) -> None:
        self.ready = False
        for extension in self.extensions:
            await extension.close()
        await self.close()

    async def start(self) -> None:
        """Build what lives on the event loop (HTTP sessions, Redis clients, the cache); the
        server calls it at start-up, and a process that calls the routes without serving them
        (a batch worker) calls it itself."""
        self.upstreams = Upstreams(self.compiled, self.metrics)
        if self.tracer is not None:  # spans name the breaker state of the backend that answered
            self.tracer.breakers = self.upstreams.breakers
        self.forwarder = Forwarder(self.upstreams)
        self.relay = Relay(self.upstreams, self.accounting, self.cache_stage, self.signals)
        keep = self.cfg.responses
        if self.cfg.redis is not None:
            self.admission.share(self.cfg.redis)
            self.sessions.share(self.cfg.redis.url, self.cfg.redis.prefix)
            self.response_store = RedisStore(self.cfg.redis.url, self.cfg.redis.prefix, keep.ttl_s)
        else:
            self.response_store = MemoryStore(keep.ttl_s, keep.max_entries)
        self.responses_exchange = ResponsesExchange(self.response_store)
        if keys := split_keys(self.cfg):
            assert self.cfg.redis is not None
            self.split_watcher = SplitWatcher(
                self.cfg.redis.url, keys, self.cfg.server.split_poll_s, self.apply_splits
            )
            await self.split_watcher.poll_once()  # serve the live split from the first request
            self._spawn(self.split_watcher.run())
        if self.cfg.feature_store is not None:
            self.features = FeatureStage(self.cfg.feature_store, self.metrics)
        if self.cache is not None:
            await self._start_cache(self.cache)
        if self.config_path is not None and self.cfg.server.reload_interval_s > 0:
            self._spawn(self._watch())

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.upstreams is not None:
            await self.upstreams.close()
        if self.split_watcher is not None:
            await self.split_watcher.close()
        await self.admission.close()
        await self.sessions.close()
        if self.response_store is not None:
            await self.response_store.close()
        if self.audit is not None:
            self.audit.close()
        if self.features is not None:
            await self.features.close()
        if self.cache is not None:
            await self.cache.close()
        if self.tracer is not None:  # the spans still queued are sent
            await self.tracer.aclose()

    async def _start_cache(self, cache: ResponseCache) -> None:
        """Expose the cache's metrics on /metrics, give its sampled re-check a way to ask the
        backends, and warm it from Redis before the first request rather than during it."""
        if cache.registry is not None:
            self.metrics.registry.register(cache.registry)
        cache.attach_upstream(self._recheck_answer)
        await cache.start()

    async def _recheck_answer(self, creq: CacheRequest) -> dict | None:
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

    async def call_route(
        self, key: CompiledKey, endpoint: str, body: dict[str, Any], *, batch: bool
    ) -> Answer:
        """`body` through the stages for `key`, without an HTTP caller (gateway/internal.py):
        how batch lines and async jobs reach the routes."""
        return await call_route(self, key, endpoint, body, batch=batch)

    def _developers_gauge(self) -> None:
        """Adoption's denominator, per team, from the config (developer keys and rosters)."""
        gauge = self.metrics.developers_with_keys
        gauge.clear()
        for team, n in self.compiled.developers_with_keys.items():
            gauge.labels(team).set(n)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
        # provider keys kept in files (short-lived tokens, e.g. Vertex AI's): a new one reloads
        paths += [Path(b.api_key_file) for b in self.cfg.backends.values() if b.api_key_file]
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
            compiled = compile_splits(compile_config(overlay(cfg, self.splits)), self.splits)
        except ConfigError as exc:
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            return False
        for section in RESTART_SECTIONS:
            if getattr(cfg, section) != getattr(self.cfg, section):
                log.warning("config reload: `%s` changed; it takes effect on restart", section)
        if self.upstreams is not None:
            self.upstreams.update(compiled)
        self.cfg = cfg.model_copy(update={s: getattr(self.cfg, s) for s in RESTART_SECTIONS})
        self.compiled = compiled
        if self.split_watcher is not None:
            self.split_watcher.watch(split_keys(self.cfg))
        self._developers_gauge()
        log.info(
            "config reloaded: %d routes, %d backends, %d keys",
            len(compiled.routes),
            len(compiled.backends),
            len(compiled.keys),
        )
        return True

    def apply_splits(self, splits: dict) -> None:
        """Lay the routes' live traffic splits over the file's config and swap it in (requests
        in flight keep the compiled config they started with)."""
        try:
            compiled = compile_splits(compile_config(overlay(self.cfg, splits)), splits)
        except (ConfigError, ValueError) as exc:
            log.error("traffic split rejected, keeping the running one: %s", exc)
            return
        if self.upstreams is not None:
            self.upstreams.update(compiled)
        self.splits = splits
        self.compiled = compiled
        log.info(
            "traffic split applied: %s",
            ", ".join(f"{a} canary {s.canary_weight:g}%" for a, s in splits.items()) or "none",
        )

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
        return web.Response(body=self._openapi, content_type=_JSON)

    async def not_found(self, request: web.Request) -> web.Response:
        if request.path in _KNOWN_PATHS or request.path.startswith("/v1/models/"):
            return GatewayError(
                405,
                f"Method {request.method} is not allowed on {request.path}.",
                "method_not_allowed",
            ).response()
        return GatewayError(404, f"Unknown path {request.path}.", "unknown_url").response()

    async def feedback(self, request: web.Request) -> web.Response:
        """`POST /v1/feedback`: a caller rates an answer by its id (gateway/stages/signals.py)."""
        try:
            authenticate(self.compiled, request.headers.get("Authorization"))
            return await self.signals.rate(request)
        except GatewayError as exc:
            return exc.response()

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

    async def model(self, request: web.Request) -> web.Response:
        """`GET /v1/models/{id}` (the SDKs' `models.retrieve`): one alias the key may use."""
        model_id = request.match_info["model_id"]
        try:
            key = authenticate(self.compiled, request.headers.get("Authorization"))
            entry = self.compiled.model_entries.get(model_id)
            if entry is None or not (key.all_models or model_id in key.models):
                raise GatewayError(  # as OpenAI: a model the key may not use does not exist
                    404,
                    f"The model '{model_id}' does not exist or you do not have access to it.",
                    "model_not_found",
                    param="model",
                )
        except GatewayError as exc:
            return exc.response()
        return web.Response(body=orjson.dumps(entry), content_type=_JSON)

    # -- the completion endpoints -----------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat.completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completions")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "embeddings")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "messages", self.messages_exchange)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "responses", self.responses_exchange)

    async def _serve(
        self, request: web.Request, endpoint: str, exchange: Any = None
    ) -> web.StreamResponse:
        """One request through the stages, in order (gateway/stages/). Each stage either fills
        in the call for the next or raises a GatewayError, which is accounted and answered (in
        the caller's API: `exchange`, for Messages and Responses)."""
        call = Call(endpoint, time.monotonic(), self.compiled)
        call.exchange = exchange
        try:
            key = self._authenticate(call, request.headers)
            await parse(request, call, self.max_body_bytes)
            call.route = await self.admission.admit(call)
            if self.tracer is not None:
                tracing.begin(
                    call,
                    self.tracer,
                    endpoint,
                    call.body["model"],
                    key.team,
                    request.headers.get("traceparent"),
                )
            assert self.forwarder is not None and self.relay is not None
            if exchange is not None:  # Messages, Responses: no features, no response cache
                call.cache_status = BYPASS_ENDPOINT
                m = self.metrics
                m.child(m.cache_status, key.team, "bypass", "endpoint").inc()
                await exchange.begin(call, request.headers)
                attempt = await self.forwarder.forward(
                    call.route,
                    endpoint,
                    call.body,
                    call.raw,
                    call.stream,
                    False,
                    partial(exchange.upstream, call),
                    call.tried,
                    call.traceparent,
                )
                return await self.relay.respond(request, call, attempt)
            if self.features is not None:
                await self.features.enrich(request, call)
            if call.prompt is not None:
                self.prompt_stage.render(call)
            self.prompt_stage.budget(call)
            if self.cache_stage is not None:
                hit = await self.cache_stage.lookup(call)
                if hit is not None:
                    self.accounting.cache_hit(call, answer_cost(hit.response, call.route))
                    return await self.cache_stage.answer(request, call, hit)
            else:
                call.cache_status = BYPASS_OFF
                m = self.metrics
                m.child(m.cache_status, key.team, "bypass", "off").inc()
            attempt = await self.forwarder.forward(
                call.route,
                endpoint,
                call.body,
                call.raw,
                call.stream,
                call.inject_usage,
                None,
                call.tried,
                call.traceparent,
                need=call.need,
            )
            return await self.relay.respond(request, call, attempt)
        except GatewayError as exc:
            self.accounting.rejected(call, exc)
            resp = exc.response() if exchange is None else exchange.error(exc)
            return _with_cache_status(resp, call)
        except Exception:
            log.exception("internal error on %s", request.path)
            err = GatewayError(500, "The gateway failed to process the request.", "internal_error")
            self.accounting.rejected(call, err)
            resp = err.response() if exchange is None else exchange.error(err)
            return _with_cache_status(resp, call)

    def _authenticate(self, call: Call, headers: Mapping[str, str]) -> CompiledKey:
        """Stage 1: the key, and for developer traffic the developer, tool and session."""
        api_key = None
        if call.exchange is not None and call.exchange.api_key_header:
            api_key = headers.get(call.exchange.api_key_header, "")
        key = call.key = authenticate(call.compiled, headers.get("Authorization"), api_key)
        if key.developer is None and key.developer_header is None:
            return key
        call.developer = developer_of(call.compiled, key, headers)
        call.tool, call.tool_version = self.tools(headers.get("User-Agent", ""))
        call.session = session_id(headers)
        return key

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        """`/v1/messages/count_tokens`: asked of the route's backends when they are all
        Anthropic-compatible, estimated here otherwise; never charged."""
        exchange = self.count_tokens_exchange
        call = Call("messages.count_tokens", time.monotonic(), self.compiled)
        call.exchange = exchange
        try:
            self._authenticate(call, request.headers)
            await parse(request, call, self.max_body_bytes)
            route = call.route
            assert route is not None and self.forwarder is not None and self.relay is not None
            if any(b.protocol != "anthropic" for b in route.backends):
                body = orjson.dumps(count_tokens_estimate(call.raw))
                await self.accounting.answered(call, route.backends[0], None)
                return web.Response(body=body, content_type=_JSON)
            await exchange.begin(call, request.headers)
            attempt = await self.forwarder.forward(
                route,
                "messages",
                call.body,
                call.raw,
                False,
                False,
                partial(exchange.upstream, call),
            )
            return await self.relay.respond(request, call, attempt)
        except GatewayError as exc:
            self.accounting.rejected(call, exc)
            return exchange.error(exc)

    async def stored_response(self, request: web.Request) -> web.Response:
        """GET / DELETE `/v1/responses/{id}` and GET `.../input_items`: stored Responses, to the
        team whose key created them."""
        try:
            key = authenticate(self.compiled, request.headers.get("Authorization"))
            rid = request.match_info["id"]
            assert self.response_store is not None
            try:
                record = await self.response_store.get(rid)
            except Exception as exc:  # Redis down: say so, not 404
                raise GatewayError(
                    503, "The response store is unavailable.", "store_unavailable"
                ) from exc
            if record is None or record.get("team") != key.team:
                raise GatewayError(
                    404, f"No response found with id '{rid}'.", "not_found", param="response_id"
                )
        except GatewayError as exc:
            return exc.response()
        if request.method == "DELETE":
            await self.response_store.delete(rid)
            payload: dict[str, Any] = {"id": rid, "object": "response", "deleted": True}
        elif request.path.endswith("/input_items"):
            items = record["input"]
            payload = {
                "object": "list",
                "data": items,
                "first_id": items[0].get("id") if items else None,
                "last_id": items[-1].get("id") if items else None,
                "has_more": False,
            }
        else:
            payload = record["response"]
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)


def _with_cache_status(resp: web.Response, call: Call) -> web.Response:
    """An error from the cache stage on still says what the cache did."""
    if call.cache_status is not None:
        resp.headers[CACHE_HEADER] = call.cache_status
    return resp


def serve(
    cfg: RoutesConfig,
    config_path: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
    extend: Callable[[GatewayService], None] | None = None,
) -> None:
    """Run the gateway until SIGINT / SIGTERM. The socket is bound here, before anything else
    starts, so the log line that says where it listens names the real port (`--port 0` asks the
    system for a free one); OSError when it cannot be bound. `extend` mounts more API on the
    service first (the Batch API when the routes file has a `batch:` section:
    tandem/cli/gateway.py)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        pass
    host = host or cfg.server.host
    port = port if port is not None else cfg.server.port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    service = GatewayService(cfg, config_path)
    if extend is not None:
        extend(service)
    routes = len(service.compiled.routes)

    def listening(_message: str) -> None:  # aiohttp calls it once the server accepts
        log.info(
            "listening on http://%s:%d (%d route%s)",
            shown,
            bound,
            routes,
            "" if routes == 1 else "s",
        )

    web.run_app(service.app(), sock=sock, backlog=LISTEN_BACKLOG, access_log=None, print=listening)
