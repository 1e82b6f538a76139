"""Kubernetes workload baseline: GPU scheduling, pinned images, resources, pod security, exposure.

Applies to every pod template Tandem renders: Deployments, StatefulSets, DaemonSets, Jobs,
CronJobs, Pods and the head / worker groups of KubeRay RayServices, RayClusters and RayJobs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.framework import ResourceView, as_list, get, resource_rule
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels


def _containers(res: ResourceView) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(where, pod spec, container) for every container of every pod template."""
    for where, spec in c.pod_specs(res):
        for ctr in c.containers(spec):
            yield f"{where}/{get(ctr, 'name', default='?')}", spec, ctr


@resource_rule(
    "gpu-pod-scheduling",
    "Pods that use GPUs set an nvidia.com/gpu limit and tolerate the GPU taint; others don't tolerate it.",
    "high",
    "Put nvidia.com/gpu in resources.limits (requests alone are ignored for extended resources) and "
    "add vocabulary.labels.gpu_toleration() to the pod's tolerations; remove the toleration from pods "
    "that need no GPU so they cannot pin a GPU node.",
    c.WORKLOAD_TYPES,
    tags=("gpu-pools", "workloads"),
)
def gpu_pod_scheduling(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for where, spec in c.pod_specs(res):
        ctrs = c.containers(spec, init=False)
        for ctr in ctrs:
            requested = get(ctr, "resources", "requests", labels.GPU_RESOURCE)
            if (
                requested is not None
                and get(ctr, "resources", "limits", labels.GPU_RESOURCE) is None
            ):
                yield f"{res.name} {where}/{get(ctr, 'name')}: requests {labels.GPU_RESOURCE} without a limit"
        gpus = c.pod_gpus(spec)
        if gpus > 0 and not c.tolerates_gpu_taint(spec):
            yield f"{res.name} {where}: uses {gpus:g} GPU(s) but does not tolerate the {labels.GPU_TAINT_KEY} taint"
        elif gpus == 0 and res.type != c.DAEMON_SET and c.tolerates_gpu_taint(spec) and ctrs:
            yield f"{res.name} {where}: tolerates the GPU taint but uses no GPU (would pin a GPU node)"


def _image_problem(image: str) -> str | None:
    if not image:
        return "has no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} is untagged (means :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} uses :latest"
    return None


@resource_rule(
    "image-pinned",
    "Container images are pinned to a tag (not :latest) or a digest.",
    "high",
    "Pin the image in vocabulary/pins.py (tag, ideally with @sha256 digest) and import it from there.",
    c.WORKLOAD_TYPES,
    tags=("workloads", "supply-chain"),
)
def image_pinned(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for where, _spec, ctr in _containers(res):
        if problem := _image_problem(str(get(ctr, "image", default=""))):
            yield f"{res.name} {where}: {problem}"


@resource_rule(
    "resources-set",
    "Every container requests CPU and memory and sets a memory limit.",
    "medium",
    "Set resources.requests.cpu/memory and resources.limits.memory (CPU limits are optional: they "
    "throttle tokenizers and Ray's raylet). Size them from the GPU pool's contract.",
    c.WORKLOAD_TYPES,
    tags=("workloads",),
)
def resources_set(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for where, _spec, ctr in _containers(res):
        missing = [
            path
            for path in ("requests.cpu", "requests.memory", "limits.memory")
            if get(ctr, "resources", *path.split(".")) is None
        ]
        if missing:
            yield f"{res.name} {where}: missing resources {missing}"


@resource_rule(
    "pod-security",
    "Containers run as non-root, without privilege escalation, and are not privileged.",
    "high",
    "Set securityContext.runAsNonRoot: true (pod or container) and, per container, "
    "allowPrivilegeEscalation: false and no privileged: true. Ray images run as uid 1000.",
    c.WORKLOAD_TYPES,
    tags=("security", "workloads"),
)
def pod_security(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for where, spec, ctr in _containers(res):
        pod_ctx, ctx = (
            get(spec, "securityContext", default={}),
            get(ctr, "securityContext", default={}),
        )
        non_root = get(ctx, "runAsNonRoot", default=get(pod_ctx, "runAsNonRoot"))
        if non_root is not True:
            yield f"{res.name} {where}: runAsNonRoot is not true"
        if get(ctx, "allowPrivilegeEscalation") is not False:
            yield f"{res.name} {where}: allowPrivilegeEscalation is not false"
        if get(ctx, "privileged") is True:
            yield f"{res.name} {where}: runs privileged"


TLS_ANNOTATIONS = (
    "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
    "service.beta.kubernetes.io/aws-load-balancer-ssl-ports",
)
INTERNAL_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
}


def is_internal(annotations: Mapping[str, Any]) -> bool:
    return any(str(annotations.get(k, "")).lower() == v for k, v in INTERNAL_ANNOTATIONS.items())


@resource_rule(
    "loadbalancer-service",
    "A LoadBalancer Service terminates TLS and, when internet-facing, restricts source ranges.",
    "critical",
    "Add the service.beta.kubernetes.io/aws-load-balancer-ssl-cert annotation (ACM ARN) and "
    "spec.loadBalancerSourceRanges (never 0.0.0.0/0), or make it internal / put it behind the "
    "TLS ingress.",
    (c.SERVICE,),
    tags=("security", "network"),
)
def loadbalancer_service(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(res.props, "spec", "type") != "LoadBalancer":
        return
    ann = get(res.props, "metadata", "annotations", default={})
    if not get(ann, TLS_ANNOTATIONS[0]):
        yield f"LoadBalancer service '{res.name}' has no TLS certificate annotation (plaintext traffic)"
    if is_internal(ann):
        return
    ranges = [str(r) for r in as_list(get(res.props, "spec", "loadBalancerSourceRanges"))]
    if not ranges or any(r in ("0.0.0.0/0", "::/0") for r in ranges):
        yield f"LoadBalancer service '{res.name}' is open to the internet (loadBalancerSourceRanges {ranges or 'unset'})"


RULES = [gpu_pod_scheduling, image_pinned, resources_set, pod_security, loadbalancer_service]
