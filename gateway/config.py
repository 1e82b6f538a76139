"""The routes file: a typed, validated schema and its compilation into per-request lookups.

Everything the hot path needs (cumulative weights, upstream URLs, auth headers, the metric label
values, the fallback chain) is computed here once per config load, so a request does dictionary
lookups and nothing else. Errors name the field path and, for enumerations, the allowed values.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drift.signals import RouteMonitor
from features.online import CompiledRead
from prompts import tokens
from prompts.registry import CompiledPrompts
from vocabulary.cache import CachePolicy, CacheSection
from vocabulary.errors import ConfigError, InputError, format_validation_error
from vocabulary.features import FeatureRead
from vocabulary.gateway import (
    ENDPOINTS,
    PROTOCOL_ENDPOINTS,
    Budget,
    Endpoint,
    Price,
    Protocol,
    Timeouts,
)
from vocabulary.monitoring import RouteMonitoring
from vocabulary.pipelines import BatchSection
from vocabulary.prompts import PROMPT_NAME, ContextPolicy, PromptFile
from vocabulary.tracing import TraceCapture
from vocabulary.yamlfile import load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retries(_Strict):
    attempts: int = Field(2, ge=0, le=10, description="extra attempts after the first")
    backoff_s: float = Field(0.05, ge=0)
    max_backoff_s: float = Field(2.0, ge=0)
    jitter: float = Field(0.5, ge=0, le=1, description="fraction of each delay drawn at random")


class BreakerPolicy(_Strict):
    window_s: float = Field(30.0, gt=0)
    min_requests: int = Field(20, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    consecutive_failures: int = Field(5, ge=1)
    slow_first_token_s: float | None = Field(None, gt=0)
    open_s: float = Field(30.0, gt=0, description="longest wait between probes while open")
    half_open_probes: int = Field(1, ge=1)
    probe_share: float = Field(
        0.02, ge=0, le=1, description="share of an open backend's requests let through as probes"
    )
    throttle_window: int = Field(10, ge=1, description="recent answers judged for a 429 storm")
    throttle_share: float = Field(
        0.8, gt=0, le=1, description="share of those that, as 429s, cool the whole backend"
    )


class ConcurrencyPolicy(_Strict):
    """The backend's adaptive concurrency limit (AIMD; gateway/concurrency.py)."""

    min_limit: int = Field(4, ge=1, description="the limit never falls below this")
    backoff: float = Field(0.9, gt=0, lt=1, description="the limit is multiplied by this on a 429")
    queue_s: float = Field(
        0.25, ge=0, description="wait for a free slot before another backend takes the request"
    )


class MetricLabels(_Strict):
    use_case: str = ""
    model: str = ""
    model_version: str = ""
    rollout: Literal["stable", "canary", ""] = ""
    pool: str = ""


class Backend(_Strict):
    # Field order: the order the generated routes file (gateway.spec) has always been written in,
    # so a stack's routes ConfigMap reads (and diffs) as it did.
    url: str = Field(
        description="base URL: OpenAI-compatible (http://llama.tandem-serving:8000/v1) or, with "
        "protocol anthropic, the Messages API's (https://api.anthropic.com/v1)"
    )
    timeouts: Timeouts = Timeouts()
    labels: MetricLabels = MetricLabels()
    model: str | None = Field(None, description="model name sent upstream (default: the alias)")
    context_window: int | None = Field(None, ge=1)
    api_key_env: str | None = Field(
        None, description="environment variable holding the provider key"
    )
    max_connections: int = Field(256, ge=1)
    breaker: BreakerPolicy = BreakerPolicy()
    concurrency: ConcurrencyPolicy = ConcurrencyPolicy()
    protocol: Protocol = Field(
        "openai",
        description="openai: an OpenAI-compatible server (Messages and Responses requests are "
        "translated to chat completions); anthropic: a Messages API (passed through)",
    )
    api_key_file: str | None = Field(
        None, description="file holding the provider key (re-read when it changes)"
    )
    auth: Literal["bearer", "x-api-key"] | None = Field(
        None,
        description="how the provider key is sent (default: bearer; x-api-key for anthropic)",
    )
    anthropic_version: str = Field(
        "2023-06-01", description="anthropic-version sent when the caller sends none"
    )
    vertex: bool = Field(
        False,
        description="anthropic on Vertex AI: url is the publisher's models URL; the model goes "
        "in the path (:rawPredict / :streamRawPredict), anthropic_version in the body",
    )

    @model_validator(mode="after")
    def _protocol_settings(self) -> Backend:
        if self.api_key_env and self.api_key_file:
            raise ValueError("api_key_env and api_key_file: set one, not both")
        if self.vertex and self.protocol != "anthropic":
            raise ValueError("vertex: only for protocol anthropic")
        if self.vertex and not self.model:
            raise ValueError("vertex: needs `model` (Vertex puts the model in the URL)")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _limits(self) -> Backend:
        if self.concurrency.min_limit > self.max_connections:
            raise ValueError(
                f"concurrency.min_limit ({self.concurrency.min_limit}) is above max_connections "
                f"({self.max_connections}), the most the limit can grow to"
            )
        return self


