"""`tandem plan`: run a stack's program offline and say what it would create and cost.

The same program `pulumi up` runs, under the mock engine, with the stack file's config. The
result is one `Plan` object rendered for people (rich) or machines (`--output json`, a stable
interface documented in docs/architecture.md).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tandem.config import PlatformConfig, load_stack, pulumi_config_values, read_stack_file
from tandem.cost import CostEnvelope, cost_envelope

PLAN_SCHEMA_VERSION = 1


@dataclass
class Plan:
    stack: str
    config: PlatformConfig
    resources: list[Any]  # tandem.engine.Recorded
    cost: CostEnvelope
    violations: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    upgrade_surge: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """A plan fails on a mandatory policy violation or a failed plan-time check."""
        return any(v.get("enforcement") == "mandatory" for v in self.violations) or any(
            not c.get("ok", True) for c in self.checks
        )

    def counts_by_type(self) -> dict[str, int]:
        return dict(Counter(r.type for r in self.resources).most_common())

    def to_dict(self) -> dict[str, Any]:
        cost = self.cost.to_dict()
        cost["upgrade_surge"] = self.upgrade_surge
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "stack": self.stack,
            "environment": self.config.environment,
            "ok": not self.failed,
            "resources": [
                {"type": r.type, "name": r.name, "parent": r.parent, "urn": r.urn}
                for r in self.resources
            ],
            "counts": self.counts_by_type(),
            "cost": cost,
            "violations": self.violations,
            "checks": self.checks,
        }


def run_stack(stack: str, config: PlatformConfig | None = None) -> list[Any]:
    """Every resource the stack's program registers, under the mock engine."""
    from tandem.engine import run_under_mocks
    from tandem.program import main

    if config is None:
        load_stack(stack)  # validate first: a bad config must not reach the engine
    return list(
        run_under_mocks(main, stack=stack, config=pulumi_config_values(read_stack_file(stack)))
    )


def build_plan(stack: str) -> Plan:
    """Validate, run, cost. Raises tandem.config.ConfigError on a bad stack config."""
    started = time.perf_counter()
    config = load_stack(stack)
    resources = run_stack(stack, config)
    plan = Plan(stack=stack, config=config, resources=resources, cost=cost_envelope(config))
    plan.seconds = round(time.perf_counter() - started, 2)
    return plan
