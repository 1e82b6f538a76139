"""Every rule of the Tandem policy pack, in the order the pack and reports list them."""

from __future__ import annotations

from policies.framework import Rule
from policies.rules import (
    cluster,
    drift,
    features,
    gateway,
    gpu_pools,
    lifecycle,
    prompts,
    serving,
    stack,
    workloads,
)

ALL_RULES: list[Rule] = [
    *gpu_pools.RULES,
    *cluster.RULES,
    *workloads.RULES,
    *serving.RULES,
    *gateway.RULES,
    *lifecycle.RULES,
    *drift.RULES,
    *features.RULES,
    *prompts.RULES,
    *stack.RULES,
]


def by_name(name: str) -> Rule:
    for rule in ALL_RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no policy {name!r}; policies: {', '.join(r.name for r in ALL_RULES)}")
