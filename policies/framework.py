"""The rule model shared by the CrossGuard pack and the offline harness.

A rule is a plain function over resource properties in Pulumi's wire format (camelCase). The
same `Rule` objects are wrapped into `pulumi_policy` policies (policies/pack.py) for
`pulumi preview --policy-pack policies` and replayed offline (policies/harness.py), so a check
can never pass in one place and fail in the other.

Rules never catch `UnknownValueError`: in the engine the properties are wrapped in a proxy that
raises it when a value is still unknown during preview, and the SDK turns that into an advisory
"can't run during preview" diagnostic. Stack rules go through `each()` so one unknown value skips
one resource, not the whole stack.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from vocabulary import labels

if TYPE_CHECKING:
    from policies.settings import PolicySettings

try:  # the engine's exception; offline without the infra extra we never see it
    from pulumi_policy.proxy import UnknownValueError
except ImportError:  # pragma: no cover - pulumi-policy is part of the infra extra

    class UnknownValueError(Exception):  # type: ignore[no-redef]
        pass


T = TypeVar("T")
Severity = Literal["low", "medium", "high", "critical"]
Level = Literal["advisory", "mandatory", "disabled"]

# Tag (AWS) / label or annotation (Kubernetes) that waives named policies on one resource.
# The value is a comma-separated list of policy names; a reason is required next to it.
WAIVE_KEY = f"{labels.DOMAIN}/waive-policies"
WAIVE_REASON_KEY = f"{labels.DOMAIN}/waiver-reason"


@dataclass(frozen=True)
class ResourceView:
    """One resource as a rule sees it, whether it came from the engine or from the mocks."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    parent: str | None = None  # URN
    provider_props: Mapping[str, Any] | None = None
    dependencies: tuple[str, ...] = ()  # URNs


@dataclass(frozen=True)
class Finding:
    """A violation before enforcement is applied: what is wrong, and on which resource."""

    message: str
    urn: str | None = None  # None: the stack as a whole


ResourceCheck = Callable[[ResourceView, "PolicySettings"], Iterable[str]]
StackCheck = Callable[[Sequence[ResourceView], "PolicySettings"], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    """A policy: metadata for humans plus one check function.

    `resource_types` limits a resource rule to those Pulumi type tokens. `levels` overrides the
    default enforcement per environment (default: mandatory in production, advisory elsewhere).
    `production_only` rules are not applicable outside production (GCS fault tolerance, PDBs).
    """

    name: str
    description: str
    severity: Severity
    remediation: str
    check: ResourceCheck | StackCheck
    scope: Literal["resource", "stack"] = "resource"
    resource_types: tuple[str, ...] = ()
    levels: Mapping[str, Level] = field(default_factory=dict)
    production_only: bool = False
    tags: tuple[str, ...] = ()

    def applies_to(self, resource_type: str) -> bool:
        return self.scope == "resource" and resource_type in self.resource_types


def resource_rule(
    name: str,
    description: str,
    severity: Severity,
    remediation: str,
    types: Sequence[str],
    **kw: Any,
) -> Callable[[ResourceCheck], Rule]:
    """Decorator: turn `check(resource, settings) -> messages` into a resource `Rule`."""

    def wrap(fn: ResourceCheck) -> Rule:
        return Rule(name, description, severity, remediation, fn, "resource", tuple(types), **kw)

    return wrap


def stack_rule(
    name: str, description: str, severity: Severity, remediation: str, **kw: Any
) -> Callable[[StackCheck], Rule]:
    """Decorator: turn `check(resources, settings) -> findings` into a stack `Rule`."""

    def wrap(fn: StackCheck) -> Rule:
        return Rule(name, description, severity, remediation, fn, "stack", (), **kw)

    return wrap


# ---------------------------------------------------------------- property access helpers


def get(obj: Any, *path: str | int, default: Any = None) -> Any:
    """Walk a path of keys / indices through Mappings and Sequences (engine proxies included)."""
    cur = obj
    for key in path:
        if isinstance(key, int):
            if not is_list(cur) or not -len(cur) <= key < len(cur):
                return default
            cur = cur[key]
        else:
            if not isinstance(cur, Mapping) or key not in cur:
                return default
            cur = cur[key]
        if cur is None:
            return default
    return cur


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def as_list(value: Any) -> list[Any]:
    return list(value) if is_list(value) else []


def truthy(value: Any) -> bool:
    """Booleans arrive as bools or, for some AWS fields (launch template `encrypted`), strings."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def as_number(value: Any) -> float | None:
    """Numbers arrive as ints, floats (untyped custom resources) or strings (rayStartParams)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def k8s_metadata(res: ResourceView) -> Mapping[str, Any]:
    meta = get(res.props, "metadata", default={})
    return meta if isinstance(meta, Mapping) else {}


def k8s_labels(res: ResourceView) -> Mapping[str, Any]:
    return get(res.props, "metadata", "labels", default={})


def each(
    resources: Iterable[ResourceView], types: Sequence[str] | None = None
) -> Iterator[ResourceView]:
    """Resources of the given types, for stack rules; see `guard`."""
    for res in resources:
        if types is None or res.type in types:
            yield res


def guard(check: Callable[[T], Iterable[Finding]], item: T) -> list[Finding]:
    """Run one resource's part of a stack check; an unknown value skips just that resource."""
    try:
        return list(check(item))
    except UnknownValueError:
        return []


# ---------------------------------------------------------------- waivers


def resource_waivers(res: ResourceView) -> dict[str, str]:
    """Policies this resource waives through its own tag / label / annotation, with the reason.

    A waiver without `tandem.dev/waiver-reason` is ignored: the reason is what the reviewer reads.
    """
    sources = [
        get(res.props, "tags", default={}),
        get(res.props, "metadata", "annotations", default={}),
        get(res.props, "metadata", "labels", default={}),
    ]
    waived: dict[str, str] = {}
    for src in sources:
        if not isinstance(src, Mapping):
            continue
        value, reason = src.get(WAIVE_KEY), src.get(WAIVE_REASON_KEY)
        if isinstance(value, str) and isinstance(reason, str) and reason.strip():
            for policy in value.replace(";", ",").split(","):
                if policy.strip():
                    waived[policy.strip()] = reason.strip()
    return waived


def name_matches(pattern: str, res: ResourceView | None, urn: str | None) -> bool:
    """A stack waiver's `resource` pattern matches a resource's name, type::name or URN."""
    if pattern in ("*", ""):
        return True
    candidates = [urn or ""]
    if res is not None:
        candidates += [res.name, f"{res.type}::{res.name}", res.urn]
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates if c)
