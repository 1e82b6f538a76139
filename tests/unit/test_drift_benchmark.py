"""The drift benchmark's matched-rate mode (benchmarks/drift_detection.py --matched, --fa-targets):
alibi-detect's configured false-alarm rate expressed per 30 days, and Tandem's monitor run at it
through the same calibration a use case's `false_alarms_per_30d` drives."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pydantic import ValidationError

from vocabulary.monitoring import Monitoring

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "drift_detection", ROOT / "benchmarks" / "drift_detection.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("drift_detection", module)
    spec.loader.exec_module(module)
    return module


def _stream(bench: ModuleType, text: bool, numeric: bool) -> object:
    t = np.arange(10.0)
    feats = {"response_tokens": np.ones(10)} if numeric else {}
    return bench.Stream("s", t, ["q"] * 10 if text else None, feats, None)


def test_alibi_rate_is_its_capped_ert_per_detector_summed_over_its_detectors(bench) -> None:
    # 2,000 bootstraps allow an ERT of 1,000 events: 2,592 false alarms / 30 days at 1 request/s
    assert bench.alibi_ert(1.0, 1.0) == 1000
    assert bench.alibi_rate_per_30d(1.0, 1) == pytest.approx(2592.0)
    assert bench.alibi_rate_per_30d(1.0, 2) == pytest.approx(5184.0)  # either detector alarms
    assert bench.alibi_rate_per_30d(10.0, 1) == pytest.approx(25920.0)  # ERT is in events
    # with bootstraps enough for the target, its rate is the target (shared by its detectors)
    assert bench.alibi_rate_per_30d(1.0, 2, bootstraps=10**8) == pytest.approx(1.0)


def test_the_matched_spec_takes_the_streams_alibi_rate(bench) -> None:
    text, sensor = _stream(bench, True, True), _stream(bench, False, True)
    assert bench.peer_groups(text) == 2 and bench.peer_groups(sensor) == 1
    names = [s.detector for s in bench.tandem_specs(True, "1,30", "300,100")]
    assert names == [
        "tandem",
        "tandem@alibi-rate",
        "tandem@alibi-rate/w300",
        "tandem@fa30",
        "tandem@fa1/w100",
        "tandem@fa30/w100",
    ]
    matched = bench.tandem_specs(True, "", "300")[1]
    assert matched.window == bench.ALIBI_WINDOW
    assert matched.target_for(text, 1.0) == pytest.approx(5184.0)
    assert matched.target_for(sensor, 10.0) == pytest.approx(25920.0)
    assert bench.TandemSpec().target_for(text, 10.0) == 1.0


def test_a_target_past_the_vocabularys_bound_still_calibrates_the_monitor(bench) -> None:
    with pytest.raises(ValidationError):
        Monitoring(false_alarms_per_30d=5184.0)  # a use case cannot ask for it
    m = bench.tandem_monitoring(["embedding"], ["x"], 5184.0, 100, 3600)
    assert m.false_alarms_per_30d == 5184.0 and m.window_events == 100
    assert m.reference_events == 3600
    assert bench.tandem_monitoring([], ["x"], 1.0, 300, 100).reference_events == 600

    from drift.monitor import Monitor, UseCase

    rng = np.random.default_rng(0)
    thresholds = {}
    for target in (1.0, 30.0, 5184.0):
        mon = Monitor([UseCase("u", "t", bench.tandem_monitoring([], ["x"], target, 100, 2000))])
        for i in range(2000):
            mon.ingest({"t": float(i), "use_case": "u", "model_version": "1",
                        "features": {"x": float(rng.normal())}})  # fmt: skip
        ref = mon.pin("u", "1", source="auto")
        assert ref is not None
        thresholds[target] = ref.detectors["feature:x"].threshold
    assert thresholds[1.0] > thresholds[30.0] > thresholds[5184.0]
