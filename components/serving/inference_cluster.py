"""`InferenceCluster`: one use case's models as a KubeRay RayService bound to a GPU pool.

The RayService's `serveConfigV2` is the builder's output, byte for byte what `tandem serve
--local` runs. Worker groups come from the pool's SchedulingContract (node selector, tolerations,
GPU resource) and `builder.worker_shape` (the same function the plan-time checks use), so the
`nvidia.com/gpu` limit can never disagree with TP × PP. Around it: a service account (IRSA for the
S3 model cache), a PodDisruptionBudget, a PodMonitor for Ray + vLLM metrics, a NetworkPolicy.

`KubeRayOperator` installs the operator once per cluster; the platform passes it to every use case.
Never imports ray, vllm or torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components.internal_http import from_namespace
from gpu_pools.contract import SchedulingContract
from serving import builder
from serving.checks import max_replicas
from vocabulary import labels, pins
from vocabulary.deployment import ModelDeployment
from vocabulary.usecase import UPGRADE_INCREMENTAL, UseCaseSpec

RAY_UID = 1000  # the `ray` user of the rayproject images
# KubeRay sets this label on worker pods; declaring it in the template lets the PDB (and the
# policy pack) see which pods the PDB selects before anything runs.
WORKER_LABEL = {"ray.io/node-type": "worker"}
METRICS_PORT = 8080
DASHBOARD_PORT = 8265
GCS_PORT = 6379
MODEL_CACHE_MOUNT = "/models"
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": RAY_UID, "fsGroup": 100}
HEAD_DISK_GIB = 10
# The Secret (in the serving namespace) whose `hf_token` key holds a Hugging Face token: workers
# of use cases that load from the Hub read it as HUGGING_FACE_HUB_TOKEN (gated models need it).
# Optional in the pod spec, so public models start without it; the platform creates it from the
# `tandem:huggingFaceToken` Pulumi secret when that is set.
HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_KEY = "hf_token"
# Ray Serve's throughput settings from KubeRay's high-throughput LLM sample (Ray >= 2.56), set on
# head and workers: the HAProxy ingress and the throughput-optimised Serve defaults for every
# app; direct streaming and vLLM's Ray executor v2 where an LLM app runs.
SERVE_THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
LLM_THROUGHPUT_ENV = {
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
    "VLLM_USE_RAY_V2_EXECUTOR_BACKEND": "1",
}
# Workers leave the cluster cleanly on a drain (Karpenter, node-group update): `ray stop` lets
# the raylet hand its replicas back to Serve before the container is killed.
WORKER_PRESTOP = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}


@dataclass
class KubeRayOperatorArgs:
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_KUBERAY
    serving_namespace: str = labels.NS_SERVING
    values: dict[str, Any] = field(default_factory=dict)


class KubeRayOperator(pulumi.ComponentResource):
    """The pinned KubeRay operator Helm release and the namespace use cases deploy into."""

    def __init__(
        self, name: str, args: KubeRayOperatorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_KUBERAY_OPERATOR, name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        chart = pins.KUBERAY_OPERATOR
        values = {
            "resources": {
                "requests": {"cpu": "100m", "memory": "512Mi"},
                "limits": {"memory": "512Mi"},
            },
            # No featureGates override: Helm replaces the whole list, switching the chart's
            # defaults off; RayServiceIncrementalUpgrade is beta and on by default since 1.7.
            **args.values,
        }
        self.release = k8s.helm.v3.Release(
            f"{name}-kuberay",
            k8s.helm.v3.ReleaseArgs(
                name="kuberay-operator",
                chart=chart.name,
                version=chart.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
                namespace=args.namespace,
                create_namespace=True,
                values=values,
            ),
            child,
        )
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-serving-ns",
            metadata={"name": args.serving_namespace, "labels": labels.platform_labels()},
            opts=child,
        )
        self.register_outputs({"release": self.release.name, "namespace": args.serving_namespace})


@dataclass
class ModelCache:
    """Where replicas keep downloaded weights between restarts.

    `s3`: weights stream from the model's s3:// source with the pod's IRSA role (`role_arn`).
    `pvc`: a shared ReadWriteMany claim mounted at /models (HF_HOME), e.g. on EFS.
    """

    kind: Literal["none", "s3", "pvc"] = "none"
    role_arn: pulumi.Input[str] | None = None
    size_gib: int = 200
    storage_class: str = "efs-sc"


@dataclass
class GcsFaultTolerance:
    """Prod: the head's GCS state in Redis, so a head restart does not drop the Serve apps."""

    redis_address: pulumi.Input[str]
    password_secret: str | None = None  # Kubernetes Secret holding the password
    password_key: str = "password"


