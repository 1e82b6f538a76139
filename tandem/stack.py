"""Stack loading: a stack file and the use-case files it lists, parsed once into a `Stack`.

Use-case files are validated with the same error format as the stack config (file, field path,
bad value, what is allowed), so `tandem plan` and `pulumi up` refuse a bad one before any
resource is registered. No pulumi import: `tandem plan` loads a stack before it starts the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gpu_pools.contract import SchedulingContract, scheduling_contract
from serving.checks import CheckResult, resolve_contract, run_checks
from vocabulary.config import (
    PlatformConfig,
    namespace_config,
    parse_config,
    pulumi_config_values,
)
from vocabulary.errors import ConfigError, InputError
from vocabulary.usecase import UseCaseSpec, load_use_case
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
    if errors:
        raise ConfigError(errors, "use cases")
    return specs


@dataclass(frozen=True)
class Stack:
    """One stack, parsed once: what `tandem plan`, the program under mocks and the policy harness
    all read, so the stack file is read once, the use cases loaded once and the plan-time checks
    computed once (they were three, three and two before this type existed)."""

    name: str
    flat: dict[str, Any]  # the stack file's `config:` block, as Pulumi hands it to the program
    config: PlatformConfig
    use_cases: list[UseCaseSpec]

    @cached_property
    def contracts(self) -> dict[str, SchedulingContract]:
        """Each GPU pool's scheduling contract, derived from config alone."""
        return {p.name: scheduling_contract(p) for p in self.config.gpu_pools}

    @cached_property
    def checks(self) -> dict[str, list[CheckResult]]:
        """Every use case's plan-time checks against the pool it names (use case -> results)."""
        return {
            uc.name: run_checks(uc, resolve_contract(uc, self.contracts)) for uc in self.use_cases
        }

    def pulumi_config(self) -> tuple[dict[str, str], list[str]]:
        """The flat config in the runtime's form, and the secret keys in it.

        Offline runs cannot decrypt stack secrets and never deploy, so a placeholder stands in for
        each gateway key the config declares (the real program requires the secret to be set).
        """
        config = pulumi_config_values(self.flat)
        secret_keys = [f"tandem:{k.secret_config_key}" for k in self.config.gateway.keys]
        for key in secret_keys:
            config.setdefault(key, "offline-plan-placeholder")
        return config, secret_keys


def from_flat(name: str, flat: dict[str, Any], source: str | None = None) -> Stack:
    """A stack from a flat `config:` block: validated, with its use cases. Raises ConfigError."""
    config = parse_config(namespace_config(flat), source or f"config of stack {name!r}")
    return Stack(name, flat, config, load_use_cases(config))


def load(stack: str) -> Stack:
    """The shipped stack `stacks/Pulumi.<stack>.yaml`, read and validated once."""
    return from_flat(stack, read_stack_file(stack), str(stack_file(stack)))
