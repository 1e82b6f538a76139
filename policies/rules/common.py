"""Type tokens and readers shared by several rule modules: pools, pod templates, catalog prices.

Each reader takes a `ResourceView` (wire-format properties) and returns plain values, so a rule
reads like the sentence it enforces.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.framework import ResourceView, as_list, as_number, get
from vocabulary import labels
from vocabulary.catalog import InstanceType, load_catalog

# Pulumi type tokens of the provider resources the rules inspect.
EKS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EBS_VOLUME = "aws:ebs/volume:Volume"
KARPENTER_NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
KARPENTER_NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RAY_SERVICE = "kubernetes:ray.io/v1:RayService"
RAY_CLUSTER = "kubernetes:ray.io/v1:RayCluster"
RAY_JOB = "kubernetes:ray.io/v1:RayJob"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
POD_MONITOR = "kubernetes:monitoring.coreos.com/v1:PodMonitor"

WORKLOAD_TYPES = (
    DEPLOYMENT,
    STATEFUL_SET,
    DAEMON_SET,
    JOB,
    CRON_JOB,
    POD,
    RAY_SERVICE,
    RAY_CLUSTER,
    RAY_JOB,
)
POOL_TYPES = (EKS_NODE_GROUP, KARPENTER_NODEPOOL)

# GPU families that may appear in a pool even though the catalog does not price them.
_FALLBACK_GPU_FAMILIES = frozenset(
    [
        "p3",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",
        "p6",
        "p6e",
        "g4dn",
        "g4ad",
        "g5",
        "g5g",
        "g6",
        "g6e",
        "g6f",
        "gr6",
        "gr6f",
        "trn1",
        "inf2",
    ]
)
NVIDIA_AMI_TYPES = (
    "AL2023_x86_64_NVIDIA",
    "AL2023_ARM_64_NVIDIA",
    "BOTTLEROCKET_x86_64_NVIDIA",
    "BOTTLEROCKET_ARM_64_NVIDIA",
)


# ---------------------------------------------------------------- catalog


def family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0].lower()


def gpu_families() -> frozenset[str]:
    """GPU instance families: the catalog's plus well-known ones it does not price."""
    return frozenset(load_catalog().families()) | _FALLBACK_GPU_FAMILIES


def catalog_entry(instance_type: str) -> InstanceType | None:
    catalog = load_catalog()
    return catalog.get(instance_type) if instance_type in catalog else None


# ---------------------------------------------------------------- pools


def pool_labels(res: ResourceView) -> Mapping[str, Any]:
    if res.type == EKS_NODE_GROUP:
        return get(res.props, "labels", default={})
    return get(res.props, "spec", "template", "metadata", "labels", default={})


def nodepool_requirement(res: ResourceView, key: str) -> list[str] | None:
    """Values of an `In` requirement on a Karpenter NodePool, None when unconstrained."""
    for req in as_list(get(res.props, "spec", "template", "spec", "requirements")):
        if get(req, "key") == key and get(req, "operator") == "In":
            return [str(v) for v in as_list(get(req, "values"))]
    return None


def pool_instance_types(res: ResourceView) -> list[str]:
    if res.type == EKS_NODE_GROUP:
        return [str(t) for t in as_list(get(res.props, "instanceTypes"))]
    return nodepool_requirement(res, "node.kubernetes.io/instance-type") or []


def pool_families(res: ResourceView) -> list[str]:
    fams = {family(t) for t in pool_instance_types(res)}
    if res.type == KARPENTER_NODEPOOL:
        fams |= {
            f.lower() for f in nodepool_requirement(res, "karpenter.k8s.aws/instance-family") or []
        }
    return sorted(fams)


def is_gpu_pool(res: ResourceView) -> bool:
    if res.type not in POOL_TYPES:
        return False
    if labels.LABEL_GPU_MODEL in pool_labels(res):
        return True
    if set(pool_families(res)) & gpu_families():
        return True
    if res.type == EKS_NODE_GROUP:
        ami = str(get(res.props, "amiType", default=""))
        return "NVIDIA" in ami or "GPU" in ami
    if get(res.props, "spec", "limits", labels.GPU_RESOURCE) is not None:
        return True
    return any(
        str(get(r, "key", default="")).startswith("karpenter.k8s.aws/instance-gpu")
        for r in as_list(get(res.props, "spec", "template", "spec", "requirements"))
    )


def pool_capacity_types(res: ResourceView) -> set[str]:
    """Normalised to {'on-demand', 'spot', 'reserved'}; EKS default is on-demand, Karpenter too."""
    if res.type == EKS_NODE_GROUP:
        raw = str(get(res.props, "capacityType", default="ON_DEMAND"))
        return {{"SPOT": "spot", "CAPACITY_BLOCK": "reserved"}.get(raw, "on-demand")}
    values = nodepool_requirement(res, "karpenter.sh/capacity-type") or ["on-demand"]
    return {v.lower() for v in values}


