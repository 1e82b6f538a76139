"""Canary analysis: the PromQL for each check, asked of Prometheus, judged against thresholds.

Every check reads the gateway's own metrics, labelled per arm (`rollout="stable|canary"`) and use
case, over the last analysis interval. The canary's error rate is per *attempt*: the gateway
retries a failed call on the stable backend, so a caller may never see a bad canary's errors;
its failed attempts (`tandem_gateway_upstream_errors_total{backend=<canary>}`) are what the
analysis counts, over the attempts made on it (its answers plus those failures).

A verdict is `pass`, `fail` (a check over its threshold) or `inconclusive` (fewer than
`min_requests` attempts reached the canary in the window, or a check had no data): the
controller holds the step on inconclusive, as Flagger does, and counts a run of them as a
failure (`max_inconclusive`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lifecycle.http import HttpError, call
from observability.promql import (
    GW_BREAKER,
    GW_COST,
    GW_LATENCY,
    GW_PROMPT_RENDERS,
    GW_REQUESTS,
    GW_TTFT,
)
from vocabulary.rollout import CANARY, STABLE, Analysis, PromqlCheck, Threshold

GW_UPSTREAM_ERRORS = "tandem_gateway_upstream_errors_total"
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


class PromError(RuntimeError):
    pass


class Prometheus:
    """Instant queries (stdlib HTTP): one float per query, None when the result is empty."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        try:
            data = call(
                "POST",
                self.url + "/api/v1/query",
                data=f"query={_quote(expr)}".encode(),
                content_type="application/x-www-form-urlencoded",
                timeout=self.timeout,
            )
        except HttpError as exc:
            raise PromError(f"Prometheus at {self.url}: {exc}\nquery: {expr}") from None
        if data.get("status") != "success":
            raise PromError(f"Prometheus: {data.get('error')}\nquery: {expr}")
        out = []
        for r in data["data"]["result"]:
            value = float(r["value"][1])
            if value == value:  # NaN: no data (0/0, a quantile of nothing)
                out.append((r["metric"], value))
        return out

    def scalar(self, expr: str) -> float | None:
        values = self.vector(expr)
        return values[0][1] if values else None


def _quote(expr: str) -> str:
    import urllib.parse

    return urllib.parse.quote(expr, safe="")


@dataclass(frozen=True)
class Arms:
    """Where the two arms of a model rollout show up in the gateway's metrics: the request series
    labelled `rollout="stable|canary"` for the use case, the upstream failures per backend."""

    use_case: str
    stable_backend: str
    canary_backend: str

    def backend(self, arm: str) -> str:
        return self.canary_backend if arm == CANARY else self.stable_backend

    def selector(self, arm: str, extra: str = "") -> str:
        return f'{{use_case="{self.use_case}",rollout="{arm}"{extra}}}'

    def attempts_query(self, arm: str, window: str) -> str:
        answered = f"sum(increase({GW_REQUESTS}{self.selector(arm, NOT_5XX)}[{window}]))"
        return f"({_or0(answered)} + {_or0(self.failures_query(arm, window))})"

    def failures_query(self, arm: str, window: str) -> str:
        return f'sum(increase({GW_UPSTREAM_ERRORS}{{backend="{self.backend(arm)}"}}[{window}]))'

    def failure_samples_query(self, arm: str, window: str) -> str | None:
        """How many scrapes of the arm's failure counters the window holds (the fewest of any
        series): `increase()` needs two, and a series' first scrape (a backend just (re)added)
        already counting failures would otherwise read as no failures at all."""
        return (
            f'min(count_over_time({GW_UPSTREAM_ERRORS}{{backend="{self.backend(arm)}"}}[{window}]))'
        )

    def breaker_query(self, window: str) -> str | None:
        """Whether the gateway's breaker on the canary backend left closed in the window (1 open,
        2 half-open): a canary bad enough to trip it is shut out and gets no attempts to judge."""
        return f'max_over_time({GW_BREAKER}{{backend="{self.canary_backend}"}}[{window}])'

    def custom_query(self, query: str, arm: str, window: str) -> str:
        return (
            query.replace("{{use_case}}", self.use_case)
            .replace("{{rollout}}", arm)
            .replace("{{interval}}", window)
        )


