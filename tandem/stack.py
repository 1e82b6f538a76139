"""Stack loading: a stack file and the use-case files it lists, parsed once into a `Stack`.

Use-case files are validated with the same error format as the stack config (file, field path,
bad value, what is allowed), so `tandem plan` and `pulumi up` refuse a bad one before any
resource is registered. No pulumi import: `tandem plan` loads a stack before it starts the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from features import repo as feature_repo
from gpu_pools.contract import SchedulingContract, scheduling_contract
from serving.checks import (
    SHARED_POOLS,
    CheckResult,
    resolve_contract,
    run_checks,
    shared_pool_checks,
)
from vocabulary.config import (
    REGISTRY_DB_PASSWORD_KEY,
    TRACING_SECRET_KEY,
    PlatformConfig,
    image_errors,
    namespace_config,
    parse_config,
    pulumi_config_values,
)
from vocabulary.errors import ConfigError, InputError, format_validation_error
from vocabulary.features import FEATURES_DIR, FeatureRead
from vocabulary.prompts import PROMPTS_ROOT, load_prompts
from vocabulary.registry import Resolved, load_resolutions, resolution_path
from vocabulary.usecase import UseCaseSpec, load_use_case, resolve_registry
from vocabulary.yamlfile import load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
USE_CASE_DIR = "stacks/usecases"


def stack_file(stack: str) -> Path:
    return STACKS_DIR / f"Pulumi.{stack}.yaml"


def read_stack_file(stack: str) -> dict[str, Any]:
    """The `config:` block of a stack file, as Pulumi would hand it to the program."""
    path = stack_file(stack)
    if not path.exists():
        known = sorted(
            p.name[len("Pulumi.") : -len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml")
        )
        raise ConfigError([f"no stack {stack!r}; stacks: {', '.join(known)}"], str(path))
    doc = load_yaml(path, "stack file") or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("config") or {}, dict):
        raise ConfigError(["(root): a stack file is a mapping with a `config:` mapping"], str(path))
    return doc.get("config", {}) or {}


def load_use_cases(config: PlatformConfig) -> list[UseCaseSpec]:
    """Every use case the stack lists (`tandem:useCases`, paths relative to the repo root)."""
    errors: list[str] = []
    specs: list[UseCaseSpec] = []
    files: list[str] = []
    for i, rel in enumerate(config.use_cases):
        path = REPO_ROOT / rel
        if not path.is_file():
            available = sorted(
                f"{USE_CASE_DIR}/{p.name}" for p in (REPO_ROOT / USE_CASE_DIR).glob("*.yaml")
            )
            errors.append(
                f"useCases[{i}]: {rel!r}: no such file; available: {', '.join(available)}"
            )
            continue
        try:
            specs.append(load_use_case(path))
            files.append(rel)
        except ConfigError as exc:
            errors += [f"{rel}: {line}" for line in exc.errors]
        except InputError as exc:
            errors.append(str(exc))
    names = [s.name for s in specs]
    errors += [
        f"useCases: two files name the use case {n!r}"
        for n in sorted(set(names))
        if names.count(n) > 1
    ]
    errors += [
        f"{rel}: {line}" for rel, s in zip(files, specs, strict=True) for line in prompt_errors([s])
    ]
    if errors:
        raise ConfigError(errors, "use cases")
    return specs


def resolve_use_cases(
    use_cases: list[UseCaseSpec], stack: str
) -> tuple[list[UseCaseSpec], list[Resolved]]:
    """Every `registry:` reference resolved from the stack's recorded resolution file
    (`stacks/registry/<stack>.yaml`): ConfigError naming the reference when one is missing."""
    path = resolution_path(REPO_ROOT, stack)
    if not any(d.registry is not None for uc in use_cases for d in uc.deployments):
        return use_cases, []
    resolutions = load_resolutions(path)
    where = str(path.relative_to(REPO_ROOT))
    out, found, errors = [], [], []
    for uc in use_cases:
        try:
            resolved, refs = resolve_registry(uc, resolutions, where)
        except ConfigError as exc:
            errors += exc.errors
            continue
        out.append(resolved)
        found += refs
    if errors:
        raise ConfigError(errors, where)
    return out, found


def tracing_errors(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> list[str]:
    """`tracing.capture.routes` name routes the gateway serves (a typo would capture nothing)."""
    assistants = config.gateway.assistants
    aliases = {uc.gateway.alias for uc in use_cases if uc.gateway is not None and uc.gateway.alias}
    aliases |= {r.alias for r in assistants.routes} if assistants is not None else set()
    return [
        f"tracing.capture.routes[{i}]: {alias!r} is not a gateway route of this stack; "
        f"allowed: {', '.join(sorted(aliases)) or '(none: no use case has a gateway: section)'}"
        for i, alias in enumerate(config.tracing.capture.routes)
        if alias not in aliases
    ]


def lifecycle_errors(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> list[str]:
    """What a registry reference or a rollout needs from the stack."""
    errors = []
    for uc in use_cases:
        refs = [d.name for d in uc.deployments if d.registry is not None]
        if refs and not config.registry.enabled:
            errors.append(
                f"registry.enabled: use case {uc.name!r} ({', '.join(refs)}) takes its model from "
                "the model registry; enable tandem:registry"
            )
        if uc.rollout is None:
            continue
        if not config.gateway.enabled or config.gateway.redis == "none":
            errors.append(
                f"gateway.redis: use case {uc.name!r} has a rollout: the rollout controller moves "
                "traffic through the gateway's Redis; allowed: in-cluster, elasticache"
            )
        if not config.observability.enabled:
            errors.append(
                f"observability.enabled: use case {uc.name!r} has a rollout, whose analysis asks "
                "Prometheus every interval; enable observability"
            )
    return errors


def policy_errors(config: PlatformConfig) -> list[str]:
    """`tandem:policies` names real policies, and every waiver is complete: an override of a
    misspelt rule would silently do nothing, and a malformed waiver would stop the policy pack."""
    from policies.rules import ALL_RULES
    from policies.settings import Waiver

    names = sorted(r.name for r in ALL_RULES)
    errors = [
        f"policies.overrides: {rule!r} is not a policy; policies: {', '.join(names)}"
        for rule in config.policies.overrides
        if rule not in names
    ]
    for i, raw in enumerate(config.policies.waivers):
        try:
            waiver = Waiver.model_validate(raw)
        except ValidationError as exc:
            errors += [
                f"policies.waivers[{i}].{line}" for line in format_validation_error(exc, Waiver)
            ]
            continue
        if waiver.policy not in names:
            errors.append(
                f"policies.waivers[{i}].policy: {waiver.policy!r} is not a policy; "
                f"policies: {', '.join(names)}"
            )
    return errors


def feature_errors(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> list[str]:
    """A use case's `features:` names a feature project the stack serves."""
    projects = config.feature_store.projects if config.feature_store else []
    errors = []
    for uc in use_cases:
        if uc.features is None or uc.features.project in projects:
            continue
        if not projects:
            errors.append(
                f"use case {uc.name!r}: features.project {uc.features.project!r} needs the "
                "stack's feature store: add tandem:featureStore {projects: "
                f"[{uc.features.project}]}}"
            )
        else:
            errors.append(
                f"use case {uc.name!r}: features.project {uc.features.project!r} is not a "
                f"project of tandem:featureStore.projects; allowed: {', '.join(projects)}"
            )
    return errors


