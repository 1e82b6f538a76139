"""GPU prices for the report: the GPU catalog, optionally overridden by a file.

The catalog holds on-demand list prices only; spot capacity is priced at `spot_factor` times
on-demand unless the file gives a spot price for that instance type. Override file (YAML or JSON):

    on_demand: {g5.12xlarge: 4.90}      # negotiated / current rates, USD per instance-hour
    spot: {g6.12xlarge: 1.75}           # observed spot rates
    spot_factor: 0.4                    # spot price / on-demand where no spot rate is given
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from observability.rules import SPOT_FACTOR
from vocabulary.catalog import Catalog, InstanceType, load_catalog

DEFAULT_SPOT_FACTOR = SPOT_FACTOR  # one number for the report and the alert rules


@dataclass(frozen=True)
class PriceBook:
    catalog: Catalog
    spot: dict[str, float]
    spot_factor: float = DEFAULT_SPOT_FACTOR
    source: str = "catalog"

    def instance(self, instance_type: str) -> InstanceType:
        return self.catalog.get(instance_type)

    def node_hour(self, instance_type: str, capacity_type: str = "on-demand") -> float:
        inst = self.instance(instance_type)
        if capacity_type == "spot":
            return self.spot.get(instance_type, inst.usd_per_hour * self.spot_factor)
        return inst.usd_per_hour

    def gpu_hour(self, instance_type: str, capacity_type: str = "on-demand") -> float:
        return self.node_hour(instance_type, capacity_type) / self.instance(instance_type).gpus

    def cheapest_gpu_hour(self, gpu_model: str, capacity_type: str) -> tuple[str, float] | None:
        """The instance type giving the cheapest GPU-hour of `gpu_model` (for rightsizing)."""
        options = [
            (self.gpu_hour(name, capacity_type), name)
            for name, inst in self.catalog.instances.items()
            if inst.gpu.name == gpu_model
        ]
        if not options:
            return None
        price, name = min(options)
        return name, price


def load_prices(path: str | Path | None = None) -> PriceBook:
    catalog = load_catalog()
    if not path:
        return PriceBook(
            catalog, {}, source=f"catalog ({catalog.price_source}, {catalog.price_date})"
        )
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(raw) - {"on_demand", "spot", "spot_factor"}
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; expected on_demand, spot, spot_factor"
        )
    on_demand = {k: float(v) for k, v in (raw.get("on_demand") or {}).items()}
    spot = {k: float(v) for k, v in (raw.get("spot") or {}).items()}
    missing = sorted(set(spot) - set(catalog.instances))
    if missing:
        raise KeyError(f"{path}: spot price for unknown instance types: {', '.join(missing)}")
    return PriceBook(
        catalog.with_prices(on_demand),
        spot,
        float(raw.get("spot_factor", DEFAULT_SPOT_FACTOR)),
        source=f"catalog overridden by {path}",
    )
