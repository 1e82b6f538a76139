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

from finops.observed import GpuTrack, Observed
from finops.prom import PromClient, Series
from observability import promql as q

STEP = 3600
WINDOW = q.HOUR


class NoDataError(RuntimeError):
    """The Prometheus answered, but holds no GPU capacity samples in the window."""


def queries(w: str = WINDOW) -> dict[str, str]:
    """Named per-pod / per-node PromQL for the report (the tests evaluate each one too).

    The team/model/pool labels are joined here in Python from two lookups (`pod_labels`,
    `node_labels`), not with `label_replace` at every step: over a month that is 2-3x cheaper for
    Prometheus, and a GPU held by a pod without Tandem labels still shows up (as "unlabelled")
    instead of silently dropping out of a PromQL join.
    """
    gpu = f'{q.GR_ENGINE_ACTIVE}{{pod!=""}}'
    return {
        "allocated": q.gpu_requests(w),
        "active": f"sum by (namespace, pod, Hostname) (sum_over_time({gpu}[{w}]))",
        "gr_hourly": f"max by (UUID, Hostname, namespace, pod) (avg_over_time({gpu}[{w}]))",
        "sm_hourly": f'max by (UUID, Hostname, namespace, pod) (avg_over_time({q.SM_ACTIVE}{{pod!=""}}[{w}]))',
        "peak_fb": f'max by (namespace, pod, Hostname) (max_over_time({q.FB_USED}{{pod!=""}}[{w}]))',
        "capacity": f'sum by (node) (sum_over_time({q.KSM_NODE_CAPACITY}{{resource="{q.KSM_GPU_RESOURCE}"}}[{w}]))',
        "unallocated": f'sum by (UUID, Hostname) (count_over_time({q.GR_ENGINE_ACTIVE}{{pod=""}}[{w}]))',
        "tokens_in": f"sum by (namespace, pod) (increase({q.vllm(q.VLLM_PROMPT_TOKENS)}[{w}]))",
        "tokens_out": f"sum by (namespace, pod) (increase({q.vllm(q.VLLM_GENERATION_TOKENS)}[{w}]))",
    }


def label_lookups(window: str) -> dict[str, str]:
    """Instant queries over the whole window: every pod's and node's Tandem labels."""
    pod_cols = q.by("namespace", "pod", *(q.ksm_label(k) for k in q.POD_LABEL_KEYS.values()))
    node_cols = q.by("node", *(q.ksm_label(k) for k in q.NODE_LABEL_KEYS.values()))
    return {
        "pod_labels": f"max by ({pod_cols}) (max_over_time({q.KSM_POD_LABELS}[{window}]))",
        "node_labels": f"max by ({node_cols}) (max_over_time({q.KSM_NODE_LABELS}[{window}]))",
    }


def sample_interval(client: PromClient, end: float, window_s: float) -> tuple[float, float]:
    """(seconds between kube-state-metrics samples, time of the last one), read from one node's
    raw samples: scrape configs differ, and a window ending "now" ends after the data does."""
    sel = f'{q.KSM_NODE_CAPACITY}{{resource="{q.KSM_GPU_RESOURCE}"}}'
    nodes = client.query(f"last_over_time({sel}[{int(window_s)}s])", end)
    if not nodes:
        raise NoDataError(
            f"no {sel} samples in the {window_s / 86400:g} days before --end: is "
            "kube-state-metrics scraped, and are --end and --range right?"
        )
    node = nodes[0].labels.get("node", "")
    raw = client.query(f'{sel[:-1]},node="{node}"}}[{int(window_s)}s]', end)
    gaps = np.diff(raw[0].times) if raw and len(raw[0].times) > 1 else np.array([])
    if not gaps.size:
        raise NoDataError(
            f"only one {sel} sample for node {node}: the window is too short; widen --range"
        )
    return float(np.median(gaps)), float(raw[0].times[-1])


def _dense(s: Series, hour_ends: np.ndarray) -> np.ndarray:
    out = np.full(len(hour_ends), np.nan)
    k = np.rint((s.times - hour_ends[0]) / STEP).astype(int)
    ok = (k >= 0) & (k < len(hour_ends))
    out[k[ok]] = s.values[ok]
    return out


