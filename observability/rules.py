"""Recording and alerting rules as data (the `groups` of a PrometheusRule / Prometheus rule file).

Recording rules are self-contained (none reads another recorded series), so each can be backfilled
with `promtool tsdb create-blocks-from rules` and checked against history. Alerts may read recorded
series: Prometheus evaluates a group's rules in order and promtool's unit tests do the same.
SLO alerts follow the multi-window, multi-burn-rate pattern of the Google SRE workbook (fast: 1 h
and 5 m windows at 14.4x; slow: 6 h and 30 m at 6x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from observability import promql as q

SLO_WINDOWS = ("5m", "30m", "1h", "6h")
SPOT_FACTOR = 0.4  # spot price / on-demand where no spot rate is known (AWS GPU spot, 2025-26)
BURN = (("Fast", "1h", "5m", 14.4, "2m", "critical"), ("Slow", "6h", "30m", 6.0, "15m", "warning"))


_WHO = "namespace, pod, team, model"  # one semantic-cache wrong-hit estimate per route and replica


@dataclass(frozen=True)
class RuleSettings:
    """What the rules need to know about a stack (built from ObservabilityConfig in the component)."""

    scrape_interval_s: float = 30.0
    idle_gr_threshold: float = 0.05
    idle_for: str = "2h"
    ttft_slo_seconds: str = "1.0"  # a vLLM histogram bucket boundary, spelled as vLLM spells it
    ttft_slo_target: float = 0.99
    error_slo_target: float = 0.995
    wrong_hit_max: float = 0.05
    wrong_hit_min_rechecks: int = 20  # below this many re-checks the estimate is noise
    # (instance_type, capacity_type) -> USD per GPU-hour, for cost and budget rules
    gpu_prices: dict[tuple[str, str], float] = field(default_factory=dict)
    team_budgets_usd: dict[str, float] = field(default_factory=dict)  # monthly
    platform_budget_usd: float | None = None  # monthly, all teams
    # shares of the platform budget that each raise TandemPlatformBudgetBurn (budget.alertThresholds)
    platform_budget_thresholds: tuple[float, ...] = (1.0,)
    # each deployment's own `slo:` from its use-case file (one alert per target)
    deployment_slos: tuple[DeploymentSlo, ...] = ()
    exporter_jobs: tuple[str, ...] = ("dcgm-exporter", "kube-state-metrics")


@dataclass(frozen=True)
class DeploymentSlo:
    """A use case deployment's p95 targets, with the labels its pods' metrics carry (the
    RayService PodMonitor relabels team, use_case and model onto every series)."""

    team: str
    use_case: str
    model: str  # the `model` label value (the pod label of the deployment's model id)
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None
    latency_p95_ms: float | None = None


def _const(value: float, **label_values: str) -> str:
    expr = f"vector({value:g})"
    for k, v in label_values.items():
        expr = f'label_replace({expr}, "{k}", "{v}", "", "")'
    return expr


def price_table(s: RuleSettings) -> str:
    if not s.gpu_prices:
        return "vector(0)"
    return " or ".join(
        _const(p, instance_type=it, capacity_type=ct)
        for (it, ct), p in sorted(s.gpu_prices.items())
    )


def _ratio_bad(good: str, total: str, window: str, by_: str) -> str:
    return (
        f"1 - (sum by ({by_}) (rate({good}[{window}])) / sum by ({by_}) (rate({total}[{window}])))"
    )


def recording_rules(s: RuleSettings) -> list[dict]:
    g = q.by(*q.GROUP)
    hours = s.scrape_interval_s / 3600.0
    allocated = f"sum by ({g}) ({q.attribute(q.gpu_requests())})"
    gpu = [
        {"record": "tandem:gpu_allocated:sum", "expr": allocated},
        {"record": "tandem:gpu_active:sum",
         "expr": f"sum by ({g}) ({q.attribute(q.dcgm_pods(q.GR_ENGINE_ACTIVE))})"},
        {"record": "tandem:gpu_capacity:sum", "expr": f"sum by ({q.by(*q.NODE)}) ({q.node_capacity()})"},
        {"record": "tandem:gpu_allocated_hours:sum1h",
         "expr": f"sum by ({g}) ({q.attribute(q.gpu_requests(q.HOUR), q.HOUR)}) * {hours:.10g}"},
        {"record": "tandem:gpu_active_hours:sum1h",
         "expr": f"sum by ({g}) ({q.attribute(q.dcgm_pods(q.GR_ENGINE_ACTIVE, q.HOUR), q.HOUR)}) * {hours:.10g}"},
        {"record": "tandem:gpu_cost_usd_per_hour:sum",
         "expr": f"{allocated} * on (instance_type, capacity_type) group_left() ({price_table(s)})"},
        {"record": "tandem:vllm_prompt_tokens:rate5m", "expr": q.tokens(q.VLLM_PROMPT_TOKENS, "5m", fn="rate")},
        {"record": "tandem:vllm_generation_tokens:rate5m",
         "expr": q.tokens(q.VLLM_GENERATION_TOKENS, "5m", fn="rate")},
    ]  # fmt: skip
    slo = []
    for w in SLO_WINDOWS:
        slo.append(
            {
                "record": f"tandem:vllm_ttft_bad:ratio_rate{w}",
                "expr": _ratio_bad(
                    q.vllm(f"{q.VLLM_TTFT}_bucket", le=s.ttft_slo_seconds),
                    q.vllm(f"{q.VLLM_TTFT}_count"),
                    w,
                    "namespace, model_name",
                ),
            }
        )
        wl = q.by(*q.WORKLOAD)
        slo.append(
            {
                "record": f"tandem:gateway_errors:ratio_rate{w}",
                "expr": f'sum by ({wl}) (rate({q.GW_REQUESTS}{{code=~"5.."}}[{w}]))'
                f" / sum by ({wl}) (rate({q.GW_REQUESTS}[{w}]))",
            }
        )
    return [
        {"name": "tandem.gpu.recording", "interval": "1m", "rules": gpu},
        {"name": "tandem.slo.recording", "interval": "1m", "rules": slo},
    ]


def _alert(
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    **extra_labels: str,
) -> dict:
    rule = {"alert": name, "expr": expr, "labels": {"severity": severity, **extra_labels}}
    if for_ != "0m":
        rule["for"] = for_
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def alert_rules(s: RuleSettings) -> list[dict]:
    alerts = []
    for speed, long_w, short_w, factor, for_, sev in BURN:
        for slo, target, record, what in (
            ("TTFT", s.ttft_slo_target, "tandem:vllm_ttft_bad:ratio_rate", "time to first token"),
            ("ErrorRate", s.error_slo_target, "tandem:gateway_errors:ratio_rate", "gateway 5xx"),
        ):
            budget = factor * (1 - target)
            alerts.append(
                _alert(
                    f"Tandem{slo}BudgetBurn{speed}",
                    f"{record}{long_w} > {budget:.6g} and {record}{short_w} > {budget:.6g}",
                    for_,
                    sev,
                    f"{what} SLO budget burning {factor:g}x too fast",
                    f"{what} bad ratio {{{{ $value | humanizePercentage }}}} over {short_w}; at {factor:g}x the "
                    f"monthly error budget of the {target:.3%} SLO is gone early.",
                )
            )
    alerts += [
        _alert(
            "TandemGpuAllocatedIdle",
            q.with_pod_labels(
                f'avg_over_time({q.GR_ENGINE_ACTIVE}{{pod!=""}}[1h]) < {s.idle_gr_threshold:g}'
            ),
            s.idle_for,
            "warning",
            "GPU allocated but idle",
            "{{ $labels.namespace }}/{{ $labels.pod }} holds GPU {{ $labels.gpu }} on {{ $labels.Hostname }} "
            f"with GR_ENGINE_ACTIVE below {s.idle_gr_threshold:g} for {s.idle_for}+: scale it to zero or release it.",
        ),
        _alert(
            "TandemGatewayBreakerOpen",
            # open (1) or probing (2): an open breaker lets a share of requests through as
            # probes, so a backend that stays down moves between the two
            f"max by (backend) ({q.GW_BREAKER}) >= 1",
            "5m",
            "warning",
            "Gateway circuit breaker open",
            "Backend {{ $labels.backend }} has been cut off by the gateway's breaker for 5 minutes.",
        ),
        _alert(
            "TandemSemanticCacheWrongHitHigh",
            # each route (team, model) on each replica against the replica's own
            # `recheck.alert_wrong_rate` (an exported gauge), so the routes file is the one place
            # to set it; wrong_hit_max for replicas that export none
            f"((max by ({_WHO}) ({q.GW_CACHE_WRONG_HIT})"
            f" > on (namespace, pod) group_left"
            f" max by (namespace, pod) ({q.GW_CACHE_WRONG_HIT_THRESHOLD}))"
            f" or (max by ({_WHO}) ({q.GW_CACHE_WRONG_HIT}) > {s.wrong_hit_max:g}"
            f" unless on (namespace, pod) {q.GW_CACHE_WRONG_HIT_THRESHOLD}))"
            f" and on ({_WHO})"
            f" (sum by ({_WHO}) ({q.GW_CACHE_RECHECKS}) >= {s.wrong_hit_min_rechecks})",
            "15m",
            "warning",
            "Semantic cache serves wrong answers",
            "Estimated wrong-hit ratio {{ $value | humanizePercentage }} for model {{ $labels.model }} (team "
            "{{ $labels.team }}) on gateway {{ $labels.pod }}: raise that route's cache min_probability or set "
            "its cache mode to exact.",
        ),
        _alert(
            "TandemDcgmXidError",
            f"max_over_time({q.XID}[5m]) > 0",
            "0m",
            "critical",
            "GPU reported an XID error",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on {{ $labels.Hostname }} reported XID {{ $value }}.",
        ),
        _alert(
            "TandemExporterDown",
            f'up{{job=~"{"|".join(s.exporter_jobs)}"}} == 0',
            "5m",
            "critical",
            "Metrics exporter down",
            "{{ $labels.job }} on {{ $labels.instance }} is down: GPU cost attribution is blind.",
        ),
        _alert(
            "TandemExporterAbsent",
            " or ".join(f'absent(up{{job="{j}"}})' for j in s.exporter_jobs),
            "15m",
            "critical",
            "Metrics exporter missing",
            "No scrape target for a required exporter: GPU cost attribution is blind.",
        ),
    ]
    alerts += deployment_slo_alerts(s)
    spend = "sum by (team) (avg_over_time(tandem:gpu_cost_usd_per_hour:sum[6h])) * 730"
    if s.team_budgets_usd:
        budgets = " or ".join(_const(v, team=t) for t, v in sorted(s.team_budgets_usd.items()))
        alerts.append(
            _alert(
                "TandemTeamBudgetBurn",
                f"{spend} > on (team) ({budgets})",
                "1h",
                "warning",
                "Team GPU spend on course to exceed its monthly budget",
                "At the last 6 hours' rate team {{ $labels.team }} spends ${{ $value | humanize }} a month.",
            )
        )
    platform_budget = s.platform_budget_usd or 0.0
    for share in s.platform_budget_thresholds if platform_budget else ():
        # one alert per threshold (budget.alertThresholds), told apart by its `threshold` label;
        # Alertmanager sends them to budget.notify (observability/alerting.py)
        alerts.append(
            _alert(
                "TandemPlatformBudgetBurn",
                f"sum(avg_over_time(tandem:gpu_cost_usd_per_hour:sum[6h])) * 730"
                f" > {platform_budget * share:g}",
                "1h",
                "warning",
                f"GPU spend on course to pass {share:.0%} of the platform's monthly budget",
                "At the last 6 hours' rate the platform spends ${{ $value | humanize }} a month "
                f"(budget ${platform_budget:,.0f}).",
                threshold=f"{share:g}",
            )
        )
    return [{"name": "tandem.alerts", "rules": alerts}]


def deployment_slo_alerts(s: RuleSettings) -> list[dict]:
    """One alert per `slo:` target of a deployment: its p95 over 10 minutes above the target, for
    10 minutes. The alert carries the use case's team, so Alertmanager routes it to that team."""
    by = "le, team, use_case, model"
    out = []
    for slo in s.deployment_slos:
        who = {"use_case": slo.use_case, "model": slo.model}
        for name, metric, target, unit in (
            ("TandemDeploymentTTFTSlo", f"{q.VLLM_TTFT}_bucket", slo.ttft_p95_s, "s"),
            ("TandemDeploymentITLSlo", f"{q.VLLM_ITL}_bucket", slo.itl_p95_s, "s"),
            ("TandemDeploymentLatencySlo", None, slo.latency_p95_ms, "ms"),
        ):
            if target is None:
                continue
            selector = (
                q.vllm(metric, **who)
                if metric
                else f"{q.SERVE_LATENCY_MS}_bucket"
                + "{"
                + ", ".join(f'{k}="{v}"' for k, v in who.items())
                + "}"
            )
            out.append(
                _alert(
                    name,
                    f"histogram_quantile(0.95, sum by ({by}) (rate({selector}[10m]))) > {target:g}",
                    "10m",
                    "warning",
                    f"{slo.use_case}/{slo.model} misses its p95 SLO",
                    f"p95 {{{{ $value | humanize }}}}{unit} over 10 minutes, target {target:g}{unit} "
                    f"(slo: in the use-case file {slo.use_case}).",
                    team=slo.team,
                    use_case=slo.use_case,
                    model=slo.model,
                )
            )
    return out


