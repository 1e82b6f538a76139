"""The ground truth: the same `Observed` the report reads, computed from the simulator's arrays."""

from __future__ import annotations

import numpy as np

from finops.fleet import Truth
from finops.observed import GpuTrack, Observed


def observed_from_truth(t: Truth) -> Observed:
    spec = t.spec
    per_hour = 3600 // spec.step_s
    n_hours = spec.n // per_hour
    hour_of = np.arange(spec.n) // per_hour
    h = spec.step_s / 3600.0
    obs = Observed(
        start=spec.start,
        end=spec.end,
        hour_ends=spec.start + 3600.0 * (np.arange(n_hours) + 1),
        sample_interval_s=spec.step_s,
    )

    def hourly(mask_values: np.ndarray) -> np.ndarray:
        return np.bincount(hour_of, weights=mask_values, minlength=n_hours) * h

    for gi, gpu in enumerate(t.gpus):
        p = gpu.pool
        nk = (p.name, p.capacity_type, p.instance_type, p.gpu_model)
        obs.capacity[nk] = obs.capacity.get(nk, 0) + hourly(np.ones(spec.n))
        free = (t.owner[gi] < 0).astype(float)
        obs.unallocated_gpu[(gpu.uuid, gpu.node, nk)] = hourly(free)
        for a, b, wi, _r, _pod, _ns in gpu.segments:
            w = spec.workloads[wi]
            g = (*w.key, *nk)
            m = np.zeros(spec.n)
            m[a:b] = 1
            obs.allocated[g] = obs.allocated.get(g, 0) + hourly(m)
            obs.active[g] = obs.active.get(g, 0) + hourly(m * t.gr[gi])
            obs.peak_fb_mib[g] = max(obs.peak_fb_mib.get(g, 0), float(t.fb_mib[gi, a:b].max()))
            held = hourly(m) > 0
            with np.errstate(invalid="ignore"):
                gr = np.where(held, hourly(m * t.gr[gi]) / hourly(m), np.nan)
                sm = np.where(held, hourly(m * t.sm[gi]) / hourly(m), np.nan)
            obs.tracks.append(GpuTrack(gpu.uuid, gpu.node, g, gr, sm))
    for pod, wi in t.pod_workload.items():
        k = spec.workloads[wi].key
        obs.tokens_in[k] = obs.tokens_in.get(k, 0) + t.tokens_in[pod]
        obs.tokens_out[k] = obs.tokens_out.get(k, 0) + t.tokens_out[pod]
    return obs
