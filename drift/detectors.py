"""Two-sample tests of a window against a reference, each with a threshold calibrated to a
false-alarm probability `alpha` per test (the monitor derives `alpha` from the use case's target
false alarms per 30 days: see `alpha_for`).

- `EmbeddingMMD`: maximum mean discrepancy between the window's prompt embeddings and the
  reference's, Gaussian kernel with the median-distance bandwidth. Calibration: the reference is
  split in two; windows drawn from one half are tested against the other (a bootstrap of the
  statistic under no drift), a gamma distribution is fitted to those statistics by their mean,
  variance (with the finite-population correction) and skewness (MMD's null is a weighted sum of
  chi-squares, skewed right) and the threshold is its 1 - alpha quantile, never below the largest
  bootstrap value. All pool-vs-reference kernel values are computed once, so each
  bootstrap draw is an index gather.
- `NumericKS`: four tests at alpha / 4 each: Kolmogorov-Smirnov distance on the values and on
  their distance from the reference median (a grown spread), and z-tests on the mean and the mean
  square of the values' normal scores (each value's rank in the reference, mapped to a normal
  quantile): the scores' tests see a moved mean or a grown spread in a fraction of the window's
  values sooner than KS does. Their statistic is expressed in KS's units (the KS distance with the
  same p-value), so the threshold is KS's asymptotic one; PSI, the Wasserstein distance, medians
  and standard deviations are reported beside it as evidence (how far, in the feature's own
  units).
- `RateTest`: chi-square of the window's category counts against the reference's proportions,
  threshold the chi-square quantile at alpha (Wilson-Hilferty), with the moved category named.

Every test returns `score = statistic / threshold`: 1 is the line, the same for every signal, and
what `tandem_drift_score` exports.

Tested on every value (`calibrate`): consecutive windows share all but one value, so their tests
are far from independent and a union bound over every test would set the line far too high. Each
detector instead simulates its own null stream (values drawn from the reference, one test per
value, `null_run`), counts the clusters of exceedances there (runs of exceedances less than a
tenth of a window apart: each monitor alarm starts a new cluster, so there are no more alarms
than clusters) and takes the ratio `c0` of clusters per test to the marginal false-alarm
probability at that line. The per-test probability `alpha` is then the one whose clusters per test,
`alpha * c0 * max(1, (z / z0) ** 2)`, meet the target; `z` is alpha's normal score. Where the
target is too rare to see in the simulation (1 per 30 days), the (z / z0)^2 growth of clusters
per exceedance is the theory's for a sliding window's statistic (Pickands' constant for a locally
Brownian process; the discrete-sampling correction, which shrinks it, is left out: conservative).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SECONDS_30D = 30 * 86400.0


def alpha_for(
    false_alarms_per_30d: float, evaluations_per_30d: float, tests_per_evaluation: int
) -> float:
    """Per-test false-alarm probability so that the expected number of false alarms in 30 days
    of stationary traffic is at most the target (a union bound over every test run: sliding
    windows overlap, so this is conservative)."""
    n = max(1.0, evaluations_per_30d) * max(1, tests_per_evaluation)
    return min(0.05, false_alarms_per_30d / n)


def normal_survival(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def log_normal_survival(z: float) -> float:
    """log P(N(0, 1) > z), without underflow far in the tail."""
    if z < 8.0:
        return math.log(max(normal_survival(z), 1e-300))
    return -0.5 * z * z - math.log(z * math.sqrt(2.0 * math.pi)) + math.log1p(-1.0 / (z * z))


def normal_quantile(p: float) -> float:
    """The standard normal's p-quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must be in (0, 1)")
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269,
         -30.66479806614716, 2.506628277459239)  # fmt: skip
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
         -13.28068155288572)  # fmt: skip
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
         4.374664141464968, 2.938163982698783)  # fmt: skip
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - lo:
        return -normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


