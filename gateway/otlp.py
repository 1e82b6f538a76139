"""An OTLP/gRPC span exporter for the gateway: the same wire format as OpenTelemetry's, at a
fraction of the CPU.

The SDK's exporter builds a protobuf object per span, attribute and value in Python (about 80 µs
per gateway span on the build machine: more than the rest of the request's tracing together, and
paid under the GIL the event loop needs). This one writes the protobuf bytes of
`ExportTraceServiceRequest` directly, with each attribute key's bytes computed once, and sends
them through gRPC's bytes pass-through; the encoding is checked field for field against the
SDK's own encoder (tests/unit/test_tracing_otlp.py). It exports what the gateway's spans carry:
attributes of string, bool, int, float and sequences of those, status, kind, parent; events and
links (the gateway records none) are left out.

Headers come from the standard `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS`
(`key=value,...`, URL-encoded values). A failed export is logged (never with span content) and
reported as FAILURE; UNAVAILABLE is retried twice with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger("tandem.gateway.tracing")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_MASK64 = (1 << 64) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 256, 512  # SpanFlags


_SMALL = tuple(bytes((i,)) for i in range(128))  # one-byte varints: most lengths and counts


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    n &= _MASK64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _any(value: Any) -> bytes:
    """An AnyValue's bytes."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, list | tuple):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any(v)) for v in value))
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    return _ld(b"\x0a", str(value).encode())


# each attribute key's KeyValue prefix (the key field and the value field's tag)
_KEYS: dict[str, bytes] = {}
# whole attribute fields, per field tag and key, for the values that repeat from span to span
# (route, team, breaker state, cache status, flags...): most of a gateway span's attributes
_PAIRS: dict[bytes, dict[str, dict[Any, bytes]]] = {}
_PAIRS_MAX = 8192
_pairs_held = 0


def _attributes(attrs: Any, tag: bytes) -> bytes:
    """Repeated KeyValue fields (`tag`: the field's tag byte) for a mapping of attributes."""
    global _pairs_held
    out: list[bytes] = []
    append = out.append
    small = _SMALL
    pairs = _PAIRS.get(tag)
    if pairs is None:
        pairs = _PAIRS[tag] = {}
    for key, value in attrs.items():
        cls = value.__class__
        if cls is int:  # counts and tokens: never cached (too many values)
            av = b"\x18" + _varint(value)
            cacheable = False
        elif cls is float:
            av = b"\x21" + _pack_double(value)
            cacheable = False
        else:
            # a hit needs no type check: only a str equals a str, only a tuple of them such a
            # tuple, and only bools are stored under bool values (ints never reach here)
            cacheable = cls is bool or cls is str or cls is tuple
            if cacheable:
                known = pairs.get(key)
                if known is not None:
                    try:
                        field = known.get(value)
                    except TypeError:  # a tuple holding something unhashable
                        field = None
                    if field is not None:
                        append(field)
                        continue
                cacheable = (
                    cls is bool
                    or (cls is str and len(value) <= 64)
                    or (cls is tuple and len(value) <= 4 and all(v.__class__ is str for v in value))
                )
            av = _any(value)
        kb = _KEYS.get(key)
        if kb is None:
            kb = _KEYS[key] = _ld(b"\x0a", key.encode()) + b"\x12"
        n = len(av)
        kv = kb + (small[n] if n < 0x80 else _varint(n)) + av
        n = len(kv)
        field = tag + (small[n] if n < 0x80 else _varint(n)) + kv
        if cacheable and _pairs_held < _PAIRS_MAX:
            pairs.setdefault(key, {})[value] = field
            _pairs_held += 1
        append(field)
    return b"".join(out)


_KINDS: dict[Any, bytes] = {}  # SpanKind -> its field (SDK kinds start at INTERNAL = 0)
_REMOTE_FLAGS = (
    b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE),
    b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE),
)


def encode_attributes(attrs: Any) -> bytes:
    """A span's attribute fields for `attrs`, as encode_request writes them."""
    return _attributes(attrs, b"\x4a")


def otlp_name(name: str, kind: Any) -> bytes:
    """A span's name and kind fields."""
    field = _KINDS.get(kind)
    if field is None:
        field = _KINDS[kind] = b"\x30" + _varint(kind.value + 1)
    return _ld(b"\x2a", name.encode()) + field


def otlp_status(status: Any) -> bytes:
    code = status.status_code.value
    if not (code or status.description):
        return b"\x7a\x00"
    sb = b""
    if status.description:
        sb += _ld(b"\x12", status.description.encode())
    if code:
        sb += b"\x18" + _varint(code)
    return _ld(b"\x7a", sb)


