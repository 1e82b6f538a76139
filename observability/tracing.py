"""The OpenTelemetry Collector's configuration for the tracing pipeline (pure; docs/tracing.md).

One traces pipeline: OTLP in (gRPC 4317, HTTP 4318) from the gateway and the Ray Serve
clusters, `memory_limiter` then `batch`, out to the trace backend (Phoenix's OTLP gRPC receiver,
authenticated with its admin secret) and, when the stack sets `tracing.export`, to the user's
own OTLP endpoint too. Text capture and redaction happen in the gateway, before a span leaves
it; the collector never sees unredacted text, so it has no redaction step of its own.
The config replaces the chart's default (`alternateConfig`): no Jaeger, Zipkin or Prometheus
receivers, no debug exporter (which would print spans, text included, to the pod log).
"""

from __future__ import annotations

from typing import Any

from vocabulary import labels
from vocabulary.config import TracingConfig

OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
HEALTH_PORT = 13133
PHOENIX_RELEASE = "tandem-phoenix"  # the chart names its Service <release>-svc
PHOENIX_UI_PORT = 6006
COLLECTOR_RELEASE = "tandem-otel-collector"
BACKEND_KEY_ENV = "PHOENIX_API_KEY"  # the collector's env: Phoenix's admin secret
EXPORT_AUTH_ENV = "OTLP_EXPORT_AUTHORIZATION"  # ... the user's endpoint's authorization header


def phoenix_endpoint(namespace: str = labels.NS_TRACING) -> str:
    """Phoenix's OTLP gRPC receiver, inside the cluster."""
    return f"{PHOENIX_RELEASE}-svc.{namespace}.svc.cluster.local:{OTLP_GRPC_PORT}"


def collector_endpoint(namespace: str = labels.NS_TRACING) -> str:
    """Where Ray Serve sends spans (OTLP gRPC, the SDK's exporter in its replicas)."""
    return f"http://{COLLECTOR_RELEASE}.{namespace}.svc.cluster.local:{OTLP_GRPC_PORT}"


def collector_http_endpoint(namespace: str = labels.NS_TRACING) -> str:
    """Where the gateway sends spans (OTLP/HTTP from its event loop: cheaper per span than the
    gRPC export thread; docs/tracing.md)."""
    return f"http://{COLLECTOR_RELEASE}.{namespace}.svc.cluster.local:{OTLP_HTTP_PORT}"


def collector_config(cfg: TracingConfig, namespace: str = labels.NS_TRACING) -> dict[str, Any]:
    exporters: dict[str, Any] = {}
    if cfg.backend == "phoenix":
        exporters["otlp/backend"] = {
            "endpoint": phoenix_endpoint(namespace),
            "tls": {"insecure": True},  # in-cluster, behind the NetworkPolicy
            "headers": {"authorization": f"Bearer ${{env:{BACKEND_KEY_ENV}}}"},
            "sending_queue": {"enabled": True, "queue_size": 2000},
            "retry_on_failure": {"enabled": True, "max_elapsed_time": "300s"},
        }
    if cfg.export is not None:
        user: dict[str, Any] = {
            "endpoint": cfg.export.endpoint,
            "sending_queue": {"enabled": True, "queue_size": 2000},
            "retry_on_failure": {"enabled": True, "max_elapsed_time": "300s"},
        }
        if cfg.export.auth_secret is not None:
            user["headers"] = {"authorization": f"${{env:{EXPORT_AUTH_ENV}}}"}
        exporters["otlp/user" if cfg.export.protocol == "grpc" else "otlphttp/user"] = user
    pod_ip = "${env:MY_POD_IP}"
    return {
        "extensions": {"health_check": {"endpoint": f"{pod_ip}:{HEALTH_PORT}"}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{pod_ip}:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"{pod_ip}:{OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {
            "memory_limiter": {
                "check_interval": "5s",
                "limit_percentage": 80,
                "spike_limit_percentage": 25,
            },
            "batch": {"send_batch_size": 1024, "timeout": "2s"},
        },
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": sorted(exporters),
                }
            },
        },
    }