class WeightedBackend(_Strict):
    backend: str
    weight: float = Field(1.0, gt=0)


class RouteSplit(_Strict):
    """A route under a rollout: its first backend is the stable version, `canary` the candidate.

    The live weights come from Redis (`<redis.prefix>:split:<alias>`, a
    vocabulary.rollout.TrafficSplit the rollout controller writes); without that key the route
    serves as the file says (the stable backend only). An experiment's split names the request
    attribute that keeps each caller on one arm (gateway/split.py).
    """

    canary: str = Field(description="backend serving the canary version")


class Route(_Strict):
    # Field order: as Backend's
    backends: list[WeightedBackend] = Field(min_length=1)
    endpoints: list[Endpoint] | None = Field(
        None, description="default: every endpoint all of the route's backends can serve"
    )
    fallbacks: list[str] = Field(default_factory=list, description="aliases tried in order")
    deadline_s: float = Field(60.0, gt=0)
    retries: Retries = Retries()
    use_case: str = ""
    context_fallback: str | None = Field(None, description="alias with a longer context window")
    degrade_to: str | None = Field(None, description="cheaper alias used past the soft budget")
    hedge_after_s: float | None = Field(None, gt=0)
    cache: CachePolicy | None = Field(None, description="this route's cache policy keys")
    batch_discount: float = Field(
        0.0, ge=0, lt=1, description="share of the price a batch line is not charged"
    )
    split: RouteSplit | None = Field(None, description="stable/canary split under a rollout")
    features: FeatureRead | None = Field(
        None, description="the feature service read for each request (gateway/stages/features.py)"
    )
    monitoring: RouteMonitoring | None = Field(
        None, description="drift signals sampled on this route (drift/signals.py)"
    )
    context: ContextPolicy | None = Field(
        None,
        description="counting and overflow of the context window (gateway/stages/prompt.py); "
        "default: estimated, overflow to context_fallback",
    )


class ApiKey(_Strict):
    id: str
    team: str
    sha256: str = Field(description="hex SHA-256 of the key; the key itself is never stored")
    models: list[str] = Field(default_factory=lambda: ["*"])
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    developer: str | None = Field(None, description="the one developer this key belongs to")
    developer_header: str | None = Field(
        None,
        description="a team key held by an identity-aware proxy: the developer is the value of "
        "this request header, which the gateway trusts on this key only",
    )

    @model_validator(mode="after")
    def _one_identity(self) -> ApiKey:
        if self.developer and self.developer_header:
            raise ValueError(
                "developer and developer_header: a key is one developer's or a proxy's, not both"
            )
        if self.developer_header is not None and not _HEADER_NAME.fullmatch(self.developer_header):
            raise ValueError(
                f"developer_header: {self.developer_header!r} is not an HTTP header name"
            )
        return self

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.removeprefix("sha256:").lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 hex characters (sha256 of the key)")
        return v


