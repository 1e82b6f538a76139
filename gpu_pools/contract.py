"""The scheduling contract a GPU pool exports and serving consumes.

One typed object, so an inference cluster never re-derives a pool's node selector, taint or GPU
size: it reads them from the pool that will run it. Pure (no pulumi): policies and the CLI use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vocabulary import labels
from vocabulary.catalog import load_catalog
from vocabulary.config import GpuPoolConfig


@dataclass(frozen=True)
class SchedulingContract:
    """How to land a pod on a pool, and what it gets there."""

    pool: str
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, str], ...]
    gpu_resource: str
    gpus_per_node: int
    gpu_memory_gib_per_gpu: float
    gpu_model: str
    instance_type: str
    hourly_usd: float
    max_nodes: int
    min_nodes: int
    capacity_type: str  # on-demand | spot
    vcpu: int = 0
    memory_gib: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def max_gpus(self) -> int:
        return self.gpus_per_node * self.max_nodes

    def to_dict(self) -> dict:
        return {
            "pool": self.pool,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "gpu_resource": self.gpu_resource,
            "gpus_per_node": self.gpus_per_node,
            "gpu_memory_gib_per_gpu": self.gpu_memory_gib_per_gpu,
            "gpu_model": self.gpu_model,
            "instance_type": self.instance_type,
            "hourly_usd": self.hourly_usd,
            "min_nodes": self.min_nodes,
            "max_nodes": self.max_nodes,
            "capacity_type": self.capacity_type,
            "vcpu": self.vcpu,
            "memory_gib": self.memory_gib,
        }


def default_gpu_tolerations() -> tuple[dict[str, str], ...]:
    return (labels.gpu_toleration(),)


def pool_node_labels(pool: GpuPoolConfig) -> dict[str, str]:
    """Labels every node of the pool carries; the contract's node selector is a subset."""
    gpu = load_catalog().get(pool.primary_instance).gpu.name
    return {
        **pool.labels,
        labels.LABEL_POOL: pool.name,
        labels.LABEL_GPU_MODEL: gpu,
        labels.LABEL_TEAM: pool.team,
        labels.LABEL_WORKLOAD: pool.workload,
        labels.LABEL_CAPACITY_TYPE: pool.capacity_type,
    }


def scheduling_contract(pool: GpuPoolConfig) -> SchedulingContract:
    """What serving needs to land on this pool, derived from config alone (pure, plan-time)."""
    inst = load_catalog().get(pool.primary_instance)
    return SchedulingContract(
        pool=pool.name,
        node_selector={labels.LABEL_POOL: pool.name},
        tolerations=default_gpu_tolerations(),
        gpu_resource=labels.GPU_RESOURCE,
        gpus_per_node=inst.gpus,
        gpu_memory_gib_per_gpu=inst.gpu_memory_gib,
        gpu_model=inst.gpu.name,
        instance_type=inst.name,
        hourly_usd=inst.usd_per_hour,
        min_nodes=pool.min_nodes,
        max_nodes=pool.max_nodes,
        capacity_type=pool.capacity_type,
        vcpu=inst.vcpu,
        memory_gib=inst.memory_gib,
    )