@dataclass
class InferenceClusterArgs:
    use_case: UseCaseSpec
    contract: SchedulingContract | None
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_SERVING
    environment: str = "dev"
    operator: pulumi.Resource | None = None
    model_cache: ModelCache = field(default_factory=ModelCache)
    gcs_ft: GcsFaultTolerance | None = None
    # the serving image (ECR-built or tandem:images; Platform passes it); unset: the locally
    # built pins.LOCAL_IMAGES["serving"] (`docker build -f serving/Dockerfile`, kind/minikube)
    image: pulumi.Input[str] | None = None
    hf_token_secret: str = HF_TOKEN_SECRET
    # more environment for every Ray pod (the Tracing component's: Serve's spans to the collector)
    extra_env: list[dict] = field(default_factory=list)
    head_cpus: float = 2
    head_memory_gib: float = 8
    autoscaler_idle_timeout_s: int = 300
    monitoring: bool = True
    allowed_namespaces: tuple[str, ...] = (
        labels.NS_GATEWAY,
        labels.NS_MONITORING,
        labels.NS_KUBERAY,
    )


def label_value(text: str) -> str:
    """A Kubernetes label value from a model id (`meta-llama/Llama-3.1-8B` → `meta-llama-Llama-3.1-8B`)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("-._")
    return value or "unknown"


def _quantity(gib: float) -> str:
    return f"{int(gib)}Gi" if float(gib).is_integer() else f"{int(gib * 1024)}Mi"


def _ray_container(
    name: str,
    image: pulumi.Input[str],
    resources: dict[str, Any],
    env: list[dict],
    mounts: list[dict],
    ports: list[dict],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "env": env,
        "volumeMounts": mounts,
        "ports": ports,
        "securityContext": {"allowPrivilegeEscalation": False},
    }


class InferenceCluster(pulumi.ComponentResource):
    """One RayService for one use case, plus its SA, PDB, PodMonitor and NetworkPolicy."""

    def __init__(
        self, name: str, args: InferenceClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_INFERENCE_CLUSTER, name, None, opts)
        uc = args.use_case
        self._args = args
        depends = [args.operator] if args.operator is not None else []
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=depends)
        self.common_labels = labels.platform_labels(
            **{
                labels.LABEL_TEAM: uc.team,
                labels.LABEL_USE_CASE: uc.name,
                labels.LABEL_COMPONENT: "inference-cluster",
                labels.LABEL_WORKLOAD: "serving",
            }
        )
        self.serve_config = builder.serve_config(uc.deployments)
        self.serve_config_yaml = builder.to_yaml(self.serve_config)
        meta = {"namespace": args.namespace, "labels": self.common_labels}

        sa_annotations = {}
        if args.model_cache.kind == "s3" and args.model_cache.role_arn is not None:
            sa_annotations["eks.amazonaws.com/role-arn"] = args.model_cache.role_arn
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={**meta, "name": f"{uc.name}-ray", "annotations": sa_annotations},
            opts=child,
        )
        self.cache_claim = None
        if args.model_cache.kind == "pvc":
            self.cache_claim = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-model-cache",
                metadata={**meta, "name": f"{uc.name}-model-cache"},
                spec={
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": args.model_cache.storage_class,
                    "resources": {"requests": {"storage": f"{args.model_cache.size_gib}Gi"}},
                },
                opts=child,
            )
        self.ray_service = k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version="ray.io/v1",
            kind="RayService",
            metadata={**meta, "name": uc.name},
            spec=self.ray_service_spec(),
            opts=child,
        )
        worker_selector = {labels.LABEL_USE_CASE: uc.name, **WORKER_LABEL}
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={**meta, "name": f"{uc.name}-workers"},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": worker_selector}},
            opts=child,
        )
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata={**meta, "name": f"{uc.name}-ray"},
            spec=self._network_policy_spec(),
            opts=child,
        )
        self.pod_monitor = None
        if args.monitoring:
            self.pod_monitor = k8s.apiextensions.CustomResource(
                f"{name}-podmonitor",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={**meta, "name": f"{uc.name}-ray"},
                spec=self._pod_monitor_spec(),
                opts=child,
            )
        self.register_outputs(
            {
                "ray_service": uc.name,
                "namespace": args.namespace,
                "serve_service": f"{uc.name}-serve-svc.{args.namespace}.svc:{builder.SERVE_PORT}",
                "routes": {d.name: builder.route_prefix(d) for d in uc.deployments},
            }
        )

    # -- the RayService ----------------------------------------------------------------------

    @property
    def image(self) -> pulumi.Input[str]:
        return self._args.image or pins.LOCAL_IMAGES["serving"]

    def _pod_labels(self, d: ModelDeployment | None) -> dict[str, str]:
        extra = {labels.LABEL_ROLLOUT: "stable"}
        if d is not None:
            extra |= {
                labels.LABEL_MODEL: label_value(d.model),
                labels.LABEL_MODEL_VERSION: label_value(d.model_version),
            }
            if d.uses_gpu and self._args.contract is not None:
                extra[labels.LABEL_POOL] = self._args.contract.pool
        return {**self.common_labels, **extra}

    def _volumes(self, shm_gib: float) -> tuple[list[dict], list[dict]]:
        volumes: list[dict] = [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(shm_gib)}}
        ]
        mounts: list[dict] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        if self.cache_claim is not None:
            volumes.append(
                {
                    "name": "model-cache",
                    "persistentVolumeClaim": {
                        "claimName": f"{self._args.use_case.name}-model-cache"
                    },
                }
            )
            mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT})
        return volumes, mounts

    def _env(self) -> list[dict]:
        deployments = self._args.use_case.deployments
        flags = dict(SERVE_THROUGHPUT_ENV)
        if any(d.kind == "llm" for d in deployments):
            flags |= LLM_THROUGHPUT_ENV
        env: list[dict] = [{"name": k, "value": v} for k, v in flags.items()]
        if any(d.kind == "llm" and d.source_kind == "hf" for d in deployments):
            env.append(
                {
                    "name": "HUGGING_FACE_HUB_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": self._args.hf_token_secret,
                            "key": HF_TOKEN_KEY,
                            "optional": True,
                        }
                    },
                }
            )
        if self.cache_claim is not None:
            env.append({"name": "HF_HOME", "value": f"{MODEL_CACHE_MOUNT}/hf"})
        return env + list(self._args.extra_env)

    def _head_group(self) -> dict[str, Any]:
        a = self._args
        volumes, mounts = self._volumes(max(1.0, a.head_memory_gib * 0.3))
        res = {
            "cpu": str(a.head_cpus),
            "memory": _quantity(a.head_memory_gib),
            "ephemeral-storage": f"{HEAD_DISK_GIB}Gi",
        }
        ports = [
            {"name": "gcs", "containerPort": GCS_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "client", "containerPort": 10001},
            {"name": "serve", "containerPort": builder.SERVE_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ]
        return {
            # No GPUs and no CPUs for tasks on the head: replicas land on workers only.
            "rayStartParams": {
                "num-gpus": "0",
                "num-cpus": "0",
                "dashboard-host": "0.0.0.0",
                "metrics-export-port": str(METRICS_PORT),
            },
            "template": {
                "metadata": {"labels": self._pod_labels(None)},
                "spec": {
                    "serviceAccountName": f"{a.use_case.name}-ray",
                    "securityContext": POD_SECURITY,
                    "containers": [
                        _ray_container(
                            "ray-head",
                            self.image,
                            {
                                "requests": res,
                                "limits": {
                                    "memory": res["memory"],
                                    "ephemeral-storage": res["ephemeral-storage"],
                                },
                            },
                            self._env(),
                            mounts,
                            ports,
                        )
                    ],
                    "volumes": volumes,
                },
            },
        }

    def _worker_group(self, d: ModelDeployment) -> dict[str, Any]:
        a = self._args
        shape = builder.worker_shape(d, a.contract)
        requests = {
            "cpu": f"{shape.cpus:g}",
            "memory": _quantity(shape.memory_gib),
            # weights from S3 / the Hub are downloaded to the node's disk before vLLM loads
            # them: request the space so the scheduler and the kubelet account for it
            "ephemeral-storage": f"{shape.disk_gib}Gi",
        }
        limits: dict[str, str] = {
            "memory": requests["memory"],
            "ephemeral-storage": requests["ephemeral-storage"],
        }
        spec: dict[str, Any] = {
            "serviceAccountName": f"{a.use_case.name}-ray",
            "securityContext": POD_SECURITY,
        }
        start = {"metrics-export-port": str(METRICS_PORT), "num-cpus": f"{int(shape.cpus)}"}
        if shape.on_gpu_pool and a.contract is not None:
            limits[a.contract.gpu_resource] = str(shape.gpus)
            requests[a.contract.gpu_resource] = str(shape.gpus)
            start["num-gpus"] = str(shape.gpus)
            spec |= a.contract.placement()
        else:
            start["num-gpus"] = "0"
        volumes, mounts = self._volumes(shape.shm_gib)
        container = _ray_container(
            "ray-worker",
            self.image,
            {"requests": requests, "limits": limits},
            self._env(),
            mounts,
            [{"name": "metrics", "containerPort": METRICS_PORT}],
        )
        container["lifecycle"] = WORKER_PRESTOP
        auto = d.autoscaling
        return {
            "groupName": d.name,
            "replicas": max(auto.min_replicas, auto.initial_replicas or 0),
            "minReplicas": auto.min_replicas,
            # a rollout's canary application runs on this group too: room for both versions,
            # so adding the canary never changes the cluster spec (a blue-green upgrade)
            "maxReplicas": max_replicas(a.use_case, d),
            "rayStartParams": start,
            "template": {
                "metadata": {"labels": {**self._pod_labels(d), **WORKER_LABEL}},
                "spec": {**spec, "containers": [container], "volumes": volumes},
            },
        }

    def _upgrade_strategy(self) -> dict[str, Any]:
        up = self._args.use_case.upgrade
        if up.strategy != UPGRADE_INCREMENTAL:
            return {"type": up.strategy}
        return {
            "type": up.strategy,
            "clusterUpgradeOptions": {
                "maxSurgePercent": up.max_surge_percent,
                "stepSizePercent": up.step_size_percent,
                "intervalSeconds": up.interval_seconds,
                "gatewayClassName": up.gateway_class_name,
            },
        }

    def ray_service_spec(self) -> dict[str, Any]:
        a = self._args
        cluster: dict[str, Any] = {
            "rayVersion": pins.RAY_VERSION,
            # Ray token authentication (on by default in current Ray): KubeRay generates the
            # token Secret and hands it to every Ray process and to its own Serve calls
            "authOptions": {"mode": "token"},
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "version": "v2",
                "upscalingMode": "Default",
                "idleTimeoutSeconds": a.autoscaler_idle_timeout_s,
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi"},
                    "limits": {"memory": "512Mi"},
                },
            },
            "headGroupSpec": self._head_group(),
            "workerGroupSpecs": [self._worker_group(d) for d in a.use_case.deployments],
        }
        if a.gcs_ft is not None:
            gcs: dict[str, Any] = {"redisAddress": a.gcs_ft.redis_address}
            if a.gcs_ft.password_secret:
                gcs["redisPassword"] = {
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": a.gcs_ft.password_secret,
                            "key": a.gcs_ft.password_key,
                        }
                    }
                }
            cluster["gcsFaultToleranceOptions"] = gcs
        return {
            "serveConfigV2": self.serve_config_yaml,
            "upgradeStrategy": self._upgrade_strategy(),
            "rayClusterConfig": cluster,
        }

    # -- neighbours ------------------------------------------------------------------------------

    def _network_policy_spec(self) -> dict[str, Any]:
        uc = self._args.use_case
        own = {"podSelector": {"matchLabels": {labels.LABEL_USE_CASE: uc.name}}}
        return {
            "podSelector": {"matchLabels": {labels.LABEL_USE_CASE: uc.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [own]},  # Ray's own traffic: GCS, object transfer, workers
                {
                    "from": [from_namespace(ns) for ns in self._args.allowed_namespaces],
                    "ports": [
                        {"port": p, "protocol": "TCP"}
                        for p in (builder.SERVE_PORT, DASHBOARD_PORT, METRICS_PORT)
                    ],
                },
            ],
        }

    def _pod_monitor_spec(self) -> dict[str, Any]:
        """Ray's metrics port carries Serve and, through Ray's agent, vLLM's `vllm:*` series."""
        relabel = [
            {
                "sourceLabels": [
                    f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', key)}"
                ],
                "targetLabel": target,
            }
            for key, target in (
                (labels.LABEL_TEAM, "team"),
                (labels.LABEL_USE_CASE, "use_case"),
                (labels.LABEL_MODEL, "model"),
                (labels.LABEL_MODEL_VERSION, "model_version"),
                (labels.LABEL_ROLLOUT, "rollout"),
                (labels.LABEL_POOL, "pool"),
            )
        ]
        return {
            "selector": {"matchLabels": {labels.LABEL_USE_CASE: self._args.use_case.name}},
            "namespaceSelector": {"matchNames": [self._args.namespace]},
            "podMetricsEndpoints": [
                {"port": "metrics", "path": "/metrics", "interval": "15s", "relabelings": relabel}
            ],
        }
