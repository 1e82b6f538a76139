"""The stack's cost envelope: what it bills per month at minimum and at maximum scale.

Plan-time and pure. GPU pools (`pools`) are priced from the GPU catalog; everything else the
stack creates (`by_component`: the EKS control plane, NAT gateways, system nodes, node volumes,
ElastiCache, ECR storage, control-plane logs, ...) from vocabulary/costs.yaml. The totals cover
both, so the plan's range is what the bill shows at that scale. A Karpenter pool that may launch
several instance types is priced at its most expensive type, so the maximum is a ceiling a budget
can be checked against, never an underestimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vocabulary.catalog import HOURS_PER_MONTH, load_catalog
from vocabulary.config import GpuPoolConfig, PlatformConfig, image_services
from vocabulary.costs import eks_usd_per_hour, load_costs
from vocabulary.pins import ECR_KEEP_IMAGES as KEEP_IMAGES

DAYS_PER_MONTH = HOURS_PER_MONTH / 24
ELASTICACHE_NODES = 2  # components/redis.py: a primary and a Multi-AZ replica
ELASTICACHE_NODE_TYPE = "cache.t4g.small"  # components/redis.py ElastiCacheArgs.node_type
SYSTEM_VOLUME_GIB = 50  # components/cluster.py: the system node group's launch template
GPU_VOLUME_MBPS = 250  # components/aws_common.py: the launch templates' gp3 throughput


@dataclass(frozen=True)
class PoolCost:
    pool: str
    instance_type: str
    capacity_type: str
    min_nodes: int
    max_nodes: int
    gpus_per_node: int
    hourly_usd_per_node: float
    min_monthly_usd: float
    max_monthly_usd: float


@dataclass(frozen=True)
class ComponentCost:
    """One billable part of the stack besides GPU instances, with how it was priced."""

    component: str
    min_monthly_usd: float
    max_monthly_usd: float
    detail: str
    price_source: str


@dataclass(frozen=True)
class CostEnvelope:
    pools: list[PoolCost]
    min_monthly_usd: float
    max_monthly_usd: float
    budget_monthly_usd: float | None
    price_source: str
    price_date: str
    by_component: list[ComponentCost] = field(default_factory=list)

    @property
    def within_budget(self) -> bool | None:
        if self.budget_monthly_usd is None:
            return None
        return self.max_monthly_usd <= self.budget_monthly_usd

    def to_dict(self) -> dict:
        return {
            "pools": [asdict(p) for p in self.pools],
            "by_component": [asdict(c) for c in self.by_component],
            "min_monthly_usd": self.min_monthly_usd,
            "max_monthly_usd": self.max_monthly_usd,
            "budget_monthly_usd": self.budget_monthly_usd,
            "within_budget": self.within_budget,
            "price_source": self.price_source,
            "price_date": self.price_date,
            "hours_per_month": HOURS_PER_MONTH,
        }


def pool_cost(pool: GpuPoolConfig) -> PoolCost:
    """On-demand list price for every capacity type: spot prices float, so the envelope shows
    the price a spot pool pays when spot is unavailable and it must be replaced."""
    inst = load_catalog().get(pool.primary_instance)
    monthly_per_node = inst.usd_per_hour * HOURS_PER_MONTH
    return PoolCost(
        pool=pool.name,
        instance_type=inst.name,
        capacity_type=pool.capacity_type,
        min_nodes=pool.min_nodes,
        max_nodes=pool.max_nodes,
        gpus_per_node=inst.gpus,
        hourly_usd_per_node=inst.usd_per_hour,
        min_monthly_usd=round(pool.min_nodes * monthly_per_node, 2),
        max_monthly_usd=round(pool.max_nodes * monthly_per_node, 2),
    )


def _line(name: str, lo: float, hi: float, detail: str, section: str) -> ComponentCost:
    source = load_costs()[section]["source"]
    return ComponentCost(name, round(lo, 2), round(hi, 2), detail, source)


def _gp3_month(gib: float, mbps: int = 0) -> float:
    ebs = load_costs()["ebs"]
    extra = max(0, mbps - ebs["gp3_free_mbps"]) * ebs["gp3_usd_per_mbps_month"]
    return gib * ebs["gp3_usd_per_gb_month"] + extra


def _cluster(config: PlatformConfig) -> list[ComponentCost]:
    costs = load_costs()
    version = config.cluster.kubernetes_version
    hourly, support = eks_usd_per_hour(version)
    lines = [
        _line(
            "eks-control-plane",
            hourly * HOURS_PER_MONTH,
            hourly * HOURS_PER_MONTH,
            f"Kubernetes {version}, {support}: ${hourly:g}/h",
            "eks",
        ),
        _line(
            "eks-secrets-kms-key",
            costs["kms"]["usd_per_key_month"],
            costs["kms"]["usd_per_key_month"],
            "one customer-managed key (Secrets envelope encryption)",
            "kms",
        ),
    ]
    logs = costs["cloudwatch_logs"]
    types = len(config.cluster.log_types)
    per_gb = logs["usd_per_gb_ingested"] + logs["usd_per_gb_month_stored"] * 3  # 90-day retention
    gb = {k: v * types * DAYS_PER_MONTH for k, v in logs["assume_gb_per_log_type_day"].items()}
    lines.append(
        _line(
            "eks-control-plane-logs",
            gb["min"] * per_gb,
            gb["max"] * per_gb,
            f"{types} log types, {gb['min']:.0f}-{gb['max']:.0f} GB/month ingested, kept 90 days",
            "cloudwatch_logs",
        )
    )
    system = config.cluster.system_node_group
    node = costs["ec2"]["usd_per_hour"][system.instance_type] * HOURS_PER_MONTH
    node += _gp3_month(SYSTEM_VOLUME_GIB, GPU_VOLUME_MBPS)
    lines.append(
        _line(
            "system-nodes",
            system.min_nodes * node,
            system.max_nodes * node,
            f"{system.min_nodes}-{system.max_nodes} x {system.instance_type} with "
            f"{SYSTEM_VOLUME_GIB} GiB gp3",
            "ec2",
        )
    )
    return lines


def _network(config: PlatformConfig) -> list[ComponentCost]:
    vpc = load_costs()["vpc"]
    nats = 1 if config.network.single_nat_gateway else config.network.az_count
    hourly = nats * (vpc["nat_usd_per_hour"] + vpc["public_ipv4_usd_per_hour"])
    max_gpu_nodes = sum(p.max_nodes for p in config.gpu_pools)
    data_gb = max_gpu_nodes * vpc["assume_nat_gb_per_gpu_node_month"]
    return [
        _line(
            "nat-gateways",
            hourly * HOURS_PER_MONTH,
            hourly * HOURS_PER_MONTH + data_gb * vpc["nat_usd_per_gb"],
            f"{nats} NAT gateway(s) with an Elastic IP; up to {data_gb:,} GB/month processed "
            f"({vpc['assume_nat_gb_per_gpu_node_month']} GB per GPU node at full scale)",
            "vpc",
        )
    ]


def _gpu_volumes(config: PlatformConfig) -> list[ComponentCost]:
    pools = [p for p in config.gpu_pools if p.mechanism != "existing"]
    if not pools:
        return []
    lo = sum(p.min_nodes * _gp3_month(p.root_volume_gib, GPU_VOLUME_MBPS) for p in pools)
    hi = sum(p.max_nodes * _gp3_month(p.root_volume_gib, GPU_VOLUME_MBPS) for p in pools)
    return [
        _line(
            "gpu-node-volumes",
            lo,
            hi,
            "each GPU node's encrypted gp3 volume (rootVolumeGib, 250 MB/s)",
            "ebs",
        )
    ]


def _redis(config: PlatformConfig, use_cases: Sequence[Any]) -> list[ComponentCost]:
    """ElastiCache replication groups: the gateway's (gateway.redis: elasticache), the feature
    store's online store (featureStore.redis: elasticache) and, in prod on EKS, Ray's GCS fault
    tolerance."""
    per_group = (
        ELASTICACHE_NODES
        * load_costs()["elasticache"]["usd_per_node_hour"][ELASTICACHE_NODE_TYPE]
        * HOURS_PER_MONTH
    )
    groups = []
    if "gateway" in image_services(config, list(use_cases)) and config.gateway.redis == (
        "elasticache"
    ):
        groups.append("gateway")
    if config.feature_store is not None and config.feature_store.redis == "elasticache":
        groups.append("feature-store")
    if use_cases and config.environment == "prod":
        groups.append("ray-gcs")
    return [
        _line(
            f"elasticache-{g}",
            per_group,
            per_group,
            f"{ELASTICACHE_NODES} x {ELASTICACHE_NODE_TYPE} (primary + Multi-AZ replica)",
            "elasticache",
        )
        for g in groups
    ]


def _observability(config: PlatformConfig) -> list[ComponentCost]:
    obs = config.observability
    if not obs.enabled:
        return []
    ebs = load_costs()["ebs"]
    per_gb = ebs["gp3_usd_per_gb_month"] if obs.storage_class else ebs["gp2_usd_per_gb_month"]
    kind = obs.storage_class or "cluster default (gp2 on EKS)"
    cost = obs.storage_gib * per_gb
    return [
        _line("prometheus-volume", cost, cost, f"{obs.storage_gib} GiB PVC, class {kind}", "ebs")
    ]


def _karpenter(config: PlatformConfig) -> list[ComponentCost]:
    if not any(p.mechanism == "karpenter" for p in config.gpu_pools):
        return []
    sqs = load_costs()["sqs"]
    cost = sqs["assume_requests_per_month"] / 1e6 * sqs["usd_per_million_requests"]
    return [
        _line(
            "karpenter-interruption-queue",
            cost,
            cost,
            f"{sqs['assume_requests_per_month']:,} long-poll requests/month",
            "sqs",
        )
    ]


def _registry(config: PlatformConfig) -> list[ComponentCost]:
    """The model registry's RDS Postgres (two instances and volumes when Multi-AZ) and its
    artifact bucket (components/lifecycle.py)."""
    reg = config.registry
    if not reg.enabled:
        return []
    costs = load_costs()
    db = reg.database
    copies = 2 if (db.multi_az if db.multi_az is not None else config.environment == "prod") else 1
    rds = costs["rds"]
    monthly = copies * (
        rds["usd_per_hour"][db.instance_class] * HOURS_PER_MONTH
        + db.storage_gib * rds["gp3_usd_per_gb_month"]
    )
    s3 = costs["s3"]
    gb = s3["assume_registry_gb"]
    return [
        _line(
            "rds-model-registry",
            monthly,
            monthly,
            f"{db.instance_class} PostgreSQL, {db.storage_gib} GiB gp3"
            + (", Multi-AZ (2 instances)" if copies == 2 else ", single-AZ"),
            "rds",
        ),
        _line(
            "s3-model-registry",
            gb["min"] * s3["usd_per_gb_month"],
            gb["max"] * s3["usd_per_gb_month"],
            f"model versions in the artifact bucket, {gb['min']}-{gb['max']} GB stored",
            "s3",
        ),
    ]


def component_costs(config: PlatformConfig, use_cases: Sequence[Any] = ()) -> list[ComponentCost]:
    """Every billable resource of the stack besides GPU instances, by component."""
    lines: list[ComponentCost] = []
    if config.cluster.mode == "eks":
        lines += _cluster(config) + _network(config) + _gpu_volumes(config)
        lines += _redis(config, use_cases) + _ecr(config, use_cases) + _karpenter(config)
        lines += _registry(config)
    lines += _observability(config)
    return lines


def _ecr(config: PlatformConfig, use_cases: Sequence[Any]) -> list[ComponentCost]:
    """Images built into ECR (not the prebuilt ones a stack names): one to KEEP_IMAGES tags."""
    ecr = load_costs()["ecr"]
    built = [s for s in image_services(config, list(use_cases)) if not config.images.override(s)]
    if not built:
        return []
    gb = sum(ecr["assume_image_gb"][s] for s in built)
    return [
        _line(
            "ecr-images",
            gb * ecr["usd_per_gb_month"],
            gb * KEEP_IMAGES * ecr["usd_per_gb_month"],
            f"{', '.join(built)}: {gb:g} GB per version, 1 to {KEEP_IMAGES} versions kept",
            "ecr",
        )
    ]


def cost_envelope(config: PlatformConfig, use_cases: Sequence[Any] = ()) -> CostEnvelope:
    catalog = load_catalog()
    pools = [pool_cost(p) for p in config.gpu_pools]
    components = component_costs(config, use_cases)
    lo = sum(p.min_monthly_usd for p in pools) + sum(c.min_monthly_usd for c in components)
    hi = sum(p.max_monthly_usd for p in pools) + sum(c.max_monthly_usd for c in components)
    return CostEnvelope(
        pools=pools,
        min_monthly_usd=round(lo, 2),
        max_monthly_usd=round(hi, 2),
        budget_monthly_usd=config.budget.monthly_usd if config.budget else None,
        price_source=catalog.price_source,
        price_date=catalog.price_date,
        by_component=components,
    )
