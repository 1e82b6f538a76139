"""Read `Observed` from Prometheus: a handful of hourly range queries, joined in PromQL.

Every query is a `query_range` with a one-hour step whose range selectors cover exactly the hour
before each step (`[1h - 1ms]`, so a sample on the boundary is counted once on Prometheus 2 and 3).
Summing `sum_over_time` of per-sample values times the sample interval gives exact GPU-hours, even
for pods that start or stop mid-hour; the hourly grain bounds memory and keeps every series under
Prometheus' 11,000-points-per-series limit for windows up to a year.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from finops.observed import GpuTrack, Observed, key_of
from finops.prom import PromClient, Series
from observability import promql as q

STEP = 3600
WINDOW = f"{STEP * 1000 - 1}ms"


def queries(w: str = WINDOW) -> dict[str, str]:
    """Named PromQL for the report (also evaluated by the tests against the backfilled TSDB)."""
    group = q.by(*q.GROUP)
    gpu_keep = q.by("UUID", "Hostname", *q.GROUP)
    return {
        "allocated": f"sum by ({group}) ({q.attribute(q.gpu_requests(w), w)})",
        "active": f"sum by ({group}) ({q.attribute(q.dcgm_pods(q.GR_ENGINE_ACTIVE, w), w)})",
        "gr_hourly": f"max by ({gpu_keep}) ({q.attribute(q.dcgm_pods(q.GR_ENGINE_ACTIVE, w, 'avg_over_time'), w)})",
        "sm_hourly": f"max by ({gpu_keep}) ({q.attribute(q.dcgm_pods(q.SM_ACTIVE, w, 'avg_over_time'), w)})",
        "peak_fb": f"max by ({group}) ({q.attribute(q.dcgm_pods(q.FB_USED, w, 'max_over_time'), w)})",
        "capacity": f"sum by ({q.by(*q.NODE)}) ({q.node_capacity(w)})",
        "unallocated": (
            q.dcgm_node(f'count_over_time({q.GR_ENGINE_ACTIVE}{{pod=""}}[{w}])')
            + f" * on (node) group_left({q.by(*q.NODE)}) {q.node_labels(w)}"
        ),
        "tokens_in": q.tokens(q.VLLM_PROMPT_TOKENS, w),
        "tokens_out": q.tokens(q.VLLM_GENERATION_TOKENS, w),
    }


def sample_interval(client: PromClient, end: float) -> float:
    """Seconds between kube-state-metrics samples, read from the data (scrape configs differ)."""
    res = client.query(
        f'max(count_over_time({q.KSM_NODE_CAPACITY}{{resource="{q.KSM_GPU_RESOURCE}"}}[{WINDOW}]))',
        end,
    )
    if not res or res[0].values[0] <= 0:
        raise RuntimeError(
            f'no {q.KSM_NODE_CAPACITY}{{resource="{q.KSM_GPU_RESOURCE}"}} in the hour before {end}: '
            "is kube-state-metrics scraped, and is the range right?"
        )
    return STEP / float(res[0].values[0])


def _dense(s: Series, hour_ends: np.ndarray) -> np.ndarray:
    out = np.full(len(hour_ends), np.nan)
    idx = np.searchsorted(hour_ends, s.times)
    ok = (idx < len(hour_ends)) & (
        np.abs(hour_ends[np.minimum(idx, len(hour_ends) - 1)] - s.times) < 1
    )
    out[idx[ok]] = s.values[ok]
    return out


def observed_from_prometheus(
    client: PromClient,
    start: float,
    end: float,
    progress: Callable[[str], None] = lambda name: None,
    workers: int = 3,
) -> Observed:
    n_hours = int(round((end - start) / STEP))
    start = end - n_hours * STEP
    hour_ends = start + STEP * (np.arange(n_hours) + 1.0)
    dt = sample_interval(client, end)
    progress("sample interval")
    qs = queries()

    def run(name: str) -> tuple[str, list[Series]]:
        res = client.query_range(qs[name], hour_ends[0], hour_ends[-1], STEP)
        progress(name)
        return name, res

    with ThreadPoolExecutor(workers) as pool:
        results = dict(pool.map(run, qs))

    obs = Observed(start=start, end=end, hour_ends=hour_ends, sample_interval_s=dt)
    per_hour = dt / 3600.0

    def fill(target: dict, name: str, names: tuple[str, ...], scale: float = 1.0) -> None:
        for s in results[name]:
            k = key_of(s.labels, names)
            target[k] = target.get(k, 0) + np.nan_to_num(_dense(s, hour_ends)) * scale

    fill(obs.allocated, "allocated", q.GROUP, per_hour)
    fill(obs.active, "active", q.GROUP, per_hour)
    fill(obs.capacity, "capacity", q.NODE, per_hour)
    for s in results["peak_fb"]:
        k = key_of(s.labels, q.GROUP)
        obs.peak_fb_mib[k] = max(obs.peak_fb_mib.get(k, 0.0), float(np.max(s.values)))
    for s in results["unallocated"]:
        k = (s.labels.get("UUID", ""), s.labels.get("Hostname", ""), key_of(s.labels, q.NODE))
        obs.unallocated_gpu[k] = (
            obs.unallocated_gpu.get(k, 0) + np.nan_to_num(_dense(s, hour_ends)) * per_hour
        )
    sm = {(s.labels.get("UUID"), key_of(s.labels, q.GROUP)): s for s in results["sm_hourly"]}
    for s in results["gr_hourly"]:
        g = key_of(s.labels, q.GROUP)
        other = sm.get((s.labels.get("UUID"), g))
        obs.tracks.append(
            GpuTrack(
                s.labels.get("UUID", ""),
                s.labels.get("Hostname", ""),
                g,
                _dense(s, hour_ends),
                _dense(other, hour_ends) if other else np.full(n_hours, np.nan),
            )
        )
    for name, target in (("tokens_in", obs.tokens_in), ("tokens_out", obs.tokens_out)):
        for s in results[name]:
            k = key_of(s.labels, q.WORKLOAD)
            target[k] = target.get(k, 0.0) + float(np.nansum(s.values))
    return obs
