"""The `gateway:` section of a use-case file, and the routes config generated from use cases.

Pure (pydantic only): the Pulumi `Gateway` component, `tandem plan` and tests all call
`routes_from_use_cases`, so the ConfigMap the cluster gets is exactly what `parse_config`
accepts: the generated dict is validated before it is returned.
"""

from __future__ import annotations

from typing import Any

from gateway.config import ConfigError, parse_config
from vocabulary.gateway import UseCaseGateway

# (use case name, team, its gateway section, backend base URL[, model name the backend serves])
Entry = tuple[str, str, UseCaseGateway, str] | tuple[str, str, UseCaseGateway, str, str]


def routes_from_use_cases(
    entries: list[Entry], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The routes config for these use cases, merged over `base` (server, keys, redis, cache...).

    Raises ConfigError naming the use case when the result would not load (unknown fallback
    alias, budget without a price, two use cases claiming one alias...).
    """
    cfg: dict[str, Any] = {k: v for k, v in (base or {}).items()}
    backends: dict[str, Any] = dict(cfg.get("backends") or {})
    routes: dict[str, Any] = dict(cfg.get("routes") or {})
    prices: dict[str, Any] = dict(cfg.get("prices") or {})
    teams: dict[str, Any] = dict(cfg.get("teams") or {})
    owner: dict[str, str] = {}
    for entry in entries:
        name, team, gw, url = entry[:4]
        upstream_model = entry[4] if len(entry) > 4 else None
        alias = gw.alias or name
        if alias in routes:
            who = owner.get(alias, "the base config")
            raise ConfigError(
                f"use case {name!r}: gateway.alias {alias!r} is already used by {who}"
            )
        owner[alias] = f"use case {name!r}"
        backend: dict[str, Any] = {
            "url": url,
            "timeouts": gw.timeouts.model_dump(),
            "labels": {"use_case": name, "model": upstream_model or alias},
        }
        if upstream_model:
            backend["model"] = upstream_model
        if gw.context_window:
            backend["context_window"] = gw.context_window
        backends[name] = backend
        route: dict[str, Any] = {
            "backends": [{"backend": name}],
            "endpoints": list(gw.endpoints),
            "fallbacks": list(gw.fallbacks),
            "deadline_s": gw.deadline_s,
            "retries": {"attempts": gw.retries},
            "use_case": name,
        }
        for key in ("context_fallback", "degrade_to", "hedge_after_s", "cache"):
            if getattr(gw, key) is not None:
                route[key] = getattr(gw, key)
        routes[alias] = route
        if gw.price is not None:
            prices[name] = gw.price.model_dump()
        if gw.budget is not None:
            prev = (teams.get(team) or {}).get("budget")
            budget = gw.budget.model_dump()
            if prev:
                if prev["period"] != budget["period"]:
                    raise ConfigError(
                        f"use case {name!r}: team {team!r} budgets disagree on the period "
                        f"({prev['period']!r} vs {budget['period']!r})"
                    )
                budget["usd"] += prev["usd"]
                budget["soft_fraction"] = min(prev["soft_fraction"], budget["soft_fraction"])
            teams[team] = {"budget": budget}
    cfg.update(backends=backends, routes=routes)
    if prices:
        cfg["prices"] = prices
    if teams:
        cfg["teams"] = teams
    parse_config(cfg, "routes generated from use cases")
    return cfg
