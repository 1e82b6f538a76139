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
- `NumericKS`: Kolmogorov-Smirnov distance on the values and on their distance from the
  reference median (a grown spread), threshold from KS's asymptotic distribution at alpha / 2
  each; PSI, the Wasserstein distance, medians and standard deviations are reported beside it as
  evidence (how far, in the feature's own units).
- `RateTest`: chi-square of the window's category counts against the reference's proportions,
  threshold the chi-square quantile at alpha (Wilson-Hilferty), with the moved category named.

Every test returns `score = statistic / threshold`: 1 is the line, the same for every signal, and
what `tandem_drift_score` exports.
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
    ) -> None:
        ref = np.asarray(reference, dtype=np.float32)
        if ref.ndim != 2 or len(ref) < 2 * min(window, 50):
            raise ValueError(f"the reference has {len(ref)} embeddings; too few to calibrate")
        rng = np.random.default_rng(seed)
        ref = ref[rng.permutation(len(ref))]
        n_a = min(max_reference, len(ref) // 2)
        self.a = ref[:n_a]
        pool = ref[n_a : n_a + max_pool]
        self.window = window
        self.alpha = alpha
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
        shape = 4.0 / (skew * skew)
        scale = sd / math.sqrt(shape)
        loc = mean - shape * scale
        self.null_mean, self.null_sd, self.null_skew = mean, sd, skew
        self.threshold = max(loc + gamma_quantile(shape, scale, 1.0 - alpha), float(stats.max()))

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


class NumericKS:
    """KS on the values and KS on their distance from the reference's median: the first sees a
    moved location or shape, the second a spread that grew or shrank around the same centre
    (which plain KS is slow to see). Each runs at alpha / 2; the statistic is the larger."""

    kind = "numeric"

    def __init__(self, reference: Sequence[float], window: int, alpha: float) -> None:
        self.ref = np.asarray(reference, dtype=np.float64)
        if len(self.ref) < 20:
            raise ValueError(f"the reference has {len(self.ref)} values; too few")
        self.window = window
        self.alpha = alpha
        n, m = len(self.ref), window
        c = math.sqrt(-math.log(alpha / 4.0) / 2.0)  # two tests at alpha / 2, two-sided
        self.threshold = c * math.sqrt((n + m) / (n * m))
        self.ref_median = float(np.median(self.ref))
        self.ref_spread = np.abs(self.ref - self.ref_median)

    def test(self, window: Sequence[Any]) -> Result:
        w = np.asarray(window, dtype=np.float64)
        d = ks_distance(self.ref, w)
        d_spread = ks_distance(self.ref_spread, np.abs(w - self.ref_median))
        return Result(
            max(d, d_spread),
            self.threshold,
            {
                "ks": round(d, 4),
                "ks_spread": round(d_spread, 4),
                "psi": round(psi(self.ref, w), 4),
                "wasserstein": round(wasserstein(self.ref, w), 4),
                "reference_median": round(self.ref_median, 4),
                "window_median": round(float(np.median(w)), 4),
                "reference_sd": round(float(self.ref.std()), 4),
                "window_sd": round(float(w.std()), 4),
            },
        )


class RateTest:
    kind = "categorical"

    def __init__(self, reference: Sequence[Any], window: int, alpha: float) -> None:
        counts = Counter(str(v) for v in reference)
        if sum(counts.values()) < 20:
            raise ValueError(f"the reference has {sum(counts.values())} values; too few")
        total = sum(counts.values())
        self.categories = sorted(counts)
        k = len(self.categories) + 1  # + "other": a category the reference never saw
        self.p = {c: (counts[c] + 0.5) / (total + 0.5 * k) for c in self.categories}
        self.p_other = 0.5 / (total + 0.5 * k)
        self.window = window
        self.alpha = alpha
        df = max(1, k - 1)
        # chi-square(df) = gamma(df/2, 2)
        self.threshold = gamma_quantile(df / 2.0, 2.0, 1.0 - alpha)

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
