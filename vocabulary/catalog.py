"""Typed access to the GPU instance catalog (vocabulary/catalog.yaml).

Pure: no pulumi, no cloud calls. Config validation, the plan's cost envelope, fit checks and
FinOps all read instance facts from here, so a price or a GPU's memory is written exactly once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
HOURS_PER_MONTH = 730.0  # AWS's own convention for monthly estimates (8,760 h / 12)


@dataclass(frozen=True)
class GpuModel:
    name: str
    aws_name: str  # the name EC2 DescribeInstanceTypes gives it
    memory_gib: float
    architecture: str
    mig: bool
    fp16_tflops: float
    # What CUDA reports as the device's total (vLLM budgets from it), where measured on one;
    # EC2's figure can be higher (H100: 80 GiB listed, 79.18 to CUDA; H200: 141, 139.8).
    cuda_memory_gib: float | None = None

    @property
    def usable_memory_gib(self) -> float:
        return self.cuda_memory_gib or self.memory_gib


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: GpuModel
    gpus: int
    vcpu: int
    memory_gib: float
    efa: bool
    usd_per_hour: float
    price_estimated: bool = False
    # EFA devices the instance takes, one per network card (EC2 EfaInfo.MaximumEfaInterfaces):
    # 32 on p5.48xlarge; an EFA pool attaches all of them or NCCL runs on a fraction of the fabric
    efa_interfaces: int = 0

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def gpu_memory_gib(self) -> float:
        """Memory of one GPU a framework can use (not the node's total)."""
        return self.gpu.usable_memory_gib

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus

    @property
    def monthly_usd(self) -> float:
        return self.usd_per_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class Catalog:
    region: str
    currency: str
    price_source: str
    price_date: str
    gpus: dict[str, GpuModel]
    instances: dict[str, InstanceType]

    def get(self, instance_type: str) -> InstanceType:
        """Look up an instance type; the error lists what is known, for config messages."""
        try:
            return self.instances[instance_type]
        except KeyError:
            raise KeyError(
                f"unknown GPU instance type {instance_type!r}; known: {', '.join(self.names())}"
            ) from None

    def __contains__(self, instance_type: str) -> bool:
        return instance_type in self.instances

    def names(self) -> list[str]:
        return sorted(self.instances, key=_instance_sort_key)

    def families(self) -> list[str]:
        return sorted({i.family for i in self.instances.values()})

    def with_prices(self, prices: dict[str, float]) -> Catalog:
        """A copy with some hourly prices replaced (FinOps `--prices FILE`, negotiated rates)."""
        unknown = sorted(set(prices) - set(self.instances))
        if unknown:
            raise KeyError(f"price override for unknown instance types: {', '.join(unknown)}")
        instances = {
            name: InstanceType(**{**inst.__dict__, "usd_per_hour": float(prices[name])})
            if name in prices
            else inst
            for name, inst in self.instances.items()
        }
        return Catalog(
            self.region, self.currency, "override", self.price_date, self.gpus, instances
        )


def _instance_sort_key(name: str) -> tuple[str, int]:
    family, size = name.split(".", 1)
    order = {"xlarge": 1}
    if size in order:
        return family, order[size]
    digits = "".join(c for c in size if c.isdigit())
    return family, int(digits) if digits else 0


def parse_catalog(raw: dict) -> Catalog:
    gpus = {name: GpuModel(name=name, **spec) for name, spec in raw["gpus"].items()}
    instances = {}
    for name, spec in raw["instances"].items():
        spec = dict(spec)
        gpu = gpus[spec.pop("gpu")]
        instances[name] = InstanceType(name=name, gpu=gpu, **spec)
    return Catalog(
        region=raw["region"],
        currency=raw["currency"],
        price_source=raw["price_source"],
        price_date=str(raw["price_date"]),
        gpus=gpus,
        instances=instances,
    )


@functools.cache
def load_catalog(path: str | None = None) -> Catalog:
    """The shipped catalog (cached: it is read by every validator and cost line)."""
    with open(path or CATALOG_PATH) as fh:
        return parse_catalog(yaml.safe_load(fh))
