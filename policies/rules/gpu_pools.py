"""GPU pool hygiene: EKS managed node groups, launch templates and Karpenter NodePools/NodeClasses.

A GPU node costs 10-100x a CPU node. These rules keep ordinary pods off it (taint), make sure it
boots with a working driver (AMI), cap how many the autoscaler may buy (limits), keep production
serving off capacity AWS can reclaim without a fallback, stop Karpenter from evicting model
replicas to save a node (WhenEmpty), and apply the EC2 security baseline (IMDSv2, encryption).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from policies.framework import (
    Finding,
    ResourceView,
    as_list,
    as_number,
    each,
    get,
    guard,
    resource_rule,
    stack_rule,
    truthy,
)
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels


@resource_rule(
    "gpu-pool-taint",
    f"Every GPU pool carries the {labels.GPU_TAINT_KEY}={labels.GPU_TAINT_VALUE}:NoSchedule taint.",
    "high",
    "Add the taint from vocabulary.labels (GPU_TAINT_KEY/VALUE/EFFECT) to the node group's `taints` "
    "(effect NO_SCHEDULE) or the NodePool's spec.template.spec.taints (effect NoSchedule).",
    c.POOL_TYPES,
    tags=("gpu-pools",),
)
def gpu_pool_taint(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not c.is_gpu_pool(res):
        return
    want = "NO_SCHEDULE" if res.type == c.EKS_NODE_GROUP else labels.GPU_TAINT_EFFECT
    for taint in c.pool_taints(res):
        if get(taint, "key") == labels.GPU_TAINT_KEY and get(taint, "effect") == want:
            return
    yield (
        f"GPU pool '{res.name}' has no {labels.GPU_TAINT_KEY}:{want} taint, so any pod can "
        "land on (and pin) an expensive GPU node"
    )


@resource_rule(
    "gpu-pool-ami-type",
    "EKS GPU node groups boot an NVIDIA AMI (AL2023 or Bottlerocket NVIDIA variants).",
    "high",
    f"Set amiType to one of {', '.join(c.NVIDIA_AMI_TYPES)}; AL2_x86_64_GPU is end-of-life.",
    (c.EKS_NODE_GROUP,),
    tags=("gpu-pools",),
)
def gpu_pool_ami_type(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not c.is_gpu_pool(res):
        return
    ami = get(res.props, "amiType")
    if ami == "CUSTOM" and get(res.props, "launchTemplate") is not None:
        return  # the launch template names the image; the GPU team owns that choice
    if ami not in c.NVIDIA_AMI_TYPES:
        yield f"GPU node group '{res.name}' uses amiType {ami or '(default AL2023 without drivers)'}"


@resource_rule(
    "gpu-pool-instance-family",
    "GPU pools only use instance families in the stack's allow-list.",
    "medium",
    "Use an allowed family or add it to tandem:policies.allowedInstanceFamilies for this stack "
    "(a budget decision, reviewed with FinOps).",
    c.POOL_TYPES,
    tags=("gpu-pools", "cost"),
)
def gpu_pool_instance_family(res: ResourceView, settings: PolicySettings) -> Iterator[str]:
    allowed = {f.lower() for f in settings.allowed_instance_families}
    if not allowed or not c.is_gpu_pool(res):
        return
    fams = c.pool_families(res)
    if not fams:
        yield f"GPU pool '{res.name}' does not constrain instance families (allowed: {sorted(allowed)})"
    elif bad := [f for f in fams if f not in allowed]:
        yield f"GPU pool '{res.name}' uses {bad}, not in the allow-list {sorted(allowed)}"


@resource_rule(
    "gpu-pool-limits",
    "GPU pools cap their size: node groups set scalingConfig.maxSize, NodePools set an nvidia.com/gpu limit.",
    "high",
    "Set scalingConfig.maxSize on the node group, or spec.limits['nvidia.com/gpu'] (and cpu) on the "
    "NodePool; the stack-gpu-budget policy prices the pool at that maximum.",
    c.POOL_TYPES,
    tags=("gpu-pools", "cost"),
)
def gpu_pool_limits(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not c.is_gpu_pool(res):
        return
    if res.type == c.EKS_NODE_GROUP:
        if not (c.pool_max_nodes(res) or 0) > 0:
            yield f"GPU node group '{res.name}' has no scalingConfig.maxSize"
        return
    gpu_limit = as_number(get(res.props, "spec", "limits", labels.GPU_RESOURCE))
    if gpu_limit is None or gpu_limit <= 0:
        yield (
            f"Karpenter NodePool '{res.name}' has no spec.limits['{labels.GPU_RESOURCE}']: "
            "it may launch GPU nodes without bound"
        )


@resource_rule(
    "gpu-pool-serving-disruption",
    "Karpenter NodePools for serving consolidate only empty nodes (WhenEmpty).",
    "high",
    "Set spec.disruption.consolidationPolicy: WhenEmpty (and a consolidateAfter) on serving NodePools, "
    "so Karpenter never evicts a loaded model replica to repack nodes.",
    (c.KARPENTER_NODEPOOL,),
    tags=("gpu-pools", "serving"),
)
def gpu_pool_serving_disruption(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not (c.is_gpu_pool(res) and c.is_serving_pool(res)):
        return
    policy = get(
        res.props, "spec", "disruption", "consolidationPolicy", default="WhenEmptyOrUnderutilized"
    )
    if policy != "WhenEmpty":
        yield (
            f"serving NodePool '{res.name}' uses consolidationPolicy {policy}: Karpenter will "
            "evict model replicas (minutes of reload) to save a node"
        )


def _pool_desc(res: ResourceView) -> str:
    return f"{'node group' if res.type == c.EKS_NODE_GROUP else 'NodePool'} '{res.name}'"


def _pool_name(res: ResourceView) -> str:
    return str(get(c.pool_labels(res), labels.LABEL_POOL, default=res.name))


def _stable(pool: ResourceView) -> bool:
    """Capacity that is not reclaimed with two minutes' notice (on-demand, reserved)."""
    return bool(c.pool_capacity_types(pool) - {"spot"})


