"""The asynchronous pipelines in the cluster: the batch files' bucket, KEDA, and the batch workers
that scale with the queue.

- `BatchStorage`: on EKS an S3 bucket for uploads and results (private, encrypted, versioned,
  files expiring after `fileRetentionDays`) and two IAM roles for service accounts: the gateway's
  and workers' (`tandem-batch-files`, in the gateway's namespace) and the RayJobs'
  (`tandem-rayjob`, in `tandem-batch`). On an existing cluster, the bucket the stack names.
- `Keda`: the KEDA operator, pinned (vocabulary/pins.py).
- `BatchWorkers`: the workers, a Deployment of the gateway image running `tandem batch worker`
  on the gateway's own routes file and keys (so lines go through the same routes, budgets, cache
  and breakers), and a KEDA ScaledObject on the queue: lagging lines and jobs scale it up, lines
  still being worked on keep it up, and an empty queue scales it to zero after `cooldownS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role, private_bucket
from components.gateway import CONFIG_DIR, KEYS_DIR, RUN_AS, Gateway, memory_for_cache
from components.helm import pinned_release
from components.internal_http import from_namespace
from components.pod_security import container_security, pod_security
from pipelines.rayjob import SERVICE_ACCOUNT as RAYJOB_SERVICE_ACCOUNT
from vocabulary import labels, pins
from vocabulary.config import BatchConfig
from vocabulary.pipelines import (
    CONSUMER_GROUP,
    DEFAULT_PREFIX,
    JOBS_STREAM,
    LINES_STREAM,
    BatchSection,
    FileStore,
    Workers,
    YieldToOnline,
)

FILES_SERVICE_ACCOUNT = "tandem-batch-files"  # the gateway's and the workers' (S3 access)
WORKERS = "batch-workers"
METRICS_PORT = 8081
WEBHOOK_SECRET_ENV = "TANDEM_WEBHOOK_SECRET"
WORKER_SELECTOR = {labels.LABEL_COMPONENT: WORKERS}
JOBS_PER_REPLICA = 8  # async jobs and control messages per worker replica (jobs_concurrency)


def batch_section(
    cfg: BatchConfig,
    bucket: str,
    region: str,
    slo_p95_ms: dict[str, float],
    *,
    webhooks: bool,
) -> BatchSection:
    """The routes file's `batch:` for this stack: what the gateway and every worker read."""
    return BatchSection(
        files=FileStore(
            bucket=bucket,
            region=region,
            endpoint_url=cfg.files_endpoint_url,
            retention_days=cfg.file_retention_days,
        ),
        max_attempts=cfg.max_attempts,
        webhook_secret_env=WEBHOOK_SECRET_ENV if webhooks else None,
        workers=Workers(
            concurrency=cfg.concurrency,
            min_concurrency=cfg.min_concurrency,
            jobs_concurrency=JOBS_PER_REPLICA,
            claim_idle_s=cfg.claim_idle_s,
            yield_to_online=YieldToOnline(slo_p95_ms=slo_p95_ms, at_fraction=cfg.yield_at_fraction),
        ),
    )


# ---------------------------------------------------------------------------------- storage


@dataclass
class EksIdentity:
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]


@dataclass
class BatchStorageArgs:
    config: BatchConfig
    cluster_name: str
    tags: dict[str, str] = field(default_factory=dict)
    eks: EksIdentity | None = None  # None: an existing cluster (the bucket the config names)
    gateway_namespace: str = labels.NS_GATEWAY


class BatchStorage(pulumi.ComponentResource):
    """Exposes `bucket` (its name), `role_arn` (gateway and workers) and `rayjob_role_arn`
    (both None on an existing cluster)."""

    bucket: pulumi.Output[str]
    role_arn: pulumi.Output[str] | None
    rayjob_role_arn: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: BatchStorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tandem:pipelines:BatchStorage", name, None, opts)
        self.role_arn = self.rayjob_role_arn = None
        if args.eks is None:
            assert args.config.files_bucket is not None  # BatchConfig checks it
            self.bucket = pulumi.Output.from_input(args.config.files_bucket)
        else:
            self.bucket = self._bucket(name, args)
            self.role_arn = self._role(
                f"{name}-files", args, args.gateway_namespace, FILES_SERVICE_ACCOUNT
            )
            self.rayjob_role_arn = self._role(
                f"{name}-rayjob", args, labels.NS_BATCH, RAYJOB_SERVICE_ACCOUNT
            )
        self.register_outputs({"bucket": self.bucket})

    def _bucket(self, name: str, args: BatchStorageArgs) -> pulumi.Output[str]:
        """Private, encrypted and versioned like every Tandem bucket (the policy pack checks
        it); files expire after the retention, old versions a day later, abandoned multipart
        uploads after a day."""
        import pulumi_aws as aws

        bucket = private_bucket(
            name,
            bucket_prefix=f"{args.cluster_name}-batch-"[:37],
            tags={**args.tags, "component": "batch-files"},
            parent=self,
        )
        on_bucket = pulumi.ResourceOptions(parent=bucket)
        days = args.config.file_retention_days
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "batch-file-retention",
                    "status": "Enabled",
                    "filter": {"prefix": "files/"},
                    "expiration": {"days": days},
                    "noncurrent_version_expiration": {"noncurrent_days": 1},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                }
            ],
            opts=on_bucket,
        )
        self._bucket_arn = bucket.arn
        return bucket.bucket

    def _role(
        self, name: str, args: BatchStorageArgs, namespace: str, service_account: str
    ) -> pulumi.Output[str]:
        """A role one service account assumes, allowed the bucket's objects and nothing else."""
        import pulumi_aws as aws

        assert args.eks is not None
        role = irsa_role(
            name,
            args.eks.oidc_provider_arn,
            args.eks.oidc_issuer_url,
            namespace,
            service_account,
            {**args.tags, "component": "batch-files"},
            self,
        )
        aws.iam.RolePolicy(
            name,
            role=role.id,
            policy=self._bucket_arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "s3:GetObject",
                                    "s3:PutObject",
                                    "s3:DeleteObject",
                                    "s3:AbortMultipartUpload",
                                    "s3:ListMultipartUploadParts",
                                ],
                                "Resource": f"{arn}/*",
                            },
                            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn},
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role.arn


