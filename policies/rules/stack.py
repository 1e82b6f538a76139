"""Stack-level rules: cost ceiling, required tags, GPU software and monitoring, the review gate.

These need more than one resource at a time: a GPU pool is only useful with a device plugin, a
budget is a sum over pools, and a use case's review lives on a manifest next to its component.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from policies import review_gate
from policies.framework import (
    Finding,
    ResourceView,
    as_number,
    each,
    get,
    guard,
    k8s_labels,
    stack_rule,
)
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels, review
from vocabulary.catalog import HOURS_PER_MONTH

# AWS resource types that accept `tags` (the ones Tandem creates, plus common neighbours).
TAGGABLE_AWS_TYPES = frozenset(
    {
        c.EKS_CLUSTER,
        c.EKS_NODE_GROUP,
        c.LAUNCH_TEMPLATE,
        c.EBS_VOLUME,
        "aws:eks/addon:Addon",
        "aws:eks/podIdentityAssociation:PodIdentityAssociation",
        "aws:eks/accessEntry:AccessEntry",
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/eip:Eip",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/placementGroup:PlacementGroup",
        "aws:ec2/instance:Instance",
        "aws:iam/role:Role",
        "aws:iam/policy:Policy",
        "aws:iam/instanceProfile:InstanceProfile",
        "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
        "aws:kms/key:Key",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketV2:BucketV2",
        "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:elasticache/subnetGroup:SubnetGroup",
        "aws:ecr/repository:Repository",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:dynamodb/table:Table",
        "aws:secretsmanager/secret:Secret",
        "aws:sqs/queue:Queue",
        "aws:budgets/budget:Budget",
    }
)


def _default_tags(res: ResourceView) -> Mapping[str, Any]:
    """Tags the AWS provider adds to every resource (`defaultTags`; JSON string in provider inputs)."""
    dt = get(res.provider_props or {}, "defaultTags")
    if isinstance(dt, str):
        try:
            dt = json.loads(dt)
        except json.JSONDecodeError:
            return {}
    tags = get(dt, "tags", default={})
    return tags if isinstance(tags, Mapping) else {}


def _is_taggable(res: ResourceView) -> bool:
    return res.type in TAGGABLE_AWS_TYPES or (res.type.startswith("aws:") and "tags" in res.props)


@stack_rule(
    "required-tags",
    f"Every taggable AWS resource carries the tags {', '.join(labels.REQUIRED_TAGS)}.",
    "medium",
    "Pass tags (or the AWS provider's defaultTags) with team, cost-center, use-case and environment; "
    "platform-wide resources use use-case: platform. FinOps allocates every dollar by these tags.",
    tags=("cost", "governance"),
)
def required_tags(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    def check(res: ResourceView) -> Iterator[Finding]:
        # tagsAll: what the engine reports after merging the provider's defaultTags (outputs).
        tags = {
            **_default_tags(res),
            **(get(res.props, "tagsAll", default={}) or {}),
            **(get(res.props, "tags", default={}) or {}),
        }
        missing = [t for t in labels.REQUIRED_TAGS if not str(tags.get(t) or "").strip()]
        if missing:
            yield Finding(f"{res.type.split(':')[-1]} '{res.name}' lacks tags {missing}", res.urn)

    return [f for res in resources if _is_taggable(res) for f in guard(check, res)]


# ---------------------------------------------------------------- cost at max scale


def pool_max_monthly_usd(res: ResourceView) -> tuple[float | None, str]:
    """(USD per month with the pool at its cap, how it was priced); None when it can't be priced."""
    types = c.pool_instance_types(res)
    if not types and res.type == c.KARPENTER_NODEPOOL:
        fams = set(c.pool_families(res))
        types = [t for t in c.load_catalog().names() if c.family(t) in fams]
    entries = [e for t in types if (e := c.catalog_entry(t)) is not None]
    if not entries:
        return None, f"instance types {types or '(unconstrained)'} are not in the GPU catalog"
    if res.type == c.EKS_NODE_GROUP:
        nodes = c.pool_max_nodes(res)
        if not nodes:
            return None, "no scalingConfig.maxSize"
        top = max(entries, key=lambda e: e.usd_per_hour)
        return nodes * top.usd_per_hour * HOURS_PER_MONTH, f"{nodes:g} x {top.name}"
    gpus = as_number(get(res.props, "spec", "limits", labels.GPU_RESOURCE))
    if not gpus:
        return None, f"no spec.limits['{labels.GPU_RESOURCE}']"
    top = max(entries, key=lambda e: e.usd_per_gpu_hour)
    return gpus * top.usd_per_gpu_hour * HOURS_PER_MONTH, f"{gpus:g} GPUs at {top.name} rates"