def gamma_quantile(shape: float, scale: float, p: float) -> float:
    """Gamma(shape, scale)'s p-quantile by Wilson-Hilferty (accurate for the upper tail)."""
    z = normal_quantile(p)
    v = 1.0 / (9.0 * shape)
    return shape * scale * max(0.0, 1.0 - v + z * math.sqrt(v)) ** 3


def gamma_survival(shape: float, scale: float, x: float) -> float:
    """P(Gamma(shape, scale) > x), the inverse of `gamma_quantile` (Wilson-Hilferty)."""
    if x <= 0:
        return 1.0
    v = 1.0 / (9.0 * shape)
    z = ((x / (shape * scale)) ** (1.0 / 3.0) - 1.0 + v) / math.sqrt(v)
    return normal_survival(z)


def clusters(stats: np.ndarray, line: float, gap: int) -> int:
    """Runs of `stats` above `line`, a run ending where `gap` or more tests in a row fall below."""
    idx = np.flatnonzero(stats > line)
    if len(idx) == 0:
        return 0
    return 1 + int(np.count_nonzero(np.diff(idx) > gap))


@dataclass
class Calibration:
    """How a detector's line was set for testing on every value (`calibrate`)."""

    rate: float  # target alarms per test (per value)
    alpha: float  # the per-test false-alarm probability that meets it
    tests: int  # simulated null tests
    clusters: int  # exceedance clusters seen in them at the simulated line
    z0: float  # that line's normal score
    c0: float  # clusters per test over the marginal probability, at that line

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarms_per_test": self.rate,
            "simulated_tests": self.tests,
            "simulated_clusters": self.clusters,
            "z0": round(self.z0, 3),
            "clusters_per_exceedance": round(self.c0, 5),
        }


