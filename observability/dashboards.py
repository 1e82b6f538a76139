"""Grafana dashboards as code (plain JSON model dicts), provisioned through the Grafana sidecar.

Plain dicts rather than grafana-foundation-sdk: the JSON model is stable, the dashboards are
small, and the tests read every target's `expr` back out to evaluate it against a real
Prometheus. FinOps panels read the recording rules (cheap over 30 days); serving and gateway
panels read the exporters' own series.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

from observability import promql as q

DS = {"type": "prometheus", "uid": "${datasource}"}
TEAM = 'team=~"$team"'
HOURS_PER_MONTH = 730


def _target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def _panel(ids: count, title: str, kind: str, targets: list[dict], x: int, y: int, w: int = 12, h: int = 8,
           unit: str = "short", description: str = "", stack: bool = False, max_: float | None = None) -> dict:  # fmt: skip
    defaults: dict = {"unit": unit}
    if max_ is not None:
        defaults["max"] = max_
        defaults["min"] = 0
    if stack:
        defaults["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 60}
    return {
        "id": next(ids),
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def _dashboard(
    uid: str, title: str, panels: list[dict], team_var: bool = True, teams: str | None = None
) -> dict:
    """`teams`: the variable's label_values() query (default: teams of labelled pods)."""
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
         "current": {}, "hide": 0},
    ]  # fmt: skip
    if team_var:
        teams = (
            teams or f"label_values({q.KSM_POD_LABELS}, {q.ksm_label(q.POD_LABEL_KEYS['team'])})"
        )
        variables.append(
            {"name": "team", "type": "query", "datasource": DS, "label": "team", "includeAll": True,
             "multi": True, "allValue": ".*", "refresh": 2,
             "definition": teams,
             "query": {"query": teams, "refId": "team"},
             "current": {"text": "All", "value": "$__all"}},
        )  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "tags": ["tandem"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def gpu_fleet() -> dict:
    ids = count(1)
    busy = f'{q.GR_ENGINE_ACTIVE}{{pod!=""}}'
    p = [
        _panel(ids, "GPUs: capacity, allocated, busy", "timeseries", [
            _target("sum(tandem:gpu_capacity:sum)", "capacity"),
            _target(f"sum(tandem:gpu_allocated:sum{{{TEAM}}})", "allocated"),
            _target(f"sum(tandem:gpu_active:sum{{{TEAM}}})", "busy (GR-weighted)")], 0, 0),
        _panel(ids, "Idle GPUs by pool", "timeseries", [
            _target("sum by (pool) (tandem:gpu_capacity:sum) - sum by (pool) (tandem:gpu_allocated:sum)",
                    "{{pool}} unallocated"),
            _target("sum by (pool) (tandem:gpu_allocated:sum) - sum by (pool) (tandem:gpu_active:sum)",
                    "{{pool}} allocated-idle")], 12, 0, stack=True),
        _panel(ids, "GR_ENGINE_ACTIVE distribution (allocated GPUs)", "heatmap", [
            _target(f"sum by (le) (count_values(\"le\", round({busy} * 10) / 10))", "{{le}}")], 0, 8),
        _panel(ids, "Utilization quantiles", "timeseries", [
            _target(f"quantile(0.5, {busy})", "GR p50"),
            _target(f"quantile(0.95, {busy})", "GR p95"),
            _target(f'quantile(0.5, {q.SM_ACTIVE}{{pod!=""}})', "SM p50"),
            _target(f'quantile(0.95, {q.SM_ACTIVE}{{pod!=""}})', "SM p95")], 12, 8, unit="percentunit", max_=1),
        _panel(ids, "Framebuffer used by team", "timeseries", [
            _target(f"sum by (team) ({q.attribute(q.dcgm_pods(q.FB_USED))}) * 1048576", "{{team}}")],
            0, 16, unit="bytes", stack=True),
        _panel(ids, "Power by pool", "timeseries", [
            _target(f"sum by (pool) ({q.dcgm_node(q.POWER)} * on (node) group_left(pool) {q.node_labels()})",
                    "{{pool}}")], 12, 16, unit="watt", stack=True),
        _panel(ids, "Tensor / DRAM / SM occupancy (fleet mean)", "timeseries", [
            _target(f'avg({q.TENSOR_ACTIVE}{{pod!=""}})', "tensor pipe"),
            _target(f'avg({q.DRAM_ACTIVE}{{pod!=""}})', "DRAM"),
            _target(f'avg({q.SM_OCCUPANCY}{{pod!=""}})', "SM occupancy")], 0, 24, unit="percentunit", max_=1),
        _panel(ids, "XID errors (last 1h)", "stat", [
            _target(f"count(max_over_time({q.XID}[1h]) > 0) or vector(0)", "GPUs with XID")], 12, 24, w=6),
        _panel(ids, "Framebuffer free (fleet)", "stat", [
            _target(f"sum({q.FB_FREE}) * 1048576", "free")], 18, 24, w=6, unit="bytes"),
    ]  # fmt: skip
    return _dashboard("tandem-gpu-fleet", "Tandem / GPU fleet", p)


def serving_slo() -> dict:
    ids = count(1)
    r = "$__rate_interval"
    p = [
        _panel(ids, "TTFT p50 / p95 / p99 by model", "timeseries", [
            _target(f"histogram_quantile({x}, sum by (model_name, le) (rate({q.vllm(q.VLLM_TTFT + '_bucket')}[{r}])))",
                    f"{{{{model_name}}}} p{int(x * 100)}") for x in (0.5, 0.95, 0.99)], 0, 0, unit="s"),
        _panel(ids, "Inter-token latency p95 by model", "timeseries", [
            _target(f"histogram_quantile(0.95, sum by (model_name, le) (rate({q.vllm(q.VLLM_ITL + '_bucket')}[{r}])))",
                    "{{model_name}}")], 12, 0, unit="s"),
        _panel(ids, "Requests running / waiting", "timeseries", [
            _target(f"sum by (model_name) ({q.vllm(q.VLLM_RUNNING)})", "{{model_name}} running"),
            _target(f"sum by (model_name) ({q.vllm(q.VLLM_WAITING)})", "{{model_name}} waiting")], 0, 8),
        _panel(ids, "KV cache usage", "timeseries", [
            _target(f"max by (model_name) ({q.vllm(q.VLLM_KV_CACHE)})", "{{model_name}}")], 12, 8,
            unit="percentunit", max_=1),
        _panel(ids, "TTFT SLO bad ratio (1h)", "timeseries", [
            _target("tandem:vllm_ttft_bad:ratio_rate1h", "{{namespace}}/{{model_name}}")], 0, 16,
            unit="percentunit"),
        _panel(ids, "Tokens / s by model", "timeseries", [
            _target(f"sum by (model) (tandem:vllm_prompt_tokens:rate5m{{{TEAM}}})", "{{model}} in"),
            _target(f"sum by (model) (tandem:vllm_generation_tokens:rate5m{{{TEAM}}})", "{{model}} out")],
            12, 16),
    ]  # fmt: skip
    return _dashboard("tandem-serving-slo", "Tandem / Serving SLOs", p)


def gateway() -> dict:
    ids = count(1)
    r = "$__rate_interval"
    p = [
        _panel(ids, "Requests / s by team and code", "timeseries", [
            _target(f"sum by (team, code) (rate({q.GW_REQUESTS}{{{TEAM}}}[{r}]))", "{{team}} {{code}}")], 0, 0),
        _panel(ids, "Error ratio (5xx) by model", "timeseries", [
            _target(f'sum by (model) (rate({q.GW_REQUESTS}{{code=~"5.."}}[{r}])) / sum by (model) (rate({q.GW_REQUESTS}[{r}]))',
                    "{{model}}")], 12, 0, unit="percentunit"),
        _panel(ids, "Latency p95 by model", "timeseries", [
            _target(f"histogram_quantile(0.95, sum by (model, le) (rate({q.GW_LATENCY}_bucket[{r}])))", "{{model}}")],
            0, 8, unit="s"),
        _panel(ids, "Fallbacks / s", "timeseries", [
            _target(f"sum by (route, to) (rate({q.GW_FALLBACKS}[{r}]))", "{{route}} -> {{to}}")], 12, 8),
        _panel(ids, "Cache hits / s and wrong-hit estimate", "timeseries", [
            _target(f"sum by (team, layer) (rate({q.GW_CACHE_HITS}{{{TEAM}}}[{r}]))", "{{team}} {{layer}} hits"),
            _target(f"max by (team, model) ({q.GW_CACHE_WRONG_HIT}{{{TEAM}}})", "{{team}} {{model}} wrong-hit estimate")],
            0, 16),
        _panel(ids, "Open breakers", "stat", [
            _target(f"count({q.GW_BREAKER} >= 1) or vector(0)", "open")], 12, 16, w=6),
        _panel(ids, "Gateway spend and cache savings $/h by team", "timeseries", [
            _target(f"sum by (team) (rate({q.GW_COST}{{{TEAM}}}[{r}])) * 3600", "{{team}} spent"),
            _target(f"sum by (team) (rate({q.GW_CACHE_SAVED}{{{TEAM}}}[{r}])) * 3600", "{{team}} saved by the cache")],
            18, 16, w=6, unit="currencyUSD"),
        _panel(ids, "Tokens / s by team", "timeseries", [
            _target(f"sum by (team, direction) (rate({q.GW_TOKENS}{{{TEAM}}}[{r}]))", "{{team}} {{direction}}")],
            0, 24),
    ]  # fmt: skip
    return _dashboard("tandem-gateway", "Tandem / AI gateway", p)


def finops() -> dict:
    ids = count(1)
    rng = "$__range"
    cost = "tandem:gpu_cost_usd_per_hour:sum"
    p = [
        _panel(ids, "GPU cost $/h by team", "timeseries", [
            _target(f"sum by (team) ({cost}{{{TEAM}}})", "{{team}}")], 0, 0, unit="currencyUSD", stack=True),
        _panel(ids, "Cost over the range by model", "bargauge", [
            _target(f"sum by (model) (sum_over_time({cost}{{{TEAM}}}[{rng}])) / 60", "{{model}}",
                    instant=True)], 12, 0, unit="currencyUSD",
            description="Assumes the 1-minute rule evaluation interval: each sample is one minute's $/h."),
        _panel(ids, "Allocated vs busy GPUs by team", "timeseries", [
            _target(f"sum by (team) (tandem:gpu_allocated:sum{{{TEAM}}})", "{{team}} allocated"),
            _target(f"sum by (team) (tandem:gpu_active:sum{{{TEAM}}})", "{{team}} busy")], 0, 8),
        _panel(ids, "Idle cost $/h: allocated-but-idle by team", "timeseries", [
            _target(f"sum by (team) ({cost}{{{TEAM}}} * (1 - tandem:gpu_active:sum / tandem:gpu_allocated:sum))",
                    "{{team}}")], 12, 8, unit="currencyUSD", stack=True),
        _panel(ids, "GPU-hours in the last hour by pool", "bargauge", [
            _target("sum by (pool) (tandem:gpu_allocated_hours:sum1h)", "{{pool}} allocated", instant=True),
            _target("sum by (pool) (tandem:gpu_active_hours:sum1h)", "{{pool}} busy", instant=True)], 0, 16),
        _panel(ids, "$ per million output tokens by model (allocation basis, 4:1 output:input weight)", "timeseries", [
            _target(f"sum by (model) ({cost}) / 3600 * 1e6 * 4 / sum by (model) "
                    "(tandem:vllm_prompt_tokens:rate5m + on (team, use_case, model, model_version, rollout) "
                    "4 * tandem:vllm_generation_tokens:rate5m)", "{{model}}")], 12, 16, unit="currencyUSD"),
        _panel(ids, "Projected monthly GPU spend by team", "stat", [
            _target(f"sum by (team) ({cost}{{{TEAM}}}) * {HOURS_PER_MONTH}", "{{team}}", instant=True)],
            0, 24, w=24, unit="currencyUSD"),
    ]  # fmt: skip
    return _dashboard("tandem-finops", "Tandem / FinOps", p)


def assistants() -> dict:
    """Coding assistants through the gateway, per team: adoption (weekly active developers over
    developers with keys), sessions and tokens per active developer, cost per developer, the tool
    mix and what prompt caching saved. `tandem assistants report` prints the same numbers."""
    ids = count(1)
    r = "$__rate_interval"
    rng = "$__range"
    active7 = q.active_developers("7d", TEAM)
    p = [
        _panel(ids, "Adoption: weekly active developers / developers with keys", "stat", [
            _target(q.adoption("7d", TEAM), "{{team}}", instant=True)], 0, 0, w=8, unit="percentunit", max_=1,
            description="Developers with at least one assistant request in the last 7 days, over developers "
                        "with a key (own keys plus the team's roster)."),
        _panel(ids, "Weekly active developers vs developers with keys", "timeseries", [
            _target(active7, "{{team}} active (7d)"),
            _target(f"max by (team) ({q.GW_DEVELOPERS_WITH_KEYS}{{{TEAM}}})", "{{team}} with keys")], 8, 0, w=16),
        _panel(ids, "Sessions per active developer (7d)", "timeseries", [
            _target(f"sum by (team) (increase({q.GW_ASSISTANT_SESSIONS}{{{TEAM}}}[7d])) / {active7}", "{{team}}")],
            0, 8, w=8),
        _panel(ids, "Tokens per active developer (7d)", "timeseries", [
            _target(f"sum by (team, direction) (increase({q.GW_ASSISTANT_TOKENS}{{{TEAM}}}[7d])) / on (team) "
                    f"group_left {active7}", "{{team}} {{direction}}")], 8, 8, w=8),
        _panel(ids, "Cost per active developer (7d)", "timeseries", [
            _target(f"sum by (team) (increase({q.GW_ASSISTANT_COST}{{{TEAM}}}[7d])) / {active7}", "{{team}}")],
            16, 8, w=8, unit="currencyUSD"),
        _panel(ids, "Cost per developer over the range", "bargauge", [
            _target(f"sort_desc(sum by (team, developer) (increase({q.GW_ASSISTANT_COST}{{{TEAM}}}[{rng}])))",
                    "{{team}} {{developer}}", instant=True)], 0, 16, unit="currencyUSD"),
        _panel(ids, "Tool mix: requests by tool over the range", "piechart", [
            _target(f"sum by (tool) (increase({q.GW_ASSISTANT_REQUESTS}{{{TEAM}}}[{rng}]))", "{{tool}}",
                    instant=True)], 12, 16),
        _panel(ids, "Assistant spend and prompt-cache savings $/h", "timeseries", [
            _target(f"sum by (team) (rate({q.GW_ASSISTANT_COST}{{{TEAM}}}[{r}])) * 3600", "{{team}} spent"),
            _target(f"sum by (team) (rate({q.GW_ASSISTANT_SAVED}{{{TEAM}}}[{r}])) * 3600", "{{team}} saved")],
            0, 24, unit="currencyUSD"),
        _panel(ids, "Input served from the prompt cache", "timeseries", [
            _target(f'sum by (team) (rate({q.GW_ASSISTANT_TOKENS}{{direction="cached", {TEAM}}}[{r}])) / '
                    f'sum by (team) (rate({q.GW_ASSISTANT_TOKENS}{{direction="in", {TEAM}}}[{r}]))', "{{team}}")],
            12, 24, unit="percentunit", max_=1),
        _panel(ids, "Assistant requests / s by tool and status", "timeseries", [
            _target(f"sum by (tool, code) (rate({q.GW_ASSISTANT_REQUESTS}{{{TEAM}}}[{r}]))", "{{tool}} {{code}}")],
            0, 32, w=24),
    ]  # fmt: skip
    return _dashboard(
        "tandem-assistants",
        "Tandem / Coding assistants",
        p,
        teams=f"label_values({q.GW_DEVELOPERS_WITH_KEYS}, team)",
    )


def rollouts() -> dict:
    """Every rollout the controller runs (a model version by use case, a prompt version as
    `prompt:<name>`): where it stands, what each analysis saw, what was decided, and the arms
    side by side on the gateway's own series. `tandem rollout status` prints the same."""
    ids = count(1)
    r = "$__rate_interval"
    rng = "$__range"
    p = [
        _panel(ids, "Phase by rollout", "table", [
            _target(f"max by (use_case, phase) ({q.ROLLOUT_PHASE}) == 1", "{{use_case}} {{phase}}",
                    instant=True)], 0, 0, w=8,
            description="The phase each rollout is in: deploying, progressing, experimenting, "
                        "promoting, rolling_back, promoted, rolled_back."),
        _panel(ids, "Canary weight", "timeseries", [
            _target(f"max by (use_case) ({q.ROLLOUT_WEIGHT})", "{{use_case}}")], 8, 0, w=16,
            unit="percent", max_=100),
        _panel(ids, "Analyses by outcome", "timeseries", [
            _target(f"sum by (use_case, outcome) (increase({q.ROLLOUT_ANALYSES}[{r}]))",
                    "{{use_case}} {{outcome}}")], 0, 8, stack=True,
            description="pass advances a step; fail rolls back (past failure_limit); inconclusive "
                        "holds it (too little traffic on the canary)."),
        _panel(ids, "Last analysed value per check (canary arm)", "timeseries", [
            _target(f"max by (use_case, check) ({q.ROLLOUT_CHECK})", "{{use_case}} {{check}}")],
            12, 8),
        _panel(ids, "Promotions and rollbacks over the range", "bargauge", [
            _target(f'sum by (use_case, decision) (increase({q.ROLLOUT_DECISIONS}{{decision=~"promote|rollback"}}[{rng}]))',
                    "{{use_case}} {{decision}}", instant=True)], 0, 16),
        _panel(ids, "Registered to 100 % traffic (last promotion)", "stat", [
            _target(f"max by (use_case) ({q.ROLLOUT_TIME_TO_DEPLOY})", "{{use_case}}", instant=True)],
            12, 16, unit="s"),
        _panel(ids, "Model versions: requests / s by arm and code", "timeseries", [
            _target(f'sum by (use_case, rollout, model_version, code) (rate({q.GW_REQUESTS}{{rollout!=""}}[{r}]))',
                    "{{use_case}} {{rollout}} v{{model_version}} {{code}}")], 0, 24),
        _panel(ids, "Prompt versions: requests / s by version and outcome", "timeseries", [
            _target(f"sum by (prompt, prompt_version, outcome) (rate({q.GW_PROMPT_RENDERS}[{r}]))",
                    "{{prompt}} v{{prompt_version}} {{outcome}}")], 12, 24,
            description="outcome invalid: the caller's variables did not fit the version's template."),
    ]  # fmt: skip
    return _dashboard("tandem-rollouts", "Tandem / Rollouts", p, team_var=False)


# the panels that read one kind of rollout's series (a stack with only the other kind shows them
# empty): tests/integration/test_lifecycle_rollout.py and test_prompts_rollout.py
MODEL_ROLLOUT_PANELS = ("Model versions: requests / s by arm and code",)
PROMPT_ROLLOUT_PANELS = ("Prompt versions: requests / s by version and outcome",)


def all_dashboards() -> dict[str, dict]:
    """File name -> dashboard model."""
    boards = (gpu_fleet(), serving_slo(), gateway(), finops(), assistants(), rollouts())
    return {f"{d['uid']}.json": d for d in boards}


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every target, for tests and reviewers."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def render(dashboard: dict) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True)
