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

from components.internal_http import from_namespace
from components.pod_security import container_security, pod_security
from components.redis import ElastiCacheArgs, elasticache_redis, in_cluster_redis
from gateway.cache.sizing import (
    MODEL_RUNTIME_BYTES,
    cache_embeds,
    cache_memory_bytes,
    pairs_log_volume,
)
from gateway.config import (
    FeatureStoreSection,
    Redis,
    RoutesConfig,
    Server,
    Tracing,
    restart_sections_sha,
)
from vocabulary import labels, pins
from vocabulary.cache import CacheSection
from vocabulary.config import GatewayConfig
from vocabulary.pipelines import BatchSection

CONFIG_DIR = "/etc/tandem-gateway"
# the pod template's digest of the routes file's restart-only sections (gateway.config)
RESTART_SHA_ANNOTATION = "tandem.dev/restart-config-sha"
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
    developer: str | None = None  # one developer's key (coding assistants)
    developer_header: str | None = None  # a proxy's key: the developer is in this header


@dataclass
class GatewayArgs:
    routes: RoutesConfig  # gateway.spec.routes_from_use_cases(...): backends, routes, teams...
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
    # The Batch API (components/pipelines.py): the routes file's `batch:` section, the service
    # account its S3 access comes with (IRSA role on EKS), and the batch workers, which share
    # this gateway's routes file, keys and Redis.
    batch: pulumi.Input[BatchSection] | None = None
    service_account: str | None = None
    service_account_role_arn: pulumi.Input[str] | None = None
    redis_volume_gib: int | None = None  # in-cluster Redis on a PersistentVolume (the queue)
    # NetworkPolicy peers besides the gateway that may reach its in-cluster Redis (the batch
    # workers; the rollout controller writes the routes' live splits there)
    redis_clients: list[dict[str, Any]] = field(default_factory=list)
    # the feature store's online store (components.feature_store), when a route reads features
    feature_store_redis: pulumi.Input[str] | None = None
    # the routes file's `tracing:` (components.tracing.routes_tracing); None: as `routes` says
    tracing: Tracing | None = None


GATEWAY_BASE_BYTES = 256 * 2**20  # the gateway process without a cache (the default request)
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity).groups("")  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def container_memory(args: GatewayArgs) -> tuple[str, str]:
    """(request, limit) for the gateway container: as configured, raised to hold the response
    cache (its `max_bytes` plus the embedding model and verifier when it embeds), so a cache
    configured in the stack cannot outgrow its pod."""
    return memory_for_cache(args.memory_request, args.memory_limit, args.config.cache)