def observed_from_prometheus(
    client: PromClient,
    start: float,
    end: float,
    progress: Callable[[str], None] = lambda name: None,
    workers: int = 3,
) -> Observed:
    requested_start, requested_end = start, end
    dt, last = sample_interval(client, end, end - start)
    if last + dt < end:  # the data stops before the window does: end at the last sample
        end = last
    # whole hours only, counted back from the end (a partial hour would read as fewer GPUs)
    n_hours = int((end - start) // STEP)
    start = end - n_hours * STEP
    hour_ends = start + STEP * (np.arange(n_hours) + 1.0)
    progress("sample interval")
    qs = queries()
    lookups = label_lookups(f"{int(end - start)}s")

    def run(name: str) -> tuple[str, list[Series]]:
        if name in lookups:
            res = client.query(lookups[name], end)
        else:
            res = client.query_range(qs[name], hour_ends[0], hour_ends[-1], STEP)
        progress(name)
        return name, res

    with ThreadPoolExecutor(workers) as pool:
        results = dict(pool.map(run, [*lookups, *qs]))

    pod_key = {
        (s.labels.get("namespace", ""), s.labels.get("pod", "")): tuple(
            s.labels.get(q.ksm_label(k), "") for k in q.POD_LABEL_KEYS.values()
        )
        for s in results["pod_labels"]
    }
    node_key = {
        s.labels.get("node", ""): tuple(
            s.labels.get(q.ksm_label(k), "") for k in q.NODE_LABEL_KEYS.values()
        )
        for s in results["node_labels"]
    }
    blank_pod, blank_node = q.UNLABELLED_WORKLOAD, q.UNLABELLED_NODE

    def group(labels: dict[str, str]) -> tuple[str, ...]:
        wk = pod_key.get((labels.get("namespace", ""), labels.get("pod", "")), blank_pod)
        nk = node_key.get(labels.get("node") or labels.get("Hostname", ""), blank_node)
        return wk + nk

    obs = Observed(
        start=start,
        end=end,
        hour_ends=hour_ends,
        sample_interval_s=dt,
        requested_start=requested_start,
        requested_end=requested_end,
    )
    per_hour = dt / 3600.0

    def add(target: dict, key: tuple, s: Series, scale: float = 1.0) -> None:
        target[key] = target.get(key, 0) + np.nan_to_num(_dense(s, hour_ends)) * scale

    for s in results["allocated"]:
        add(obs.allocated, group(s.labels), s, per_hour)
    for s in results["active"]:
        add(obs.active, group(s.labels), s, per_hour)
    for s in results["capacity"]:
        add(obs.capacity, node_key.get(s.labels.get("node", ""), blank_node), s, per_hour)
    for s in results["peak_fb"]:
        k = group(s.labels)
        obs.peak_fb_mib[k] = max(obs.peak_fb_mib.get(k, 0.0), float(np.nanmax(s.values)))
    for s in results["unallocated"]:
        host = s.labels.get("Hostname", "")
        gpu = (s.labels.get("UUID", ""), host, node_key.get(host, blank_node))
        add(obs.unallocated_gpu, gpu, s, per_hour)
    tracks: dict[tuple, list[np.ndarray]] = {}
    for name in ("gr_hourly", "sm_hourly"):
        for s in results[name]:
            track = (s.labels.get("UUID", ""), s.labels.get("Hostname", ""), group(s.labels))
            slot = tracks.setdefault(track, [np.full(n_hours, np.nan), np.full(n_hours, np.nan)])
            dense = _dense(s, hour_ends)
            i = 0 if name == "gr_hourly" else 1
            slot[i] = np.where(np.isnan(dense), slot[i], dense)
    obs.tracks = [GpuTrack(u, h, g, gr, sm) for (u, h, g), (gr, sm) in tracks.items()]
    # the data may start after the window does (--range 90d over 30 days): start at the first
    # hour any node reported capacity, so the report divides by the time it observed
    firsts = [int(np.rint((s.times[0] - hour_ends[0]) / STEP)) for s in results["capacity"]]
    obs.drop_leading_hours(min((f for f in firsts if f >= 0), default=0))
    for name, target in (("tokens_in", obs.tokens_in), ("tokens_out", obs.tokens_out)):
        for s in results[name]:
            k = group(s.labels)[: len(q.WORKLOAD)]
            target[k] = target.get(k, 0.0) + float(np.nansum(s.values))
    return obs
