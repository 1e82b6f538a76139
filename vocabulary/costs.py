"""Typed access to vocabulary/costs.yaml: prices of what a stack bills besides GPU instances.

Pure and cached, like the GPU catalog: finops/envelope.py prices a stack's components with it and
config validation checks a system node group's instance type against it.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path
from typing import Any

import yaml

COSTS_PATH = Path(__file__).with_name("costs.yaml")


@functools.cache
def load_costs(path: str | None = None) -> dict[str, Any]:
    with open(path or COSTS_PATH) as fh:
        return yaml.safe_load(fh)


def system_instance_types() -> list[str]:
    return sorted(load_costs()["ec2"]["usd_per_hour"])


def eks_usd_per_hour(kubernetes_version: str, on: str | None = None) -> tuple[float, str]:
    """The control plane's hourly price for a version on a date (the price date by default):
    standard support, or extended support once the version's standard support has ended."""
    eks = load_costs()["eks"]
    when = date.fromisoformat(on or load_costs()["price_date"])
    ends = eks["standard_support_ends"].get(kubernetes_version)
    if ends is not None and when > date.fromisoformat(ends):
        return eks["extended_usd_per_hour"], f"extended support (standard ended {ends})"
    return eks["usd_per_hour"], "standard support"