@dataclass(frozen=True)
class PromptArms:
    """Where the two arms of a prompt version's rollout show up: both call the same backends, so
    an arm is the prompt's version (`prompt`, `prompt_version` label every request series).

    An attempt is every request that resolved to the version (`tandem_gateway_prompt_renders`,
    rendered or refused for its variables, cache hits included); a failure is a request the
    version broke: its variables refused (a template that wants a variable callers do not send)
    or an answer of 400 or 5xx (a prompt too long for the model, a backend failing on it). 429s
    are capacity, not the prompt's doing; the breaker belongs to the backend, not the prompt."""

    prompt: str
    stable_version: str
    canary_version: str

    def version(self, arm: str) -> str:
        return self.canary_version if arm == CANARY else self.stable_version

    def selector(self, arm: str, extra: str = "") -> str:
        return f'{{prompt="{self.prompt}",prompt_version="{self.version(arm)}"{extra}}}'

    def attempts_query(self, arm: str, window: str) -> str:
        return f"sum(increase({GW_PROMPT_RENDERS}{self.selector(arm)}[{window}]))"

    def failures_query(self, arm: str, window: str) -> str:
        refused = f"sum(increase({GW_PROMPT_RENDERS}{self.selector(arm, INVALID)}[{window}]))"
        failed = f"sum(increase({GW_REQUESTS}{self.selector(arm, FAILED_CODES)}[{window}]))"
        return f"({_or0(refused)} + {_or0(failed)})"

    def failure_samples_query(self, arm: str, window: str) -> str | None:
        # None: a version's failure series (code 400 or 5xx) appear only with its first failure,
        # so their absence says nothing; their first scrape shares the blind spot (issue notes)
        return None

    def breaker_query(self, window: str) -> str | None:
        return None

    def custom_query(self, query: str, arm: str, window: str) -> str:
        return (
            query.replace("{{prompt}}", self.prompt)
            .replace("{{prompt_version}}", self.version(arm))
            .replace("{{rollout}}", arm)
            .replace("{{interval}}", window)
        )


AnyArms = Arms | PromptArms
NOT_5XX = ',code!~"5.."'
OK_200 = ',code="200"'
INVALID = ',outcome="invalid"'
FAILED_CODES = ',code=~"400|5.."'


def attempts_query(arms: AnyArms, arm: str, window: str) -> str:
    return arms.attempts_query(arm, window)


def failures_query(arms: AnyArms, arm: str, window: str) -> str:
    return arms.failures_query(arm, window)


def error_rate_query(arms: AnyArms, arm: str, window: str) -> str:
    return f"{_or0(failures_query(arms, arm, window))} / {attempts_query(arms, arm, window)}"


def quantile_query(metric: str, arms: AnyArms, arm: str, window: str, q: float = 0.95) -> str:
    return (
        f"1000 * histogram_quantile({q}, sum by (le) "
        f"(rate({metric}_bucket{arms.selector(arm)}[{window}])))"
    )


def cost_per_request_query(arms: AnyArms, arm: str, window: str) -> str:
    cost = f"sum(increase({GW_COST}{arms.selector(arm)}[{window}]))"
    answered = f"sum(increase({GW_REQUESTS}{arms.selector(arm, OK_200)}[{window}]))"
    return f"{cost} / {answered}"


def breaker_query(arms: AnyArms, window: str) -> str | None:
    return arms.breaker_query(window)


def custom_query(check: PromqlCheck, arms: AnyArms, arm: str, window: str) -> str:
    return arms.custom_query(check.query, arm, window)


def _or0(expr: str) -> str:
    return f"({expr} or vector(0))"


@dataclass
class CheckResult:
    name: str
    ok: bool | None  # None: inconclusive (no data)
    canary: float | None
    stable: float | None
    bound: str
    query: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    outcome: str  # pass | fail | inconclusive
    attempts: float
    checks: list[CheckResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "attempts": self.attempts,
            "reason": self.reason,
            "checks": [c.to_dict() for c in self.checks],
        }