# ------------------------------------------------------------------------------------- KEDA


@dataclass
class KedaArgs:
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_KEDA


class Keda(pulumi.ComponentResource):
    """The KEDA operator, metrics server and admission webhooks (chart pinned, CRDs included)."""

    def __init__(self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_KEDA, name, None, opts)
        small = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
        self.release = pinned_release(
            f"{name}-keda",
            pins.KEDA,
            namespace=args.namespace,
            create_namespace=True,
            values={
                "crds": {"install": True},
                "resources": {"operator": small, "metricServer": small, "webhooks": small},
                "prometheus": {"operator": {"enabled": True}},
            },
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )
        self.register_outputs({})


# ---------------------------------------------------------------------------------- workers


@dataclass
class BatchWorkersArgs:
    config: BatchConfig
    gateway: Gateway
    redis_url: pulumi.Input[str]
    keda: Keda
    image: pulumi.Input[str] = pins.LOCAL_IMAGES["gateway"]
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_GATEWAY
    prefix: str = DEFAULT_PREFIX
    rayjob_role_arn: pulumi.Input[str] | None = None
    webhook_secret_name: str | None = None  # the gateway's providers Secret holding it
    monitoring: bool = True


def keda_redis_metadata(redis_url: str) -> dict[str, str]:
    """KEDA's connection fields for a `redis://` or `rediss://` URL."""
    u = urlsplit(redis_url)
    db = (u.path or "/0").lstrip("/") or "0"
    return {
        "address": f"{u.hostname}:{u.port or 6379}",
        "databaseIndex": db,
        "enableTLS": "true" if u.scheme == "rediss" else "false",
    }


def scaler_triggers(redis_url: str, prefix: str, lines_per_replica: int) -> list[dict[str, Any]]:
    """Four redis-streams triggers; KEDA takes the largest replica count. Lag (entries not yet
    delivered, Redis 7+) is the only figure that scales up from zero; pending (delivered, not yet
    acknowledged) keeps workers while lines are in flight, so the tail of a batch is not cut off;
    all four at zero scale the workers to zero."""
    conn = keda_redis_metadata(redis_url)
    out = []
    for stream, target in ((LINES_STREAM, lines_per_replica), (JOBS_STREAM, JOBS_PER_REPLICA)):
        base = {**conn, "stream": f"{prefix}:{stream}", "consumerGroup": CONSUMER_GROUP}
        out.append(
            {
                "type": "redis-streams",
                "name": f"{stream}-lag",
                "metadata": {**base, "lagCount": str(target), "activationLagCount": "0"},
            }
        )
        out.append(
            {
                "type": "redis-streams",
                "name": f"{stream}-pending",
                "metadata": {**base, "pendingEntriesCount": str(target)},
            }
        )
    return out


