"""The Pulumi program: validate the stack's config, then build the platform.

`__main__.py` calls `main()` under the real engine; `tandem plan` and the tests call it under
the mock engine. Config is validated before the first resource is created, so a bad stack
registers nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from components.platform import Platform, PlatformArgs
from serving.checks import CheckResult
from tandem.stack import Stack, load_use_cases
from vocabulary.config import ConfigError, PlatformConfig, namespace_config, parse_config
from vocabulary.usecase import UseCaseSpec


def from_pulumi() -> PlatformConfig:
    """Read every `tandem:*` key the engine holds for this stack and validate it.

    The language host hands config to the program through `set_all_config` (and older hosts
    through the PULUMI_CONFIG environment bag); keys may still carry the legacy `:config:` infix.
    """
    flat: dict[str, Any] = {}
    for key, value in {**get_config_env(), **CONFIG.get()}.items():
        key = key.replace(":config:", ":", 1)
        try:
            flat[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            flat[key] = value
    return parse_config(namespace_config(flat), f"config of stack {pulumi.get_stack()!r}")


def gateway_keys(config: PlatformConfig) -> dict[str, pulumi.Input[str]]:
    """Each team's raw API key from its Pulumi secret; a missing one names the command to set it."""
    tandem = pulumi.Config("tandem")
    keys: dict[str, pulumi.Input[str]] = {}
    for key in config.gateway.keys:
        value = tandem.get_secret(key.secret_config_key)
        if value is None:
            raise ConfigError(
                [
                    f"gateway.keys: no secret for key {key.id!r}; set it with "
                    f"`pulumi config set --secret tandem:{key.secret_config_key} <key>`"
                ]
            )
        keys[key.id] = value
    return keys


def build(
    config: PlatformConfig,
    use_cases: list[UseCaseSpec],
    keys: dict[str, pulumi.Input[str]] | None = None,
    checks: dict[str, list[CheckResult]] | None = None,
) -> Platform:
    """The platform for a validated config; `checks` are the use cases' plan-time checks when the
    caller already ran them (tandem plan), so the components do not run them a second time."""
    platform = Platform("tandem", PlatformArgs(config, use_cases, keys or {}, checks))
    pulumi.export("clusterName", platform.cluster.name)
    pulumi.export("gpuPools", {name: p.contract.to_dict() for name, p in platform.pools.items()})
    return platform


def main(stack: Stack | None = None) -> Platform:
    """`pulumi up`: read and validate the engine's config. `tandem plan` hands in the `Stack` it
    already parsed (the engine holds the same config), so nothing is parsed twice."""
    try:
        if stack is None:
            config = from_pulumi()
            use_cases, checks = load_use_cases(config), None
        else:
            config, use_cases, checks = stack.config, stack.use_cases, stack.checks
        keys = gateway_keys(config)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    return build(config, use_cases, keys, checks)
