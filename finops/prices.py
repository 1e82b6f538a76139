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

from observability.rules import SPOT_FACTOR
from vocabulary.catalog import Catalog, InstanceType, load_catalog
from vocabulary.errors import InputError
from vocabulary.yamlfile import load_yaml

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
    """The catalog's prices, overridden by `path`. A bad file raises vocabulary.errors.InputError
    naming the file, the key and what is allowed."""
    catalog = load_catalog()
    if not path:
        return PriceBook(
            catalog, {}, source=f"catalog ({catalog.price_source}, {catalog.price_date})"
        )
    raw = load_yaml(path, "price file") or {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a price file is a mapping with on_demand, spot, spot_factor")
    unknown = set(raw) - {"on_demand", "spot", "spot_factor"}
    if unknown:
        raise InputError(
            f"{path}: unknown keys {sorted(unknown)}; expected on_demand, spot, spot_factor"
        )
    on_demand = _rates(raw, "on_demand", path, catalog)
    spot = _rates(raw, "spot", path, catalog)
    factor = raw.get("spot_factor", DEFAULT_SPOT_FACTOR)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= 1:
        raise InputError(f"{path}: spot_factor: {factor!r}: must be a number in (0, 1]")
    return PriceBook(
        catalog.with_prices(on_demand),
        spot,
        float(factor),
        source=f"catalog overridden by {path}",
    )


def _rates(raw: dict, key: str, path: str | Path, catalog: Catalog) -> dict[str, float]:
    """`{instance type: USD per instance-hour}` under `key`, every type known, every rate > 0."""
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise InputError(f"{path}: {key}: must map instance types to USD per hour")
    unknown = sorted(set(section) - set(catalog.instances))
    if unknown:
        raise InputError(
            f"{path}: {key}: unknown instance types {', '.join(unknown)}; known: "
            f"{', '.join(catalog.names())}"
        )
    for name, rate in section.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise InputError(f"{path}: {key}.{name}: {rate!r}: must be USD per hour above 0")
    return {name: float(rate) for name, rate in section.items()}