class BatchWorkers(pulumi.ComponentResource):
    """The batch workers and their ScaledObject (plus the RayJobs' namespace and account)."""

    def __init__(
        self, name: str, args: BatchWorkersArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_BATCH_WORKERS, name, None, opts)
        self._args = args
        self._name = WORKERS
        self._labels = labels.platform_labels(
            **{labels.LABEL_COMPONENT: WORKERS, labels.LABEL_WORKLOAD: "batch"}
        )
        self._selector = {"app.kubernetes.io/name": WORKERS, **WORKER_SELECTOR}
        self._child = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=[args.gateway]
        )
        self.deployment = self._deployment()
        self.scaled_object = self._scaled_object()
        self._network_policy()
        if args.monitoring:
            self._pod_monitor()
        self._rayjob_namespace()
        self.register_outputs({})

    def _meta(self, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        return {
            "name": name or self._name,
            "namespace": namespace or self._args.namespace,
            "labels": self._labels,
        }

    def _container(self) -> dict[str, Any]:
        """The gateway image running `tandem batch worker` on the gateway's routes file: the
        same routes, keys, budgets and cache. Its memory grows with the response cache, as the
        gateway's does (the worker loads the same cache)."""
        a, c = self._args, self._args.config
        cache = a.gateway.cache_section
        memory_request, memory_limit = memory_for_cache(c.memory_request, c.memory_limit, cache)
        env: list[dict[str, Any]] = []
        if a.webhook_secret_name is not None:
            env.append(
                {
                    "name": WEBHOOK_SECRET_ENV,
                    "valueFrom": {
                        "secretKeyRef": {"name": a.webhook_secret_name, "key": WEBHOOK_SECRET_ENV}
                    },
                }
            )
        probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10}
        return {
            "name": "worker",
            "image": a.image,
            "args": [
                "batch",
                "worker",
                "--config",
                f"{CONFIG_DIR}/routes.yaml",
                "--host",
                "0.0.0.0",
                "--port",
                str(METRICS_PORT),
            ],  # fmt: skip
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
            "env": env,
            "resources": {
                "requests": {"cpu": c.cpu_request, "memory": memory_request},
                "limits": {"cpu": c.cpu_limit, "memory": memory_limit},
            },
            "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
            "livenessProbe": {**probe, "failureThreshold": 3},
            "securityContext": container_security(),
            "volumeMounts": [
                {"name": "routes", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
                *(
                    [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}]
                    if a.gateway.keys_secret_name
                    else []
                ),
            ],
        }

    def _deployment(self) -> k8s.apps.v1.Deployment:
        """No `replicas`: KEDA owns the count (Pulumi would reset it on every update). SIGTERM
        lets the lines in flight finish (25 s) before the pod goes; what is left is taken over
        by another worker once idle for `claimIdleS`."""
        gw = self._args.gateway
        return k8s.apps.v1.Deployment(
            self._name,
            metadata=self._meta(),
            spec={
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
                            "prometheus.io/port": str(METRICS_PORT),
                        },
                    },
                    "spec": {
                        "serviceAccountName": FILES_SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 40,
                        "securityContext": pod_security(RUN_AS, RUN_AS),
                        "containers": [self._container()],
                        "volumes": [
                            {"name": "routes", "configMap": {"name": gw.routes_config_map_name}},
                            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                            *(
                                [{"name": "keys", "secret": {"secretName": gw.keys_secret_name}}]
                                if gw.keys_secret_name
                                else []
                            ),
                        ],
                    },
                },
            },
            opts=self._child,
        )

    def _scaled_object(self) -> k8s.apiextensions.CustomResource:
        a = self._args
        triggers = pulumi.Output.from_input(a.redis_url).apply(
            lambda url: scaler_triggers(url, a.prefix, a.config.lines_per_replica)
        )
        return k8s.apiextensions.CustomResource(
            f"{self._name}-scaler",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata=self._meta(),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKERS},
                "minReplicaCount": a.config.min_replicas,
                "maxReplicaCount": a.config.max_replicas,
                "pollingInterval": 15,
                "cooldownPeriod": a.config.cooldown_s,
                "triggers": triggers,
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=a.k8s_provider,
                depends_on=[a.keda.release, self.deployment],
            ),
        )

    def _network_policy(self) -> None:
        """Nothing calls the workers; only Prometheus scrapes their metrics port."""
        k8s.networking.v1.NetworkPolicy(
            self._name,
            metadata=self._meta(),
            spec={
                "podSelector": {"matchLabels": self._selector},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [from_namespace(labels.NS_MONITORING)],
                        "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
                    }
                ],
            },
            opts=self._child,
        )

    def _pod_monitor(self) -> None:
        k8s.apiextensions.CustomResource(
            f"{self._name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="PodMonitor",
            metadata=self._meta(),
            spec={
                "selector": {"matchLabels": self._selector},
                "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
            opts=self._child,
        )

    def _rayjob_namespace(self) -> None:
        """Where `tandem batch submit --via rayjob` manifests run, and the account they run as
        (on EKS its role reads and writes the batch bucket)."""
        a = self._args
        ns = k8s.core.v1.Namespace(
            f"{self._name}-rayjobs",
            metadata={"name": labels.NS_BATCH, "labels": self._labels},
            opts=pulumi.ResourceOptions(parent=self, provider=a.k8s_provider),
        )
        annotations = {"eks.amazonaws.com/role-arn": a.rayjob_role_arn} if a.rayjob_role_arn else {}
        k8s.core.v1.ServiceAccount(
            f"{self._name}-rayjob",
            metadata={
                **self._meta(RAYJOB_SERVICE_ACCOUNT, labels.NS_BATCH),
                "annotations": annotations,
            },
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self, provider=a.k8s_provider, depends_on=[ns]),
        )
