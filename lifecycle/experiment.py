"""The end of an A/B experiment: per-arm metrics over its whole duration, the significance test
on the primary metric, and the decision.

The treatment (the new version) is promoted only when it is better on the primary metric with
p < alpha and each arm has at least `min_samples` observations; otherwise the control stays and
the treatment is removed ("no significant improvement" is a result too). The report is kept in
the rollout's state (`tandem rollout status` prints it).
"""

from __future__ import annotations

from typing import Any

from lifecycle import stats
from lifecycle.analysis import (
    AnyArms,
    Prometheus,
    attempts_query,
    cost_per_request_query,
    failures_query,
    quantile_query,
    window_of,
)
from lifecycle.plan import RolloutPlan
from observability.promql import GW_LATENCY, GW_TTFT
from vocabulary.rollout import CANARY, STABLE, Experiment

ARM_NAMES = {STABLE: "control", CANARY: "treatment"}
HISTOGRAMS = {"latency": GW_LATENCY, "ttft": GW_TTFT}


def arm_metrics(prom: Prometheus, arms: AnyArms, arm: str, window: str) -> dict[str, Any]:
    attempts = prom.scalar(attempts_query(arms, arm, window)) or 0.0
    failures = prom.scalar(f"({failures_query(arms, arm, window)} or vector(0))") or 0.0
    return {
        "arm": ARM_NAMES[arm],
        "attempts": round(attempts),
        "failures": round(failures),
        "error_rate": (failures / attempts) if attempts else None,
        "latency_p50_ms": prom.scalar(quantile_query(GW_LATENCY, arms, arm, window, 0.5)),
        "latency_p95_ms": prom.scalar(quantile_query(GW_LATENCY, arms, arm, window)),
        "cost_per_request_usd": prom.scalar(cost_per_request_query(arms, arm, window)),
    }


def _histogram(
    prom: Prometheus, metric: str, arms: AnyArms, arm: str, window: str
) -> dict[float, float]:
    rows = prom.vector(f"sum by (le) (increase({metric}_bucket{arms.selector(arm)}[{window}]))")
    return {float(labels["le"]): value for labels, value in rows}


def conclude(
    prom: Prometheus, plan: RolloutPlan, spec: Experiment, duration_s: float
) -> dict[str, Any]:
    arms = plan.arms()
    window = window_of(duration_s)
    per_arm = {arm: arm_metrics(prom, arms, arm, window) for arm in (STABLE, CANARY)}
    control, treatment = per_arm[STABLE], per_arm[CANARY]
    test: dict[str, Any] = {"metric": spec.primary_metric, "alpha": spec.alpha}
    samples = (control["attempts"], treatment["attempts"])
    try:
        if spec.primary_metric == "error_rate":
            r = stats.two_proportion_z(
                control["failures"],
                control["attempts"],
                treatment["failures"],
                treatment["attempts"],
            )
        else:
            metric = HISTOGRAMS[spec.primary_metric]
            hc = _histogram(prom, metric, arms, STABLE, window)
            ht = _histogram(prom, metric, arms, CANARY, window)
            bounds = sorted(set(hc) | set(ht))
            c = stats.bucket_counts([(b, hc.get(b, 0.0)) for b in bounds])
            t = stats.bucket_counts([(b, ht.get(b, 0.0)) for b in bounds])
            samples = (round(sum(c)), round(sum(t)))
            r = stats.mann_whitney_binned(c, t)
        test |= {"test": r.test, "statistic": r.statistic, "p_value": r.p_value, "effect": r.effect}
    except ValueError as exc:
        test |= {"test": "none", "p_value": None, "effect": None, "error": str(exc)}
    enough = min(samples) >= spec.min_samples
    better = test.get("p_value") is not None and test["p_value"] < spec.alpha and test["effect"] < 0
    if not enough:
        decision = "rollback"
        summary = f"not enough samples ({samples[0]} control, {samples[1]} treatment; need {spec.min_samples} each)"
    elif better:
        decision = "promote"
        summary = f"version {plan.canary_version} is better on {spec.primary_metric} (p = {test['p_value']:.3g})"
    else:
        decision = "rollback"
        p = test.get("p_value")
        summary = (
            f"no significant improvement on {spec.primary_metric} "
            f"(p = {p:.3g}, effect {test['effect']:+.3g})"
            if p is not None
            else f"no test possible: {test.get('error')}"
        )
    return {
        "arms": [control, treatment],
        "samples": {"control": samples[0], "treatment": samples[1]},
        "test": test,
        "decision": decision,
        "summary": summary,
        "duration_s": round(duration_s, 1),
    }
