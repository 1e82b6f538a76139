"""Simulate a fleet, backfill it into a TSDB and serve it: shared by the demo, tests and benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from finops import fleet, localprom


@dataclass
class Backfilled:
    truth: fleet.Truth
    data_dir: Path
    timings: dict[str, float]


def build(spec: fleet.FleetSpec, workdir: Path) -> Backfilled:
    """Simulate `spec` and backfill it into `workdir/data` (OpenMetrics files are removed after)."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = fleet.simulate(spec)
    t1 = time.perf_counter()
    localprom.backfill(fleet.write_openmetrics(truth, workdir / "openmetrics"), workdir / "data")
    t2 = time.perf_counter()
    return Backfilled(
        truth, workdir / "data", {"simulate_s": t1 - t0, "write_and_backfill_s": t2 - t1}
    )