def memory_for_cache(request: str, limit: str, section: CacheSection | None) -> tuple[str, str]:
    """(request, limit) raised to hold the response cache: every process that builds the
    gateway's stages (the gateway, a batch worker) loads it."""
    need = cache_memory_bytes(section)
    if not need:
        return request, limit
    models = MODEL_RUNTIME_BYTES if cache_embeds(section) else 0
    return (
        _at_least(request, GATEWAY_BASE_BYTES + models),
        _at_least(limit, GATEWAY_BASE_BYTES + need),
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
            if k.developer:
                entry["developer"] = k.developer
            if k.developer_header:
                entry["developer_header"] = k.developer_header
            entries.append(entry)
        return yaml.safe_dump(entries, sort_keys=False)

    return pulumi.Output.secret(pulumi.Output.all(*[k.key for k in keys]).apply(render))


class Gateway(pulumi.ComponentResource):
    """Exposes `url` (in-cluster base URL of the OpenAI-compatible API) and `redis_url`.

    `__init__` reads as the list of what lands in the cluster, in registration order; each step is
    a method that says why it looks the way it does.
    """

    url: pulumi.Output[str]
    redis_url: pulumi.Output[str] | None

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_GATEWAY, name, None, opts)
        if args.config.redis == "elasticache" and args.elasticache is None:
            raise ValueError("gateway.redis is 'elasticache' but no ElastiCacheArgs were given")
        self._name, self._args = name, args
        self._opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self._labels = labels.platform_labels(**{labels.LABEL_COMPONENT: "gateway"})
        self._selector = {"app.kubernetes.io/name": name, labels.LABEL_COMPONENT: "gateway"}
        self.selector = self._selector  # the pods' labels (the drift monitor's headless Service)

        self._child = self._namespace()
        self.cache_section = args.config.cache
        self.routes_config_map_name = f"{name}-routes"
        self.keys_secret_name = f"{name}-keys" if args.keys else None
        self.providers_secret_name = f"{name}-providers" if args.provider_secrets else None
        self.redis_url = self._redis() if args.config.redis != "none" else None
        self.config_map = self._routes_config_map()
        self.keys_secret = self._keys_secret() if args.keys else None
        if args.service_account is not None:
            self._service_account(args.service_account)
        env = self._provider_secrets_env()
        self.deployment = self._deployment(env)
        self.service = self._service()
        self._autoscaler()
        self._disruption_budget()
        self._network_policy()
        if args.monitoring:
            self._service_monitor()
        if args.config.ingress_host:
            self._ingress(args.config.ingress_host)
        self.url = pulumi.Output.from_input(f"http://{name}.{args.namespace}.svc.cluster.local/v1")
        self.register_outputs({"url": self.url, "redisUrl": self.redis_url})

    def _meta(self, name: str | None = None) -> dict[str, Any]:
        """Kubernetes metadata: the component's name (or `name`), namespace and labels."""
        return {
            "name": name or self._name,
            "namespace": self._args.namespace,
            "labels": self._labels,
        }

    def _namespace(self) -> pulumi.ResourceOptions:
        """The gateway's own namespace (unless the caller brings one): its network policy and
        keys stay apart from the workloads it fronts. Returns the options every child uses, so
        nothing is created before its namespace."""
        a = self._args
        if not a.create_namespace:
            return self._opts
        self.namespace = k8s.core.v1.Namespace(
            f"{self._name}-ns",
            metadata={"name": a.namespace, "labels": self._labels},
            opts=self._opts,
        )
        return pulumi.ResourceOptions(
            parent=self, provider=a.k8s_provider, depends_on=[self.namespace]
        )

    def _redis(self) -> pulumi.Output[str]:
        """Usage counters in Redis, so limits and budgets hold across replicas and restarts:
        ElastiCache (encrypted, private subnets) in production, a small in-cluster one for dev."""
        a = self._args
        if a.config.redis == "elasticache":
            assert a.elasticache is not None
            return elasticache_redis(
                f"{self._name}-redis",
                a.elasticache,
                description="Tandem gateway usage counters (rate limits, budgets)",
                parent=self,
            )
        return in_cluster_redis(
            f"{self._name}-redis",
            namespace=a.namespace,
            component="gateway-redis",
            object_labels=self._labels,
            clients=[{"podSelector": {"matchLabels": self._selector}}, *a.redis_clients],
            opts=self._child,
            volume_gib=a.redis_volume_gib,
        )

    def _routes_file(
        self,
        redis_url: str | None,
        features_url: str | None = None,
        batch: BatchSection | None = None,
    ) -> RoutesConfig:
        """The routes the use cases asked for, plus what only the deployment knows: where the
        server listens (all interfaces, hot reload every 5 s), where the hashed keys are mounted,
        the stack's cache section, and the Redis they share. The cache uses that Redis too unless
        the section names one, so a replica's answer serves the others and a restarted replica
        warms from it."""
        a = self._args
        server = {"host": "0.0.0.0", "port": PORT, "reload_interval_s": 5}
        update: dict[str, Any] = {
            "server": Server(**{**server, **a.routes.server.model_dump(exclude_unset=True)})
        }
        if a.keys:
            update["keys_file"] = f"{KEYS_DIR}/keys.yaml"
        cache = a.config.cache
        if cache is not None:
            if redis_url is not None and "redis_url" not in cache.model_fields_set:
                cache = cache.model_copy(update={"redis_url": redis_url})
            update["cache"] = cache
        if redis_url is not None:
            update["redis"] = Redis(url=redis_url, prefix="tandem:gw")
        if batch is not None:
            update["batch"] = batch  # (vocabulary.config.BatchConfig requires the Redis)
        if features_url is not None:
            update["feature_store"] = FeatureStoreSection(redis_url=features_url)
        if a.tracing is not None:
            update["tracing"] = a.tracing
        return a.routes.model_copy(update=update)

    def _routes_config_map(self) -> k8s.core.v1.ConfigMap:
        """The routes file as data: the gateway re-reads it when it changes (no restart), and
        it is written once, from the typed config, when the Redis URL is known."""
        routes = pulumi.Output.all(
            self.redis_url, self._args.feature_store_redis, self._args.batch
        ).apply(lambda args: self._routes_file(args[0], args[1], args[2]))
        # the sections read only at start: a change to them rolls the pods (the rest reloads)
        self._restart_sha = routes.apply(restart_sections_sha)
        return k8s.core.v1.ConfigMap(
            f"{self._name}-routes",
            metadata=self._meta(self.routes_config_map_name),
            data={"routes.yaml": routes.apply(lambda r: r.to_yaml())},
            opts=self._child,
        )

    def _service_account(self, name: str) -> None:
        """The account the gateway (and the batch workers) run as: on EKS its IAM role reaches
        the batch files' bucket (IRSA: the role is assumed with a projected token, so the
        Kubernetes API token stays unmounted)."""
        role = self._args.service_account_role_arn
        k8s.core.v1.ServiceAccount(
            f"{self._name}-{name}",
            metadata={
                **self._meta(name),
                "annotations": {"eks.amazonaws.com/role-arn": role} if role else {},
            },
            automount_service_account_token=False,
            opts=self._child,
        )

    def _keys_secret(self) -> k8s.core.v1.Secret:
        """API keys reach the cluster only as SHA-256 digests, in a Secret beside the routes."""
        return k8s.core.v1.Secret(
            f"{self._name}-keys",
            metadata=self._meta(f"{self._name}-keys"),
            string_data={"keys.yaml": _hashed_keys(self._args.keys)},
            opts=self._child,
        )

    def _provider_secrets_env(self) -> list[dict[str, Any]]:
        """External providers' keys as a Secret, handed to the container as environment
        variables (a backend's `api_key_env` names one)."""
        secrets = self._args.provider_secrets
        if not secrets:
            return []
        name = self.providers_secret_name
        assert name is not None
        k8s.core.v1.Secret(
            name,
            metadata=self._meta(name),
            string_data={k: pulumi.Output.secret(v) for k, v in secrets.items()},
            opts=self._child,
        )
        return [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}}
            for k in sorted(secrets)
        ]

    def _volumes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(volumes, mounts): the routes file; a memory-backed /tmp (the root filesystem is
        read-only); the re-check's labelled pairs on disk, sized for the file and its one
        rotated copy, living as long as the pod; the hashed keys."""
        volumes: list[dict[str, Any]] = [
            {"name": "routes", "configMap": {"name": f"{self._name}-routes"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ]
        mounts: list[dict[str, Any]] = [
            {"name": "routes", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        pairs_volume = pairs_log_volume(self._args.config.cache)
        if pairs_volume:
            labels_dir, mib = pairs_volume
            volumes.append({"name": "cache-labels", "emptyDir": {"sizeLimit": f"{mib}Mi"}})
            mounts.append({"name": "cache-labels", "mountPath": labels_dir})
        if self._args.keys:
            volumes.append({"name": "keys", "secret": {"secretName": f"{self._name}-keys"}})
            mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
        return volumes, mounts

    def _container(self, env: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
        """The gateway container: hardened (non-root, read-only root, no capabilities), probed
        (liveness on /healthz, readiness on /readyz, which fails while starting or stopping), and
        sized for its response cache (container_memory)."""
        a = self._args
        memory_request, memory_limit = container_memory(a)
        probe = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
        }
        return {
            "name": "gateway",
            "image": a.image,
            "args": ["gateway", "serve", "--config", f"{CONFIG_DIR}/routes.yaml"],
            "ports": [{"name": "http", "containerPort": PORT}],
            "env": env,
            "resources": {
                "requests": {"cpu": a.cpu_request, "memory": memory_request},
                "limits": {"cpu": a.cpu_limit, "memory": memory_limit},
            },
            "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
            "livenessProbe": {**probe, "failureThreshold": 3},
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": "http"},
                "periodSeconds": 5,
                "timeoutSeconds": 2,
            },
            "securityContext": container_security(),
            "volumeMounts": mounts,
        }

    def _deployment(self, env: list[dict[str, Any]]) -> k8s.apps.v1.Deployment:
        """Rolling updates that never drop below the replica count (maxUnavailable 0), pods
        spread across zones, scraped by Prometheus on the API port."""
        volumes, mounts = self._volumes()
        return k8s.apps.v1.Deployment(
            self._name,
            metadata=self._meta(),
            spec={
                "replicas": self._args.config.min_replicas,
                "selector": {"matchLabels": self._selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": {**self._labels, **self._selector},
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(PORT),
                            RESTART_SHA_ANNOTATION: self._restart_sha,
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        **(
                            {"serviceAccountName": self._args.service_account}
                            if self._args.service_account
                            else {}
                        ),
                        "securityContext": pod_security(RUN_AS, RUN_AS),
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": self._selector},
                            }
                        ],
                        "containers": [self._container(env, mounts)],
                        "volumes": volumes,
                    },
                },
            },
            opts=self._child,
        )

    def _service(self) -> k8s.core.v1.Service:
        """Port 80 inside the cluster: the `url` callers use."""
        return k8s.core.v1.Service(
            self._name,
            metadata={**self._meta(), "labels": {**self._labels, **self._selector}},
            spec={
                "selector": self._selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
            opts=self._child,
        )

    def _autoscaler(self) -> None:
        """Scale on CPU between the stack's min and max replicas: the gateway is CPU-bound
        (parsing, hashing, accounting), its upstream waits cost no CPU."""
        cfg = self._args.config
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            self._name,
            metadata=self._meta(),
            spec={
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self._name,
                },
                "minReplicas": cfg.min_replicas,
                "maxReplicas": cfg.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": self._args.target_cpu_percent,
                            },
                        },
                    }
                ],
            },
            opts=self._child,
        )

    def _disruption_budget(self) -> None:
        """Node drains take one replica at a time: the API stays up through upgrades."""
        k8s.policy.v1.PodDisruptionBudget(
            self._name,
            metadata=self._meta(),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": self._selector}},
            opts=self._child,
        )

    def _network_policy(self) -> None:
        """Only the client namespaces, the ingress controller, monitoring and the gateway's own
        namespace reach the API port."""
        a = self._args

        sources = [
            from_namespace(n)
            for n in [*a.client_namespaces, a.ingress_namespace, labels.NS_MONITORING]
        ]
        sources.append({"podSelector": {}})  # same namespace
        k8s.networking.v1.NetworkPolicy(
            self._name,
            metadata=self._meta(),
            spec={
                "podSelector": {"matchLabels": self._selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": sources, "ports": [{"port": PORT, "protocol": "TCP"}]}],
            },
            opts=self._child,
        )

    def _service_monitor(self) -> None:
        """Prometheus scrapes /metrics every 15 s (the Observability component then leaves the
        gateway out of its own monitors: double scraping double-counts every counter)."""
        k8s.apiextensions.CustomResource(
            f"{self._name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self._meta(),
            spec={
                "selector": {"matchLabels": self._selector},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            },
            opts=self._child,
        )

    def _ingress(self, host: str) -> None:
        """The API outside the cluster, on /v1 only (health, metrics and OpenAPI stay inside),
        with TLS when the stack names a certificate secret."""
        cfg = self._args.config
        spec: dict[str, Any] = {
            "ingressClassName": self._args.ingress_class,
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/v1",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": self._name, "port": {"name": "http"}}
                                },
                            }
                        ]
                    },
                }
            ],
        }
        if cfg.tls_secret:
            spec["tls"] = [{"hosts": [host], "secretName": cfg.tls_secret}]
        k8s.networking.v1.Ingress(self._name, metadata=self._meta(), spec=spec, opts=self._child)