def prompt_errors(use_cases: list[UseCaseSpec]) -> list[str]:
    """Each prompt a use case lists exists, loads, and is written for the use case's alias."""
    errors = []
    for uc in use_cases:
        if not uc.prompts:
            continue
        try:
            found = load_prompts(PROMPTS_ROOT, uc.prompts)
        except ConfigError as exc:
            errors += [f"prompts: {line}" for line in exc.errors]
            continue
        alias = (uc.gateway.alias if uc.gateway else None) or uc.name
        errors += [
            f"prompts: {name!r} is written for the model {p.model!r}, not use case "
            f"{uc.name!r}'s alias {alias!r}"
            for name, p in found.items()
            if p.model != alias
        ]
    return errors


def check_stack(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> None:
    """What only the whole stack can tell (config + use cases): raises ConfigError."""
    problems = image_errors(config, use_cases) + policy_errors(config)
    problems += lifecycle_errors(config, use_cases) + tracing_errors(config, use_cases)
    if problems := problems + feature_errors(config, use_cases):
        raise ConfigError(problems, "stack config")


FEATURE_CHECKS = "(feature store)"  # the `use_case` of the feature repositories' checks


@dataclass(frozen=True)
class FeaturePlan:
    """The stack's feature projects as Feast plans them, each use case's resolved read, and
    the plan-time checks of both (Feast's errors, the platform's rules)."""

    repos: dict[str, feature_repo.Repo]
    reads: dict[str, FeatureRead]
    checks: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]