@stack_rule(
    "gpu-pool-spot-fallback",
    "Production serving workloads on spot-only pools can move to an on-demand (or reserved) pool.",
    "high",
    "Give the spot pool a fallbackPool (an on-demand pool of the same GPU; Tandem weights it lower "
    "in Karpenter and lets the workers schedule there through a required node affinity on both "
    "pools), allow both spot and on-demand in the NodePool's karpenter.sh/capacity-type "
    "requirement, or move the pool to on-demand.",
    production_only=True,
    tags=("gpu-pools", "serving"),
)
def gpu_pool_spot_fallback(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    pools = [r for r in each(resources, c.POOL_TYPES) if c.is_gpu_pool(r) and c.is_serving_pool(r)]
    by_name = {_pool_name(p): p for p in pools}
    spot_only = {name for name, p in by_name.items() if not _stable(p)}
    findings: list[Finding] = []
    targeted: set[str] = set()

    def check(res: ResourceView) -> Iterator[Finding]:
        for where, spec in c.pod_specs(res):
            allowed = c.allowed_pools(spec)
            if allowed is None or not (allowed & spot_only):
                continue
            targeted.update(allowed & spot_only)
            if not any(n in by_name and _stable(by_name[n]) for n in allowed):
                yield Finding(
                    f"{res.name} {where} runs only on spot pool(s) {sorted(allowed)}: when spot "
                    "capacity is reclaimed it has no on-demand pool to move to",
                    res.urn,
                )

    for res in each(resources, c.WORKLOAD_TYPES):
        findings += guard(check, res)
    if not any(_stable(p) for p in pools):
        findings += [
            Finding(
                f"serving {_pool_desc(by_name[n])} runs on spot only and no on-demand fallback "
                "pool exists",
                by_name[n].urn,
            )
            for n in sorted(spot_only - targeted)
        ]
    return findings


@resource_rule(
    "karpenter-ami-pinned",
    "Karpenter GPU node classes pin their AMI version instead of following @latest.",
    "medium",
    "Use a versioned alias from vocabulary/pins.py (KARPENTER_AMI_ALIAS, e.g. al2023@v20260714) and bump "
    "it deliberately; @latest rolls every GPU node (and its NVIDIA driver) whenever AWS publishes.",
    (c.KARPENTER_NODECLASS,),
    tags=("gpu-pools", "reliability"),
)
def karpenter_ami_pinned(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for term in as_list(get(res.props, "spec", "amiSelectorTerms")):
        alias = str(get(term, "alias", default=""))
        if alias.endswith("@latest"):
            yield f"EC2NodeClass '{res.name}' follows {alias}: drift replaces nodes on every AMI release"


# ---------------------------------------------------------------- EC2 baseline


def _metadata_options(res: ResourceView) -> Mapping[str, Any] | None:
    if res.type == c.LAUNCH_TEMPLATE:
        return get(res.props, "metadataOptions")
    return get(res.props, "spec", "metadataOptions")


@resource_rule(
    "imdsv2-required",
    "Nodes require IMDSv2 (session tokens) for the instance metadata service.",
    "high",
    "Set metadataOptions.httpTokens: required (and httpPutResponseHopLimit: 1 or 2 for pods that "
    "need it) on the launch template / EC2NodeClass.",
    (c.LAUNCH_TEMPLATE, c.KARPENTER_NODECLASS),
    tags=("security", "gpu-pools"),
)
def imdsv2_required(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    # Karpenter defaults to httpTokens=required; a launch template defaults to optional.
    default = "required" if res.type == c.KARPENTER_NODECLASS else "optional"
    tokens = get(_metadata_options(res) or {}, "httpTokens", default=default)
    if tokens != "required":
        yield f"'{res.name}' allows IMDSv1 (httpTokens={tokens}): pods can steal the node role's credentials"


@resource_rule(
    "encrypted-volumes",
    "Node root and data volumes are encrypted at rest.",
    "high",
    "Set blockDeviceMappings[].ebs.encrypted: true (with a kmsKeyId where required) on every mapping.",
    (c.LAUNCH_TEMPLATE, c.KARPENTER_NODECLASS, c.EBS_VOLUME),
    tags=("security", "gpu-pools"),
)
def encrypted_volumes(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if res.type == c.EBS_VOLUME:
        if not truthy(get(res.props, "encrypted")):
            yield f"EBS volume '{res.name}' is not encrypted"
        return
    mappings = as_list(
        get(res.props, "blockDeviceMappings") or get(res.props, "spec", "blockDeviceMappings")
    )
    if not mappings and res.type == c.LAUNCH_TEMPLATE:
        yield f"launch template '{res.name}' declares no block device, so the AMI default (unencrypted) applies"
    for m in mappings:
        ebs = get(m, "ebs")
        if ebs is not None and not truthy(get(ebs, "encrypted")):
            yield f"'{res.name}' volume {get(m, 'deviceName', default='?')} is not encrypted"


RULES = [
    gpu_pool_taint,
    gpu_pool_ami_type,
    gpu_pool_instance_family,
    gpu_pool_limits,
    gpu_pool_serving_disruption,
    gpu_pool_spot_fallback,
    karpenter_ami_pinned,
    imdsv2_required,
    encrypted_volumes,
]
