"""What the report is computed from: hourly GPU-hours per group, per GPU, per pool.

Two producers fill it — `finops.query` from a real Prometheus and `finops.truth` from the
simulator's own arrays — and one function (`finops.report.build_report`) turns it into numbers.
Comparing the two reports is the end-to-end proof that labels, joins and windows are right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from observability.promql import GROUP, NODE, WORKLOAD

GroupKey = tuple[str, ...]  # values of GROUP, in order
NodeKey = tuple[str, ...]  # values of NODE
WorkloadKey = tuple[str, ...]  # values of WORKLOAD


def key_of(labels: dict[str, str], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(labels.get(n, "") for n in names)


def as_dict(key: tuple[str, ...], names: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(names, key, strict=True))


def workload_of(group: GroupKey) -> WorkloadKey:
    return group[: len(WORKLOAD)]


def node_of(group: GroupKey) -> NodeKey:
    return group[len(WORKLOAD) :]


@dataclass
class GpuTrack:
    """One physical GPU held by one group: its hourly means while held (NaN elsewhere)."""

    uuid: str
    node: str
    group: GroupKey
    gr: np.ndarray
    sm: np.ndarray


@dataclass
class Observed:
    start: float  # window (start, end]
    end: float
    hour_ends: np.ndarray  # (H,) epoch seconds closing each hour
    sample_interval_s: float
    allocated: dict[GroupKey, np.ndarray] = field(default_factory=dict)  # GPU-hours per hour
    active: dict[GroupKey, np.ndarray] = field(default_factory=dict)  # GR-weighted GPU-hours
    peak_fb_mib: dict[GroupKey, float] = field(default_factory=dict)
    tracks: list[GpuTrack] = field(default_factory=list)
    capacity: dict[NodeKey, np.ndarray] = field(default_factory=dict)  # GPU-hours per hour
    unallocated_gpu: dict[tuple[str, str, NodeKey], np.ndarray] = field(default_factory=dict)
    tokens_in: dict[WorkloadKey, float] = field(default_factory=dict)
    tokens_out: dict[WorkloadKey, float] = field(default_factory=dict)
    # the window asked for, when the data did not cover it (the report says so)
    requested_start: float | None = None
    requested_end: float | None = None

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0

    def drop_leading_hours(self, n: int) -> None:
        """Start the window `n` hours later: the hours before the first sample are not data, and
        counting them would divide every monthly figure by a longer window than was observed."""
        if n <= 0:
            return
        self.hour_ends = self.hour_ends[n:]
        self.start += 3600.0 * n
        every: list[dict[Any, np.ndarray]] = [
            self.allocated,
            self.active,
            self.capacity,
            self.unallocated_gpu,
        ]
        for series in every:
            for key in series:
                series[key] = series[key][n:]
        for t in self.tracks:
            t.gr, t.sm = t.gr[n:], t.sm[n:]


assert NODE[0] == "pool" and GROUP[-len(NODE) :] == NODE
