"""Wrap `Rule`s into `pulumi_policy` policies, applying enforcement levels and waivers.

Used by `policies/__main__.py` (the engine) and by `policies/harness.py` (offline), so both run
the very same `ResourceValidationPolicy` / `StackValidationPolicy` objects. Building policies is
cheap and side-effect free; only `PolicyPack(...)` starts a server, and only `__main__` calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.framework import Finding, ResourceView, Rule, resource_waivers
from policies.rules import ALL_RULES
from policies.settings import PolicySettings

PACK_NAME = "tandem"
AnyPolicy = ResourceValidationPolicy | StackValidationPolicy


def run_resource_rule(rule: Rule, res: ResourceView, settings: PolicySettings) -> list[Finding]:
    """One rule on one resource, minus waived findings. Unknown values propagate (engine contract)."""
    if not rule.applies_to(res.type) or _waived(rule, res, res.urn, settings):
        return []
    messages = cast(Iterable[str], rule.check(res, settings))  # type: ignore[arg-type]
    return [Finding(msg, res.urn) for msg in messages]


def run_stack_rule(
    rule: Rule, resources: Sequence[ResourceView], settings: PolicySettings
) -> list[Finding]:
    by_urn = {r.urn: r for r in resources}
    findings = cast(Iterable[Finding], rule.check(resources, settings))  # type: ignore[arg-type]
    return [f for f in findings if not _waived(rule, by_urn.get(f.urn or ""), f.urn, settings)]


def _waived(
    rule: Rule, res: ResourceView | None, urn: str | None, settings: PolicySettings
) -> bool:
    return settings.applies_waivers and waiver_reason(rule.name, res, urn, settings) is not None


def waiver_reason(
    policy: str, res: ResourceView | None, urn: str | None, settings: PolicySettings
) -> str | None:
    """Why `policy` is waived for this resource (None: it is not): the resource's own waiver
    first, then the stack's."""
    if res is not None:
        own = resource_waivers(res).get(policy)
        if own:
            return own
    waiver = settings.waiver_for(policy, res, urn)
    return waiver.reason if waiver is not None else None


def view_of_args(args: ResourceValidationArgs) -> ResourceView:
    return ResourceView(
        type=args.resource_type,
        name=args.name,
        urn=args.urn,
        props=args.props,
        parent=getattr(args.opts, "parent", None),
        provider_props=args.provider.props if args.provider else None,
    )


def view_of_resource(r: PolicyResource) -> ResourceView:
    deps = {d.urn for d in r.dependencies}
    for prop_deps in r.property_dependencies.values():
        deps |= {d.urn for d in prop_deps}
    return ResourceView(
        type=r.resource_type,
        name=r.name,
        urn=r.urn,
        props=r.props,
        parent=r.parent.urn if r.parent else getattr(r.opts, "parent", None),
        provider_props=r.provider.props if r.provider else None,
        dependencies=tuple(sorted(deps)),
    )


def to_policy(rule: Rule, settings: PolicySettings) -> AnyPolicy:
    """The pulumi_policy object for one rule, at the level this stack's settings give it."""
    common: dict[str, Any] = {
        "enforcement_level": EnforcementLevel(settings.level_for(rule)),
        "severity": Severity(rule.severity),
        "remediation_steps": rule.remediation,
        "tags": list(rule.tags),
    }
    if rule.scope == "resource":

        def validate_resource(args: ResourceValidationArgs, report: ReportViolation) -> None:
            if rule.applies_to(args.resource_type):
                for f in run_resource_rule(rule, view_of_args(args), settings):
                    report(f.message, None)

        return ResourceValidationPolicy(rule.name, rule.description, validate_resource, **common)

    def validate_stack(args: StackValidationArgs, report: ReportViolation) -> None:
        views = [view_of_resource(r) for r in args.resources]
        for f in run_stack_rule(rule, views, settings):
            report(f.message, f.urn)

    return StackValidationPolicy(rule.name, rule.description, validate_stack, **common)


def build_policies(settings: PolicySettings, rules: Sequence[Rule] = ALL_RULES) -> list[AnyPolicy]:
    return [to_policy(rule, settings) for rule in rules]


def rule_of(policy: Policy) -> Rule:
    return next(r for r in ALL_RULES if r.name == policy.name)
