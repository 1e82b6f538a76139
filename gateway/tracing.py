"""OpenTelemetry GenAI spans for the request path (off unless the routes file's `tracing:` says).

One CLIENT span per request, named and attributed after the OpenTelemetry GenAI semantic
conventions (`chat <alias>`; `gen_ai.operation.name`, `gen_ai.provider.name`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens` / `output_tokens`,
`gen_ai.request.max_tokens` / `temperature` / `top_p`, `server.address`, `error.type`), plus what
only the gateway knows, on every span whatever its outcome:

    tandem.team, tandem.route (the alias asked for), tandem.route.answered (the route that
    answered), tandem.fallback (whether that was a fallback), tandem.backend,
    tandem.backends.tried (in order, retries and fallbacks included), tandem.breaker.state (of
    the backend that answered or last failed; of the route's first backend for a cache hit),
    tandem.cache.status (hit | miss | bypass), tandem.cache.layer, tandem.cost_usd,
    tandem.cache.saved_usd, tandem.stream

The span's duration is the request's latency. Prompt and response text are recorded only for the
routes `tracing.capture.routes` names, redacted first (gateway/redact.py), as the conventions'
opt-in `gen_ai.input.messages` / `gen_ai.output.messages` (JSON, `{"role", "parts": [{"type":
"text", "content"}]}`); for every other route no text is ever put on a span. The upstream call
carries the span's `traceparent`, so Ray Serve's spans join the gateway's trace.

Sampling is parent-based: a caller's `traceparent` decides; otherwise `tracing.sampling` of the
requests are traced. Spans leave in batches, encoded by gateway/otlp.py (the attributes many
spans share are encoded once): over OTLP/HTTP from the event loop (`protocol: http/protobuf`, what
the Tracing component configures) or over OTLP/gRPC from the SDK's BatchSpanProcessor thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import CompiledBackend, Tracing
from gateway.otlp import (
    _REMOTE_FLAGS,
    encode_attributes,
    otlp_name,
    otlp_status,
)
from gateway.otlp import _pack_fixed64 as _pack_u64
from gateway.redact import Redactor

if TYPE_CHECKING:
    from gateway.stages.call import Call

# the GenAI operation name of each endpoint
_OPERATIONS = {
    "chat.completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "messages": "chat",
    "messages.count_tokens": "chat",
    "responses": "chat",
}
# the exporter's batching: a queue for bursts (spans beyond it are dropped and counted by the SDK),
# sent every BATCH_DELAY_MS or as soon as BATCH_SIZE spans wait
BATCH_QUEUE, BATCH_DELAY_MS, BATCH_SIZE = 16384, 1000, 256
_BREAKER_STATES = ("closed", "open", "half_open")
_LOW64 = (1 << 64) - 1  # gateway/breaker.py's CLOSED, OPEN, HALF_OPEN
_NUMBERS = (int, float)
# a block of attributes shared by many spans: the values, their OTLP encoding, their keys
Block = tuple[dict[str, Any], bytes, frozenset]
_BLOCKS_MAX = 4096  # shared attribute blocks kept per kind (beyond it, each span makes its own)
_NAMES: dict[str, bytes] = {}  # span name -> its OTLP name and kind fields
_REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)


class GatewaySpan:
    """A span as the SDK's exporters read it (name, context, parent, kind, times, attributes,
    status, resource, scope), without the SDK Span's per-attribute validation and locking: the
    gateway sets only its own, well-typed attributes, once per request (a list value is kept as
    a tuple, as the SDK does). Other stages may still `set_attribute` on it. What every span of
    a tracer shares (kind, resource, scope, processor) is read from the tracer, not copied.

    Attributes come in blocks: shared ones (the opening attributes of a route and team, the
    answer's backend and route...), each a dict with its OTLP encoding made once and reused by
    every span with the same values, then the span's own. `attributes` is all of them, in that
    order; `otlp_bytes` writes the span for gateway/otlp.py from the encoded blocks and the span's
    own values."""

    __slots__ = (
        "name",
        "trace_id",
        "span_id",
        "_context",
        "parent",
        "start_time",
        "end_time",
        "_blocks",
        "_own",
        "_status",
        "_tracer",
    )
    dropped_attributes = dropped_events = dropped_links = 0
    events: tuple = ()
    links: tuple = ()

    def __init__(
        self, tracer: GatewayTracer, name: str, trace_id: int, span_id: int, parent: Any, block: Any
    ):
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self._context: Any = None  # the SDK's SpanContext, built when something asks for it
        self.parent = parent
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self._blocks: list[Block] = [block]
        self._own: dict[str, Any] = {}
        self._status: Any = None
        self._tracer = tracer

    @property
    def attributes(self) -> Mapping[str, Any]:
        """All of them, read-only (`set_attribute` writes)."""
        merged: dict[str, Any] = {}
        for values, _, _ in self._blocks:
            merged.update(values)
        merged.update(self._own)
        return MappingProxyType(merged)

    def add_block(self, block: Block) -> None:
        """A shared block of attributes (a dict nobody mutates, its encoding, its keys)."""
        keys = block[2]
        for other in self._blocks:
            if not keys.isdisjoint(other[2]):
                break
        else:
            if keys.isdisjoint(self._own):
                self._blocks.append(block)
                return
        for key, value in block[0].items():  # it would shadow a value set before: set each
            self.set_attribute(key, value)

    @property
    def kind(self) -> Any:
        return self._tracer.kind

    @property
    def resource(self) -> Any:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> Any:
        return self._tracer.scope

    @property
    def status(self) -> Any:
        return self._tracer.unset if self._status is None else self._status

    def set_attribute(self, key: str, value: Any) -> None:
        if any(key in b[2] for b in self._blocks):
            self._own = dict(self.attributes)  # a shared value changes: this span's own now
            self._blocks = []
        self._own[key] = tuple(value) if isinstance(value, list) else value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, status: Any) -> None:
        self._status = status

    def is_recording(self) -> bool:
        return self.end_time is None

    @property
    def context(self) -> Any:
        ctx = self._context
        if ctx is None:
            t = self._tracer
            ctx = self._context = t._span_context(self.trace_id, self.span_id, False, t._sampled)
        return ctx

    def get_span_context(self) -> Any:
        return self.context

    def otlp_bytes(self) -> bytes:
        """This span's OTLP `Span` message: gateway/otlp.py's encoding, read from the slots
        (no SpanContext, no properties; the name's field cached) for the one shape a gateway
        span has: CLIENT kind, no trace state, shared blocks then its own attributes."""
        parent = self.parent
        head = b"\x0a\x10" + self.trace_id.to_bytes(16, "big") + b"\x12\x08"
        head += self.span_id.to_bytes(8, "big")
        if parent is not None:
            head += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
        name = _NAMES.get(self.name)
        if name is None:
            name = otlp_name(self.name, self._tracer.kind)
            if len(_NAMES) < _BLOCKS_MAX:
                _NAMES[self.name] = name
        status = self._status
        return b"".join(
            (
                head,
                name,
                b"\x39",
                _pack_u64(self.start_time),
                b"\x41",
                _pack_u64(self.end_time),
                *[encoded for _, encoded, _ in self._blocks],
                encode_attributes(self._own),
                b"\x7a\x00" if status is None else otlp_status(status),
                _REMOTE_FLAGS[parent is not None and parent.is_remote],
            )
        )

    def end(self) -> None:
        if self.end_time is None:
            self.end_time = time.time_ns()
            self._tracer.processor.on_end(self)

    def to_json(self, indent: int | None = 4) -> str:  # the console exporter's format
        return json.dumps(
            {
                "name": self.name,
                "trace_id": f"0x{self.trace_id:032x}",
                "span_id": f"0x{self.span_id:016x}",
                "start_time": self.start_time,
                "end_time": self.end_time,
                "status": self.status.status_code.name,
                "attributes": dict(self.attributes),
            },
            indent=indent,
            default=list,
        )


class GatewayTracer:
    """The gateway's tracer, its sampling, and what it captures (built once per config).

    Sampling is the SDK's ParentBased(TraceIdRatioBased): a caller's sampled `traceparent` is
    followed; otherwise a trace is kept when the low 64 bits of its random id fall under
    `sampling` of their range. An unsampled request costs one random number."""

    def __init__(self, cfg: Tracing, exporter: Any = None, batch: bool | None = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self.resource = Resource.create({"service.name": cfg.service_name})
        self.scope = InstrumentationScope("tandem.gateway")
        self.processor: Any
        if exporter is None and cfg.exporter == "otlp" and cfg.protocol == "http/protobuf":
            from gateway.otlp import OtlpHttpProcessor

            self.processor = OtlpHttpProcessor(
                cfg.endpoint or "http://127.0.0.1:4318",
                self.resource,
                self.scope,
                max_queue=BATCH_QUEUE,
                batch_size=BATCH_SIZE,
                delay_s=BATCH_DELAY_MS / 1000,
            )
        else:
            if exporter is None:
                if cfg.exporter == "console":
                    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                    exporter = ConsoleSpanExporter()
                else:
                    from gateway.otlp import OtlpGrpcExporter

                    exporter = OtlpGrpcExporter(cfg.endpoint or "http://127.0.0.1:4317")
                batch = True if batch is None else batch
            # an exporter handed in (tests) sees each span as it ends unless asked to batch.
            # Small batches: each is encoded under the GIL the event loop needs
            self.processor = (
                BatchSpanProcessor(
                    exporter,
                    max_queue_size=BATCH_QUEUE,
                    schedule_delay_millis=BATCH_DELAY_MS,
                    max_export_batch_size=BATCH_SIZE,
                )
                if batch
                else SimpleSpanProcessor(exporter)
            )
        self.kind = SpanKind.CLIENT
        self.unset = Status(StatusCode.UNSET)
        self.error = StatusCode.ERROR
        self._span_context = SpanContext
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._bound = round(cfg.sampling * (1 << 64))  # TraceIdRatioBased's
        self.capture = frozenset(cfg.capture.routes)
        self.redactor = Redactor(cfg.capture.redact, cfg.capture.patterns) if self.capture else None
        self.max_chars = cfg.capture.max_chars
        self.breakers: dict[str, Any] = {}  # the upstreams' breakers, set when they exist
        self._openings: dict[tuple[str, str, str], tuple[str, Any]] = {}
        # the answers' shared attributes, keyed by the backend object itself (a reload's new
        # backends make new entries; the old ones stay until the bound, then spans build their own)
        self.answered: dict[tuple, Block] = {}

    def start(self, name: str, block: Any, parent: Any = None) -> GatewaySpan | None:
        """A recording span opening with `block` (attributes, encoded), or None when this
        request is not sampled."""
        if parent is not None and parent.is_valid:
            if not parent.trace_flags.sampled:
                return None
            trace_id = parent.trace_id
        else:
            parent = None
            trace_id = random.getrandbits(128) or 1
            if (trace_id & _LOW64) >= self._bound:
                return None
        return GatewaySpan(self, name, trace_id, random.getrandbits(64) or 1, parent, block)

    def opening(self, endpoint: str, alias: str, team: str) -> tuple[str, Any]:
        """A request span's name and first attributes, built once per (endpoint, route, team):
        most requests repeat a handful of combinations."""
        key = (endpoint, alias, team)
        known = self._openings.get(key)
        if known is None:
            op = _OPERATIONS[endpoint]
            known = (
                f"{op} {alias}",
                block(
                    {
                        "gen_ai.operation.name": op,
                        "gen_ai.request.model": alias,
                        "tandem.team": team,
                        "tandem.route": alias,
                        "openinference.span.kind": "LLM",  # Phoenix lists it as an LLM call
                    }
                ),
            )
            self.keep(self._openings, key, known)
        return known

    def keep(self, blocks: dict[tuple, Any], key: tuple, made: Any) -> Any:
        """`made` (a span's name and block, or a block), kept under `key` while there is room."""
        if len(blocks) < _BLOCKS_MAX:
            blocks[key] = made
        return made

    def captures(self, alias: str) -> bool:
        return alias in self.capture

    def shutdown(self) -> None:
        self.processor.shutdown()

    async def aclose(self) -> None:
        """Send the spans still queued: on the loop for the OTLP/HTTP processor, in a thread for
        the SDK's (its shutdown blocks until its export thread is done)."""
        aclose = getattr(self.processor, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            await asyncio.to_thread(self.processor.shutdown)


def build_tracer(cfg: Tracing, exporter: Any = None) -> GatewayTracer | None:
    """A tracer for `cfg` (None when tracing is off); `exporter` replaces the configured one."""
    if exporter is None and cfg.exporter == "none":
        return None
    return GatewayTracer(cfg, exporter)


def block(values: dict[str, Any]) -> Block:
    """Attributes shared by many spans, with their OTLP encoding made once."""
    return values, encode_attributes(values), frozenset(values)


def start_span(
    tracer: GatewayTracer, endpoint: str, alias: str, team: str, parent: Any = None
) -> GatewaySpan | None:
    """The request's span (None: not sampled); `parent`: a caller's SpanContext."""
    name, first = tracer.opening(endpoint, alias, team)
    return tracer.start(name, first, parent)


def set_prompt(span: Any, name: str, version: str) -> None:
    """The prompt a request named (gateway/stages/prompt.py): its name and the version served."""
    span.set_attributes({"tandem.prompt.name": name, "tandem.prompt.version": version})


def begin(
    call: Call,
    tracer: GatewayTracer,
    endpoint: str,
    alias: str,
    team: str,
    traceparent: str | None = None,
) -> None:
    """Open the call's span (when sampled): what the forward stage records into is set up.
    `traceparent`: the caller's, whose trace (and sampling decision) the span continues."""
    parent = _remote_parent(traceparent) if traceparent else None
    span = start_span(tracer, endpoint, alias, team, parent)
    if span is None:
        return  # not sampled: nothing more is spent on this request
    call.span, call.trace, call.tried = span, tracer, []
    body, attrs = call.body, span._own
    for param, attribute in _REQUEST_PARAMS:
        value = body.get(param)
        if value.__class__ in _NUMBERS:  # not None, not a bool, not a string
            attrs[attribute] = value
    call.traceparent = f"00-{span.trace_id:032x}-{span.span_id:016x}-01"  # sampled


def end_answered(call: Call, backend: CompiledBackend, tokens_in: int, tokens_out: int) -> None:
    a = call.attempt
    alias = _alias(call)
    answered = a.route.alias if a is not None else alias
    span, tracer = call.span, call.trace
    state = _breaker_state(tracer, backend.name)
    cache = call.cache_status
    key = (backend, answered, alias, call.stream, state, cache)
    shared = tracer.answered.get(key)
    if shared is None:
        values = {
            "gen_ai.provider.name": backend.protocol,
            "gen_ai.response.model": backend.model or backend.label_values[1],
            "server.address": backend.spec.url,
            "tandem.backend": backend.name,
            "tandem.route.answered": answered,
            "tandem.fallback": answered != alias,
            "tandem.stream": call.stream,
            "tandem.breaker.state": state,
        }
        if cache is not None:
            values["tandem.cache.status"] = cache.split(";", 1)[0]
        shared = tracer.keep(tracer.answered, key, block(values))
    span.add_block(shared)
    own = span._own
    own["tandem.backends.tried"] = tuple(call.tried) if call.tried else ()
    own["gen_ai.usage.input_tokens"] = tokens_in
    own["gen_ai.usage.output_tokens"] = tokens_out
    own["tandem.cost_usd"] = call.cost
    if tracer.redactor is not None and tracer.captures(alias):
        _capture(call, call.answer, own)
    span.end()


def end_cached(call: Call, layer: str, response: dict, saved: float) -> None:
    """A response-cache hit: no backend was called; the cached answer's tokens and saving."""
    route = call.route
    span = call.span
    attrs = _common(call, route.backends[0].name if route is not None else None, span._own)
    usage = response.get("usage") if isinstance(response, dict) else None
    if isinstance(usage, dict):
        attrs["gen_ai.usage.input_tokens"] = int(usage.get("prompt_tokens") or 0)
        attrs["gen_ai.usage.output_tokens"] = int(usage.get("completion_tokens") or 0)
    alias = _alias(call)
    attrs["tandem.cache.layer"] = layer
    attrs["tandem.cache.saved_usd"] = saved
    attrs["tandem.cost_usd"] = 0.0
    attrs["tandem.route.answered"] = alias
    attrs["tandem.fallback"] = False
    if call.trace.redactor is not None and call.trace.captures(alias):
        _capture(call, response, attrs)
    span.end()


def end_failed(call: Call, error_type: str) -> None:
    tried = call.tried
    span = call.span
    attrs = _common(call, tried[-1] if tried else None, span._own)
    attrs["error.type"] = error_type
    attrs["tandem.cost_usd"] = call.cost
    attrs["tandem.fallback"] = False
    if call.trace.redactor is not None and call.trace.captures(_alias(call)):
        _capture(call, None, attrs)
    from opentelemetry.trace import Status

    span.set_status(Status(call.trace.error, error_type))
    span.end()


def _remote_parent(traceparent: str) -> Any:
    """A caller's span context from its W3C traceparent (None if malformed)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    parent = trace.get_current_span(ctx).get_span_context()
    return parent if parent.is_valid else None


def _alias(call: Call) -> str:
    model = call.body.get("model")
    return model if isinstance(model, str) else ""


def _breaker_state(tracer: GatewayTracer, backend: str | None) -> str:
    breaker = tracer.breakers.get(backend) if backend else None
    return _BREAKER_STATES[breaker.state] if breaker is not None else "none"


def _common(call: Call, breaker_of: str | None, attrs: dict[str, Any]) -> dict[str, Any]:
    """What every span ends with, whatever the outcome (written into `attrs`, returned)."""
    attrs["tandem.backends.tried"] = tuple(call.tried) if call.tried else ()
    attrs["tandem.stream"] = call.stream
    attrs["tandem.breaker.state"] = _breaker_state(call.trace, breaker_of)
    status = call.cache_status
    if status is not None:
        attrs["tandem.cache.status"] = status.split(";", 1)[0]
    return attrs


# -- captured text (opted-in routes only) --------------------------------------------------


def _capture(call: Call, answer: dict | None, attrs: dict[str, Any]) -> None:
    tracer: GatewayTracer = call.trace
    redact = tracer.redactor.redact  # type: ignore[union-attr]
    cut = tracer.max_chars

    def msg(role: str, text: str, **extra: Any) -> dict:
        return {"role": role, "parts": [{"type": "text", "content": redact(text[:cut])}], **extra}

    inputs = [msg(role, text) for role, text in input_texts(call.endpoint, call.body)]
    attrs["gen_ai.input.messages"] = orjson.dumps(inputs).decode()
    if answer is not None:
        outputs = [
            msg("assistant", text, finish_reason=reason)
            for text, reason in output_texts(call.endpoint, answer)
        ]
        attrs["gen_ai.output.messages"] = orjson.dumps(outputs).decode()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and "text" in p)
    return ""


def input_texts(endpoint: str, body: dict) -> list[tuple[str, str]]:
    """(role, text) of a request's prompt, in the caller's API."""
    out: list[tuple[str, str]] = []
    if endpoint in ("chat.completions", "messages", "messages.count_tokens"):
        if "system" in body:  # Anthropic Messages keep the system prompt apart
            out.append(("system", _text(body["system"])))
        for m in body.get("messages") or ():
            if isinstance(m, dict):
                out.append((str(m.get("role") or "user"), _text(m.get("content"))))
    elif endpoint == "responses":
        if isinstance(body.get("instructions"), str):
            out.append(("system", body["instructions"]))
        items = body.get("input")
        if isinstance(items, str):
            out.append(("user", items))
        elif isinstance(items, list):
            for m in items:
                if isinstance(m, dict) and "content" in m:
                    out.append((str(m.get("role") or "user"), _text(m.get("content"))))
    else:  # completions: prompt; embeddings: input (a string or a list of strings)
        prompt = body.get("prompt" if endpoint == "completions" else "input")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        for p in prompts if isinstance(prompts, list) else ():
            if isinstance(p, str):
                out.append(("user", p))
    return out


def output_texts(endpoint: str, answer: dict) -> list[tuple[str, str]]:
    """(text, finish reason) of an answer, in the caller's API; none for embeddings."""
    out: list[tuple[str, str]] = []
    if endpoint in ("chat.completions", "completions"):
        for c in answer.get("choices") or ():
            if not isinstance(c, dict):
                continue
            message = c.get("message")
            text = _text(message.get("content")) if isinstance(message, dict) else c.get("text")
            out.append((text if isinstance(text, str) else "", str(c.get("finish_reason") or "")))
    elif endpoint == "messages":
        out.append((_text(answer.get("content")), str(answer.get("stop_reason") or "")))
    elif endpoint == "responses":
        for item in answer.get("output") or ():
            if isinstance(item, dict) and item.get("type") == "message":
                parts = item.get("content") or ()
                text = "".join(
                    p.get("text") or "" for p in parts if isinstance(p, dict) and "text" in p
                )
                out.append((text, str(answer.get("status") or "")))
    return out
