"""The routes config generated from use cases: each use case's `gateway:` section becomes a backend,
a route and, with a budget, its team's spend limit.

Pure (pydantic only): the Pulumi `Gateway` component, `tandem plan` and tests all call
`routes_from_use_cases`, and it returns the gateway's own typed `RoutesConfig`, validated like a
file `tandem gateway serve` loads, so the ConfigMap the cluster gets is a file the gateway accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway.config import (
    Backend,
    MetricLabels,
    Retries,
    Route,
    RoutesConfig,
    RouteSplit,
    Team,
    WeightedBackend,
)
from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.features import FeatureRead
from vocabulary.gateway import Budget, Price, UseCaseGateway

__all__ = ["RouteTarget", "UseCaseGateway", "routes_from_use_cases"]

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


def routes_from_use_cases(targets: list[RouteTarget]) -> RoutesConfig:
    """The routes config for these use cases.

    Raises ConfigError naming the use case or the field when the result would not load (unknown
    fallback alias, budget without a price, two use cases claiming one alias...).
    """
    backends: dict[str, Backend] = {}
    routes: dict[str, Route] = {}
    prices: dict[str, Price] = {}
    teams: dict[str, Team] = {}
    owner: dict[str, str] = {}
    for t in targets:
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
            split=split,
            features=t.features,
        )
        if gw.price is not None:
            prices[t.use_case] = _written_out(gw.price)
        if gw.budget is not None:
            team = teams.get(t.team)
            teams[t.team] = Team(budget=_team_budget(t, team.budget if team else None))
    sections = {"prices": prices, "teams": teams}
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