def settings_for(
    config: Any,
    pools: Sequence[Any] = (),
    budget: Any | None = None,
    deployment_slos: Sequence[DeploymentSlo] = (),
) -> RuleSettings:
    """RuleSettings from a stack's ObservabilityConfig, GPU pools and BudgetConfig (typed loosely:
    pure module).

    Prices come from the GPU catalog per (instance type, capacity type) the pools can launch;
    reserved capacity is priced on-demand (the commitment is paid either way).
    """
    from vocabulary.catalog import load_catalog

    catalog = load_catalog()
    prices: dict[tuple[str, str], float] = {}
    for pool in pools:
        cap = "spot" if pool.capacity_type == "spot" else "on-demand"
        for itype in pool.instance_types:
            per_gpu = catalog.get(itype).usd_per_gpu_hour
            prices[(itype, pool.capacity_type)] = per_gpu * (SPOT_FACTOR if cap == "spot" else 1.0)
    return RuleSettings(
        scrape_interval_s=_seconds(config.scrape_interval),
        idle_gr_threshold=config.idle_gpu_threshold,
        idle_for=config.idle_gpu_for,
        ttft_slo_seconds=str(float(config.ttft_slo_seconds)),
        ttft_slo_target=config.ttft_slo_target,
        error_slo_target=config.error_slo_target,
        wrong_hit_max=config.cache_wrong_hit_max,
        gpu_prices=prices,
        team_budgets_usd=dict(config.team_budgets_usd),
        platform_budget_usd=budget.monthly_usd if budget is not None else None,
        platform_budget_thresholds=tuple(budget.alert_thresholds) if budget is not None else (1.0,),
        deployment_slos=tuple(deployment_slos),
    )


def _seconds(duration: str) -> float:
    return float(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def rule_groups(s: RuleSettings) -> list[dict]:
    return recording_rules(s) + alert_rules(s)


def rule_file(s: RuleSettings, annotations: bool = True) -> str:
    """A Prometheus rule file (also the `spec` of a PrometheusRule).

    Unit tests drop annotations: promtool compares them verbatim, and what a test pins down is
    when an alert fires and with which labels (`promtool check rules` still parses the templates).
    """
    groups = rule_groups(s)
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in groups
        ]
    return yaml.safe_dump({"groups": groups}, sort_keys=False, width=10_000)
