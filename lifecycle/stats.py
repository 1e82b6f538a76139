"""The A/B experiment's significance tests, from what Prometheus keeps (counts and histograms).

Pure Python (math only): the controller must not need scipy.

- Error rate (a proportion per arm): the two-proportion z-test with the pooled variance.
- Latency / TTFT: Prometheus keeps histograms, not samples, so the test is the Mann-Whitney U
  test on the binned samples (every observation in a bucket tied with the others in it), with
  the tie-corrected normal approximation. It asks whether one arm's latencies tend to be larger,
  which is the question a product team means by "the new version is slower".

Both return a two-sided p-value and the direction (negative: the treatment is lower).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect: float  # treatment minus control (rate difference, or P(T<C) - P(T>C))


def _two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def two_proportion_z(
    control_events: float, control_n: float, treatment_events: float, treatment_n: float
) -> TestResult:
    """H0: the same event rate in both arms."""
    if control_n <= 0 or treatment_n <= 0:
        raise ValueError("each arm needs at least one observation")
    p1, p2 = control_events / control_n, treatment_events / treatment_n
    pooled = (control_events + treatment_events) / (control_n + treatment_n)
    var = pooled * (1 - pooled) * (1 / control_n + 1 / treatment_n)
    if var <= 0:  # no events (or only events) in both arms: no evidence of a difference
        return TestResult("two_proportion_z", 0.0, 1.0, p2 - p1)
    z = (p2 - p1) / math.sqrt(var)
    return TestResult("two_proportion_z", z, _two_sided(z), p2 - p1)


def mann_whitney_binned(control: Sequence[float], treatment: Sequence[float]) -> TestResult:
    """Mann-Whitney U over two histograms with the same buckets (counts per bucket, not
    cumulative), ties within a bucket corrected. H0: neither arm's values tend to be larger."""
    if len(control) != len(treatment):
        raise ValueError("both histograms need the same buckets")
    n1, n2 = sum(control), sum(treatment)
    if n1 <= 0 or n2 <= 0:
        raise ValueError("each arm needs at least one observation")
    n = n1 + n2
    rank_sum_t = 0.0
    below = 0.0
    tie_term = 0.0
    for c, t in zip(control, treatment, strict=True):
        tied = c + t
        if tied:
            mid_rank = below + (tied + 1) / 2  # the average rank of the tied block
            rank_sum_t += t * mid_rank
            tie_term += tied**3 - tied
        below += tied
    u_t = rank_sum_t - n2 * (n2 + 1) / 2  # pairs where the treatment is larger (ties half)
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    effect = 1 - 2 * u_t / (n1 * n2)  # P(T<C) - P(T>C): positive means the treatment is lower
    if var <= 0:
        return TestResult("mann_whitney_u", u_t, 1.0, -effect)
    z = (u_t - mean) / math.sqrt(var)
    return TestResult("mann_whitney_u", z, _two_sided(z), -effect)


def bucket_counts(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    """Prometheus `le` buckets (upper bound, cumulative count), sorted by bound -> per bucket."""
    out, prev = [], 0.0
    for _, count in sorted(cumulative):
        out.append(max(0.0, count - prev))
        prev = max(prev, count)
    return out
