"""The shared vocabulary: Pulumi type tokens, Kubernetes labels, taints and metric label names.

Defined once so that components, policies, serving, the gateway and FinOps agree on spelling.
A label key that drifts between the pool that sets it and the workload that selects on it fails
only on a real cluster, long after review; importing it from here makes that impossible.
"""

from __future__ import annotations

import re

PROJECT = "tandem"
DOMAIN = "tandem.dev"

# Pulumi component type tokens: "tandem:<module>:<Type>".
TOKEN_PLATFORM = "tandem:platform:Platform"
TOKEN_CLUSTER = "tandem:cluster:Cluster"
TOKEN_NETWORK = "tandem:network:Network"
TOKEN_GPU_NODE_POOL = "tandem:gpu_pools:GpuNodePool"
TOKEN_KARPENTER = "tandem:gpu_pools:Karpenter"
TOKEN_GPU_SOFTWARE = "tandem:gpu_pools:GpuSoftware"
TOKEN_INFERENCE_CLUSTER = "tandem:serving:InferenceCluster"
TOKEN_KUBERAY_OPERATOR = "tandem:serving:KubeRayOperator"
TOKEN_USE_CASE = "tandem:use_case:UseCase"
TOKEN_GATEWAY = "tandem:gateway:Gateway"
TOKEN_OBSERVABILITY = "tandem:observability:Observability"
TOKEN_IMAGES = "tandem:images:Images"
TOKEN_BATCH_WORKERS = "tandem:pipelines:BatchWorkers"
TOKEN_KEDA = "tandem:pipelines:Keda"
TOKEN_MODEL_REGISTRY = "tandem:lifecycle:ModelRegistry"
TOKEN_ROLLOUT_CONTROLLER = "tandem:lifecycle:RolloutController"
TOKEN_FEATURE_STORE = "tandem:features:FeatureStore"
TOKEN_DRIFT_MONITOR = "tandem:drift:DriftMonitor"
TOKEN_TRACING = "tandem:tracing:Tracing"

# Kubernetes node / pod labels.
LABEL_POOL = f"{DOMAIN}/pool"
LABEL_GPU_MODEL = f"{DOMAIN}/gpu-model"
LABEL_TEAM = f"{DOMAIN}/team"
LABEL_USE_CASE = f"{DOMAIN}/use-case"
LABEL_MODEL = f"{DOMAIN}/model"
LABEL_MODEL_VERSION = f"{DOMAIN}/model-version"
LABEL_ROLLOUT = f"{DOMAIN}/rollout"
LABEL_COMPONENT = f"{DOMAIN}/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_CAPACITY_TYPE = f"{DOMAIN}/capacity-type"
LABEL_WORKLOAD = f"{DOMAIN}/workload"  # serving | training | batch

# GPU scheduling.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"

# The one metric label set, everywhere (Prometheus, dashboards, FinOps, gateway).
METRIC_LABELS = ("team", "use_case", "model", "model_version", "rollout", "pool")

# AWS tags every taggable resource carries (policy: required-tags).
REQUIRED_TAGS = ("team", "cost-center", "use-case", "environment")

# Namespaces.
NS_GPU = "gpu-system"
NS_KARPENTER = "karpenter"
NS_KUBERAY = "kuberay-system"
NS_MONITORING = "monitoring"
NS_GATEWAY = "tandem-gateway"
NS_SERVING = "tandem-serving"
NS_BATCH = "tandem-batch"  # RayJobs (big offline batches)
NS_KEDA = "keda"
NS_LIFECYCLE = "tandem-lifecycle"  # the model registry and the rollout controller
NS_FEATURES = "tandem-features"
NS_TRACING = "tandem-tracing"  # the OpenTelemetry Collector and the trace backend (Phoenix)


def platform_labels(**extra: str) -> dict[str, str]:
    """Labels every Kubernetes object Tandem creates carries, so `kubectl -l` finds them all."""
    labels = {LABEL_MANAGED_BY: "tandem", LABEL_PART_OF: PROJECT}
    labels.update({k: v for k, v in extra.items() if v})
    return labels


def gpu_toleration() -> dict[str, str]:
    """The toleration matching the taint every GPU pool carries (Kubernetes wire format)."""
    return {
        "key": GPU_TAINT_KEY,
        "operator": "Exists",
        "effect": GPU_TAINT_EFFECT,
    }


# Names Tandem turns into Kubernetes objects (pools, use cases, deployments, key ids): RFC 1035
# labels, because Services derived from them must start with a letter; 40 characters leaves room
# for the suffixes components add ("-serve-svc", "-head").
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


def dns_label(value: str, what: str = "name") -> str:
    """`value` if it is a valid object name, else a ValueError saying what is allowed."""
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be lowercase letters, digits and '-', start with a letter "
            "and be at most 40 characters"
        )
    return value
