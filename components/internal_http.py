"""The in-cluster pieces every small Tandem HTTP service shares (the rollout controller, the drift
service): a ClusterIP Service on its `http` port, a NetworkPolicy that admits only the namespaces
named, an optional ServiceMonitor, the /healthz probes, and the namespace selector every network
policy in the platform is written with. One place, so the services cannot drift apart on what
reaches them or how Prometheus finds them."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


def from_namespace(namespace: str) -> dict[str, Any]:
    """A NetworkPolicy peer: every pod of `namespace`."""
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def healthz_probes() -> dict[str, Any]:
    """Readiness every 10 s and liveness every 20 s on GET /healthz of the `http` port."""
    return {
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20},
    }


def internal_http_service(
    name: str,
    *,
    metadata: dict[str, Any],
    selector: dict[str, str],
    port: int,
    allowed_namespaces: list[str],
    namespace: str,
    monitor_labels: dict[str, str] | None,
    opts: pulumi.ResourceOptions,
) -> None:
    """`<name>-svc`, `<name>-netpol` and, with `monitor_labels` (the Service's labels), a
    ServiceMonitor `<name>-monitor` scraping /metrics every 15 s."""
    k8s.core.v1.Service(
        f"{name}-svc",
        metadata=metadata,
        spec={
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        f"{name}-netpol",
        metadata=metadata,
        spec={
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [from_namespace(ns) for ns in allowed_namespaces],
                    "ports": [{"port": port, "protocol": "TCP"}],
                }
            ],
        },
        opts=opts,
    )
    if monitor_labels is not None:
        k8s.apiextensions.CustomResource(
            f"{name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=metadata,
            spec={
                "selector": {"matchLabels": monitor_labels},
                "namespaceSelector": {"matchNames": [namespace]},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            },
            opts=opts,
        )
