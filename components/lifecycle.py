"""The model lifecycle's platform services: `ModelRegistry` (MLflow) and `RolloutController`.

`ModelRegistry` runs MLflow's tracking server (the pinned official image) in the lifecycle
namespace behind an internal Service. On EKS it creates what MLflow keeps: a Postgres database on
RDS (encrypted, Multi-AZ in prod, in the private subnets, reachable only from the cluster's
nodes) and an S3 artifact bucket (encrypted, public access blocked, versioned), which the server
reads and writes through IRSA, so no AWS key exists anywhere. On an existing cluster the stack
names a Secret with the DSN and an s3:// artifact location. Clients upload model files through
the server's artifact proxy; serving reads the bucket directly (the use case's IRSA role).

`RolloutController` runs `tandem rollout controller` (Tandem's Python services image, the one the
gateway runs) with a service account that may get and patch RayServices in the serving
namespace, the gateway's Redis for the live splits and its durable state, Prometheus for the
analysis and the registry for aliases. One replica (a Redis lease guards against two).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role, private_bucket
from components.internal_http import from_namespace, healthz_probes, internal_http_service
from components.pod_security import container_security, pod_security
from vocabulary import labels, pins
from vocabulary.config import RegistryConfig

MLFLOW_PORT = 5000
SERVICE_PORT = 80
CONTROLLER_PORT = 8095
REGISTRY_NAME = "mlflow"
CONTROLLER_NAME = "rollout-controller"
ARTIFACTS_PREFIX = "artifacts"
DB_NAME = "mlflow"
DB_USER = "mlflow"
DB_SECRET_KEY = "dsn"
# RDS PostgreSQL major version; RDS picks its default minor and applies minor upgrades.
POSTGRES_MAJOR = "16"
NON_ROOT = 10001


@dataclass
class AwsRegistryArgs:
    """What the EKS mode's database and bucket need from the cluster."""

    subnet_ids: list[pulumi.Input[str]]
    node_security_group_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    db_password: pulumi.Input[str]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelRegistryArgs:
    config: RegistryConfig
    environment: str
    cluster_name: str
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_LIFECYCLE
    aws: AwsRegistryArgs | None = None  # EKS mode; None: an existing cluster
    monitoring: bool = True
    image: str = pins.MLFLOW_IMAGE.ref


