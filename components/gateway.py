"""`Gateway`: the AI gateway as Kubernetes objects, its keys as secrets, and its Redis.

The routes file is data (a ConfigMap the gateway hot-reloads); API keys are Pulumi secrets that
only ever reach the cluster as SHA-256 digests inside a Secret mounted next to it. Redis holds the
usage counters so limits and budgets hold across replicas and restarts: in-cluster for dev,
ElastiCache (encrypted, in the cluster's private subnets) for production.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.redis import ElastiCacheArgs, elasticache_redis, in_cluster_redis
from vocabulary import labels, pins
from vocabulary.config import GatewayConfig

CONFIG_DIR = "/etc/tandem-gateway"
KEYS_DIR = f"{CONFIG_DIR}/keys"
PORT = 8080
RUN_AS = 10001


@dataclass
class GatewayKey:
    """One team's API key. `key` is a Pulumi secret; only its SHA-256 reaches the cluster."""

    id: str
    team: str
    key: pulumi.Input[str]
    models: list[str] = field(default_factory=lambda: ["*"])
    rpm: int | None = None
    tpm: int | None = None


@dataclass
class GatewayArgs:
    routes: dict[str, Any]  # gateway.spec.routes_from_use_cases(...): backends, routes, teams...
    config: GatewayConfig = field(default_factory=GatewayConfig)
    keys: list[GatewayKey] = field(default_factory=list)
    provider_secrets: dict[str, pulumi.Input[str]] = field(default_factory=dict)  # env -> key
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_GATEWAY
    create_namespace: bool = True
    image: pulumi.Input[str] = pins.LOCAL_IMAGES["gateway"]  # Platform: the ECR or prebuilt ref
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"
    target_cpu_percent: int = 70
    client_namespaces: list[str] = field(default_factory=lambda: [labels.NS_SERVING])
    ingress_class: str = "nginx"
    ingress_namespace: str = "ingress-nginx"
    elasticache: ElastiCacheArgs | None = None  # required when config.redis == "elasticache"
    monitoring: bool = True


GATEWAY_BASE_BYTES = 256 * 2**20  # the gateway process without a cache (the default request)
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity).groups("")  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def container_memory(args: GatewayArgs) -> tuple[str, str]:
    """(request, limit) for the gateway container: as configured, raised to hold the response
    cache (its `max_bytes` plus the embedding model and verifier when it embeds), so a cache
    configured in the stack cannot outgrow its pod."""
    from gateway.cache.policy import MODEL_RUNTIME_BYTES, cache_embeds, cache_memory_bytes

    section = args.config.cache
    need = cache_memory_bytes(section)
    if not need:
        return args.memory_request, args.memory_limit
    models = MODEL_RUNTIME_BYTES if cache_embeds(section) else 0
    return (
        _at_least(args.memory_request, GATEWAY_BASE_BYTES + models),
        _at_least(args.memory_limit, GATEWAY_BASE_BYTES + need),
    )


def _at_least(quantity: str, need: int) -> str:
    return quantity if _quantity_bytes(quantity) >= need else f"{-(-need // 2**20)}Mi"


def _hashed_keys(keys: list[GatewayKey]) -> pulumi.Output[str]:
    def render(raws: list[str]) -> str:
        entries = []
        for k, raw in zip(keys, raws, strict=True):
            entry: dict[str, Any] = {
                "id": k.id,
                "team": k.team,
                "sha256": hashlib.sha256(raw.encode()).hexdigest(),
                "models": list(k.models),
            }
            if k.rpm:
                entry["rpm"] = k.rpm
            if k.tpm:
                entry["tpm"] = k.tpm
            entries.append(entry)
        return yaml.safe_dump(entries, sort_keys=False)

    return pulumi.Output.secret(pulumi.Output.all(*[k.key for k in keys]).apply(render))