def window_of(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def analyse(prom: Prometheus, arms: AnyArms, analysis: Analysis, window_s: float) -> Verdict:
    """One analysis of the canary over the last `window_s` seconds."""
    w = window_of(window_s)
    attempts = prom.scalar(attempts_query(arms, CANARY, w)) or 0.0
    builtin: list[tuple[str, Threshold | None, Any]] = [
        ("error_rate", analysis.error_rate, lambda arm: error_rate_query(arms, arm, w)),
        (
            "latency_p95_ms",
            analysis.latency_p95_ms,
            lambda arm: quantile_query(GW_LATENCY, arms, arm, w),
        ),
        ("ttft_p95_ms", analysis.ttft_p95_ms, lambda arm: quantile_query(GW_TTFT, arms, arm, w)),
        (
            "cost_per_request_usd",
            analysis.cost_per_request_usd,
            lambda arm: cost_per_request_query(arms, arm, w),
        ),
    ]
    checks: list[CheckResult] = []
    bq = breaker_query(arms, w)
    tripped = prom.scalar(bq) if bq is not None else None
    if bq is not None and tripped is not None and tripped > 0:
        checks.append(CheckResult("breaker", False, tripped, None, "closed", bq))
    for name, threshold, query in builtin:
        if threshold is not None:
            checks.append(_judge(prom, name, threshold, query))
    samples_q = arms.failure_samples_query(CANARY, w)
    if samples_q is not None and analysis.error_rate is not None:
        samples = prom.scalar(samples_q)
        for c in checks:
            if c.name == "error_rate" and c.ok is True and (samples is None or samples < 2):
                c.ok = None  # failures not yet countable: a pass would be a guess
    for check in analysis.promql:
        checks.append(_judge_custom(prom, check, arms, w))
    failed = [c for c in checks if c.ok is False]
    if failed:
        reason = "; ".join(f"{c.name} {_fmt(c.canary)} breaches {c.bound}" for c in failed)
        return Verdict(FAIL, attempts, checks, reason)
    if attempts < analysis.min_requests:
        return Verdict(
            INCONCLUSIVE,
            attempts,
            checks,
            f"{attempts:.0f} attempts on the canary in {w} (< min_requests {analysis.min_requests})",
        )
    unknown = [c.name for c in checks if c.ok is None]
    if unknown:
        return Verdict(INCONCLUSIVE, attempts, checks, f"no data for {', '.join(unknown)}")
    return Verdict(PASS, attempts, checks, "every check within its threshold")


def _judge(prom: Prometheus, name: str, t: Threshold, query: Any) -> CheckResult:
    q = query(CANARY)
    canary = prom.scalar(q)
    stable = prom.scalar(query(STABLE)) if t.max_vs_stable is not None else None
    bounds = []
    ok: bool | None = True
    if canary is None:
        ok = None
    if t.max is not None:
        bounds.append(f"max {t.max:g}")
        if canary is not None and canary > t.max:
            ok = False
    if t.max_vs_stable is not None:
        bounds.append(f"max {t.max_vs_stable:g} x stable ({_fmt(stable)})")
        if canary is not None and stable is not None and canary > t.max_vs_stable * stable:
            ok = False
        elif canary is not None and stable is None and t.max is None and ok is not False:
            ok = None  # nothing to compare with
    return CheckResult(name, ok, canary, stable, ", ".join(bounds), q)


def _judge_custom(prom: Prometheus, c: PromqlCheck, arms: AnyArms, w: str) -> CheckResult:
    q = custom_query(c, arms, CANARY, w)
    value = prom.scalar(q)
    ok: bool | None = None if value is None else True
    bounds = []
    if c.max is not None:
        bounds.append(f"max {c.max:g}")
        if value is not None and value > c.max:
            ok = False
    if c.min is not None:
        bounds.append(f"min {c.min:g}")
        if value is not None and value < c.min:
            ok = False
    return CheckResult(c.name, ok, value, None, ", ".join(bounds), q)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
