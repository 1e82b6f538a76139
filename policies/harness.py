"""Offline policy evaluation: feed recorded resources through the pack's own policy objects.

`evaluate(resources, stack_config)` takes what `tandem.engine.run_under_mocks` recorded (inputs in
wire format), builds the same `ResourceValidationArgs` / `StackValidationArgs` the engine would,
and calls `policy.validate(args, report)` on the objects `policies.pack.build_policies` makes, so
the offline verdict is the engine's verdict. The `PolicyPack` itself is never constructed.

`tandem plan` (tandem/plan.py) runs a whole stack's program and hands the recorded resources here;
it prints the result and exits non-zero when `blocking(violations)` is not empty.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from policies.framework import ResourceView
from policies.pack import AnyPolicy, build_policies, rule_of, waiver_reason
from policies.settings import PolicySettings

STACK_RESOURCE = "stack"  # `resource` of a violation about the stack as a whole


class RecordedLike(Protocol):
    """What tandem.engine.Recorded offers (read-only)."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def urn(self) -> str: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...
    @property
    def custom(self) -> bool: ...
    @property
    def provider(self) -> str | None: ...


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str  # URN, or "stack"
    enforcement: str  # advisory | mandatory
    message: str
    remediation: str
    severity: str = "medium"
    resource_name: str = STACK_RESOURCE
    waiver: str = ""  # in evaluate_waived's list: the waiver's reason

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def blocking(violations: Iterable[Violation]) -> list[Violation]:
    """The violations that fail a plan (and would block `pulumi up`)."""
    return [v for v in violations if v.enforcement == EnforcementLevel.MANDATORY.value]


def _options(parent: str | None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def _provider_of(
    rec: RecordedLike, by_urn: Mapping[str, RecordedLike]
) -> PolicyProviderResource | None:
    """Provider references are `<urn>::<id>`; resolve them to the recorded provider."""
    if not rec.provider:
        return None
    urn = rec.provider.rsplit("::", 1)[0]
    prov = by_urn.get(urn) or by_urn.get(rec.provider)
    if prov is None:
        return None
    return PolicyProviderResource(
        prov.type, unknown_checking_proxy(dict(prov.inputs)), prov.urn, prov.name
    )


def _stack_props(rec: RecordedLike) -> dict[str, Any]:
    """Stack policies see outputs in the engine; offline, inputs plus the mock's id stand in."""
    props = dict(rec.inputs)
    if rec.custom:
        props.setdefault("id", f"{rec.name}-id")  # tandem.engine.TandemMocks' id scheme
    return props


def _run(
    policy: AnyPolicy, args: Any, sink: list[tuple[str, str | None]], default_urn: str | None
) -> None:
    def report(message: str, urn: str | None = None) -> None:
        sink.append((message, urn or default_urn))

    try:
        result = policy.validate(args, report)
        if inspect.isawaitable(result):  # no Tandem rule is async; kept for SDK parity
            raise TypeError(
                f"policy {policy.name} returned an awaitable; rules must be synchronous"
            )
    except UnknownValueError:
        pass  # the engine reports these as advisory "can't run during preview"; nothing to fail


def evaluate(
    resources: Iterable[RecordedLike],
    stack_config: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    settings: PolicySettings | None = None,
) -> list[Violation]:
    """Every violation the pack reports for these resources under this stack's settings."""
    settings = settings or PolicySettings.from_stack_config(stack_config, stack)
    recs = list(resources)
    by_urn = {r.urn: r for r in recs}
    names = {r.urn: r.name for r in recs}
    policies: list[AnyPolicy] = [
        p for p in build_policies(settings) if p.enforcement_level != EnforcementLevel.DISABLED
    ]

    found: list[tuple[AnyPolicy, str, str | None]] = []
    for rec in recs:
        provider = _provider_of(rec, by_urn)
        props = unknown_checking_proxy(dict(rec.inputs))
        for policy in policies:
            if not isinstance(policy, ResourceValidationPolicy) or not rule_of(policy).applies_to(
                rec.type
            ):
                continue
            args = ResourceValidationArgs(
                rec.type, props, rec.urn, rec.name, _options(rec.parent), provider
            )
            sink: list[tuple[str, str | None]] = []
            _run(policy, args, sink, rec.urn)
            found += [(policy, msg, urn) for msg, urn in sink]

    stack_resources = _policy_resources(recs, by_urn)
    for policy in policies:
        if isinstance(policy, ResourceValidationPolicy):
            continue
        sink = []
        _run(policy, StackValidationArgs(stack_resources), sink, None)
        found += [(policy, msg, urn) for msg, urn in sink]

    return [
        Violation(
            policy=p.name,
            resource=urn or STACK_RESOURCE,
            enforcement=p.enforcement_level.value if p.enforcement_level else "advisory",
            message=msg,
            remediation=p.remediation_steps or "",
            severity=p.severity.value if p.severity else "medium",
            resource_name=names.get(urn or "", STACK_RESOURCE),
        )
        for p, msg, urn in found
    ]


def evaluate_waived(
    resources: Iterable[RecordedLike],
    stack_config: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    settings: PolicySettings | None = None,
    violations: Sequence[Violation] | None = None,
) -> list[Violation]:
    """What the waivers hide: the violations the pack would report without them, each with the
    waiver's reason. A plan shows them so a reviewer sees every exception the stack takes, not
    only the rules that still fail. `violations` (evaluate's result) saves a second pass."""
    settings = settings or PolicySettings.from_stack_config(stack_config, stack)
    recs = list(resources)
    kept = violations if violations is not None else evaluate(recs, settings=settings)
    reported = {(v.policy, v.resource, v.message) for v in kept}
    by_urn = {r.urn: r for r in recs}
    waived = []
    for v in evaluate(recs, settings=settings.ignoring_waivers()):
        if (v.policy, v.resource, v.message) not in reported:
            waived.append(replace(v, waiver=_waiver_reason(v, by_urn.get(v.resource), settings)))
    return waived


def _waiver_reason(v: Violation, rec: RecordedLike | None, settings: PolicySettings) -> str:
    if rec is None:
        return waiver_reason(v.policy, None, None, settings) or ""
    view = ResourceView(rec.type, rec.name, rec.urn, dict(rec.inputs), rec.parent)
    return waiver_reason(v.policy, view, rec.urn, settings) or ""


def _policy_resources(
    recs: Sequence[RecordedLike], by_urn: Mapping[str, RecordedLike]
) -> list[PolicyResource]:
    out: dict[str, PolicyResource] = {}
    for rec in recs:
        out[rec.urn] = PolicyResource(
            rec.type,
            unknown_checking_proxy(_stack_props(rec)),
            rec.urn,
            rec.name,
            _options(rec.parent),
            _provider_of(rec, by_urn),
            None,
            [],
            {},
        )
    for rec in recs:
        if rec.parent and rec.parent in out:
            out[rec.urn].parent = out[rec.parent]
    return list(out.values())