class Gateway(pulumi.ComponentResource):
    """Exposes `url` (in-cluster base URL of the OpenAI-compatible API) and `redis_url`."""

    url: pulumi.Output[str]
    redis_url: pulumi.Output[str] | None

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_GATEWAY, name, None, opts)
        cfg = args.config
        if cfg.redis == "elasticache" and args.elasticache is None:
            raise ValueError("gateway.redis is 'elasticache' but no ElastiCacheArgs were given")
        memory_request, memory_limit = container_memory(args)
        ns = args.namespace
        self._opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self._labels = labels.platform_labels(**{labels.LABEL_COMPONENT: "gateway"})
        selector = {"app.kubernetes.io/name": name, labels.LABEL_COMPONENT: "gateway"}
        pod_labels = {**self._labels, **selector}

        if args.create_namespace:
            self.namespace = k8s.core.v1.Namespace(
                f"{name}-ns",
                metadata={"name": ns, "labels": self._labels},
                opts=self._opts,
            )
            child = pulumi.ResourceOptions(
                parent=self, provider=args.k8s_provider, depends_on=[self.namespace]
            )
        else:
            child = self._opts
        self._child = child

        self.redis_url = self._redis(name, args, selector) if cfg.redis != "none" else None

        routes = dict(args.routes)
        routes["server"] = {
            "host": "0.0.0.0",
            "port": PORT,
            "reload_interval_s": 5,
            **(routes.get("server") or {}),
        }
        if args.keys:
            routes["keys_file"] = f"{KEYS_DIR}/keys.yaml"
        if cfg.cache is not None:
            routes["cache"] = dict(cfg.cache)

        def with_redis(url: str) -> str:
            """Limits and budgets share Redis; so does the cache, unless told otherwise, so a
            replica's answer serves the others and a restarted replica warms from it."""
            out = {**routes, "redis": {"url": url, "prefix": "tandem:gw"}}
            if "cache" in out:
                out["cache"] = {"redis_url": url, **out["cache"]}
            return yaml.safe_dump(out, sort_keys=False)

        config_data = (
            pulumi.Output.from_input(self.redis_url).apply(with_redis)
            if self.redis_url is not None
            else pulumi.Output.from_input(yaml.safe_dump(routes, sort_keys=False))
        )
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-routes",
            metadata={"name": f"{name}-routes", "namespace": ns, "labels": self._labels},
            data={"routes.yaml": config_data},
            opts=child,
        )
        volumes: list[dict[str, Any]] = [
            {"name": "routes", "configMap": {"name": f"{name}-routes"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ]
        mounts: list[dict[str, Any]] = [
            {"name": "routes", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        from gateway.cache.policy import pairs_log_volume

        pairs_volume = pairs_log_volume(cfg.cache)
        if pairs_volume:  # the re-check's labelled pairs: disk-backed, lives as long as the pod
            labels_dir, mib = pairs_volume
            volumes.append({"name": "cache-labels", "emptyDir": {"sizeLimit": f"{mib}Mi"}})
            mounts.append({"name": "cache-labels", "mountPath": labels_dir})
        if args.keys:
            self.keys_secret = k8s.core.v1.Secret(
                f"{name}-keys",
                metadata={"name": f"{name}-keys", "namespace": ns, "labels": self._labels},
                string_data={"keys.yaml": _hashed_keys(args.keys)},
                opts=child,
            )
            volumes.append({"name": "keys", "secret": {"secretName": f"{name}-keys"}})
            mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
        env: list[dict[str, Any]] = []
        if args.provider_secrets:
            k8s.core.v1.Secret(
                f"{name}-providers",
                metadata={"name": f"{name}-providers", "namespace": ns, "labels": self._labels},
                string_data={k: pulumi.Output.secret(v) for k, v in args.provider_secrets.items()},
                opts=child,
            )
            env = [
                {"name": k, "valueFrom": {"secretKeyRef": {"name": f"{name}-providers", "key": k}}}
                for k in sorted(args.provider_secrets)
            ]

        probe = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
        }
        self.deployment = k8s.apps.v1.Deployment(
            name,
            metadata={"name": name, "namespace": ns, "labels": self._labels},
            spec={
                "replicas": cfg.min_replicas,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(PORT),
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": RUN_AS,
                            "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": selector},
                            }
                        ],
                        "containers": [
                            {
                                "name": "gateway",
                                "image": args.image,
                                "args": [
                                    "gateway",
                                    "serve",
                                    "--config",
                                    f"{CONFIG_DIR}/routes.yaml",
                                ],
                                "ports": [{"name": "http", "containerPort": PORT}],
                                "env": env,
                                "resources": {
                                    "requests": {"cpu": args.cpu_request, "memory": memory_request},
                                    "limits": {"cpu": args.cpu_limit, "memory": memory_limit},
                                },
                                "startupProbe": {
                                    **probe,
                                    "periodSeconds": 2,
                                    "failureThreshold": 30,
                                },
                                "livenessProbe": {**probe, "failureThreshold": 3},
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "http"},
                                    "periodSeconds": 5,
                                    "timeoutSeconds": 2,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": mounts,
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            name,
            metadata={"name": name, "namespace": ns, "labels": {**self._labels, **selector}},
            spec={
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            name,
            metadata={"name": name, "namespace": ns, "labels": self._labels},
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": cfg.min_replicas,
                "maxReplicas": cfg.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": args.target_cpu_percent,
                            },
                        },
                    }
                ],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            name,
            metadata={"name": name, "namespace": ns, "labels": self._labels},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )
        self._network_policy(name, args, selector)
        if args.monitoring:
            k8s.apiextensions.CustomResource(
                f"{name}-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata={"name": name, "namespace": ns, "labels": self._labels},
                spec={
                    "selector": {"matchLabels": selector},
                    "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
                },
                opts=child,
            )
        if cfg.ingress_host:
            ingress_spec: dict[str, Any] = {
                "ingressClassName": args.ingress_class,
                "rules": [
                    {
                        "host": cfg.ingress_host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/v1",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": name, "port": {"name": "http"}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            }
            if cfg.tls_secret:
                ingress_spec["tls"] = [{"hosts": [cfg.ingress_host], "secretName": cfg.tls_secret}]
            k8s.networking.v1.Ingress(
                name,
                metadata={"name": name, "namespace": ns, "labels": self._labels},
                spec=ingress_spec,
                opts=child,
            )
        self.url = pulumi.Output.from_input(f"http://{name}.{ns}.svc.cluster.local/v1")
        self.register_outputs({"url": self.url, "redisUrl": self.redis_url})

    def _network_policy(self, name: str, args: GatewayArgs, selector: dict[str, str]) -> None:
        def from_ns(ns: str) -> dict[str, Any]:
            return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}

        sources = [
            from_ns(n)
            for n in [*args.client_namespaces, args.ingress_namespace, labels.NS_MONITORING]
        ]
        sources.append({"podSelector": {}})  # same namespace
        k8s.networking.v1.NetworkPolicy(
            name,
            metadata={"name": name, "namespace": args.namespace, "labels": self._labels},
            spec={
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": sources, "ports": [{"port": PORT, "protocol": "TCP"}]}],
            },
            opts=self._child,
        )

    def _redis(
        self, name: str, args: GatewayArgs, gateway_selector: dict[str, str]
    ) -> pulumi.Output[str]:
        if args.config.redis == "elasticache":
            assert args.elasticache is not None
            return elasticache_redis(
                f"{name}-redis",
                args.elasticache,
                description="Tandem gateway usage counters (rate limits, budgets)",
                parent=self,
            )
        return in_cluster_redis(
            f"{name}-redis",
            namespace=args.namespace,
            component="gateway-redis",
            object_labels=self._labels,
            clients=[{"podSelector": {"matchLabels": gateway_selector}}],
            opts=self._child,
        )