def _span(span: Any) -> bytes:
    own = getattr(span, "otlp_bytes", None)  # gateway/tracing.py's spans encode themselves
    return own() if own is not None else otlp_span(span)


def otlp_span(span: Any) -> bytes:
    """Any SDK-shaped span's `Span` message."""
    ctx = span.context
    parent = span.parent
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        parts.append(_ld(b"\x1a", ctx.trace_state.to_header().encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(otlp_name(span.name, span.kind))
    parts.append(b"\x39" + _pack_fixed64(span.start_time) + b"\x41" + _pack_fixed64(span.end_time))
    parts.append(_attributes(span.attributes, b"\x4a"))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    parts.append(otlp_status(span.status))
    parts.append(_REMOTE_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


def encode_span(span: Any) -> bytes:
    """One span as a ScopeSpans `spans` field: what encode_batch joins."""
    return _ld(b"\x12", _span(span))


def _scope_spans(scope: Any, encoded: Sequence[bytes]) -> bytes:
    sb = b""
    if scope is not None:
        sb = _ld(b"\x0a", scope.name.encode())
        if scope.version:
            sb += _ld(b"\x12", scope.version.encode())
    ss = [_ld(b"\x0a", sb), *encoded]
    if scope is not None and scope.schema_url:
        ss.append(_ld(b"\x1a", scope.schema_url.encode()))
    return _ld(b"\x12", b"".join(ss))


def _resource_spans(resource: Any, scope_spans: Sequence[bytes]) -> bytes:
    rs = [_ld(b"\x0a", _attributes(resource.attributes, b"\x0a")), *scope_spans]
    if resource.schema_url:
        rs.append(_ld(b"\x1a", resource.schema_url.encode()))
    return _ld(b"\x0a", b"".join(rs))


def encode_batch(resource: Any, scope: Any, encoded: Sequence[bytes]) -> bytes:
    """ExportTraceServiceRequest bytes for spans of one resource and scope, each already
    encoded by encode_span (the gateway's spans all share its tracer's)."""
    return _resource_spans(resource, [_scope_spans(scope, encoded)])


def encode_request(spans: Sequence[Any]) -> bytes:
    """ExportTraceServiceRequest bytes for SDK spans, grouped by resource and scope.

    Spans are grouped by their objects' identity first, then by equality once per distinct
    object (as the SDK groups): a Resource hashes by dumping its attributes to JSON, which per
    span would cost more than encoding the span."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    by_id: dict[tuple[int, int], list[bytes]] = {}  # (resource, scope) objects -> their group
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        encoded = by_id.get((id(resource), id(scope)))
        if encoded is None:
            encoded = groups.setdefault(resource, {}).setdefault(scope, [])
            by_id[(id(resource), id(scope))] = encoded
        encoded.append(encode_span(span))
    return b"".join(
        _resource_spans(resource, [_scope_spans(scope, enc) for scope, enc in scopes.items()])
        for resource, scopes in groups.items()
    )


def env_headers() -> list[tuple[str, str]]:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers.append((key.strip().lower(), unquote(value.strip())))
    return headers


class OtlpGrpcExporter:
    """A SpanExporter (duck-typed: export / shutdown / force_flush) sending OTLP over gRPC."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0) -> None:
        import grpc
        from opentelemetry.sdk.trace.export import SpanExportResult

        url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        target = url.netloc or url.path
        if url.scheme == "https":
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._grpc = grpc
        self._ok, self._failed = SpanExportResult.SUCCESS, SpanExportResult.FAILURE
        self._headers = env_headers()
        self._timeout = timeout_s
        self.endpoint = target

    def export(self, spans: Sequence[Any]) -> Any:
        payload = encode_request(spans)
        for attempt in range(3):
            try:
                self._export(payload, metadata=self._headers, timeout=self._timeout)
                return self._ok
            except self._grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code != self._grpc.StatusCode.UNAVAILABLE or attempt == 2:
                    log.warning(
                        "span export to %s failed: %s (%d spans dropped)",
                        self.endpoint,
                        code,
                        len(spans),
                    )
                    return self._failed
                time.sleep(0.5 * (attempt + 1))
        return self._failed

    def shutdown(self) -> None:
        self._channel.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP URL for `endpoint`: a base (no path) gets the signal's `/v1/traces`, as
    OTEL_EXPORTER_OTLP_ENDPOINT does; a URL with a path is used as it is."""
    url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.path in ("", "/"):
        return f"{url.scheme}://{url.netloc}/v1/traces"
    return url.geturl()


_RETRY_STATUSES = frozenset({429, 502, 503, 504})  # OTLP/HTTP's retryable answers


class OtlpHttpProcessor:
    """A span processor that batches the gateway's spans and sends them over OTLP/HTTP
    (protobuf) from the gateway's own event loop.

    Why not the SDK's BatchSpanProcessor with the gRPC exporter: its export thread takes the GIL
    from the event loop every batch and gRPC's own threads wake per call; at 2,000+ requests/s
    that cost the gateway about as much CPU per request as building the span. Here an ended span
    waits as it is; when its batch leaves, the batch is encoded in one loop on the event loop
    and sent as one more aiohttp request on a loop that already makes thousands. Same contract as the SDK's processor: at most `max_queue` spans
    wait (beyond, they are dropped and counted), a batch leaves as soon as `batch_size` spans
    wait or `delay_s` after its first, one batch is in flight at a time, retryable failures
    (429, 502-504, connection errors) are retried twice with backoff, and shutdown sends what
    is left. Headers come from OTEL_EXPORTER_OTLP_(TRACES_)HEADERS."""

    def __init__(
        self,
        endpoint: str,
        resource: Any,
        scope: Any,
        *,
        max_queue: int,
        batch_size: int,
        delay_s: float,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = traces_url(endpoint)
        self.resource, self.scope = resource, scope
        self.max_queue, self.batch_size, self.delay_s = max_queue, batch_size, delay_s
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/x-protobuf", **dict(env_headers())}
        self.exported = self.dropped = self.failed = 0  # spans, since start
        self._pending: list[Any] = []  # ended spans, encoded when their batch leaves
        self._loop: Any = None
        self._timer: Any = None
        self._inflight: Any = None  # the batch being sent (an asyncio.Task)
        self._session: Any = None
        self._closing = False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        pending = self._pending
        if len(pending) >= self.max_queue:
            if not self.dropped:
                log.warning("span queue full (%d): spans dropped until it drains", self.max_queue)
            self.dropped += 1
            return
        pending.append(span)
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # ended outside a loop: sent with the next batch or at shutdown
                return
        if self._inflight is None and not self._closing:
            if len(pending) >= self.batch_size:
                self._send()
            elif self._timer is None:
                self._timer = self._loop.call_later(self.delay_s, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._pending and self._inflight is None:
            self._send()

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._pending[: self.batch_size]
        del self._pending[: self.batch_size]
        self._inflight = self._loop.create_task(self._post(batch))
        self._inflight.add_done_callback(self._sent)

    def _sent(self, task: Any) -> None:
        self._inflight = None
        if task.cancelled() or self._closing:
            return
        if len(self._pending) >= self.batch_size:
            self._send()
        elif self._pending and self._timer is None:
            self._timer = self._loop.call_later(self.delay_s, self._due)

    async def _post(self, batch: list[Any]) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        # encoded as a batch, in one tight loop: the encoder's code and caches stay hot (per span
        # as it ended, between requests, the same work cost about twice the CPU under load)
        body = encode_batch(self.resource, self.scope, [encode_span(s) for s in batch])
        problem = ""
        for attempt in range(3):
            try:
                async with self._session.post(self.url, data=body, headers=self.headers) as r:
                    await r.read()
                    if r.status < 300:
                        self.exported += len(batch)
                        return
                    problem = f"HTTP {r.status}"
                    if r.status not in _RETRY_STATUSES:
                        break
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = type(exc).__name__
            if attempt < 2:
                await asyncio.sleep(0.5 * (attempt + 1))
        self.failed += len(batch)
        log.warning(
            "span export to %s failed: %s (%d spans dropped)", self.url, problem, len(batch)
        )

    async def aclose(self) -> None:
        """Send what waits (batch by batch), then close the connection."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
        while self._pending:
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            await self._post(batch)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def shutdown(self) -> None:
        """For callers without a loop (the SDK processor's interface): runs aclose on a new one."""
        asyncio.run(self.aclose())

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return not self._pending and self._inflight is None

    def collect(self) -> Any:
        """The export's counts for /metrics (the processor is registered as a collector)."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "tandem_gateway_spans",
            "Spans the gateway sent to the OTLP endpoint (exported), dropped because the queue "
            "was full (dropped), or gave up on after retries (failed)",
            labels=["outcome"],
        )
        family.add_metric(["exported"], self.exported)
        family.add_metric(["dropped"], self.dropped)
        family.add_metric(["failed"], self.failed)
        yield family