@stack_rule(
    "stack-gpu-budget",
    "The GPU pools' monthly cost at maximum scale fits the stack's budget (prices from the GPU catalog).",
    "high",
    "Lower maxNodes / the NodePool GPU limit, choose a cheaper instance type, or raise "
    "tandem:budget.monthlyUsd with FinOps' sign-off.",
    tags=("cost",),
)
def stack_gpu_budget(resources: Sequence[ResourceView], settings: PolicySettings) -> list[Finding]:
    budget = settings.monthly_budget_usd
    if budget is None:
        return []
    total, lines, findings = 0.0, [], []
    for pool in each(resources, c.POOL_TYPES):
        if not c.is_gpu_pool(pool):
            continue
        usd, how = pool_max_monthly_usd(pool)
        if usd is None:
            findings.append(Finding(f"GPU pool '{pool.name}' cannot be priced: {how}", pool.urn))
            continue
        total += usd
        lines.append(f"{pool.name} ${usd:,.0f} ({how})")
    if total > budget:
        findings.append(
            Finding(
                f"GPU pools cost ${total:,.0f}/month at max scale, over the ${budget:,.0f} budget: "
                + "; ".join(lines)
            )
        )
    return findings


# ---------------------------------------------------------------- GPU software + monitoring


def _helm_chart(res: ResourceView) -> str:
    return str(get(res.props, "chart", default="")).rsplit("/", 1)[-1]


def _images(res: ResourceView) -> list[str]:
    return [
        str(get(ctr, "image", default=""))
        for _, spec in c.pod_specs(res)
        for ctr in c.containers(spec)
    ]


def _releases(resources: Sequence[ResourceView], chart: str) -> list[ResourceView]:
    return [
        r for r in each(resources, (c.HELM_RELEASE, c.HELM_CHART_V4)) if _helm_chart(r) == chart
    ]


def _daemonsets_running(resources: Sequence[ResourceView], image_part: str) -> bool:
    return any(image_part in img for ds in each(resources, (c.DAEMON_SET,)) for img in _images(ds))


def _gpu_pools(resources: Sequence[ResourceView]) -> list[ResourceView]:
    return [r for r in each(resources, c.POOL_TYPES) if c.is_gpu_pool(r)]


