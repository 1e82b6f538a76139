"""A stack as the program and the plan see it: the validated platform config and its use cases.

Use-case files are validated with the same error format as the stack config (file, field path,
bad value, what is allowed), so `tandem plan` and `pulumi up` refuse a bad one before any
resource is registered. Pure: no pulumi import.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from gpu_pools.contract import SchedulingContract, scheduling_contract
from tandem.config import (
    REPO_ROOT,
    ConfigError,
    PlatformConfig,
    format_validation_error,
    load_stack,
)
from tandem.usecase import UseCaseSpec, load_use_case

USE_CASE_DIR = "stacks/usecases"


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