class Team(_Strict):
    budget: Budget | None = None
    developer_budget: Budget | None = Field(
        None, description="each developer of the team, on their own (assistant traffic)"
    )
    developers: list[str] = Field(
        default_factory=list,
        description="the team's developers (roster): who counts as having a key for adoption; "
        "with it, a proxy's developer header must name one of them",
    )


class Audit(_Strict):
    """One JSON line per request: who, which tool, model, tokens, cost; never prompt text."""

    path: str | None = Field(None, description="append to this file; default: standard output")


class ResponsesStore(_Strict):
    """Responses API answers kept for GET / DELETE and `previous_response_id` (store: true)."""

    ttl_s: float = Field(30 * 86400, gt=0, description="how long a stored response is kept")
    max_entries: int = Field(
        10_000, ge=1, description="per replica, without Redis (the oldest go first)"
    )


class Server(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    reload_interval_s: float = Field(2.0, ge=0, description="0 disables hot reload")
    split_poll_s: float = Field(1.0, gt=0, description="how often routes' live splits are read")
    signal_log_events: int = Field(
        20_000, ge=100, description="drift samples kept for the drift service (GET /drift/signals)"
    )


class Redis(_Strict):
    url: str
    prefix: str = "tandem:gw"


class FeatureStoreSection(_Strict):
    """Where Feast's online store is: the gateway reads it directly (features/online.py)."""

    redis_url: str = Field(description="redis:// or rediss:// URL of Feast's online store")
    timeout_ms: float = Field(
        50.0, gt=0, description="a read slower than this counts as the store being unavailable"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class Capture(TraceCapture):
    """The routes file's `tracing.capture` (vocabulary.config.TraceCapture, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Tracing(_Strict):
    exporter: Literal["none", "otlp", "console"] = "none"
    protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc",
        description="OTLP transport: gRPC (default endpoint :4317; sent from an export thread) "
        "or HTTP protobuf (:4318, /v1/traces appended to a bare endpoint; sent from the event "
        "loop, the cheaper of the two per span)",
    )
    endpoint: str | None = None
    service_name: str = "tandem-gateway"
    sampling: float = Field(
        1.0, ge=0, le=1, description="share of requests traced (a caller's traceparent decides)"
    )
    capture: Capture = Capture()


# Sections of the routes file the gateway reads once at start (connections, the cache, tracing);
# the rest (routes, backends, keys, prompts...) is hot-reloaded. A change to these rolls the pods
# (components/gateway.py annotates the pod template with `restart_sections_sha`).
RESTART_SECTIONS = ("server", "redis", "cache", "tracing", "feature_store", "audit", "responses")


def restart_sections_sha(cfg: RoutesConfig) -> str:
    """A digest of the restart-only sections: equal while a reload would be enough."""
    import json

    data = {s: cfg.model_dump(mode="json", include={s}).get(s) for s in RESTART_SECTIONS}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class RoutesConfig(_Strict):
    """The routes file `tandem gateway serve` loads (the stack's `gateway:` section is a different
    thing: vocabulary.config.GatewayConfig, which the Gateway component turns into one of these)."""

    # Field order is the order the generated routes file is written in (see Backend).
    backends: dict[str, Backend] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)
    prices: dict[str, Price] = Field(default_factory=dict, description="keyed by backend name")
    teams: dict[str, Team] = Field(default_factory=dict)
    server: Server = Server()
    keys: list[ApiKey] = Field(default_factory=list)
    keys_file: str | None = Field(None, description="YAML list of keys, e.g. mounted from a Secret")
    cache: CacheSection | None = None
    redis: Redis | None = None
    tracing: Tracing = Tracing()
    batch: BatchSection | None = Field(None, description="the Batch API and async jobs")
    audit: Audit | None = Field(None, description="an audit record per request; omit for none")
    responses: ResponsesStore = ResponsesStore()
    feature_store: FeatureStoreSection | None = None
    prompts: dict[str, PromptFile] = Field(
        default_factory=dict,
        description="prompt templates callers name (`prompt: support/answer@production`), "
        "by <namespace>/<name> (stacks/prompts/; docs/prompts.md)",
    )

    @model_validator(mode="after")
    def _references(self) -> RoutesConfig:
        """Names that point elsewhere in the file must exist: one line per dangling one."""
        errors: list[str] = []
        for name, prompt in self.prompts.items():
            if not PROMPT_NAME.match(name):
                errors.append(
                    f"prompts.{name}: a prompt name is <namespace>/<name>, e.g. support/answer"
                )
            if prompt.model not in self.routes:
                errors.append(
                    f"prompts.{name}.model: unknown route {prompt.model!r}; "
                    f"allowed: {sorted(self.routes)}"
                )
        for alias, route in self.routes.items():
            for i, wb in enumerate(route.backends):
                if wb.backend not in self.backends:
                    errors.append(
                        f"routes.{alias}.backends[{i}].backend: unknown backend {wb.backend!r}; "
                        f"allowed: {sorted(self.backends)}"
                    )
                    continue
                protocol = self.backends[wb.backend].protocol
                served = PROTOCOL_ENDPOINTS[protocol]
                for e in route.endpoints or ():
                    if e not in served:
                        errors.append(
                            f"routes.{alias}.endpoints: {e!r} is not served by backend "
                            f"{wb.backend!r} (protocol {protocol}); allowed: {list(served)}"
                        )
            refs = [(f"fallbacks[{i}]", a) for i, a in enumerate(route.fallbacks)]
            refs += [(n, getattr(route, n)) for n in ("context_fallback", "degrade_to")]
            for where, target in refs:
                if target is not None and target not in self.routes:
                    errors.append(
                        f"routes.{alias}.{where}: unknown route {target!r}; "
                        f"allowed: {sorted(self.routes)}"
                    )
                elif target == alias:
                    errors.append(f"routes.{alias}.{where}: a route cannot fall back to itself")
        for i, alias in enumerate(self.tracing.capture.routes):
            if alias not in self.routes:
                errors.append(
                    f"tracing.capture.routes[{i}]: unknown route {alias!r}; "
                    f"allowed: {sorted(self.routes)}"
                )
        for alias, route in self.routes.items():
            if route.split is None:
                continue
            where = f"routes.{alias}.split"
            if route.split.canary not in self.backends:
                errors.append(
                    f"{where}.canary: unknown backend {route.split.canary!r}; "
                    f"allowed: {sorted(self.backends)}"
                )
            elif any(wb.backend == route.split.canary for wb in route.backends):
                errors.append(f"{where}.canary: the canary backend is not one of the route's own")
        for name in self.prices:
            if name not in self.backends:
                errors.append(f"prices.{name}: unknown backend; allowed: {sorted(self.backends)}")
        seen: set[str] = set()
        for i, key in enumerate(self.keys):
            if key.id in seen:
                errors.append(f"keys[{i}].id: duplicate key id {key.id!r}")
            seen.add(key.id)
            for m in key.models:
                if m != "*" and m not in self.routes:
                    errors.append(
                        f"keys[{i}].models: unknown route {m!r}; allowed: ['*'] + {sorted(self.routes)}"
                    )
        errors += self._batch_references()
        budgeted = [t for t, team in self.teams.items() if team.budget or team.developer_budget]
        unpriced = sorted(set(self.backends) - set(self.prices))
        if budgeted and unpriced:
            errors.append(
                f"prices: teams {budgeted} have budgets but backends {unpriced} have no price"
            )
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def _batch_references(self) -> list[str]:
        """The batch section needs the shared Redis (its queue, and the budgets its lines are
        charged to), and names routes that exist."""
        if self.batch is None:
            return []
        errors = []
        if self.redis is None:
            errors.append(
                "batch: needs the `redis:` section (the queue, the batch records and the budgets "
                "the lines are charged to live there)"
            )
        for alias in self.batch.workers.yield_to_online.slo_p95_ms:
            if alias not in self.routes:
                errors.append(
                    f"batch.workers.yield_to_online.slo_p95_ms.{alias}: unknown route; "
                    f"allowed: {sorted(self.routes)}"
                )
        return errors

    def to_yaml(self) -> str:
        """The file as written: the fields that were set, in field order, without nulls (every
        field that may be null defaults to null, so leaving one out changes nothing)."""
        data = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def route_endpoints(route: Route, backends: dict[str, Backend]) -> tuple[Endpoint, ...]:
    """What a route serves: its `endpoints`, or every endpoint all its backends can serve."""
    if route.endpoints is not None:
        return tuple(route.endpoints)
    protocols = {backends[wb.backend].protocol for wb in route.backends if wb.backend in backends}
    return tuple(e for e in ENDPOINTS if all(e in PROTOCOL_ENDPOINTS[p] for p in protocols))


def parse_config(data: Any, source: str = "<config>") -> RoutesConfig:
    """A routes mapping as the typed config; ConfigError with one line per problem."""
    try:
        cfg = RoutesConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RoutesConfig), source) from None
    # A file the gateway serves must be whole: a batch discount prices nothing without the
    # Batch API. (Routes generated from use cases get their `batch:` later, in the component.)
    if cfg.batch is None:
        inert = [
            f"routes.{alias}.batch_discount: applies to batch lines only; add a `batch:` "
            "section or remove it"
            for alias, route in cfg.routes.items()
            if route.batch_discount
        ]
        if inert:
            raise ConfigError(inert, source)
    # a file the gateway serves must say where the features are (the routes generated from
    # use cases get the feature store's address from the Gateway component)
    featured = sorted(a for a, r in cfg.routes.items() if r.features is not None)
    if featured and cfg.feature_store is None:
        raise ConfigError(
            [
                f"feature_store: routes {featured} read features but the file has no "
                "`feature_store:` section (redis_url of Feast's online store)"
            ],
            source,
        )
    return cfg


def resolve_keys_file(config_path: Path, keys_file: str) -> Path:
    """`keys_file` as given, or relative to the routes file."""
    p = Path(keys_file)
    return p if p.is_absolute() else config_path.parent / p


def load_config(path: str | Path) -> RoutesConfig:
    path = Path(path)
    source = f"gateway config {path}"
    try:  # bad YAML: ConfigError naming the file and line; unreadable: said as one problem
        data = load_yaml(path, "routes file")
        if isinstance(data, dict) and data.get("keys_file"):
            keys_path = resolve_keys_file(path, data["keys_file"])
            extra = load_yaml(keys_path, "keys file") or []
    except ConfigError:
        raise
    except InputError as exc:
        raise ConfigError([str(exc)], source) from None
    if isinstance(data, dict) and data.get("keys_file"):
        if not isinstance(extra, list):
            raise ConfigError([f"keys_file: {keys_path} must be a YAML list of keys"], source)
        data = {**data, "keys": list(data.get("keys") or []) + extra}
    return parse_config(data, source)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Compiled form: what a request reads.


class CompiledBackend:
    """One upstream, with its URLs and headers built once."""

    __slots__ = (
        "name",
        "spec",
        "model",
        "protocol",
        "urls",
        "headers",
        "price_in",
        "price_out",
        "price_cached",
        "label_values",
    )

    def __init__(self, name: str, spec: Backend, price: Price | None, alias_hint: str) -> None:
        self.name = name
        self.spec = spec
        self.model = spec.model
        self.protocol = spec.protocol
        self.urls = _urls(spec)
        headers = {"Content-Type": "application/json"}
        anthropic = spec.protocol == "anthropic"
        if spec.api_key_env or spec.api_key_file:
            key = _provider_key(spec)
            if (spec.auth or ("x-api-key" if anthropic and not spec.vertex else "bearer")) == (
                "bearer"
            ):
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["x-api-key"] = key
        if anthropic and not spec.vertex:  # Vertex takes the version in the body
            headers["anthropic-version"] = spec.anthropic_version
        self.headers = headers
        self.price_in = (price.input_per_mtok if price else 0.0) / 1e6
        self.price_out = (price.output_per_mtok if price else 0.0) / 1e6
        cached = price.cached_input_per_mtok if price else None
        self.price_cached = self.price_in if cached is None else cached / 1e6
        lab = spec.labels
        # METRIC_LABELS minus `team`, which comes from the caller's key.
        self.label_values = (
            lab.use_case,
            lab.model or spec.model or alias_hint,
            lab.model_version,
            lab.rollout or "stable",
            lab.pool,
        )


def _urls(spec: Backend) -> dict[str, str]:
    """Upstream URL per upstream endpoint (`messages.stream` differs from `messages` on Vertex)."""
    if spec.protocol == "openai":
        return {
            "chat.completions": spec.url + "/chat/completions",
            "completions": spec.url + "/completions",
            "embeddings": spec.url + "/embeddings",
        }
    if spec.vertex:
        return {
            "messages": f"{spec.url}/{spec.model}:rawPredict",
            "messages.stream": f"{spec.url}/{spec.model}:streamRawPredict",
            "messages.count_tokens": f"{spec.url}/count-tokens:rawPredict",
        }
    return {
        "messages": spec.url + "/messages",
        "messages.stream": spec.url + "/messages",
        "messages.count_tokens": spec.url + "/messages/count_tokens",
    }


def _provider_key(spec: Backend) -> str:
    if spec.api_key_env:
        return os.environ.get(spec.api_key_env, "")
    assert spec.api_key_file is not None
    try:
        return Path(spec.api_key_file).read_text().strip()
    except OSError:
        return ""  # the upstream answers 401; the file may appear later (hot reload)


class CompiledRoute:
    __slots__ = (
        "alias",
        "spec",
        "backends",
        "cum_weights",
        "total_weight",
        "price_in",
        "price_out",
        "chain",
        "context_fallback",
        "degrade_to",
        "endpoints",
        "cache_policy",
        "batch_price_factor",
        "windowed",
        "split",
        "sticky",
        "arm_headers",
        "features",
        "monitor",
        "window",
        "counter",
        "overflow",
    )

    def __init__(self, alias: str, spec: Route, backends: dict[str, CompiledBackend]) -> None:
        self.alias = alias
        self.spec = spec
        self.backends = [backends[wb.backend] for wb in spec.backends]
        acc = 0.0
        cum = []
        for wb in spec.backends:
            acc += wb.weight
            cum.append(acc)
        self.cum_weights = cum
        self.total_weight = acc
        # what an answer on this route is expected to cost per token (backends by weight): the
        # price of a request the cache answered instead
        weights = [(b, wb.weight / acc) for b, wb in zip(self.backends, spec.backends, strict=True)]
        self.price_in = sum(b.price_in * w for b, w in weights) if acc else 0.0
        self.price_out = sum(b.price_out * w for b, w in weights) if acc else 0.0
        self.chain: list[CompiledRoute] = []  # filled in by compile_config
        self.context_fallback: CompiledRoute | None = None
        self.degrade_to: CompiledRoute | None = None
        self.endpoints = frozenset(
            spec.endpoints
            if spec.endpoints is not None
            else (
                e
                for e in ENDPOINTS
                if all(e in PROTOCOL_ENDPOINTS[b.protocol] for b in self.backends)
            )
        )
        self.cache_policy = spec.cache
        self.batch_price_factor = 1.0 - spec.batch_discount  # what a batch line pays
        # a backend declares its context window: requests are checked against it before a call
        self.windowed = any(b.spec.context_window is not None for b in self.backends)
        self.split = spec.split  # a rollout's stable/canary split (gateway/split.py)
        self.sticky: tuple[str, str] | None = None  # (attribute, salt) of a live experiment
        # per backend name: the X-Tandem-Rollout / X-Tandem-Model-Version an answer carries
        self.arm_headers: dict[str, dict[str, str]] = {}
        if spec.split is not None:
            for b in self.backends:
                self.arm_headers[b.name] = {
                    "X-Tandem-Rollout": b.label_values[3],
                    "X-Tandem-Model-Version": b.label_values[2] or "unknown",
                }
        self.features = CompiledRead(spec.features) if spec.features is not None else None
        m = spec.monitoring
        self.monitor = (
            RouteMonitor(
                spec.use_case or alias, m.sample_rate, frozenset(m.signals), tuple(m.features)
            )
            if m is not None
            else None
        )
        # the context budget: the smallest window a backend declares, the counter, the strategy
        windows = [b.spec.context_window for b in self.backends if b.spec.context_window]
        self.window = min(windows) if windows else None
        policy = spec.context or ContextPolicy()
        try:
            self.counter = tokens.counter(policy.tokenizer)
        except ValueError as exc:
            raise ConfigError([f"routes.{alias}.context.tokenizer: {exc}"], "routes") from None
        self.overflow = policy.overflow


class CompiledKey:
    __slots__ = (
        "id",
        "team",
        "digest",
        "all_models",
        "models",
        "rpm",
        "tpm",
        "developer",
        "developer_header",
    )

    def __init__(self, key: ApiKey) -> None:
        self.id = key.id
        self.team = key.team
        self.digest = bytes.fromhex(key.sha256)
        self.all_models = "*" in key.models
        self.models = frozenset(key.models)
        self.rpm = key.rpm
        self.tpm = key.tpm
        self.developer = key.developer
        self.developer_header = key.developer_header


ANONYMOUS = CompiledKey(ApiKey(id="anonymous", team="anonymous", sha256="0" * 64))


class Compiled:
    def __init__(self, cfg: RoutesConfig) -> None:
        self.cfg = cfg
        self.backends = {
            name: CompiledBackend(name, b, cfg.prices.get(name), _first_alias(cfg, name))
            for name, b in cfg.backends.items()
        }
        self.routes = {a: CompiledRoute(a, r, self.backends) for a, r in cfg.routes.items()}
        for alias, route in self.routes.items():
            spec = cfg.routes[alias]
            route.chain = _fallback_chain(alias, self.routes, cfg)
            if spec.context_fallback:
                route.context_fallback = self.routes[spec.context_fallback]
            if spec.degrade_to:
                route.degrade_to = self.routes[spec.degrade_to]
        self.keys = {k.digest: k for k in (CompiledKey(k) for k in cfg.keys)}
        self.auth_required = bool(self.keys)
        self.budgets = {t: team.budget for t, team in cfg.teams.items() if team.budget}
        self.model_entries: dict[str, dict[str, Any]] = {
            a: {"id": a, "object": "model", "created": 0, "owned_by": "tandem"} for a in self.routes
        }
        self.developer_budgets = {
            t: team.developer_budget for t, team in cfg.teams.items() if team.developer_budget
        }
        self.rosters = {t: frozenset(team.developers) for t, team in cfg.teams.items()}
        # adoption's denominator: developers with their own key, and each team's roster
        with_keys: dict[str, set[str]] = {t: set(r) for t, r in self.rosters.items() if r}
        for k in cfg.keys:
            if k.developer:
                with_keys.setdefault(k.team, set()).add(k.developer)
        self.developers_with_keys = {t: len(d) for t, d in with_keys.items()}
        self.models_payload: dict[str, Any] = {
            "object": "list",
            "data": list(self.model_entries.values()),
        }
        self.prompts = CompiledPrompts(cfg.prompts)


def _first_alias(cfg: RoutesConfig, backend: str) -> str:
    for alias, route in cfg.routes.items():
        if any(wb.backend == backend for wb in route.backends):
            return alias
    return backend


def _fallback_chain(alias: str, routes: dict[str, CompiledRoute], cfg: RoutesConfig) -> list:
    """The route itself, then its fallbacks depth-first, each alias once (cycles are harmless)."""
    order: list[CompiledRoute] = []
    seen: set[str] = set()

    def visit(a: str) -> None:
        if a in seen:
            return
        seen.add(a)
        order.append(routes[a])
        for nxt in cfg.routes[a].fallbacks:
            visit(nxt)

    visit(alias)
    return order


def compile_config(cfg: RoutesConfig) -> Compiled:
    return Compiled(cfg)
