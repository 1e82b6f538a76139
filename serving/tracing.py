"""Ray Serve's spans to the platform's OpenTelemetry Collector (docs/tracing.md).

Ray Serve traces its proxy, router and replicas when `RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`
names a function that takes no arguments and returns span processors; the Tracing component
sets it to `serving.tracing:otlp_processors` on every RayService pod, with the collector's
address in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. Serve's proxy reads the `traceparent` the
gateway sends, so a request's Serve spans are children of its gateway span, and its sampler is
parent-based: the gateway's sampling decision holds for the whole trace.
"""

from __future__ import annotations

from typing import Any


def otlp_processors() -> list[Any]:
    """One batching processor exporting OTLP/gRPC to the endpoint the environment names."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return [BatchSpanProcessor(OTLPSpanExporter())]
