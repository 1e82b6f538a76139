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


def build(spec: fleet.FleetSpec, workdir: Path, text_dir: Path | None = None) -> Backfilled:
    """Simulate `spec` and backfill it into `workdir/data`.

    The OpenMetrics text (about 1 GB per 54 h at 260 GPUs) goes to `text_dir` (e.g. /dev/shm) and
    each file is deleted once backfilled.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = fleet.simulate(spec)
    t1 = time.perf_counter()
    localprom.backfill(
        fleet.write_openmetrics(truth, text_dir or workdir / "openmetrics"), workdir / "data"
    )
    t2 = time.perf_counter()
    return Backfilled(
        truth, workdir / "data", {"simulate_s": t1 - t0, "write_and_backfill_s": t2 - t1}
    )
