"""The routes config generated from use cases: each use case's `gateway:` section becomes a backend,
a route and, with a budget, its team's spend limit.

Pure (pydantic only): the Pulumi `Gateway` component, `tandem plan` and tests all call
`routes_from_use_cases`, and it returns the gateway's own typed `RoutesConfig`, validated like a
file `tandem gateway serve` loads, so the ConfigMap the cluster gets is a file the gateway accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway.config import (
    Audit,
    Backend,
    MetricLabels,
    Retries,
    Route,
    RoutesConfig,
    RouteSplit,
    Team,
    WeightedBackend,
)
from vocabulary.config import AssistantsConfig
from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.features import FeatureRead
from vocabulary.gateway import Budget, Price, Timeouts, UseCaseGateway
from vocabulary.monitoring import Monitoring
from vocabulary.prompts import PromptFile

__all__ = [
    "RouteTarget",
    "UseCaseGateway",
    "provider_key_env",
    "routes_from_use_cases",
    "with_assistants",
]

SOURCE = "routes generated from use cases"
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class RouteTarget:
    """One use case as the gateway sees it: who owns it, how callers reach it, where it runs."""

    use_case: str
    team: str
    gateway: UseCaseGateway  # the use case's `gateway:` section
    url: str  # the backend's OpenAI-compatible base URL (ends in /v1)
    model: str | None = None  # the model name the backend serves (default: the alias)
    model_version: str = ""  # the `model_version` label of the stable backend
    # under a rollout: the canary Serve application's base URL (the controller sets the split)
    canary_url: str | None = None
    features: FeatureRead | None = None  # the use case's `features:`, resolved (features.repo)
    monitoring: Monitoring | None = None  # the use case's `monitoring:` (drift signals)
    prompts: dict[str, PromptFile] = field(default_factory=dict)  # the use case's `prompts:`


def routes_from_use_cases(targets: list[RouteTarget], *, batch: bool = False) -> RoutesConfig:
    """The routes config for these use cases; `batch`: the stack runs the Batch API, so each
    use case's `batch_discount` is written into its route (elsewhere it would price nothing).

    Raises ConfigError naming the use case or the field when the result would not load (unknown
    fallback alias, budget without a price, two use cases claiming one alias...).
    """
    backends: dict[str, Backend] = {}
    routes: dict[str, Route] = {}
    prices: dict[str, Price] = {}
    teams: dict[str, Team] = {}
    prompts: dict[str, PromptFile] = {}
    owner: dict[str, str] = {}
    for t in targets:
        prompts.update(t.prompts)
        gw = t.gateway
        alias = gw.alias or t.use_case
        if alias in routes:
            raise ConfigError(
                [
                    f"use case {t.use_case!r}: gateway.alias {alias!r} is already used by "
                    f"use case {owner[alias]!r}"
                ],
                SOURCE,
            )
        owner[alias] = t.use_case
        version = {"model_version": t.model_version} if t.model_version else {}
        arm: dict = {"rollout": "stable"} if t.canary_url else {}
        backends[t.use_case] = Backend(
            url=t.url,
            timeouts=_written_out(gw.timeouts),
            labels=MetricLabels(use_case=t.use_case, model=t.model or alias, **version, **arm),
            model=t.model,
            context_window=gw.context_window,
        )
        split = None
        if t.canary_url:
            canary = f"{t.use_case}-canary"  # lifecycle.plan.backend_names
            backends[canary] = Backend(
                url=t.canary_url,
                timeouts=_written_out(gw.timeouts),
                labels=MetricLabels(use_case=t.use_case, model=t.model or alias, rollout="canary"),
                model=t.model,
                context_window=gw.context_window,
            )
            split = RouteSplit(canary=canary)
            if gw.price is not None:
                prices[canary] = _written_out(gw.price)
        routes[alias] = Route(
            backends=[WeightedBackend(backend=t.use_case)],
            endpoints=list(gw.endpoints),
            fallbacks=list(gw.fallbacks),
            deadline_s=gw.deadline_s,
            retries=Retries(attempts=gw.retries),
            use_case=t.use_case,
            context_fallback=gw.context_fallback,
            degrade_to=gw.degrade_to,
            hedge_after_s=gw.hedge_after_s,
            cache=gw.cache,
            **({"batch_discount": gw.batch_discount} if batch and gw.batch_discount else {}),
            split=split,
            features=t.features,
            monitoring=t.monitoring.route() if t.monitoring is not None else None,
            context=gw.context,
        )
        if gw.price is not None:
            prices[t.use_case] = _written_out(gw.price)
        if gw.budget is not None:
            team = teams.get(t.team)
            teams[t.team] = Team(budget=_team_budget(t, team.budget if team else None))
    sections = {"prices": prices, "teams": teams, "prompts": prompts}
    try:
        return RoutesConfig(
            backends=backends, routes=routes, **{k: v for k, v in sections.items() if v}
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RoutesConfig), SOURCE) from None


def _team_budget(t: RouteTarget, prev: Budget | None) -> Budget:
    """A team's budget is the sum of its use cases' budgets (one period; the lowest soft line)."""
    budget = t.gateway.budget
    assert budget is not None
    if prev is None:
        return _written_out(budget)
    if prev.period != budget.period:
        raise ConfigError(
            [
                f"use case {t.use_case!r}: team {t.team!r} budgets disagree on the period "
                f"({prev.period!r} vs {budget.period!r})"
            ],
            SOURCE,
        )
    return Budget(
        usd=prev.usd + budget.usd,
        period=budget.period,
        soft_fraction=min(prev.soft_fraction, budget.soft_fraction),
    )


def _written_out(model: _M) -> _M:
    """The same values with every field marked as set, so the routes file states each one (the
    file is dumped with only the fields set: what a use case leaves out stays out)."""
    return type(model).model_validate(model.model_dump())


ASSISTANTS_SOURCE = "gateway.assistants"


def provider_key_env(secret: str) -> str:
    """The environment variable the gateway pod reads an external provider's key from."""
    return "TANDEM_PROVIDER_KEY_" + "".join(c if c.isalnum() else "_" for c in secret.upper())


