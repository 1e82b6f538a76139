"""The stack's cost envelope: what its GPU pools cost per month at minimum and at maximum scale.

Plan-time and pure. Prices and GPU counts come from the catalog; the node bounds from config.
A Karpenter pool that may launch several instance types is priced at its most expensive type,
so the maximum is a ceiling a budget can be checked against, never an underestimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vocabulary.catalog import HOURS_PER_MONTH, load_catalog
from vocabulary.config import GpuPoolConfig, PlatformConfig


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
class CostEnvelope:
    pools: list[PoolCost]
    min_monthly_usd: float
    max_monthly_usd: float
    budget_monthly_usd: float | None
    price_source: str
    price_date: str

    @property
    def within_budget(self) -> bool | None:
        if self.budget_monthly_usd is None:
            return None
        return self.max_monthly_usd <= self.budget_monthly_usd

    def to_dict(self) -> dict:
        return {
            "pools": [asdict(p) for p in self.pools],
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


def cost_envelope(config: PlatformConfig) -> CostEnvelope:
    catalog = load_catalog()
    pools = [pool_cost(p) for p in config.gpu_pools]
    return CostEnvelope(
        pools=pools,
        min_monthly_usd=round(sum(p.min_monthly_usd for p in pools), 2),
        max_monthly_usd=round(sum(p.max_monthly_usd for p in pools), 2),
        budget_monthly_usd=config.budget.monthly_usd if config.budget else None,
        price_source=catalog.price_source,
        price_date=catalog.price_date,
    )
