"""Drift's test-on-every-value calibration (drift/detectors.py `calibrate`): the line each
detector sets from a simulated null stream, the exact KS from reference lookups, the normal-score
tests beside KS, and the monitor testing every new value."""

from __future__ import annotations

import random

import numpy as np
import pytest

from drift.detectors import (
    EmbeddingMMD,
    LookupTracker,
    NumericKS,
    RateTest,
    calibrate,
    clusters,
    ks_distance,
    ks_rows,
)
from drift.monitor import Monitor, UseCase
from vocabulary.monitoring import Monitoring


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _episodes(stats: np.ndarray, line: float, window: int) -> int:
    """Alarms as the monitor counts them: one begins above the line when none is open, and one
    stays open until a whole window of values tests clean."""
    alarms, open_, clean = 0, False, 0
    for s in stats:
        if s > line:
            clean = 0
            if not open_:
                open_, alarms = True, alarms + 1
        elif open_:
            clean += 1
            if clean >= window:
                open_, clean = False, 0
    return alarms


def test_ks_from_lookups_is_the_exact_two_sample_distance_with_ties() -> None:
    rng = np.random.default_rng(0)
    ref = np.round(rng.lognormal(np.log(60), 0.4, 2000))  # token counts: many ties
    det = NumericKS(ref, 200, 1e-3)
    for _ in range(20):
        w = np.round(rng.lognormal(np.log(63), 0.45, 200))
        r = det.test(w)
        assert r.evidence["ks"] == pytest.approx(round(ks_distance(ref, w), 4), abs=1e-12)
        spread = ks_distance(det.ref_spread, np.abs(w - det.ref_median))
        assert r.evidence["ks_spread"] == pytest.approx(round(spread, 4), abs=1e-12)
        assert ks_rows(np.sort(ref), w)[0] == pytest.approx(ks_distance(ref, w), abs=1e-12)


def test_the_lookup_tracker_gives_the_full_tests_verdict() -> None:
    rng = np.random.default_rng(1)
    det = NumericKS(rng.normal(size=1000), 100, 1e-3)
    tracker = LookupTracker(det)
    stream = rng.normal(0.3, 1.2, 430)
    for i in range(0, 430, 37):
        tracker.add(stream[i : i + 37])
    full, kept = det.test(stream[-100:]), tracker.test(stream[-100:])
    assert kept.statistic == pytest.approx(full.statistic)
    assert kept.evidence == full.evidence


def test_the_score_tests_see_a_grown_spread_in_part_of_the_window_before_ks() -> None:
    rng = np.random.default_rng(2)
    det = NumericKS(rng.normal(0, 1, 3000), 100, 1e-3)
    spread = np.concatenate([rng.normal(0, 1, 60), rng.normal(0, 1.5, 40)])  # 40 % of values
    r = det.test(spread)
    units = r.statistic  # the largest of the four, in KS units
    assert r.evidence["spread_z"] > 3 and units > max(r.evidence["ks"], r.evidence["ks_spread"])
    moved = det.test(np.concatenate([rng.normal(0, 1, 50), rng.normal(0.6, 1, 50)]))
    assert moved.evidence["mean_z"] > 3


def test_a_rarer_target_sets_a_higher_line_and_clusters_are_counted_apart() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=2000)
    lax, strict = NumericKS(ref, 100, 0.0, rate=1e-3), NumericKS(ref, 100, 0.0, rate=1e-7)
    assert strict.threshold > lax.threshold and strict.alpha < lax.alpha
    assert lax.calibration is not None and lax.calibration.clusters >= 40
    # clusters: exceedances more than `gap` tests apart
    assert clusters(np.array([0, 2, 2, 0, 0, 0, 2, 0]), 1.0, 2) == 2
    assert clusters(np.array([0, 2, 0, 2]), 1.0, 2) == 1
    assert clusters(np.zeros(5), 1.0, 2) == 0


@pytest.mark.parametrize("kind", ["numeric", "categorical", "embedding"])
def test_a_fresh_null_stream_raises_no_more_alarms_than_the_target(kind: str) -> None:
    """Calibrated on one simulated null stream, tested on another (another seed): the monitor's
    alarms per test stay within the target (with room for the count's noise)."""
    rng = np.random.default_rng(4)
    window, rate = 50, 2e-3
    if kind == "numeric":
        det = NumericKS(rng.normal(size=2000), window, 0.0, rate=rate, seed=1)
    elif kind == "categorical":
        det = RateTest(list(rng.choice(["a", "b", "c"], 2000, p=[0.7, 0.2, 0.1])), window, 0.0,
                       rate=rate, seed=1)  # fmt: skip
    else:
        centres = rng.normal(size=(6, 16))
        ref = _unit(centres[rng.integers(0, 6, 1500)] + 0.6 * rng.normal(size=(1500, 16)))
        det = EmbeddingMMD(ref, window, 0.0, rate=rate, seed=1, max_pool=1000, keep_pool=True)
    n = 40_000
    stats = det.null_run(n, np.random.default_rng(99))
    alarms = _episodes(stats, det.threshold, window)
    assert alarms <= 1.5 * rate * n + 5
    assert alarms >= 0.1 * rate * n  # calibrated, not a line no value reaches
    # the union bound over every test would have been far stricter
    assert det.threshold < det.threshold_at(rate)


def test_calibration_needs_no_more_than_the_union_bound_when_nothing_exceeds() -> None:
    class Flat:
        window = 10

        def null_run(self, n: int, rng: np.random.Generator) -> np.ndarray:
            return np.zeros(n)

        def alpha_sim(self, line: float) -> float:
            return 1.0

    c = calibrate(Flat(), 1e-4, tests=1000)
    assert c.alpha == pytest.approx(1e-4) and c.c0 == 1.0


def test_the_monitor_tests_every_new_value_and_reports_its_calibration() -> None:
    m = Monitoring(signals=["prompt_length"], window_events=50, reference_events=200)
    mon = Monitor([UseCase("uc", "team-a", m)])
    rng = random.Random(0)
    for i in range(300):
        mon.ingest({"t": float(i), "use_case": "uc", "model_version": "1",
                    "prompt_tokens": rng.randint(3, 8), "outcome": "answer"})  # fmt: skip
    ref = mon.pin("uc", "1")
    assert ref is not None
    cal = ref.to_dict()["signals"]["prompt_length"]["calibration"]
    assert cal["simulated_tests"] >= 20_000 and cal["alarms_per_test"] > 0
    for i in range(300, 360):
        mon.ingest({"t": float(i), "use_case": "uc", "model_version": "1",
                    "prompt_tokens": rng.randint(3, 8), "outcome": "answer"})  # fmt: skip
        mon.evaluate()
    history = mon.status()["use_cases"]["uc"]["versions"]["1"]["signals"]["prompt_length"]
    assert len(history["history"]) == 60  # a test for each new value
