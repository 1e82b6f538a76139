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
from gpu_pools.contract import scheduling_contract
from serving.checks import CheckResult, shared_pool_checks
from tandem.stack import (
    FeaturePlan,
    Stack,
    check_stack,
    load_use_cases,
    plan_features,
    resolve_use_cases,
)
from vocabulary.config import (
    BATCH_WEBHOOK_SECRET_KEY,
    HF_TOKEN_KEY,
    REGISTRY_DB_PASSWORD_KEY,
    TRACING_SECRET_KEY,
    ConfigError,
    PlatformConfig,
    namespace_config,
    parse_config,
)
from vocabulary.errors import InputError, UnavailableError
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


def _secrets(wanted: dict[str, tuple[str, str]]) -> dict[str, pulumi.Input[str]]:
    """{name: (config key, field path)} -> {name: the Pulumi secret}; every missing one is
    reported with the command that sets it."""
    tandem = pulumi.Config("tandem")
    found: dict[str, pulumi.Input[str]] = {}
    missing: list[str] = []
    for name, (key, where) in wanted.items():
        value = tandem.get_secret(key)
        if value is None:
            missing.append(
                f"{where}: no secret for {name!r}; set it with "
                f"`pulumi config set --secret tandem:{key} <value>`"
            )
        else:
            found[name] = value
    if missing:
        raise ConfigError(missing)
    return found


def gateway_keys(config: PlatformConfig) -> dict[str, pulumi.Input[str]]:
    """Each team's raw API key from its Pulumi secret; a missing one names the command to set it."""
    return _secrets({k.id: (k.secret_config_key, "gateway.keys") for k in config.gateway.keys})


def provider_keys(config: PlatformConfig) -> dict[str, pulumi.Input[str]]:
    """Each external provider's API key the coding-assistant routes name (`apiKeySecret`)."""
    routes = config.gateway.assistants.routes if config.gateway.assistants else []
    return _secrets(
        {
            r.api_key_secret: (r.secret_config_key, f"gateway.assistants.routes[{i}]")
            for i, r in enumerate(routes)
            if r.api_key_secret and r.secret_config_key
        }
    )


def alerting_secrets(config: PlatformConfig) -> dict[str, pulumi.Input[str]]:
    """Each alert receiver's credential (webhook URL, routing key, SMTP password)."""
    return _secrets(
        {
            r.name: (r.secret_config_key, f"alerting.receivers[{i}]")
            for i, r in enumerate(config.alerting.receivers)
            if r.needs_secret
        }
    )


def registry_password(config: PlatformConfig) -> pulumi.Input[str] | None:
    """The model registry's RDS master password (EKS mode only: an existing cluster's registry
    reads its DSN from a Secret the stack names)."""
    if not config.registry.enabled or config.cluster.mode != "eks":
        return None
    return _secrets({"registry": (REGISTRY_DB_PASSWORD_KEY, "registry")})["registry"]


def tracing_secret(config: PlatformConfig) -> pulumi.Input[str] | None:
    """The secret Phoenix's are derived from, when the stack runs Phoenix."""
    if not config.tracing.enabled or config.tracing.backend != "phoenix":
        return None
    return _secrets({"tracing": (TRACING_SECRET_KEY, "tracing")})["tracing"]


def build(
    config: PlatformConfig,
    use_cases: list[UseCaseSpec],
    keys: dict[str, pulumi.Input[str]] | None = None,
    checks: dict[str, list[CheckResult]] | None = None,
    alerting: dict[str, pulumi.Input[str]] | None = None,
    providers: dict[str, pulumi.Input[str]] | None = None,
    features: FeaturePlan | None = None,
    registry_db_password: pulumi.Input[str] | None = None,
    tracing: pulumi.Input[str] | None = None,
) -> Platform:
    """The platform for a validated config; `checks` are the use cases' plan-time checks when the
    caller already ran them (tandem plan), so the components do not run them a second time."""
    hf_token = pulumi.Config("tandem").get_secret(HF_TOKEN_KEY)  # optional: gated Hub models
    webhook_secret = pulumi.Config("tandem").get_secret(BATCH_WEBHOOK_SECRET_KEY)  # optional
    features = features or plan_features(config, use_cases)
    platform = Platform(
        "tandem",
        PlatformArgs(
            config,
            use_cases,
            keys or {},
            checks,
            alerting or {},
            provider_keys=providers or {},
            hf_token=hf_token,
            registry_db_password=registry_db_password,
            tracing_secret=tracing,
            feature_repos=features.repos,
            feature_reads=features.reads,
            batch_webhook_secret=webhook_secret,
        ),
    )
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
            check_stack(config, use_cases)
            use_cases, _ = resolve_use_cases(use_cases, pulumi.get_stack())
            contracts = {p.name: scheduling_contract(p) for p in config.gpu_pools}
            failed = [r for r in shared_pool_checks(use_cases, contracts) if not r.ok]
            if failed:
                raise ConfigError([f"[{r.check}] {r.message}" for r in failed], "GPU pools")
            features = plan_features(config, use_cases)
            if features.failed:
                raise ConfigError(
                    [f"[{r.check}] {r.message}" for r in features.failed], "feature store"
                )
        else:
            config, use_cases, checks = stack.config, stack.use_cases, stack.checks
            features = stack.features
        keys = gateway_keys(config)
        receivers = alerting_secrets(config)
        db_password = registry_password(config)
        providers = provider_keys(config)
        # bad input found while building (a use case's config_json, say) ends the same way: one
        # message naming the file, and nothing registered after it
        secret = tracing_secret(config)
        return build(
            config, use_cases, keys, checks, receivers, providers, features, db_password, secret
        )
    except (InputError, UnavailableError) as exc:  # ConfigError included
        raise pulumi.RunError(str(exc)) from None