@stack_rule(
    "gpu-device-plugin",
    "A stack with GPU pools installs the NVIDIA device plugin or the GPU operator.",
    "critical",
    "Set tandem:gpuSoftware.mode (device-plugin or gpu-operator); without it nodes advertise no "
    "nvidia.com/gpu and every GPU pod stays Pending while the nodes bill.",
    tags=("gpu-pools",),
)
def gpu_device_plugin(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    pools = _gpu_pools(resources)
    if not pools:
        return []
    if _releases(resources, "nvidia-device-plugin") or _releases(resources, "gpu-operator"):
        return []
    if _daemonsets_running(resources, "k8s-device-plugin"):
        return []
    names = ", ".join(p.name for p in pools)
    return [
        Finding(f"GPU pools ({names}) but no NVIDIA device plugin or GPU operator in the stack")
    ]


def _dcgm_monitored(resources: Sequence[ResourceView]) -> tuple[bool, bool]:
    """(exporter present, scraped by a ServiceMonitor/PodMonitor)."""
    exporter, monitored = False, False
    for rel in _releases(resources, "dcgm-exporter"):
        exporter = True
        monitored |= (
            get(rel.props, "values", "serviceMonitor", "enabled", default=True) is not False
        )
    for rel in _releases(resources, "gpu-operator"):
        if get(rel.props, "values", "dcgmExporter", "enabled", default=True) is not False:
            exporter = True
            monitored |= (
                get(rel.props, "values", "dcgmExporter", "serviceMonitor", "enabled") is True
            )
    exporter |= _daemonsets_running(resources, "dcgm-exporter")
    for mon in each(resources, (c.SERVICE_MONITOR, c.POD_MONITOR)):
        selector = get(mon.props, "spec", "selector", "matchLabels", default={})
        text = " ".join(
            [mon.name, *map(str, selector.values()), *map(str, k8s_labels(mon).values())]
        )
        monitored |= "dcgm" in text
    return exporter, monitored


@stack_rule(
    "gpu-dcgm-monitored",
    "A stack with GPU pools runs the DCGM exporter and a Prometheus monitor scrapes it.",
    "high",
    "Enable observability (tandem:observability.enabled) so the DCGM exporter and its ServiceMonitor "
    "are deployed; FinOps' utilisation and idle-cost reports read DCGM_FI_PROF_* from it.",
    tags=("gpu-pools", "observability"),
)
def gpu_dcgm_monitored(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    if not _gpu_pools(resources):
        return []
    exporter, monitored = _dcgm_monitored(resources)
    if not exporter:
        return [
            Finding(
                "GPU pools but no DCGM exporter: GPU utilisation and cost per team are invisible"
            )
        ]
    if not monitored:
        return [Finding("the DCGM exporter runs but no ServiceMonitor/PodMonitor scrapes it")]
    return []


# ---------------------------------------------------------------- the AI-initiative review gate


def _manifests(resources: Sequence[ResourceView]) -> list[ResourceView]:
    return [
        r
        for r in each(resources, (c.CONFIG_MAP,))
        if get(k8s_labels(r), labels.LABEL_COMPONENT) == review.MANIFEST_COMPONENT
    ]


def _review_of(manifest: ResourceView) -> Any:
    raw = get(manifest.props, "data", review.MANIFEST_KEY)
    return json.loads(raw) if isinstance(raw, str) else raw


@stack_rule(
    "usecase-review-gate",
    "Every use case passes the six-criteria AI-initiative review (strategic alignment, reusability, "
    "measurability, feasibility, data quality, maintainability).",
    "high",
    "Fill in the use-case file's review: section (run `tandem gate stacks/usecases/<name>.yaml` to see "
    "what is missing) and get it approved at the review meeting.",
    tags=("governance",),
)
def usecase_review_gate(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    findings: list[Finding] = []
    manifests = _manifests(resources)
    covered = {m.parent for m in manifests}
    for uc in each(resources, (labels.TOKEN_USE_CASE,)):
        if uc.urn not in covered:
            findings.append(Finding(f"use case '{uc.name}' registers no review manifest", uc.urn))

    def check(m: ResourceView) -> Iterator[Finding]:
        name = get(k8s_labels(m), labels.LABEL_USE_CASE, default=m.name)
        try:
            results = review_gate.evaluate(_review_of(m), use_case=name)
        except (ValueError, TypeError) as exc:  # malformed JSON or a shape pydantic rejects
            yield Finding(f"use case '{name}': unreadable review manifest ({exc})", m.urn)
            return
        for r in results:
            if not r.ok:
                yield Finding(f"use case '{name}' fails {r.criterion}: {r.reason}", m.urn)

    for m in manifests:
        findings += guard(check, m)
    return findings


RULES = [
    required_tags,
    stack_gpu_budget,
    gpu_device_plugin,
    gpu_dcgm_monitored,
    usecase_review_gate,
]