class ModelRegistry(pulumi.ComponentResource):
    """Exposes `url` (the in-cluster base URL) and `artifacts_destination` (s3://...)."""

    url: pulumi.Output[str]
    artifacts_destination: pulumi.Output[str]

    def __init__(
        self, name: str, args: ModelRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_MODEL_REGISTRY, name, None, opts)
        self._name, self._args = name, args
        self._labels = labels.platform_labels(**{labels.LABEL_COMPONENT: "model-registry"})
        self._selector = {"app.kubernetes.io/name": REGISTRY_NAME}
        self._k8s = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={"name": args.namespace, "labels": self._labels},
            opts=self._k8s,
        )
        self._in_ns = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=[self.namespace]
        )
        role_arn: pulumi.Input[str] | None = args.config.artifacts_role_arn
        if args.aws is not None:
            bucket = self._bucket(args.aws)
            self.artifacts_destination = bucket.bucket.apply(
                lambda b: f"s3://{b}/{ARTIFACTS_PREFIX}"
            )
            dsn_secret = self._database(args.aws)
            role_arn = self._artifacts_role(args.aws, bucket).arn
        else:
            assert args.config.dsn_secret is not None and args.config.artifact_bucket
            self.artifacts_destination = pulumi.Output.from_input(args.config.artifact_bucket)
            dsn_secret = (args.config.dsn_secret.name, args.config.dsn_secret.key)
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={
                **self._meta(REGISTRY_NAME),
                "annotations": {"eks.amazonaws.com/role-arn": role_arn} if role_arn else {},
            },
            opts=self._in_ns,
        )
        self.deployment = self._deployment(dsn_secret)
        self.service = k8s.core.v1.Service(
            f"{name}-svc",
            metadata=self._meta(REGISTRY_NAME),
            spec={
                "type": "ClusterIP",
                "selector": self._selector,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
            },
            opts=self._in_ns,
        )
        self._network_policy()
        if args.config.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=self._meta(REGISTRY_NAME),
                spec={"minAvailable": 1, "selector": {"matchLabels": self._selector}},
                opts=self._in_ns,
            )
        if args.monitoring:
            k8s.apiextensions.CustomResource(
                f"{name}-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=self._meta(REGISTRY_NAME),
                spec={
                    "selector": {"matchLabels": self._labels},
                    "namespaceSelector": {"matchNames": [args.namespace]},
                    "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
                },
                opts=self._in_ns,
            )
        self.url = pulumi.Output.from_input(self.host_url(args.namespace))
        self.register_outputs({"url": self.url, "artifactsDestination": self.artifacts_destination})

    @staticmethod
    def host_url(namespace: str) -> str:
        return f"http://{REGISTRY_NAME}.{namespace}.svc"

    def _meta(self, name: str) -> dict[str, Any]:
        return {"name": name, "namespace": self._args.namespace, "labels": self._labels}

    # -- AWS: the bucket, the database, the role ------------------------------------------------
    def _bucket(self, a: AwsRegistryArgs) -> aws.s3.Bucket:
        """The models' artifacts, named by the config or prefixed by the cluster's name."""
        return private_bucket(
            f"{self._name}-artifacts",
            bucket=self._args.config.artifact_bucket,
            bucket_prefix=f"{self._args.cluster_name}-models-",
            tags={**a.tags, "component": "model-registry"},
            parent=self,
        )

    def _database(self, a: AwsRegistryArgs) -> tuple[str, str]:
        """Postgres on RDS, reachable from the cluster's nodes only; its DSN in a Secret."""
        cfg, prod = self._args.config.database, self._args.environment == "prod"
        child = pulumi.ResourceOptions(parent=self)
        tags = {**a.tags, "component": "model-registry"}
        subnets = aws.rds.SubnetGroup(
            f"{self._name}-db", subnet_ids=a.subnet_ids, tags=tags, opts=child
        )
        sg = aws.ec2.SecurityGroup(
            f"{self._name}-db",
            vpc_id=a.vpc_id,
            description="Tandem model registry database: Postgres from the cluster's nodes only",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": 5432,
                    "to_port": 5432,
                    "security_groups": [a.node_security_group_id],
                    "description": "Postgres from cluster nodes",
                }
            ],
            egress=[],
            tags=tags,
            opts=child,
        )
        self.database = aws.rds.Instance(
            f"{self._name}-db",
            engine="postgres",
            engine_version=POSTGRES_MAJOR,
            instance_class=cfg.instance_class,
            allocated_storage=cfg.storage_gib,
            storage_type="gp3",
            storage_encrypted=True,
            publicly_accessible=False,
            multi_az=cfg.multi_az if cfg.multi_az is not None else prod,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[sg.id],
            db_name=DB_NAME,
            username=DB_USER,
            password=a.db_password,
            backup_retention_period=cfg.backup_retention_days,
            deletion_protection=prod,
            skip_final_snapshot=not prod,
            final_snapshot_identifier=f"{self._args.cluster_name}-model-registry-final"
            if prod
            else None,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            tags=tags,
            opts=child,
        )
        dsn = pulumi.Output.all(self.database.address, a.db_password).apply(
            lambda v: (
                f"postgresql+psycopg2://{DB_USER}:{v[1]}@{v[0]}:5432/{DB_NAME}?sslmode=require"
            )
        )
        k8s.core.v1.Secret(
            f"{self._name}-db-dsn",
            metadata=self._meta("mlflow-db"),
            string_data={DB_SECRET_KEY: pulumi.Output.secret(dsn)},  # type: ignore[arg-type]
            opts=self._in_ns,
        )
        return "mlflow-db", DB_SECRET_KEY

    def _artifacts_role(self, a: AwsRegistryArgs, bucket: aws.s3.Bucket) -> aws.iam.Role:
        role = irsa_role(
            f"{self._name}-artifacts",
            a.oidc_provider_arn,
            a.oidc_issuer_url,
            self._args.namespace,
            REGISTRY_NAME,
            {**a.tags, "component": "model-registry"},
            self,
        )
        aws.iam.RolePolicy(
            f"{self._name}-artifacts",
            role=role.id,
            policy=bucket.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["s3:ListBucket"],
                                "Resource": [arn],
                            },
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

    # -- Kubernetes ---------------------------------------------------------------------------
    def _deployment(self, dsn: tuple[str, str]) -> k8s.apps.v1.Deployment:
        a = self._args
        ns = a.namespace
        hosts = ",".join(
            [REGISTRY_NAME, f"{REGISTRY_NAME}.{ns}", f"{REGISTRY_NAME}.{ns}.svc",
             f"{REGISTRY_NAME}.{ns}.svc.cluster.local", "localhost", "127.0.0.1"]
        )  # fmt: skip
        args = pulumi.Output.from_input(self.artifacts_destination).apply(
            lambda dest: [
                "server",
                "--host=0.0.0.0",
                f"--port={MLFLOW_PORT}",
                "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)",
                "--serve-artifacts",
                f"--artifacts-destination={dest}",
                "--expose-prometheus=/tmp/mlflow-metrics",
                f"--allowed-hosts={hosts}",
                "--workers=2",
            ]
        )
        return k8s.apps.v1.Deployment(
            f"{self._name}-deploy",
            metadata=self._meta(REGISTRY_NAME),
            spec={
                "replicas": a.config.replicas,
                "selector": {"matchLabels": self._selector},
                "template": {
                    "metadata": {"labels": {**self._labels, **self._selector}},
                    "spec": {
                        "serviceAccountName": REGISTRY_NAME,
                        "securityContext": pod_security(NON_ROOT, NON_ROOT),
                        "containers": [
                            {
                                "name": "mlflow",
                                "image": a.image,
                                "command": ["mlflow"],
                                "args": args,
                                "env": [
                                    {
                                        "name": "MLFLOW_BACKEND_STORE_URI",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": dsn[0], "key": dsn[1]}
                                        },
                                    },
                                    {"name": "HOME", "value": "/tmp"},
                                ],
                                "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "1Gi"},
                                    "limits": {"memory": "2Gi"},
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/health", "port": "http"},
                                    "periodSeconds": 10,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": "http"},
                                    "initialDelaySeconds": 60,
                                    "periodSeconds": 20,
                                },
                                "securityContext": container_security(),
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
            opts=self._in_ns,
        )

    def _network_policy(self) -> None:
        """Callers: the rollout controller's namespace, monitoring, and the namespaces the stack
        lists (CI runners, notebooks); nothing else in the cluster reaches the registry."""
        a = self._args
        allowed = [a.namespace, labels.NS_MONITORING, *a.config.clients]
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-netpol",
            metadata=self._meta(REGISTRY_NAME),
            spec={
                "podSelector": {"matchLabels": self._selector},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [from_namespace(ns) for ns in allowed],
                        "ports": [{"port": MLFLOW_PORT, "protocol": "TCP"}],
                    }
                ],
            },
            opts=self._in_ns,
        )


