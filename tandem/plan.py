"""`tandem plan`: run a stack's program offline and say what it would create and cost.

The same program `pulumi up` runs, under the mock engine, with the stack file's config. The
result is one `Plan` object rendered for people (rich) or machines (`--output json`, a stable
interface documented in docs/architecture.md).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from finops.envelope import CostEnvelope, cost_envelope
from serving.checks import resolve_contract
from tandem.stack import Stack, from_flat, load
from vocabulary.config import PlatformConfig

PLAN_SCHEMA_VERSION = 1


@dataclass
class Plan:
    stack: str
    config: PlatformConfig
    resources: list[Any]  # tandem.engine.Recorded
    cost: CostEnvelope
    violations: list[dict[str, Any]] = field(default_factory=list)
    waived: list[dict[str, Any]] = field(default_factory=list)  # what the stack's waivers hide
    checks: list[dict[str, Any]] = field(default_factory=list)
    upgrade_surge: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)  # a candidate beside the stable
    registry: list[dict[str, Any]] = field(default_factory=list)  # what each reference resolved to
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """A plan fails on a mandatory policy violation or a failed plan-time check."""
        return any(v.get("enforcement") == "mandatory" for v in self.violations) or any(
            not c.get("ok", True) for c in self.checks
        )

    def counts_by_type(self) -> dict[str, int]:
        """Resources per type, most first (ties by type token, so the order is stable)."""
        counts = Counter(r.type for r in self.resources)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        cost = self.cost.to_dict()
        cost["upgrade_surge"] = self.upgrade_surge
        cost["rollouts"] = self.rollouts
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
            "waived": self.waived,
            "checks": self.checks,
            "registry": self.registry,
        }


def run_program(stack: Stack) -> list[Any]:
    """Every resource the program registers for this (already validated) stack, under mocks."""
    from tandem.engine import run_under_mocks
    from tandem.program import main

    config, secret_keys = stack.pulumi_config()
    return tree_order(
        run_under_mocks(
            lambda: main(stack), stack=stack.name, config=config, secret_keys=secret_keys
        )
    )


def tree_order(resources: Iterable[Any]) -> list[Any]:
    """Every resource, parents before their children, siblings sorted by URN: the same order for
    the same inputs. Registration order is not: resources created inside `.apply` callbacks
    register when their inputs resolve, which varies from run to run, so a plan diff in review
    would be noise."""
    items = list(resources)
    urns = {r.urn for r in items}
    children: dict[str | None, list[Any]] = defaultdict(list)
    for r in items:
        children[r.parent if r.parent in urns else None].append(r)
    ordered: list[Any] = []
    stack = sorted(children[None], key=lambda r: r.urn, reverse=True)
    while stack:
        r = stack.pop()
        ordered.append(r)
        stack += sorted(children[r.urn], key=lambda c: c.urn, reverse=True)
    return ordered


def run_config(stack: str, flat: dict[str, Any]) -> list[Any]:
    """Every resource the program registers for this flat stack config (validated first: a bad
    config raises ConfigError and never reaches the engine)."""
    return run_program(from_flat(stack, flat))


def run_stack(stack: str) -> list[Any]:
    """Every resource the shipped stack's program registers, under the mock engine."""
    return run_program(load(stack))


def build_plan(stack: str) -> Plan:
    """Validate, check, run, cost and police a stack. Raises ConfigError on a bad config.

    The stack is parsed once (`tandem.stack.Stack`) and flows through every step. Plan-time checks
    run before the program: a use case that would crash-loop on the cluster (a model that does
    not fit its GPUs, say) fails the plan with its numbers, and the program is not run.
    """
    from policies.harness import evaluate, evaluate_waived
    from policies.settings import PolicySettings
    from serving.checks import rollout_cost, upgrade_surge

    started = time.perf_counter()
    spec = load(stack)
    checks = [r.to_dict() for results in spec.checks.values() for r in results]
    plan = Plan(
        stack=stack,
        config=spec.config,
        resources=[],
        cost=cost_envelope(spec.config, spec.use_cases),
        checks=checks,
        upgrade_surge=[
            upgrade_surge(uc, resolve_contract(uc, spec.contracts)).to_dict()
            for uc in spec.use_cases
            if uc.gpu_deployments
        ],
        rollouts=[
            r.to_dict()
            for uc in spec.use_cases
            if (r := rollout_cost(uc, resolve_contract(uc, spec.contracts))) is not None
        ],
        registry=[r.to_dict() for r in spec.registry],
    )
    if all(c["ok"] for c in checks):
        plan.resources = run_program(spec)
        settings = PolicySettings.from_stack_config(spec.flat, stack)
        found = evaluate(plan.resources, settings=settings)
        plan.violations = [v.to_dict() for v in found]
        waived = evaluate_waived(plan.resources, settings=settings, violations=found)
        plan.waived = [v.to_dict() for v in waived]
    plan.seconds = round(time.perf_counter() - started, 2)
    return plan
