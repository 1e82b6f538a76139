"""Freshness alerts for feature views: a view whose last materialization or push is older than
its TTL allows is serving (or about to serve) values the model was never trained to trust.

The inputs are Feast's own feature-server metrics (`feast serve --metrics`, Feast >= 0.62):
- `feast_feature_freshness_seconds{project, feature_view}`: seconds since the view's most
  recent materialization end time, recomputed from the registry every 30 s;
- `feast_push_request_total{push_source, mode}`: pushes the server accepted (it has no project
  label, so the rule selects the project's own feature-server pods by `job`, the metrics
  Service of components/feature_store.py).

One alert per feature view, its TTL written in (the TTL lives in the Feast definitions, not in a
metric):
- batch view: stale when the last materialization is older than the TTL, or it never ran;
- push view: stale when that is true *and* no push reached the view's push source within the
  TTL (a pushed value is as fresh as a materialized one).

`unit_tests` is the promtool test document: every alert fires on a stale input and stays quiet on
a fresh one (tests/unit/test_features_rules.py runs `promtool test rules`).
"""

from __future__ import annotations

from typing import Any

import yaml

from features.repo import Repo, View

FRESHNESS = "feast_feature_freshness_seconds"
PUSHES = "feast_push_request_total"
ALERT = "TandemFeatureViewStale"
FOR = "5m"


def metrics_job(project: str) -> str:
    """The `job` label Prometheus gives the project's feature-server metrics (its Service)."""
    return f"feast-{project.replace('_', '-')}-metrics"


def _sel(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def stale_expr(project: str, view: View) -> str:
    fresh = _sel(FRESHNESS, project=project, feature_view=view.name)
    materialized_stale = f"(max({fresh}) > {view.ttl_s}) or absent({fresh})"
    if view.source != "push" or not view.push_source:
        return materialized_stale
    pushes = _sel(PUSHES, job=metrics_job(project), push_source=view.push_source)
    no_push = f"(sum(increase({pushes}[{_duration(view.ttl_s)}])) == 0) or absent({pushes})"
    return f"({materialized_stale}) and on() ({no_push})"


def alert_rules(repo: Repo, team: str = "") -> list[dict[str, Any]]:
    rules = []
    for view in repo.views.values():
        if view.ttl_s <= 0:  # the plan refuses it; nothing to compare with
            continue
        how = (
            f"materialized or pushed (push source {view.push_source})"
            if view.source == "push"
            else "materialized"
        )
        labels = {"severity": "warning", "project": repo.project, "feature_view": view.name}
        if team:
            labels["team"] = team
        rules.append(
            {
                "alert": ALERT,
                "expr": stale_expr(repo.project, view),
                "for": FOR,
                "labels": labels,
                "annotations": {
                    "summary": f"Feature view {repo.project}/{view.name} is older than its TTL",
                    "description": (
                        f"{repo.project}/{view.name} was last {how} more than its TTL "
                        f"({view.ttl_s} s) ago: the online store serves values older than the "
                        "model should trust. Check the materialization CronJob "
                        f"(feast-materialize-{repo.project.replace('_', '-')}) and the "
                        "producers that push to it."
                    ),
                },
            }
        )
    return rules


def rule_groups(repos: list[Repo], teams: dict[str, str] | None = None) -> list[dict[str, Any]]:
    teams = teams or {}
    return [
        {"name": f"tandem-features-{r.project}", "rules": alert_rules(r, teams.get(r.project, ""))}
        for r in repos
        if r.ok and r.views
    ]


def rule_file(repos: list[Repo], annotations: bool = True) -> str:
    """The groups as a rules file (`annotations=False` for promtool tests, which would
    otherwise have to repeat every description)."""
    groups = rule_groups(repos)
    if not annotations:
        for g in groups:
            for r in g["rules"]:
                r.pop("annotations", None)
    return yaml.safe_dump({"groups": groups}, sort_keys=False)


def _series(project: str, view: View, steps: int, stale: bool, pushing: bool) -> list[dict]:
    """Input series for one view: freshness growing past the TTL (stale) or a 15-minute
    materialization sawtooth (fresh); for a push view, its push counter rising or flat."""
    fresh = _sel(FRESHNESS, project=project, feature_view=view.name)
    values = f"0+60x{steps}" if stale else " ".join(str((i % 15) * 60) for i in range(steps + 1))
    out = [{"series": fresh, "values": values}]
    if view.source == "push" and view.push_source:
        pushes = _sel(PUSHES, job=metrics_job(project), push_source=view.push_source, mode="online")
        out.append({"series": pushes, "values": f"0+1x{steps}" if pushing else f"5x{steps}"})
    return out


def unit_tests(rule_file_name: str, repo: Repo) -> dict[str, Any]:
    """promtool tests, one view at a time with every other view healthy: a fresh view stays
    quiet and a stale one fires; a push view whose materialization is stale stays quiet while
    pushes arrive and fires when they stop."""
    tests = []
    views = list(repo.views.values())
    for view in views:
        steps = max(1, view.ttl_s // 60) + 30  # the whole TTL window, then the alert's `for`
        exp = [
            {
                "exp_labels": {
                    "severity": "warning",
                    "project": repo.project,
                    "feature_view": view.name,
                }
            }
        ]
        others = [
            s for v in views if v is not view for s in _series(repo.project, v, steps, False, True)
        ]
        cases = [(False, True, []), (True, False, exp)]
        if view.source == "push" and view.push_source:
            cases.append((True, True, []))  # stale materialization, live pushes: fresh
        for stale, pushing, alerts in cases:
            tests.append(
                {
                    "interval": "1m",
                    "input_series": others + _series(repo.project, view, steps, stale, pushing),
                    "alert_rule_test": [
                        {"eval_time": f"{steps}m", "alertname": ALERT, "exp_alerts": alerts}
                    ],
                }
            )
    return {"rule_files": [rule_file_name], "evaluation_interval": "1m", "tests": tests}
