"""A stack as the program and the plan see it: the validated platform config and its use cases.

Use-case files are validated with the same error format as the stack config (file, field path,
bad value, what is allowed), so `tandem plan` and `pulumi up` refuse a bad one before any
resource is registered. Pure: no pulumi import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpu_pools.contract import SchedulingContract, scheduling_contract
from vocabulary.config import PlatformConfig, namespace_config, parse_config
from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.usecase import UseCaseSpec, load_use_case

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
    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    return doc.get("config", {}) or {}


def load_stack(stack: str) -> PlatformConfig:
    """Parse and validate a stack file offline (tandem plan, tests)."""
    return parse_config(namespace_config(read_stack_file(stack)), str(stack_file(stack)))


@dataclass(frozen=True)
class StackSpec:
    name: str
    config: PlatformConfig
    use_cases: list[UseCaseSpec]

    def contracts(self) -> dict[str, SchedulingContract]:
        return {p.name: scheduling_contract(p) for p in self.config.gpu_pools}


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
        except ValidationError as exc:
            errors += [f"{rel}: {line}" for line in format_validation_error(exc, UseCaseSpec)]
        except (ValueError, yaml.YAMLError) as exc:
            errors.append(f"{rel}: {exc}")
    names = [s.name for s in specs]
    errors += [
        f"useCases: two files name the use case {n!r}"
        for n in sorted(set(names))
        if names.count(n) > 1
    ]
    if errors:
        raise ConfigError(errors, "use cases")
    return specs


def load(stack: str) -> StackSpec:
    config = load_stack(stack)
    return StackSpec(stack, config, load_use_cases(config))