def with_assistants(
    routes: RoutesConfig,
    assistants: AssistantsConfig | None,
    targets: list[RouteTarget],
    audit: bool,
) -> RoutesConfig:
    """The routes with the stack's coding-assistant models, teams and audit added.

    Each assistant route gets a backend of its own, `assistant-<alias>`: an external provider's
    (its key in the environment variable `provider_key_env(apiKeySecret)`), or a use case's
    self-hosted deployment (the URL and model its own route has), which Claude Code and Codex
    reach through translation. The route serves every endpoint its backend can (an Anthropic
    provider: Messages; a chat-completions backend: all, Messages and Responses included).
    """
    update: dict = {"audit": Audit()} if audit else {}
    if assistants is None:
        return routes.model_copy(update=update) if update else routes
    by_use_case = {t.use_case: t for t in targets}
    backends = dict(routes.backends)
    new_routes = dict(routes.routes)
    prices = dict(routes.prices)
    errors: list[str] = []
    for i, r in enumerate(assistants.routes):
        name = f"assistant-{r.alias}"
        if r.alias in new_routes:
            errors.append(f"assistants.routes[{i}].alias: {r.alias!r} is a use case's alias too")
            continue
        if r.use_case is not None:
            target = by_use_case.get(r.use_case)
            if target is None:
                errors.append(
                    f"assistants.routes[{i}].useCase: {r.use_case!r} is not a use case of this "
                    f"stack with a gateway section; allowed: {sorted(by_use_case)}"
                )
                continue
            backend = Backend(
                url=target.url,
                timeouts=_written_out(target.gateway.timeouts),
                labels=MetricLabels(use_case=target.use_case, model=target.model or r.alias),
                model=target.model,
                context_window=target.gateway.context_window,
            )
            price = r.price or target.gateway.price
        else:
            assert r.provider is not None and r.url is not None
            backend = Backend(
                url=r.url,
                labels=MetricLabels(use_case="assistants", model=r.model or r.alias),
                model=r.model,
                protocol=r.provider,
                auth=r.auth,
                api_key_env=provider_key_env(r.api_key_secret) if r.api_key_secret else None,
                # an agent's turn can think for minutes before its last token
                timeouts=_written_out(Timeouts(first_token_s=120, total_s=600)),
            )
            price = r.price
        backends[name] = backend
        new_routes[r.alias] = Route(
            backends=[WeightedBackend(backend=name)],
            fallbacks=list(r.fallbacks),
            deadline_s=600,
            use_case="assistants" if r.use_case is None else r.use_case,
        )
        if price is not None:
            prices[name] = _written_out(price)
    teams = dict(routes.teams)
    for team, t in assistants.teams.items():
        prev = teams.get(team)
        if prev is not None and prev.budget is not None and t.budget is not None:
            errors.append(
                f"assistants.teams.{team}.budget: team {team!r} has a budget from its use cases "
                "already; set it in one place"
            )
            continue
        teams[team] = Team(
            budget=(prev.budget if prev is not None else None) or t.budget,
            developer_budget=t.developer_budget,
            developers=list(t.developers),
        )
    if errors:
        raise ConfigError(errors, ASSISTANTS_SOURCE)
    update.update(backends=backends, routes=new_routes, prices=prices, teams=teams)
    try:
        return RoutesConfig.model_validate({**routes.model_dump(exclude_unset=True), **update})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RoutesConfig), ASSISTANTS_SOURCE) from None
