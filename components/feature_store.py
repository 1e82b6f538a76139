"""`FeatureStore`: Feast in the cluster, one feature server per feature project.

Why Feast's `feast-feature-server` Helm chart and not the Feast operator's `FeatureStore`
resource: the chart is the upstream packaging of exactly the part that must run continuously
(`feast serve`), installed as a `helm.v3.Release` whose values the tests and the policy pack read,
while everything around it stays an ordinary Kubernetes object Tandem writes (HPA, PDB,
NetworkPolicy, CronJob, Job, ServiceMonitor), so the manifests tier validates it against the
Kubernetes schemas and the policies see it. The operator would hide all of those behind one
custom resource whose CRD schema the manifests tier does not have, add a controller to run and
upgrade, and apply feature definitions from a git remote the cluster must reach, where Tandem
applies them from this repository at `pulumi up`. (The chart's own gaps: no HPA, no
materialization, no way to label its Service, so the component adds a metrics Service with the
label the observability stack selects.)

Per stack: a namespace, the online store (its own Redis: encrypted ElastiCache, or in-cluster
with `noeviction` for non-production stacks, never the gateway's eviction-prone cache), an S3
bucket (private, SSE-KMS, versioned) for the registry and offline data, a service account whose
IRSA role may read and write only that bucket. Per project (stacks/features/<project>/): a
ConfigMap with the definitions and its feature_store.yaml, a Job that runs `feast apply` (named
by the definitions' hash, so a change is a new Job, run by `pulumi up`), the feature server
(chart) with HPA and PDB, its push endpoint (`/push` on the server), a materialization CronJob,
a metrics Service; then one ServiceMonitor, one NetworkPolicy and the freshness alerts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role, private_bucket
from components.helm import pinned_release
from components.internal_http import from_namespace
from components.pod_security import container_security, pod_security
from components.redis import ElastiCacheArgs, elasticache_redis, in_cluster_redis
from features import rules
from features.repo import Repo, project_dir
from features.store_yaml import feature_store_yaml
from vocabulary import labels, pins
from vocabulary.features import FeatureStoreConfig

SERVER_PORT = 6566  # feast serve
METRICS_PORT = 8000  # feast serve --metrics
SERVICE_ACCOUNT = "feast"
COMPONENT = "feature-store"
LABEL_PROJECT = f"{labels.DOMAIN}/feature-project"
# namespaces whose pods may push features or call the feature server: add this label to a
# producer's namespace (the gateway, serving and monitoring namespaces are allowed already)
LABEL_CLIENT = f"{labels.DOMAIN}/feature-store-client"
FEAST_UID = 1001  # the feature-server image's user
REPO_MOUNT = "/feature-repo"
WORK_DIR = "/work"
# no usage telemetry (it phones home and writes under $HOME); $HOME on the writable /tmp
FEAST_ENV = [{"name": "FEAST_USAGE", "value": "False"}, {"name": "HOME", "value": "/tmp"}]


@dataclass
class FeatureStoreArgs:
    config: FeatureStoreConfig
    repos: dict[str, Repo]  # project -> its inspected definitions (features.repo.inspect)
    cluster_name: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    k8s_provider: pulumi.ProviderResource | None = None
    elasticache: ElastiCacheArgs | None = None  # required with config.redis == "elasticache"
    tags: dict[str, str] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)  # project -> team, on its alerts
    namespace: str = labels.NS_FEATURES
    monitoring: bool = True


def server_name(project: str) -> str:
    return f"feast-{project.replace('_', '-')}"


class FeatureStore(pulumi.ComponentResource):
    """Exposes `redis_url` (what the gateway reads), `servers` and `push_urls` per project."""

    redis_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_FEATURE_STORE, name, None, opts)
        if args.config.redis == "elasticache" and args.elasticache is None:
            raise ValueError(
                "featureStore.redis is 'elasticache' but no ElastiCacheArgs were given"
            )
        self._name, self._args = name, args
        self._labels = labels.platform_labels(**{labels.LABEL_COMPONENT: COMPONENT})
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        ns = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={"name": args.namespace, "labels": self._labels},
            opts=k8s_opts,
        )
        self._child = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=[ns]
        )
        self.redis_url = self._redis()
        self.bucket = self._bucket()
        role = self._role()
        self._service_account(role)
        self.servers: dict[str, pulumi.Output[str]] = {}
        self.push_urls: dict[str, pulumi.Output[str]] = {}
        for project in args.config.projects:
            self._project(project, args.repos[project])
        self._network_policy()
        if args.monitoring:
            self._monitoring()
        self.register_outputs(
            {"redisUrl": self.redis_url, "bucket": self.bucket.bucket, "pushUrls": self.push_urls}
        )

    def _meta(self, name: str, **extra: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self._args.namespace,
            "labels": {**self._labels, **extra},
        }

    # -- stores ----------------------------------------------------------------------------
    def _redis(self) -> pulumi.Output[str]:
        """The online store: its own Redis, never the gateway's (whose cache entries are
        evicted under memory pressure). ElastiCache encrypts in transit and at rest; the
        in-cluster one runs `noeviction`, so a full store refuses writes (materialization fails
        and alerts) instead of silently dropping features."""
        a = self._args
        if a.config.redis == "elasticache":
            assert a.elasticache is not None
            return elasticache_redis(
                f"{self._name}-redis",
                a.elasticache,
                description="Tandem feature store online store (Feast)",
                parent=self,
            )
        return in_cluster_redis(
            f"{self._name}-redis",
            namespace=a.namespace,
            component="feature-store-redis",
            object_labels=self._labels,
            clients=[
                {"podSelector": {"matchLabels": {labels.LABEL_COMPONENT: COMPONENT}}},
                from_namespace(labels.NS_GATEWAY),
            ],
            opts=self._child,
            eviction="noeviction",
        )

    def _bucket(self) -> aws.s3.Bucket:
        """Registry and offline data (versioned: a bad `feast apply` or a deleted parquet file can
        be undone)."""
        a = self._args
        return private_bucket(
            f"{self._name}-bucket",
            bucket_prefix=f"{a.cluster_name}-features-",
            tags={**a.tags, "use-case": "feature-store"},
            parent=self,
        )

    def _role(self) -> aws.iam.Role:
        """IRSA: only the feature store's service account, only its bucket."""
        a = self._args
        role = irsa_role(
            f"{self._name}-irsa",
            a.oidc_provider_arn,
            a.oidc_issuer_url,
            a.namespace,
            SERVICE_ACCOUNT,
            {**a.tags, "use-case": "feature-store"},
            self,
        )
        aws.iam.RolePolicy(
            f"{self._name}-irsa-s3",
            role=role.id,
            policy=self.bucket.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [arn]},
                            {
                                "Effect": "Allow",
                                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                                "Resource": [f"{arn}/*"],
                            },
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=role),
        )
        return role

    def _service_account(self, role: aws.iam.Role) -> None:
        k8s.core.v1.ServiceAccount(
            f"{self._name}-sa",
            metadata={
                **self._meta(SERVICE_ACCOUNT),
                "annotations": {"eks.amazonaws.com/role-arn": role.arn},
            },
            automount_service_account_token=True,  # the projected web-identity token IRSA reads
            opts=self._child,
        )

    # -- one project -----------------------------------------------------------------------
    def _store_yaml(self, project: str) -> pulumi.Output[str]:
        return pulumi.Output.all(self.bucket.bucket, self.redis_url).apply(
            lambda v: feature_store_yaml(
                project, registry=f"s3://{v[0]}/registry/{project}.db", redis_url=v[1]
            )
        )

    def _project(self, project: str, repo: Repo) -> None:
        a = self._args
        server = server_name(project)
        extra = {LABEL_PROJECT: project}
        offline = self.bucket.bucket.apply(lambda b: f"s3://{b}/offline")
        env = [{"name": "TANDEM_FEATURES_OFFLINE", "value": offline}, *FEAST_ENV]
        files = {p.name: p.read_text() for p in sorted(project_dir(project).glob("*.py"))}
        digest = hashlib.sha256(
            json.dumps(files, sort_keys=True).encode() + pins.FEAST_VERSION.encode()
        ).hexdigest()[:10]
        store_yaml = self._store_yaml(project)
        config_map = k8s.core.v1.ConfigMap(
            f"{self._name}-{project}-repo",
            metadata=self._meta(f"{server}-repo", **extra),
            data={
                **files,
                "feature_store.yaml": store_yaml,
                "tandem-summary.json": json.dumps(repo.summary(), sort_keys=True),
            },
            opts=self._child,
        )
        after_cm = pulumi.ResourceOptions.merge(
            self._child, pulumi.ResourceOptions(depends_on=[config_map])
        )
        apply_job = k8s.batch.v1.Job(
            f"{self._name}-{project}-apply-{digest}",
            metadata=self._meta(f"{server}-apply-{digest}", **extra),
            spec={
                "backoffLimit": 2,
                "template": {
                    "metadata": {"labels": {**self._labels, **extra}},
                    "spec": self._feast_pod(server, ["apply"], env, "OnFailure"),
                },
            },
            opts=after_cm,
        )
        self._materialization(project, server, extra, env, after_cm)
        b64 = store_yaml.apply(lambda text: base64.b64encode(text.encode()).decode())
        release = pinned_release(
            f"{self._name}-{project}-server",
            pins.FEAST_FEATURE_SERVER,
            namespace=a.namespace,
            release_name=server,
            values=self._server_values(server, b64, offline),
            opts=pulumi.ResourceOptions.merge(
                self._child, pulumi.ResourceOptions(depends_on=[apply_job])
            ),
        )
        after_release = pulumi.ResourceOptions.merge(
            self._child, pulumi.ResourceOptions(depends_on=[release])
        )
        self._autoscaling(server, extra, after_release)
        k8s.core.v1.Service(
            f"{self._name}-{project}-metrics",
            metadata=self._meta(rules.metrics_job(project), **extra),
            spec={
                "selector": _chart_selector(server),
                "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT}],
            },
            opts=after_release,
        )
        base = f"http://{server}.{a.namespace}.svc.cluster.local"
        self.servers[project] = pulumi.Output.from_input(base)
        self.push_urls[project] = pulumi.Output.from_input(f"{base}/push")

    def _feast_pod(
        self, server: str, command: list[str], env: list[dict[str, Any]], restart: str
    ) -> dict[str, Any]:
        """A pod that runs one feast CLI command in the pinned image, in a writable copy of the
        project's ConfigMap (the CLI writes beside the definitions), as the image's user."""
        script = f"cp -rL {REPO_MOUNT}/. {WORK_DIR}/ && cd {WORK_DIR} && exec feast " + " ".join(
            command
        )
        return {
            "serviceAccountName": SERVICE_ACCOUNT,
            "restartPolicy": restart,
            "securityContext": pod_security(FEAST_UID, FEAST_UID),
            "containers": [
                {
                    "name": "feast",
                    "image": pins.FEAST_IMAGE.ref,
                    "command": ["/bin/sh", "-c", script],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"cpu": "2", "memory": "2Gi"},
                    },
                    "securityContext": container_security(),
                    "volumeMounts": [
                        {"name": "repo", "mountPath": REPO_MOUNT, "readOnly": True},
                        {"name": "work", "mountPath": WORK_DIR},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "repo", "configMap": {"name": f"{server}-repo"}},
                {"name": "work", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
        }

    def _materialization(
        self,
        project: str,
        server: str,
        extra: dict[str, str],
        env: list[dict[str, Any]],
        opts: pulumi.ResourceOptions,
    ) -> None:
        """`feast materialize-incremental <now>` on the stack's schedule, one run at a time:
        every feature view of the project, from where the last run ended to now."""
        cfg = self._args.config
        k8s.batch.v1.CronJob(
            f"{self._name}-{project}-materialize",
            metadata=self._meta(f"{server}-materialize", **extra),
            spec={
                "schedule": cfg.materialize_schedule,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 300,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 1,
                        "activeDeadlineSeconds": 3600,
                        "template": {
                            "metadata": {"labels": {**self._labels, **extra}},
                            "spec": self._feast_pod(
                                server,
                                ["materialize-incremental", '"$(date -u +%Y-%m-%dT%H:%M:%S)"'],
                                env,
                                "Never",
                            ),
                        },
                    }
                },
            },
            opts=opts,
        )

    def _server_values(
        self, server: str, store_yaml_b64: pulumi.Output[str], offline: pulumi.Output[str]
    ) -> dict[str, Any]:
        """The chart's values: the pinned image, `feast serve --metrics` (Prometheus metrics,
        freshness included, on 8000), a ClusterIP service only (no public endpoint), the IRSA
        service account, hardened pods with a writable /tmp (the metrics' multiprocess files)."""
        cfg = self._args.config
        return {
            "fullnameOverride": server,
            "replicaCount": cfg.min_replicas,
            "image": {
                "repository": pins.FEAST_IMAGE.repository,
                "tag": pins.FEAST_IMAGE.tag,
            },
            "feature_store_yaml_base64": store_yaml_b64,
            "feast_mode": "online",
            "commandArgs": [
                *("feast", "--log-level", "WARNING", "serve", "--metrics"),
                *("-h", "0.0.0.0", "--registry_ttl_sec", "60", "--no-access-log"),
            ],
            "service": {"type": "ClusterIP", "port": 80},
            "serviceAccount": {"name": SERVICE_ACCOUNT},
            "podAnnotations": {"prometheus.io/port": str(METRICS_PORT)},
            "podSecurityContext": pod_security(FEAST_UID, FEAST_UID),
            "securityContext": container_security(),
            "extraEnvs": [{"name": "TANDEM_FEATURES_OFFLINE", "value": offline}, *FEAST_ENV],
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "topology.kubernetes.io/zone",
                                "labelSelector": {"matchLabels": _chart_selector(server)},
                            },
                        }
                    ]
                }
            },
        }

    def _autoscaling(
        self, server: str, extra: dict[str, str], opts: pulumi.ResourceOptions
    ) -> None:
        """The chart has no HPA: scale the server on CPU (each read is Python work), and keep
        one replica through drains."""
        cfg = self._args.config
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{self._name}-{server}-hpa",
            metadata=self._meta(server, **extra),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server},
                "minReplicas": cfg.min_replicas,
                "maxReplicas": cfg.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
            },
            opts=opts,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{self._name}-{server}-pdb",
            metadata=self._meta(server, **extra),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": _chart_selector(server)}},
            opts=opts,
        )

    # -- stack-wide ------------------------------------------------------------------------
    def _network_policy(self) -> None:
        """The feature servers (reads and `/push`) answer the gateway, serving, namespaces
        labelled as feature-store clients, and this namespace (the jobs); metrics only to
        monitoring. Nothing outside the cluster: the Service is ClusterIP and no Ingress
        points at it."""
        clients = [
            from_namespace(labels.NS_GATEWAY),
            from_namespace(labels.NS_SERVING),
            {"namespaceSelector": {"matchLabels": {LABEL_CLIENT: "true"}}},
            {"podSelector": {}},
        ]
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-servers",
            metadata=self._meta(f"{self._name}-servers"),
            spec={
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/name": pins.FEAST_FEATURE_SERVER.name}
                },
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": clients, "ports": [{"port": SERVER_PORT, "protocol": "TCP"}]},
                    {
                        "from": [from_namespace(labels.NS_MONITORING)],
                        "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
                    },
                ],
            },
            opts=self._child,
        )

    def _monitoring(self) -> None:
        """The metrics Services carry the label the observability stack's feature-store
        monitor selects (`tandem.dev/component: feature-store`, port `metrics`); this monitor
        replaces that one (Platform drops it), and the freshness alerts ride along."""
        a = self._args
        k8s.apiextensions.CustomResource(
            f"{self._name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self._meta(self._name),
            spec={
                "selector": {"matchLabels": {labels.LABEL_COMPONENT: COMPONENT}},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
            opts=self._child,
        )
        repos = [a.repos[p] for p in a.config.projects]
        k8s.apiextensions.CustomResource(
            f"{self._name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=self._meta(f"{self._name}-freshness"),
            spec={"groups": rules.rule_groups(repos, a.teams)},
            opts=self._child,
        )


def _chart_selector(server: str) -> dict[str, str]:
    """The feast-feature-server chart's pod selector labels for a release named `server`."""
    return {
        "app.kubernetes.io/name": pins.FEAST_FEATURE_SERVER.name,
        "app.kubernetes.io/instance": server,
    }
