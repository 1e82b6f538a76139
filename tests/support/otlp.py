"""A real OTLP/HTTP trace receiver on loopback (aiohttp): it decodes what it is sent with
OpenTelemetry's own protobuf classes and keeps it, and can be told to fail first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.upstream import ServerThread


@dataclass
class OtlpReceiver:
    fail_first: int = 0  # answer this many POSTs with `fail_status` before accepting
    fail_status: int = 503
    hold_s: float = 0.0  # wait this long before answering each POST
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)
    posts: int = 0

    def app(self) -> web.Application:
        async def export(request: web.Request) -> web.Response:
            body = await request.read()
            self.posts += 1
            self.headers.append(request.headers.copy())  # case-insensitive
            if self.hold_s:
                await asyncio.sleep(self.hold_s)
            if self.posts <= self.fail_first:
                return web.Response(status=self.fail_status, text="try later")
            self.requests.append(ExportTraceServiceRequest.FromString(body))
            return web.Response(
                body=ExportTraceServiceResponse().SerializeToString(),
                content_type="application/x-protobuf",
            )

        app = web.Application()
        app.router.add_post("/v1/traces", export)
        return app

    def spans(self) -> list[Any]:
        return [
            span
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


def serve(receiver: OtlpReceiver) -> ServerThread:
    return ServerThread(receiver.app).start()


def attributes(span: Any) -> dict[str, Any]:
    """A decoded span's attributes as plain values."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which)
        if which == "array_value":
            value = tuple(getattr(v, v.WhichOneof("value")) for v in value.values)
        out[kv.key] = value
    return out