def pool_taints(res: ResourceView) -> list[Mapping[str, Any]]:
    if res.type == EKS_NODE_GROUP:
        return as_list(get(res.props, "taints"))
    return as_list(get(res.props, "spec", "template", "spec", "taints"))


def is_serving_pool(res: ResourceView) -> bool:
    return get(pool_labels(res), labels.LABEL_WORKLOAD) == "serving"


def pool_max_nodes(res: ResourceView) -> float | None:
    if res.type == EKS_NODE_GROUP:
        return as_number(get(res.props, "scalingConfig", "maxSize"))
    return as_number(get(res.props, "spec", "limits", "nodes"))


# ---------------------------------------------------------------- pod templates


def pod_specs(res: ResourceView) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, podSpec) for every pod template a workload resource carries."""
    p = res.props
    if res.type in (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, JOB):
        yield "spec.template.spec", get(p, "spec", "template", "spec", default={})
    elif res.type == CRON_JOB:
        yield (
            "spec.jobTemplate.spec.template.spec",
            get(p, "spec", "jobTemplate", "spec", "template", "spec", default={}),
        )
    elif res.type == POD:
        yield "spec", get(p, "spec", default={})
    elif res.type in (RAY_SERVICE, RAY_CLUSTER, RAY_JOB):
        yield from ray_groups(res)


def ray_cluster_spec(res: ResourceView) -> Mapping[str, Any]:
    key = {RAY_SERVICE: "rayClusterConfig", RAY_JOB: "rayClusterSpec"}.get(res.type)
    spec = get(res.props, "spec", default={})
    return get(spec, key, default={}) if key else spec


def ray_groups(res: ResourceView) -> Iterator[tuple[str, Mapping[str, Any]]]:
    cluster = ray_cluster_spec(res)
    yield "headGroupSpec", get(cluster, "headGroupSpec", "template", "spec", default={})
    for i, group in enumerate(as_list(get(cluster, "workerGroupSpecs"))):
        name = get(group, "groupName", default=str(i))
        yield f"workerGroupSpecs[{name}]", get(group, "template", "spec", default={})


def containers(pod_spec: Mapping[str, Any], init: bool = True) -> list[Mapping[str, Any]]:
    keys = ("containers", "initContainers") if init else ("containers",)
    return [c for k in keys for c in as_list(get(pod_spec, k))]


def container_gpus(container: Mapping[str, Any]) -> float:
    limit = as_number(get(container, "resources", "limits", labels.GPU_RESOURCE))
    request = as_number(get(container, "resources", "requests", labels.GPU_RESOURCE))
    return max(limit or 0.0, request or 0.0)


def pod_gpus(pod_spec: Mapping[str, Any]) -> float:
    return sum(container_gpus(c) for c in containers(pod_spec, init=False))


def tolerates_gpu_taint(pod_spec: Mapping[str, Any]) -> bool:
    for tol in as_list(get(pod_spec, "tolerations")):
        key, op = get(tol, "key"), get(tol, "operator", default="Equal")
        effect = get(tol, "effect", default="")
        if effect not in ("", labels.GPU_TAINT_EFFECT):
            continue
        if key is None and op == "Exists":
            return True
        if key == labels.GPU_TAINT_KEY and (
            op == "Exists" or get(tol, "value") == labels.GPU_TAINT_VALUE
        ):
            return True
    return False


def allowed_pools(pod_spec: Mapping[str, Any]) -> set[str] | None:
    """The GPU pools (`tandem.dev/pool` values) a pod may schedule on, from its nodeSelector and
    required node affinity; None when neither constrains the pool label."""
    allowed: set[str] | None = None
    selected = get(pod_spec, "nodeSelector", labels.LABEL_POOL)
    if selected is not None:
        allowed = {str(selected)}
    terms = as_list(
        get(
            pod_spec,
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "nodeSelectorTerms",
        )
    )
    term_pools: set[str] = set()
    for term in terms:  # terms are ORed: a pod may land on any term's pools
        pools = None
        for expr in as_list(get(term, "matchExpressions")):
            if get(expr, "key") == labels.LABEL_POOL and get(expr, "operator") == "In":
                pools = {str(v) for v in as_list(get(expr, "values"))}
        if pools is None:
            return allowed  # a term without a pool constraint admits any pool
        term_pools |= pools
    if terms:
        allowed = term_pools if allowed is None else allowed & term_pools
    return allowed