def calibrate(det: Any, rate: float, seed: int = 0, tests: int | None = None) -> Calibration:
    """The per-test alpha for `det` (EmbeddingMMD, NumericKS or RateTest) tested on every value
    so that its false alarms per test are at most `rate` (module docstring)."""
    m = det.window
    n = tests or min(40_000, max(20_000, 100 * m))
    stats = np.asarray(det.null_run(n, np.random.default_rng(seed)), dtype=np.float64)
    gap = max(1, m // 10)
    want = min(max(40.0, rate * n), n / (4.0 * gap))
    # the highest simulated line with at least `want` clusters (clusters fall as the line rises)
    lines = np.unique(stats)
    lo: int = 0
    hi: int = len(lines) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if clusters(stats, float(lines[mid]), gap) >= want:
            lo = mid
        else:
            hi = mid - 1
    line = float(lines[lo])
    k = clusters(stats, line, gap)
    a0 = det.alpha_sim(line)
    if k == 0 or not 0.0 < a0 < 0.5:  # nothing to learn from: one test per value, union bound
        return Calibration(rate, min(0.05, rate), n, k, 0.0, 1.0)
    z0 = normal_quantile(1.0 - a0)
    c0 = k / (n * a0)

    def per_test(a: float) -> float:
        z = normal_quantile(1.0 - a)
        return a * c0 * max(1.0, (z / z0) ** 2)

    lo_a, hi_a = math.log(1e-15), math.log(0.49)
    for _ in range(80):
        log_a = (lo_a + hi_a) / 2
        if per_test(math.exp(log_a)) > rate:
            hi_a = log_a
        else:
            lo_a = log_a
    return Calibration(rate, min(0.05, math.exp(lo_a)), n, k, z0, c0)


@dataclass
class Result:
    statistic: float
    threshold: float
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else 0.0

    @property
    def detected(self) -> bool:
        return self.statistic > self.threshold


class EmbeddingMMD:
    kind = "embedding"

    def __init__(
        self,
        reference: np.ndarray,
        window: int,
        alpha: float,
        *,
        boot: int = 1000,
        max_reference: int = 400,
        max_pool: int = 4000,
        seed: int = 0,
        rate: float | None = None,
        keep_pool: bool = False,
    ) -> None:
        """`alpha`: the per-test false-alarm probability; or `rate`: false alarms per test when
        tested on every value, and `alpha` comes from `calibrate`. `keep_pool`: keep the pool's
        kernel matrix after (`null_run` needs it; otherwise freed: up to 64 MB)."""
        ref = np.asarray(reference, dtype=np.float32)
        if ref.ndim != 2 or len(ref) < 2 * min(window, 50):
            raise ValueError(f"the reference has {len(ref)} embeddings; too few to calibrate")
        rng = np.random.default_rng(seed)
        ref = ref[rng.permutation(len(ref))]
        n_a = min(max_reference, len(ref) // 2)
        self.a = ref[:n_a]
        pool = ref[n_a : n_a + max_pool]
        self.window = window
        # bandwidth: the median distance between reference points (unit vectors: |x-y|^2 = 2-2xy)
        d2 = self._d2(self.a, self.a)
        med = float(np.median(d2[np.triu_indices(len(self.a), 1)]))
        self.gamma = 1.0 / max(med, 1e-6)  # k(x, y) = exp(-|x-y|^2 / median)
        self.k_aa = float(self._k(self.a, self.a).mean())
        k_pa = self._k(pool, self.a).mean(axis=1)
        k_pp = self._k(pool, pool)
        stats = np.empty(boot)
        m = min(window, len(pool))
        for i in range(boot):
            idx = rng.choice(len(pool), m, replace=False)
            stats[i] = self.k_aa + k_pp[np.ix_(idx, idx)].mean() - 2 * k_pa[idx].mean()
        # windows drawn without replacement from a finite pool vary less than fresh traffic's:
        # the finite-population correction gives the variance back
        fpc = max(0.05, 1.0 - m / len(pool))
        mean, sd = float(stats.mean()), float(stats.std()) / math.sqrt(fpc) + 1e-12
        skew = float(np.mean(((stats - stats.mean()) / (stats.std() + 1e-18)) ** 3))
        # the null is skewed to the right (a weighted sum of chi-squares): a gamma with the
        # bootstrap's mean, variance and skewness (Pearson type III), never less skewed than
        # the two-moment gamma
        skew = min(2.0, max(skew, 2.0 * sd / mean if mean > 0 else 0.3, 0.3))
        self.shape = 4.0 / (skew * skew)
        self.scale = sd / math.sqrt(self.shape)
        self.loc = mean - self.shape * self.scale
        self.null_mean, self.null_sd, self.null_skew = mean, sd, skew
        self._boot = np.sort(stats)
        self.calibration: Calibration | None = None
        self._null: tuple[np.ndarray, np.ndarray] | None = (k_pp, k_pa)
        if rate is not None:
            self.calibration = calibrate(self, rate, seed)
            alpha = self.calibration.alpha
        if not keep_pool:
            self._null = None  # the pool's kernel matrix is only needed to calibrate
        self.alpha = alpha
        self.threshold = self.threshold_at(alpha)

    def threshold_at(self, alpha: float) -> float:
        """The fitted null's 1 - alpha quantile, never below the bootstrap's own quantile (its
        largest value where alpha is below one in `boot`)."""
        b = self._boot
        floor = float(b[-1]) if alpha < 1.0 / len(b) else float(np.quantile(b, 1.0 - alpha))
        return max(self.loc + gamma_quantile(self.shape, self.scale, 1.0 - alpha), floor)

    def alpha_sim(self, line: float) -> float:
        """The fitted null's probability above `line` (the simulation draws windows from the same
        pool as the fit, with replacement: fresh traffic's variance, which the fit corrects to)."""
        return gamma_survival(self.shape, self.scale, line - self.loc)

    def null_run(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` consecutive tests, one per value, of a sliding window over values drawn from the
        pool with replacement (the statistic kept up to date as MMDTracker keeps it)."""
        assert self._null is not None
        k_pp, k_pa = self._null
        p, m = len(k_pa), min(self.window, len(k_pa))
        idx = rng.integers(0, p, n + m)
        ring = idx[:m].copy()
        s_pp = float(k_pp[np.ix_(ring, ring)].sum(dtype=np.float64))
        s_pa = float(k_pa[ring].sum(dtype=np.float64))
        out = np.empty(n)
        for t in range(n):
            pos = t % m
            old, new = int(ring[pos]), int(idx[m + t])
            s_pp -= 2.0 * float(k_pp[old, ring].sum(dtype=np.float64)) - float(k_pp[old, old])
            ring[pos] = new
            s_pp += 2.0 * float(k_pp[new, ring].sum(dtype=np.float64)) - float(k_pp[new, new])
            s_pa += float(k_pa[new]) - float(k_pa[old])
            out[t] = self.k_aa + s_pp / (m * m) - 2.0 * s_pa / m
        return out

    @staticmethod
    def _d2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, 2.0 - 2.0 * (x @ y.T))

    def _k(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * self._d2(x, y))

    def statistic(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        k_xa = self._k(x, self.a)
        k_xx = self._k(x, x)
        mmd2 = self.k_aa + float(k_xx.mean()) - 2.0 * float(k_xa.mean())
        # the witness: how much more each window point resembles the window than the reference
        witness = k_xx.mean(axis=1) - k_xa.mean(axis=1)
        return mmd2, witness

    def test(self, window: Sequence[Any]) -> Result:
        """The whole window at once (the monitor keeps an MMDTracker instead: same statistic)."""
        x = np.asarray(window, dtype=np.float32)
        stat, witness = self.statistic(x)
        top = [int(i) for i in np.argsort(-witness)[:3]]
        return Result(stat, self.threshold, {"mmd2": round(stat, 6), "examples": top})


class MMDTracker:
    """A sliding window's MMD kept up to date as samples arrive: each new sample's kernel row
    against the reference and the window is computed once (not the whole window's at every
    test), so a test costs one mean over the window's kernel matrix. Slots are a ring."""

    def __init__(self, det: EmbeddingMMD) -> None:
        m, dim = det.window, det.a.shape[1]
        self.det = det
        self.x = np.zeros((m, dim), dtype=np.float32)
        self.kxx = np.zeros((m, m), dtype=np.float64)
        self.kxa = np.zeros(m, dtype=np.float64)
        self.tags: list[Any] = [None] * m  # what each slot holds (the monitor: id and time)
        self.n = 0
        self.pos = 0

    def add(self, vectors: np.ndarray, tags: Sequence[Any] | None = None) -> None:
        det, m = self.det, self.det.window
        vectors = np.asarray(vectors, dtype=np.float32)[-m:]
        s = len(vectors)
        if s == 0:
            return
        idx = (self.pos + np.arange(s)) % m
        self.x[idx] = vectors
        self.kxa[idx] = det._k(vectors, det.a).mean(axis=1)
        self.n = min(m, self.n + s)
        valid = np.arange(m) if self.n == m else np.arange(self.n)
        k = det._k(vectors, self.x[valid])
        self.kxx[np.ix_(idx, valid)] = k
        self.kxx[np.ix_(valid, idx)] = k.T
        if tags is not None:
            for i, tag in zip(idx, list(tags)[-s:], strict=True):
                self.tags[int(i)] = tag
        self.pos = int((self.pos + s) % m)

    @property
    def full(self) -> bool:
        return self.n == self.det.window

    def test(self) -> Result:
        det = self.det
        stat = det.k_aa + float(self.kxx.mean()) - 2.0 * float(self.kxa.mean())
        witness = self.kxx.mean(axis=1) - self.kxa
        top = [int(i) for i in np.argsort(-witness)[:3]]
        return Result(stat, det.threshold, {"mmd2": round(stat, 6), "examples": top})


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def psi(reference: np.ndarray, window: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    w = np.bincount(np.searchsorted(edges, window, side="right"), minlength=len(edges) + 1)
    p = (r + 0.5) / (r.sum() + 0.5 * len(r))
    q = (w + 0.5) / (w.sum() + 0.5 * len(w))
    return float(np.sum((q - p) * np.log(q / p)))


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    qs = np.linspace(0.0, 1.0, 101)
    return float(np.mean(np.abs(np.quantile(a, qs) - np.quantile(b, qs))))


def ks_rows(
    ref_sorted: np.ndarray, windows: np.ndarray, _found: list[np.ndarray] | None = None
) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov distance of each row of `windows` from the sorted reference
    (exact, ties included: the same value as `ks_distance`), by looking the reference up at the
    window's own values only. `_found`, when given, receives the lookups (left, right)."""
    w = np.sort(np.atleast_2d(np.asarray(windows, dtype=np.float64)), axis=1)
    rows, m = w.shape
    n = len(ref_sorted)
    pos = np.broadcast_to(np.arange(m), (rows, m))
    # the window's ECDF at each of its values (a run of ties: up to its end) and just before it
    last = np.ones((rows, m), dtype=bool)
    last[:, :-1] = w[:, 1:] != w[:, :-1]
    first = np.ones((rows, m), dtype=bool)
    first[:, 1:] = last[:, :-1]
    end = np.minimum.accumulate(np.where(last, pos, m)[:, ::-1], axis=1)[:, ::-1]
    start = np.maximum.accumulate(np.where(first, pos, -1), axis=1)
    left = np.searchsorted(ref_sorted, w.ravel(), side="left").reshape(rows, m)
    right = np.searchsorted(ref_sorted, w.ravel(), side="right").reshape(rows, m)
    if _found is not None:
        _found += [left, right]
    fw_at, fw_before = (end + 1) / m, start / m
    d = np.maximum(np.abs(fw_at - right / n), np.abs(fw_before - left / n))
    return np.asarray(d.max(axis=1))


def ks_lookups(left: np.ndarray, right: np.ndarray, n: int) -> np.ndarray:
    """`ks_rows` from the window values' lookups in the sorted reference alone (rows of `left`,
    `right`: how many reference values are below / at most each value): values with the same
    lookups are tied or share a gap between reference values, where F_w - F_r is largest at the
    gap's ends, so the distance is the same."""
    left, right = np.atleast_2d(left), np.atleast_2d(right)
    rows, m = left.shape
    if rows == 1:  # one window (the monitor's test): fewer, cheaper steps
        keys, counts = np.unique(left[0] * (n + 1) + right[0], return_counts=True)
        at = np.cumsum(counts) / m
        lo, hi = keys // (n + 1), keys % (n + 1)
        return np.asarray([max(np.abs(at - hi / n).max(), np.abs(at - counts / m - lo / n).max())])
    order = np.argsort(left * (n + 1) + right, axis=1, kind="stable")
    left = np.take_along_axis(left, order, axis=1)
    right = np.take_along_axis(right, order, axis=1)
    pos = np.broadcast_to(np.arange(m), (rows, m))
    last = np.ones((rows, m), dtype=bool)
    last[:, :-1] = (left[:, 1:] != left[:, :-1]) | (right[:, 1:] != right[:, :-1])
    first = np.ones((rows, m), dtype=bool)
    first[:, 1:] = last[:, :-1]
    end = np.minimum.accumulate(np.where(last, pos, m)[:, ::-1], axis=1)[:, ::-1]
    start = np.maximum.accumulate(np.where(first, pos, -1), axis=1)
    d = np.maximum(np.abs((end + 1) / m - right / n), np.abs(start / m - left / n))
    return np.asarray(d.max(axis=1))


class NumericKS:
    """KS on the values and KS on their distance from the reference's median: the first sees a
    moved location or shape, the second a spread that grew or shrank around the same centre
    (which plain KS is slow to see); and z-tests on the mean and mean square of the values'
    normal scores against the reference's (a shifted mean, a grown or shrunk spread, seen in a
    part of the window sooner). Each runs at alpha / 4; the statistic is the largest, each in KS
    units (the KS distance whose asymptotic p-value is the test's)."""

    kind = "numeric"
    TESTS = 4

    def __init__(
        self,
        reference: Sequence[float],
        window: int,
        alpha: float,
        *,
        rate: float | None = None,
        seed: int = 0,
    ) -> None:
        """`alpha`: the per-test false-alarm probability; or `rate`: false alarms per test when
        tested on every value, and `alpha` comes from `calibrate`."""
        self.ref = np.asarray(reference, dtype=np.float64)
        if len(self.ref) < 20:
            raise ValueError(f"the reference has {len(self.ref)} values; too few")
        self.window = window
        n, m = len(self.ref), window
        self.scale = math.sqrt((n + m) / (n * m))  # KS's, and the score tests' sd, over sqrt(m)
        self.rho = math.sqrt(n / (n + m))  # a window's share of that sd (the rest: the reference)
        self.ref_sorted = np.sort(self.ref)
        self.ref_median = float(np.median(self.ref))
        self.ref_spread = np.abs(self.ref - self.ref_median)
        self.spread_sorted = np.sort(self.ref_spread)
        # normal scores by mid-rank in the reference: (left + right) indexes a table of 2n + 1
        self._table = np.asarray(
            [normal_quantile((j / 2.0 + 0.5) / (n + 1)) for j in range(2 * n + 1)]
        )
        u = self._raw_scores(self.ref)
        self._u_mean, self._u_sd = float(u.mean()), float(u.std()) + 1e-12
        u = (u - self._u_mean) / self._u_sd
        self._u2_sd = float((u * u).std()) + 1e-12
        # the evidence's reference side, once
        self._edges = np.unique(np.quantile(self.ref, np.linspace(0, 1, 11)[1:-1]))
        r = np.bincount(np.searchsorted(self._edges, self.ref, side="right"),
                        minlength=len(self._edges) + 1)  # fmt: skip
        self._psi_p = (r + 0.5) / (r.sum() + 0.5 * len(r))
        self._ref_q = np.quantile(self.ref, np.linspace(0.0, 1.0, 101))
        self._ref_sd = float(self.ref.std())
        self.calibration: Calibration | None = None
        if rate is not None:
            self.calibration = calibrate(self, rate, seed)
            alpha = self.calibration.alpha
        self.alpha = alpha
        self.threshold = self.threshold_at(alpha)

    def threshold_at(self, alpha: float) -> float:
        c = math.sqrt(-math.log(alpha / (2.0 * self.TESTS)) / 2.0)  # each two-sided at alpha / 4
        return c * self.scale

    def alpha_sim(self, line: float) -> float:
        """The statistic's tail at `line` for windows drawn from the reference itself (the
        simulation's: no reference noise, so KS's sd is 1 / sqrt(m) and the z-tests' rho)."""
        ks = 2.0 * math.exp(-2.0 * self.window * line * line)
        q = math.exp(-2.0 * (line / self.scale) ** 2)  # each z-test's one-sided tail at the line
        z = normal_quantile(1.0 - q) if 0.0 < q < 0.5 else 0.0
        return min(1.0, 2.0 * ks + 2.0 * 2.0 * normal_survival(z / self.rho))

    def _raw_scores(self, x: np.ndarray) -> np.ndarray:
        left = np.searchsorted(self.ref_sorted, x, side="left")
        right = np.searchsorted(self.ref_sorted, x, side="right")
        return np.asarray(self._table[left + right])

    def _ks_units(self, z: np.ndarray) -> np.ndarray:
        """The KS distance with the p-value of a two-sided z-test's |z|."""
        logq = np.asarray([log_normal_survival(float(v)) for v in np.abs(z).ravel()])
        return np.asarray(self.scale * np.sqrt(np.maximum(0.0, -logq) / 2.0)).reshape(z.shape)

    def lookups(self, values: np.ndarray) -> np.ndarray:
        """Each value's lookups in the sorted reference and in the sorted spreads (columns: left,
        right, spread left, spread right): computed once per value, all a test needs."""
        v = np.asarray(values, dtype=np.float64)
        d = np.abs(v - self.ref_median)
        return np.stack(
            [
                np.searchsorted(self.ref_sorted, v, side="left"),
                np.searchsorted(self.ref_sorted, v, side="right"),
                np.searchsorted(self.spread_sorted, d, side="left"),
                np.searchsorted(self.spread_sorted, d, side="right"),
            ],
            axis=-1,
        )

    def components(self, looked: np.ndarray) -> dict[str, np.ndarray]:
        """The four tests' statistics of each window of lookups (rows, m, 4)."""
        looked = np.asarray(looked)
        if looked.ndim == 2:
            looked = looked[None]
        n, m = len(self.ref), looked.shape[1]
        left, right = looked[..., 0], looked[..., 1]
        u = (self._table[left + right] - self._u_mean) / self._u_sd
        var = 1.0 / m + 1.0 / n
        return {
            "ks": ks_lookups(left, right, n),
            "ks_spread": ks_lookups(looked[..., 2], looked[..., 3], n),
            "mean_z": u.mean(axis=1) / math.sqrt(var),
            "spread_z": ((u * u).mean(axis=1) - 1.0) / (self._u2_sd * math.sqrt(var)),
        }

    def combine(self, c: dict[str, np.ndarray]) -> np.ndarray:
        ks = np.maximum(c["ks"], c["ks_spread"])
        z = np.maximum(np.abs(c["mean_z"]), np.abs(c["spread_z"]))
        return np.maximum(ks, self._ks_units(z))

    def statistic(self, windows: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(np.asarray(windows, dtype=np.float64))
        return self.combine(self.components(self.lookups(w)))

    def null_run(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` consecutive tests, one per value, of a sliding window over values drawn from the
        reference with replacement."""
        m = self.window
        looked = self.lookups(self.ref)[rng.integers(0, len(self.ref), n + m - 1)]
        out = np.empty(n)
        chunk = max(1, 1_000_000 // m)
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            rows = np.lib.stride_tricks.sliding_window_view(looked[i : i + k + m - 1], m, axis=0)
            out[i : i + k] = self.combine(self.components(np.moveaxis(rows, -1, 1)))
        return out

    def test(self, window: Sequence[Any], looked: np.ndarray | None = None) -> Result:
        """The window's verdict; `looked`: its values' `lookups`, when the caller keeps them."""
        w = np.asarray(window, dtype=np.float64)
        if looked is None:
            looked = self.lookups(w)
        c = {k: float(v[0]) for k, v in self.components(looked).items()}
        z = max(abs(c["mean_z"]), abs(c["spread_z"]))
        stat = max(c["ks"], c["ks_spread"], float(self._ks_units(np.asarray([z]))[0]))
        evidence: dict[str, Any] = {
            "ks": round(c["ks"], 4),
            "ks_spread": round(c["ks_spread"], 4),
            "mean_z": round(c["mean_z"], 3),
            "spread_z": round(c["spread_z"], 3),
        }
        if stat > 0.5 * self.threshold:  # how far, in the feature's units: past half the line
            evidence.update(self.how_far(w))
        return Result(stat, self.threshold, evidence)

    def how_far(self, w: np.ndarray) -> dict[str, float]:
        b = np.bincount(np.searchsorted(self._edges, w, side="right"),
                        minlength=len(self._edges) + 1)  # fmt: skip
        q = (b + 0.5) / (b.sum() + 0.5 * len(b))
        return {
            "psi": round(float(np.sum((q - self._psi_p) * np.log(q / self._psi_p))), 4),
            "wasserstein": round(
                float(np.mean(np.abs(self._ref_q - np.quantile(w, np.linspace(0, 1, 101))))), 4
            ),
            "reference_median": round(self.ref_median, 4),
            "window_median": round(float(np.median(w)), 4),
            "reference_sd": round(self._ref_sd, 4),
            "window_sd": round(float(w.std()), 4),
        }


class LookupTracker:
    """A sliding window's `NumericKS.lookups`, each value's computed once as it arrives (a test
    needs no order: slots are a ring)."""

    def __init__(self, det: NumericKS) -> None:
        self.det = det
        self.rows = np.zeros((det.window, 4), dtype=np.int64)
        self.n = 0
        self.pos = 0

    def add(self, values: Sequence[float]) -> None:
        m = self.det.window
        v = np.asarray(values, dtype=np.float64)[-m:]
        if len(v) == 0:
            return
        idx = (self.pos + np.arange(len(v))) % m
        self.rows[idx] = self.det.lookups(v)
        self.n = min(m, self.n + len(v))
        self.pos = int((self.pos + len(v)) % m)

    def test(self, window: Sequence[float]) -> Result:
        return self.det.test(window, self.rows[: self.n])


class RateTest:
    kind = "categorical"

    def __init__(
        self,
        reference: Sequence[Any],
        window: int,
        alpha: float,
        *,
        rate: float | None = None,
        seed: int = 0,
    ) -> None:
        """`alpha`: the per-test false-alarm probability; or `rate`: false alarms per test when
        tested on every value, and `alpha` comes from `calibrate`."""
        counts = Counter(str(v) for v in reference)
        if sum(counts.values()) < 20:
            raise ValueError(f"the reference has {sum(counts.values())} values; too few")
        total = sum(counts.values())
        self.categories = sorted(counts)
        k = len(self.categories) + 1  # + "other": a category the reference never saw
        self.p = {c: (counts[c] + 0.5) / (total + 0.5 * k) for c in self.categories}
        self.p_other = 0.5 / (total + 0.5 * k)
        self.window = window
        self.df = max(1, k - 1)
        self.calibration: Calibration | None = None
        if rate is not None:
            self.calibration = calibrate(self, rate, seed)
            alpha = self.calibration.alpha
        self.alpha = alpha
        self.threshold = self.threshold_at(alpha)

    def threshold_at(self, alpha: float) -> float:
        return gamma_quantile(self.df / 2.0, 2.0, 1.0 - alpha)  # chi-square(df) = gamma(df/2, 2)

    def alpha_sim(self, line: float) -> float:
        return gamma_survival(self.df / 2.0, 2.0, line)

    def null_run(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` consecutive tests, one per value, of a sliding window over categories drawn with
        the reference's proportions."""
        m = self.window
        p = np.asarray([*self.p.values(), self.p_other])
        draws = rng.choice(len(p), size=n + m - 1, p=p / p.sum())
        onehot = np.zeros((n + m, len(p)), dtype=np.int32)
        onehot[np.arange(1, n + m), draws] = 1
        cum = np.cumsum(onehot, axis=0)
        counts = cum[m:] - cum[:-m]  # each window's counts, n rows
        e = p * m
        return np.asarray(((counts - e) ** 2 / e).sum(axis=1))

    def test(self, window: Sequence[Any]) -> Result:
        obs = Counter(str(v) for v in window)
        m = sum(obs.values())
        stat = 0.0
        moved, worst = "", 0.0
        other = sum(n for c, n in obs.items() if c not in self.p)
        for c, p in [*self.p.items(), ("(new)", self.p_other)]:
            o = other if c == "(new)" else obs.get(c, 0)
            e = p * m
            term = (o - e) ** 2 / e
            stat += term
            if term > worst:
                moved, worst = c, term
        rate = (other if moved == "(new)" else obs.get(moved, 0)) / m if m else 0.0
        ref = self.p_other if moved == "(new)" else self.p.get(moved, 0.0)
        return Result(
            stat,
            self.threshold,
            {"category": moved, "reference_rate": round(ref, 4), "window_rate": round(rate, 4)},
        )