@dataclass
class RolloutControllerArgs:
    redis_url: pulumi.Input[str]
    prometheus_url: pulumi.Input[str]
    image: pulumi.Input[str]
    registry_url: pulumi.Input[str] | None = None
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_LIFECYCLE
    serving_namespace: str = labels.NS_SERVING
    monitoring: bool = True
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class RolloutController(pulumi.ComponentResource):
    """`tandem rollout controller` in the cluster, allowed to patch RayServices and nothing else."""

    SELECTOR = {"app.kubernetes.io/name": CONTROLLER_NAME}

    def __init__(
        self, name: str, args: RolloutControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_ROLLOUT_CONTROLLER, name, None, opts)
        lab = labels.platform_labels(**{labels.LABEL_COMPONENT: CONTROLLER_NAME})
        child = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=args.depends_on
        )
        meta = {"name": CONTROLLER_NAME, "namespace": args.namespace, "labels": lab}
        k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=meta, opts=child)
        # the RayServices it moves, in the serving namespace only
        rbac = {"name": CONTROLLER_NAME, "namespace": args.serving_namespace, "labels": lab}
        k8s.rbac.v1.Role(
            f"{name}-role",
            metadata=rbac,
            rules=[
                {
                    "apiGroups": ["ray.io"],
                    "resources": ["rayservices"],
                    "verbs": ["get", "list", "watch", "patch"],
                }
            ],
            opts=child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-binding",
            metadata=rbac,
            role_ref={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": CONTROLLER_NAME,
            },
            subjects=[
                {"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": args.namespace}
            ],
            opts=child,
        )
        command = pulumi.Output.all(
            args.redis_url, args.prometheus_url, args.registry_url or ""
        ).apply(
            lambda v: [
                "rollout",
                "controller",
                f"--redis={v[0]}",
                f"--prometheus={v[1]}",
                f"--serve=kuberay:{args.serving_namespace}",
                "--host=0.0.0.0",
                f"--port={CONTROLLER_PORT}",
                *([f"--registry={v[2]}"] if v[2] else []),
            ]  # fmt: skip
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deploy",
            metadata=meta,
            spec={
                "replicas": 1,
                # never two at once: the Redis lease would hold the second back anyway
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": self.SELECTOR},
                "template": {
                    "metadata": {"labels": {**lab, **self.SELECTOR}},
                    "spec": {
                        "serviceAccountName": CONTROLLER_NAME,
                        "securityContext": pod_security(NON_ROOT, NON_ROOT),
                        "containers": [
                            {
                                "name": "controller",
                                "image": args.image,
                                "command": ["tandem"],
                                "args": command,
                                "ports": [{"name": "http", "containerPort": CONTROLLER_PORT}],
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "128Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                **healthz_probes(),
                                "securityContext": container_security(),
                            }
                        ],
                    },
                },
            },
            opts=child,
        )
        internal_http_service(
            name,
            metadata=meta,
            selector=self.SELECTOR,
            port=CONTROLLER_PORT,
            allowed_namespaces=[labels.NS_MONITORING, args.namespace],
            namespace=args.namespace,
            monitor_labels=lab if args.monitoring else None,
            opts=child,
        )
        self.url = pulumi.Output.from_input(
            f"http://{CONTROLLER_NAME}.{args.namespace}.svc:{CONTROLLER_PORT}"
        )
        self.register_outputs({"url": self.url})

    @staticmethod
    def redis_client() -> dict[str, Any]:
        """The NetworkPolicy peer the gateway's Redis admits for the controller."""
        return {
            **from_namespace(labels.NS_LIFECYCLE),
            "podSelector": {"matchLabels": RolloutController.SELECTOR},
        }
