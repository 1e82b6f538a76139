"""The scheduling contract a GPU pool exports and serving consumes.

One typed object, so an inference cluster never re-derives a pool's node selector, taint or GPU
size: it reads them from the pool that will run it. Pure (no pulumi): policies and the CLI use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    disk_gib: int = 0  # the node's image + ephemeral-storage volume (rootVolumeGib)
    # pools the workload may move to when this one has no capacity (the pool's `fallbackPool`):
    # same GPU model and count, nodes at least as large (vocabulary.config checks both)
    fallback_pools: tuple[str, ...] = ()

    @property
    def max_gpus(self) -> int:
        return self.gpus_per_node * self.max_nodes

    def placement(self) -> dict[str, Any]:
        """The pod-spec fields that land a workload here: a node selector when the pool has no
        fallback; with one, a required node affinity allowing the pool and its fallbacks and a
        preferred one for the pool itself, so pods run on the primary while it has capacity and
        move to the fallback (and Karpenter launches there) when it has none."""
        spec: dict[str, Any] = {"tolerations": [dict(t) for t in self.tolerations]}
        if not self.fallback_pools:
            spec["nodeSelector"] = dict(self.node_selector)
            return spec
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": labels.LABEL_POOL,
                                    "operator": "In",
                                    "values": [self.pool, *self.fallback_pools],
                                }
                            ]
                        }
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "preference": {
                            "matchExpressions": [
                                {"key": labels.LABEL_POOL, "operator": "In", "values": [self.pool]}
                            ]
                        },
                    }
                ],
            }
        }
        return spec

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
            "disk_gib": self.disk_gib,
            "fallback_pools": list(self.fallback_pools),
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
    """What serving needs to land on this pool, derived from config alone (pure, plan-time).

    The pool's `fallbackPool` becomes `fallback_pools`: workloads may schedule there too."""
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
        disk_gib=pool.root_volume_gib,
        fallback_pools=(pool.fallback_pool,) if pool.fallback_pool else (),
    )
