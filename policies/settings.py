"""Per-stack policy settings: environment, budget, allow-lists, enforcement overrides, waivers.

Read from the stack's Pulumi config, so the engine (which hands the pack the stack config through
`PULUMI_CONFIG`) and the offline harness (which reads `stacks/Pulumi.<stack>.yaml`) decide the same
way. All policy keys live under one config object, `tandem:policies`:

    tandem:environment: prod           # dev/staging: advisory by default; prod: mandatory
    tandem:budget: {monthlyUsd: 60000} # stack-gpu-budget prices every pool at max scale against it
    tandem:policies:
      enforcement: mandatory           # optional: one level for every rule in this stack
      overrides: {gpu-pool-spot-fallback: advisory}   # optional: per-rule level
      allowedInstanceFamilies: [p5, g6e]
      waivers:
        - {policy: s3-versioned, resource: "scratch-*", reason: "ephemeral cache", expires: 2027-01-31}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from policies.framework import Level, ResourceView, name_matches

if TYPE_CHECKING:
    from policies.framework import Rule

PRODUCTION_ENVIRONMENTS = ("prod", "production")


class Waiver(BaseModel):
    """A stack-level exception: one policy, the resources it covers, and why."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    resource: str = Field(default="*", description="name, type::name or URN glob; * = all")
    reason: str = Field(min_length=3)
    expires: date | None = None

    def active(self, today: date | None = None) -> bool:
        return self.expires is None or self.expires >= (today or date.today())


class PolicySettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stack: str = "dev"
    environment: str = "dev"
    monthly_budget_usd: float | None = None
    allowed_instance_families: list[str] = Field(default_factory=list)
    enforcement: Level | None = None  # stack-wide level, beats the rules' defaults
    overrides: dict[str, Level] = Field(default_factory=dict)  # per rule, beats everything
    waivers: list[Waiver] = Field(default_factory=list)
    # off only to list what the waivers hide (policies.harness.evaluate_waived); not a config key
    _apply_waivers: bool = PrivateAttr(default=True)

    @property
    def applies_waivers(self) -> bool:
        return self._apply_waivers

    def ignoring_waivers(self) -> PolicySettings:
        copy = self.model_copy()
        copy._apply_waivers = False
        return copy

    @property
    def is_production(self) -> bool:
        return self.environment.lower() in PRODUCTION_ENVIRONMENTS

    def level_for(self, rule: Rule) -> Level:
        """Per-rule override; production-only rules off elsewhere; stack level; rule default; house default."""
        if rule.name in self.overrides:
            return self.overrides[rule.name]
        if rule.production_only and not self.is_production:
            return "disabled"
        if self.enforcement is not None:
            return self.enforcement
        if self.environment in rule.levels:
            return rule.levels[self.environment]
        return "mandatory" if self.is_production else "advisory"

    def waiver_for(
        self, policy: str, res: ResourceView | None, urn: str | None = None
    ) -> Waiver | None:
        for waiver in self.waivers:
            if (
                waiver.policy == policy
                and waiver.active()
                and name_matches(waiver.resource, res, urn)
            ):
                return waiver
        return None

    @classmethod
    def from_stack_config(
        cls, config: Mapping[str, Any] | None, stack: str = "dev"
    ) -> PolicySettings:
        """Build from Pulumi stack config: `tandem:`-prefixed or bare keys, objects or JSON strings."""
        flat = {
            _strip(k): _decode(v)
            for k, v in (config or {}).items()
            if ":" not in k or k.startswith("tandem:")
        }
        pol = {_snake(k): v for k, v in dict(flat.get("policies") or {}).items()}
        budget = flat.get("budget")
        if isinstance(budget, Mapping):
            budget = {_snake(k): v for k, v in budget.items()}
            budget = budget.get("monthly_usd") or budget.get("monthly_budget_usd")
        data: dict[str, Any] = {
            "stack": stack,
            "environment": pol.get("environment") or flat.get("environment") or stack,
            "monthly_budget_usd": pol.get("monthly_budget_usd")
            or flat.get("monthly_budget_usd")
            or (budget if isinstance(budget, int | float | str) else None),
            "allowed_instance_families": pol.get("allowed_instance_families")
            or flat.get("allowed_instance_families")
            or [],
            "enforcement": pol.get("enforcement"),
            "overrides": pol.get("overrides") or {},
            "waivers": pol.get("waivers") or [],
        }
        return cls.model_validate(data)


def _strip(key: str) -> str:
    key = key.replace(":config:", ":", 1)  # older engines spell config keys `tandem:config:x`
    return _snake(key.split(":", 1)[1] if ":" in key else key)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).replace("-", "_").lower()


def _decode(value: Any) -> Any:
    """Pulumi hands object-valued config to plugins as JSON strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