def plan_features(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> FeaturePlan:
    """Inspect every feature project with Feast (offline; features/repo.py) and resolve each
    use case's `features:` against it. Raises UnavailableError without the Feast environment."""
    fs = config.feature_store
    if fs is None:
        return FeaturePlan({}, {}, [])
    repos = {p: feature_repo.inspect(p) for p in fs.projects}
    checks = []
    for project, repo in repos.items():
        problems = feature_repo.check_repo(repo, fs.materialize_schedule)
        views = ", ".join(f"{v.name} (ttl {v.ttl_s} s, {v.source})" for v in repo.views.values())
        checks.append(
            CheckResult(
                FEATURE_CHECKS,
                f"feast-plan:{project}",
                not problems,
                "; ".join(problems)
                or f"{FEATURES_DIR}/{project}: {len(repo.entities)} entities, views {views}, "
                f"services {', '.join(sorted(repo.services)) or 'none'}",
            )
        )
    reads = {}
    for uc in use_cases:
        if uc.features is None:
            continue
        read, problems = feature_repo.feature_read(repos[uc.features.project], uc.name, uc.features)
        checks.append(
            CheckResult(
                uc.name,
                "features",
                read is not None,
                "; ".join(problems)
                or f"reads {uc.features.service} ({', '.join(read.feature_names if read else [])}) "
                f"by {uc.features.entity.name} from the {uc.features.entity.from_} "
                f"{uc.features.entity.field!r}",
            )
        )
        if read is not None:
            reads[uc.name] = read
    return FeaturePlan(repos, reads, checks)


def monitoring_check(config: PlatformConfig, uc: UseCaseSpec) -> CheckResult:
    """What the gateway will sample for the use case's `monitoring:` on this stack. The prompt
    embedding is the semantic cache's (never computed for drift alone): without a semantic cache
    on the route the embedding signal is not sampled, which the plan says."""
    m = uc.monitoring
    assert m is not None
    stack_cache = config.gateway.cache
    route_cache = uc.gateway.cache if uc.gateway is not None else None
    mode = (route_cache.mode if route_cache is not None else None) or (
        stack_cache.mode if stack_cache is not None else None
    )
    off = route_cache is not None and route_cache.enabled is False
    signals = [s for s in m.signals if s != "embedding" or (mode == "semantic" and not off)]
    skipped = "" if len(signals) == len(m.signals) else (
        "; embedding not sampled: no semantic cache on this stack's route (gateway.cache)"
    )  # fmt: skip
    return CheckResult(
        uc.name,
        "monitoring",
        True,
        f"samples {m.sample_rate:.0%} of answers: {', '.join(signals + [f'feature:{f}' for f in m.features])}"
        f"{skipped}; thresholds for {m.false_alarms_per_30d:g} false alarm(s) per 30 days",
    )


@dataclass(frozen=True)
class Stack:
    """One stack, parsed once: what `tandem plan`, the program under mocks and the policy harness
    all read, so the stack file is read once, the use cases loaded once and the plan-time checks
    computed once (they were three, three and two before this type existed)."""

    name: str
    flat: dict[str, Any]  # the stack file's `config:` block, as Pulumi hands it to the program
    config: PlatformConfig
    use_cases: list[UseCaseSpec]
    registry: list[Resolved] = field(default_factory=list)  # what each registry: reference names

    @cached_property
    def contracts(self) -> dict[str, SchedulingContract]:
        """Each GPU pool's scheduling contract, derived from config alone."""
        return {p.name: scheduling_contract(p) for p in self.config.gpu_pools}

    @cached_property
    def checks(self) -> dict[str, list[CheckResult]]:
        """Every use case's plan-time checks against the pool it names (use case -> results),
        and, under SHARED_POOLS, the checks of pools several use cases share."""
        checks = {
            uc.name: run_checks(uc, resolve_contract(uc, self.contracts)) for uc in self.use_cases
        }
        if shared := shared_pool_checks(self.use_cases, self.contracts):
            checks[SHARED_POOLS] = shared
        for result in self.features.checks:
            checks.setdefault(result.use_case, []).append(result)
        for uc in self.use_cases:
            if uc.monitoring is not None:
                checks.setdefault(uc.name, []).append(monitoring_check(self.config, uc))
        return checks

    @cached_property
    def features(self) -> FeaturePlan:
        """The feature projects and reads, planned once (Feast runs in its own environment)."""
        return plan_features(self.config, self.use_cases)

    def pulumi_config(self) -> tuple[dict[str, str], list[str]]:
        """The flat config in the runtime's form, and the secret keys in it.

        Offline runs cannot decrypt stack secrets and never deploy, so a placeholder stands in for
        each gateway key and alert receiver credential the config declares (the real program
        requires each secret to be set).
        """
        config = pulumi_config_values(self.flat)
        secret_keys = [f"tandem:{k.secret_config_key}" for k in self.config.gateway.keys]
        secret_keys += [
            f"tandem:{r.secret_config_key}"
            for r in self.config.alerting.receivers
            if r.needs_secret
        ]
        if self.config.registry.enabled and self.config.cluster.mode == "eks":
            secret_keys.append(f"tandem:{REGISTRY_DB_PASSWORD_KEY}")
        if self.config.tracing.enabled and self.config.tracing.backend == "phoenix":
            secret_keys.append(f"tandem:{TRACING_SECRET_KEY}")
        assistants = self.config.gateway.assistants
        secret_keys += [
            f"tandem:{r.secret_config_key}"
            for r in (assistants.routes if assistants else [])
            if r.secret_config_key
        ]
        for key in secret_keys:
            config.setdefault(key, "offline-plan-placeholder")
        return config, secret_keys


def from_flat(name: str, flat: dict[str, Any], source: str | None = None) -> Stack:
    """A stack from a flat `config:` block: validated, with its use cases. Raises ConfigError."""
    config = parse_config(namespace_config(flat), source or f"config of stack {name!r}")
    use_cases = load_use_cases(config)
    check_stack(config, use_cases)
    use_cases, resolved = resolve_use_cases(use_cases, name)
    return Stack(name, flat, config, use_cases, resolved)


def load(stack: str) -> Stack:
    """The shipped stack `stacks/Pulumi.<stack>.yaml`, read and validated once."""
    return from_flat(stack, read_stack_file(stack), str(stack_file(stack)))
