"""Rightsizing recommendations, each with projected monthly savings and the evidence behind it.

Every rule looks at one deployment (a workload key in one pool) or one pool, over the report
window, and projects the window's savings to a 730-hour month. Rules are independent: a
deployment can get several (a smaller GPU *or* fewer replicas); `overlapping` marks those, and the
report's total counts only the largest per target so savings are never double-counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finops.observed import GroupKey, Observed, as_dict, node_of
from finops.prices import PriceBook
from observability.promql import GROUP, NODE

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Thresholds:
    """Why these numbers: vLLM and Triton guidance keeps a GPU below ~70-80 % busy for latency."""

    target_util: float = 0.7  # GR_ENGINE_ACTIVE a replica may run at before another is needed
    idle_gr: float = 0.02  # an hour below this mean GR_ENGINE_ACTIVE is idle
    scale_to_zero_idle_share: float = 0.5  # idle at least half the allocated hours
    share_max_sm_p95: float = 0.3  # MIG / time-slicing candidates run below this p95 SM
    share_target_sm: float = 0.6  # packed tenants may add up to this SM
    memory_headroom: float = 1.2  # peak framebuffer x this must fit the smaller GPU
    smaller_max_sm: float = 0.8  # p95 SM scaled to the smaller GPU's compute must stay below
    time_slicing_max: int = 4  # tenants per GPU without MIG
    mig_max: int = 7  # MIG slices on A100/H100
    min_saving_usd: float = 1.0  # per month; below this a recommendation is noise


@dataclass
class Deployment:
    group: GroupKey
    alloc: np.ndarray  # GPU-hours per hour
    busy: np.ndarray  # GR-weighted GPU-hours per hour (≈ replicas' worth of work)
    sm_hourly: np.ndarray  # flattened per-GPU hourly SM means while held
    peak_fb_gib: float

    @property
    def label(self) -> str:
        d = as_dict(self.group, GROUP)
        return f"{d['team']}/{d['use_case']}/{d['model']}"

    @property
    def replicas(self) -> int:
        return int(round(np.max(self.alloc))) if len(self.alloc) else 0


def deployments(obs: Observed) -> list[Deployment]:
    sm: dict[GroupKey, list[np.ndarray]] = {}
    for t in obs.tracks:
        sm.setdefault(t.group, []).append(t.sm[~np.isnan(t.sm)])
    out = []
    for g, alloc in sorted(obs.allocated.items()):
        s = np.concatenate(sm.get(g, [np.zeros(0)]))
        out.append(
            Deployment(
                g,
                alloc,
                obs.active.get(g, np.zeros_like(alloc)),
                s,
                obs.peak_fb_mib.get(g, 0) / 1024,
            )
        )
    return out


def _rec(kind: str, target: str, saving_window: float, hours: float, evidence: dict) -> dict:
    monthly = saving_window * HOURS_PER_MONTH / hours if hours else 0.0
    return {
        "kind": kind,
        "target": target,
        "monthly_savings_usd": round(monthly, 2),
        "evidence": evidence,
    }


def recommend(obs: Observed, prices: PriceBook, th: Thresholds = Thresholds()) -> list[dict]:
    recs: list[dict] = []
    hours = obs.hours
    for d in deployments(obs):
        node = as_dict(node_of(d.group), ("pool", "capacity_type", "instance_type", "gpu_model"))
        try:
            price = prices.gpu_hour(node["instance_type"], node["capacity_type"])
            inst = prices.instance(node["instance_type"])
        except KeyError:
            continue
        held = d.alloc > 0
        if not held.any():
            continue
        alloc_hours = float(d.alloc.sum())
        mean_gr = np.divide(d.busy, d.alloc, out=np.zeros_like(d.busy), where=held)
        p95_sm = float(np.percentile(d.sm_hourly, 95)) if d.sm_hourly.size else 0.0
        base = {
            "pool": node["pool"],
            "instance_type": node["instance_type"],
            "capacity_type": node["capacity_type"],
            "replicas": d.replicas,
            "allocated_gpu_hours": round(alloc_hours, 2),
            "usd_per_gpu_hour": round(price, 4),
        }

        # scale to zero: allocated hours that did no work
        idle = held & (mean_gr < th.idle_gr)
        idle_share = float(d.alloc[idle].sum() / alloc_hours)
        if idle_share >= th.scale_to_zero_idle_share:
            recs.append(
                _rec("scale_to_zero", d.label, float(d.alloc[idle].sum()) * price, hours,
                     {**base, "idle_hours": int(idle.sum()), "idle_share": round(idle_share, 3),
                      "idle_gr_engine_active_below": th.idle_gr})
            )  # fmt: skip

        # lower min replicas: replicas kept up while the work needed fewer
        if d.replicas >= 2:
            needed = np.maximum(1, np.ceil(d.busy / th.target_util - 1e-9))
            spare = np.where(held & ~idle, np.maximum(d.alloc - needed, 0), 0)
            if spare.sum() > 0.05 * alloc_hours:
                recs.append(
                    _rec("lower_min_replicas", d.label, float(spare.sum()) * price, hours,
                         {**base, "suggested_min_replicas": int(needed[held & ~idle].min()),
                          "p95_replicas_needed": float(np.percentile(needed[held & ~idle], 95)),
                          "target_gr_engine_active": th.target_util})
                )  # fmt: skip

        # MIG / time-slicing: small tenants that could share GPUs
        if d.replicas >= 2 and p95_sm < th.share_max_sm_p95 and d.peak_fb_gib > 0:
            k_sm = math.floor(th.share_target_sm / max(p95_sm, 1e-3))
            k_mem = math.floor(inst.gpu_memory_gib / (d.peak_fb_gib * th.memory_headroom))
            cap = th.mig_max if inst.gpu.mig else th.time_slicing_max
            k = min(k_sm, k_mem, cap)
            if k >= 2:
                gpus_after = math.ceil(d.replicas / k)
                frac = 1 - gpus_after / d.replicas
                if frac > 0:
                    recs.append(
                        _rec("mig_or_time_slicing", d.label, alloc_hours * frac * price, hours,
                             {**base, "mode": "mig" if inst.gpu.mig else "time-slicing",
                              "tenants_per_gpu": k, "gpus_after": gpus_after,
                              "p95_sm_active": round(p95_sm, 3),
                              "peak_framebuffer_gib": round(d.peak_fb_gib, 2)})
                    )  # fmt: skip

        # smaller GPU class: memory and compute both fit a cheaper, smaller GPU
        best = None
        for gpu in prices.catalog.gpus.values():
            if gpu.usable_memory_gib >= inst.gpu_memory_gib:
                continue
            if gpu.usable_memory_gib < d.peak_fb_gib * th.memory_headroom:
                continue
            if p95_sm * inst.gpu.fp16_tflops / gpu.fp16_tflops > th.smaller_max_sm:
                continue
            cheapest = prices.cheapest_gpu_hour(gpu.name, node["capacity_type"])
            if cheapest and cheapest[1] < price and (best is None or cheapest[1] < best[2]):
                best = (gpu, cheapest[0], cheapest[1])
        if best:
            gpu, itype, new_price = best
            recs.append(
                _rec("smaller_gpu_class", d.label, alloc_hours * (price - new_price), hours,
                     {**base, "current_gpu": inst.gpu.name, "suggested_gpu": gpu.name,
                      "suggested_instance_type": itype, "suggested_usd_per_gpu_hour": round(new_price, 4),
                      "peak_framebuffer_gib": round(d.peak_fb_gib, 2),
                      "suggested_gpu_memory_gib": gpu.usable_memory_gib, "p95_sm_active": round(p95_sm, 3)})
            )  # fmt: skip

    recs += _consolidation(obs, prices)
    recs = [r for r in recs if r["monthly_savings_usd"] >= th.min_saving_usd]
    recs.sort(key=lambda r: (-r["monthly_savings_usd"], r["target"], r["kind"]))
    seen: set[str] = set()
    for r in recs:  # the largest saving per target counts; alternatives are shown, not summed
        r["overlapping"] = sum(1 for o in recs if o["target"] == r["target"]) > 1
        r["counted_in_total"] = r["target"] not in seen
        seen.add(r["target"])
    return recs


def _consolidation(obs: Observed, prices: PriceBook) -> list[dict]:
    """Whole nodes that stayed unallocated every hour: bin-packing would remove them."""
    out = []
    alloc_by_node: dict[tuple, np.ndarray] = {}
    for g, a in obs.allocated.items():
        k = node_of(g)
        alloc_by_node[k] = alloc_by_node.get(k, 0) + a
    for nk, cap in sorted(obs.capacity.items()):
        node = as_dict(nk, NODE)
        try:
            inst = prices.instance(node["instance_type"])
            node_price = prices.node_hour(node["instance_type"], node["capacity_type"])
        except KeyError:
            continue
        alloc = alloc_by_node.get(nk, np.zeros_like(cap))
        present = cap > 0
        if not present.any():
            continue
        free = (cap - alloc)[present]
        removable = int(math.floor(float(free.min()) / inst.gpus + 1e-9))
        if removable < 1:
            continue
        out.append(
            _rec("consolidation", f"pool/{node['pool']}", removable * node_price * obs.hours, obs.hours,
                 {"pool": node["pool"], "instance_type": node["instance_type"],
                  "capacity_type": node["capacity_type"], "nodes": round(float(cap.mean()) / inst.gpus, 2),
                  "gpus_per_node": inst.gpus, "min_unallocated_gpus": round(float(free.min()), 2),
                  "mean_allocation_ratio": round(float(alloc[present].sum() / cap[present].sum()), 3),
                  "removable_nodes": removable, "usd_per_node_hour": round(node_price, 4)})
        )  # fmt: skip
    return out
