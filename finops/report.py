"""Turn observed GPU-hours into the FinOps report (a plain dict: the JSON output is the interface).

Definitions (docs/finops.md explains each with its PromQL):
- allocated GPU-hours: GPUs requested by running pods x time; active GPU-hours: the same hours
  weighted by DCGM_FI_PROF_GR_ENGINE_ACTIVE (a GPU 40 % busy for an hour = 0.4 active GPU-hours);
- cost: allocated GPU-hours x the GPU-hour price of the node's instance and capacity type;
- idle cost = unallocated capacity (pool capacity not requested by any pod) + allocated-but-idle
  (allocated minus active GPU-hours, priced the same way).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from finops.observed import GroupKey, Observed, as_dict, node_of, workload_of
from finops.prices import PriceBook
from finops.recommend import Thresholds, recommend
from observability.promql import GROUP, NODE, WORKLOAD

HOURS_PER_MONTH = 730.0
IDLE_GPU_GR = 0.05  # a GPU whose mean GR_ENGINE_ACTIVE while allocated is below this is idle
UNALLOCATED_GPU_SHARE = 0.5  # a GPU unallocated for at least this share of the window is idle


def _r(x: float, n: int = 2) -> float:
    return round(float(x), n)


def _price(prices: PriceBook, node: tuple[str, ...]) -> float:
    d = as_dict(node, NODE)
    try:
        return prices.gpu_hour(d["instance_type"], d["capacity_type"])
    except KeyError:
        return 0.0


def _rows(
    obs: Observed, prices: PriceBook, keys: tuple[str, ...], pool_rows: bool = False
) -> list[dict]:
    acc: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for g, alloc in obs.allocated.items():
        d = as_dict(g, GROUP)
        k = tuple(d[n] for n in keys)
        p = _price(prices, node_of(g))
        a, act = float(alloc.sum()), float(obs.active.get(g, np.zeros(1)).sum())
        row = acc[k]
        row["allocated_gpu_hours"] += a
        row["active_gpu_hours"] += act
        row["cost_usd"] += a * p
        row["active_cost_usd"] += act * p
        row["allocated_idle_cost_usd"] += (a - act) * p
    if pool_rows:
        for nk, cap in obs.capacity.items():
            d = as_dict(nk, NODE)
            k = tuple(d[n] for n in keys)
            row = acc[k]
            p = _price(prices, nk)
            row["capacity_gpu_hours"] += float(cap.sum())
            row["capacity_cost_usd"] += float(cap.sum()) * p
        for row in acc.values():
            row["unallocated_gpu_hours"] = row["capacity_gpu_hours"] - row["allocated_gpu_hours"]
            row["unallocated_cost_usd"] = row["capacity_cost_usd"] - row["cost_usd"]
    out = []
    for k, row in sorted(acc.items(), key=lambda kv: -kv[1]["cost_usd"]):
        r: dict[str, Any] = {**dict(zip(keys, k, strict=True))}
        r.update({name: _r(v, 3 if "hours" in name else 2) for name, v in row.items()})
        r.setdefault("unallocated_cost_usd", 0.0)
        r["idle_cost_usd"] = _r(r["allocated_idle_cost_usd"] + r["unallocated_cost_usd"])
        r["utilization"] = (
            _r(row["active_gpu_hours"] / row["allocated_gpu_hours"], 4)
            if row["allocated_gpu_hours"]
            else 0.0
        )
        r["monthly_cost_usd"] = (
            _r(row["cost_usd"] * HOURS_PER_MONTH / obs.hours) if obs.hours else 0.0
        )
        out.append(r)
    return out


def _weighted_quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    if values.size == 0:
        return [0.0 for _ in qs]
    return [float(np.percentile(values, 100 * q)) for q in qs]


def _utilization(obs: Observed) -> dict:
    gr = np.concatenate([t.gr[~np.isnan(t.gr)] for t in obs.tracks] or [np.zeros(0)])
    sm = np.concatenate([t.sm[~np.isnan(t.sm)] for t in obs.tracks] or [np.zeros(0)])
    p50g, p95g = _weighted_quantiles(gr, (0.5, 0.95))
    p50s, p95s = _weighted_quantiles(sm, (0.5, 0.95))
    bins = np.linspace(0, 1, 11)
    return {
        "basis": "hourly mean per allocated GPU (one value per allocated GPU-hour)",
        "gpu_hours": int(gr.size),
        "gr_engine_active": {"p50": _r(p50g, 4), "p95": _r(p95g, 4)},
        "sm_active": {"p50": _r(p50s, 4), "p95": _r(p95s, 4)},
        "share_gpu_hours_sm_active_below_0_5": _r(float((sm < 0.5).mean()) if sm.size else 0.0, 4),
        "sm_active_histogram": {
            "bins": [_r(b, 1) for b in bins],
            "gpu_hours": np.histogram(np.clip(sm, 0, 1), bins)[0].tolist(),
        },
        "gr_engine_active_histogram": {
            "bins": [_r(b, 1) for b in bins],
            "gpu_hours": np.histogram(np.clip(gr, 0, 1), bins)[0].tolist(),
        },
    }


def _tokens(obs: Observed, prices: PriceBook, output_weight: float) -> list[dict]:
    """$/M tokens per model; GPU cost is split between input and output tokens by weight."""
    cost: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for g, alloc in obs.allocated.items():
        model = as_dict(g, GROUP)["model"]
        p = _price(prices, node_of(g))
        cost[model][0] += float(alloc.sum()) * p
        cost[model][1] += float(obs.active.get(g, np.zeros(1)).sum()) * p
    toks: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for wk, v in obs.tokens_in.items():
        toks[as_dict(wk, WORKLOAD)["model"]][0] += v
    for wk, v in obs.tokens_out.items():
        toks[as_dict(wk, WORKLOAD)["model"]][1] += v
    out = []
    for model in sorted(cost):
        tin, tout = toks.get(model, [0.0, 0.0])
        units = tin + output_weight * tout
        row = {"model": model, "input_tokens": int(tin), "output_tokens": int(tout)}
        for basis, c in (("allocation", cost[model][0]), ("usage", cost[model][1])):
            per_unit = c / units if units else None
            row[f"usd_per_m_input_{basis}"] = (
                _r(per_unit * 1e6, 4) if per_unit is not None else None
            )
            row[f"usd_per_m_output_{basis}"] = (
                _r(per_unit * output_weight * 1e6, 4) if per_unit is not None else None
            )
        row["cost_usd"] = _r(cost[model][0])
        out.append(row)
    return out


def _capacity_types(obs: Observed, prices: PriceBook) -> list[dict]:
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for nk, cap in obs.capacity.items():
        ct = as_dict(nk, NODE)["capacity_type"]
        acc[ct][0] += float(cap.sum())
        acc[ct][1] += float(cap.sum()) * _price(prices, nk)
    total_h = sum(v[0] for v in acc.values()) or 1.0
    total_c = sum(v[1] for v in acc.values()) or 1.0
    return [
        {
            "capacity_type": ct,
            "capacity_gpu_hours": _r(h, 3),
            "cost_usd": _r(c),
            "share_gpu_hours": _r(h / total_h, 4),
            "share_cost": _r(c / total_c, 4),
        }
        for ct, (h, c) in sorted(acc.items())
    ]


def _idle_gpus(obs: Observed, prices: PriceBook) -> list[dict]:
    out = []
    held: dict[tuple[str, str], list] = defaultdict(list)
    for t in obs.tracks:
        held[(t.uuid, t.node)].append(t)
    for (uuid, node), tracks in sorted(held.items()):
        gr = np.concatenate([t.gr[~np.isnan(t.gr)] for t in tracks])
        if gr.size and float(gr.mean()) < IDLE_GPU_GR:
            g = tracks[0].group
            out.append(
                {
                    "uuid": uuid,
                    "node": node,
                    "pool": as_dict(g, GROUP)["pool"],
                    "state": "allocated_idle",
                    "holder": "/".join(workload_of(g)[:3]),
                    "idle_gpu_hours": _r(gr.size, 3),
                    "mean_gr_engine_active": _r(gr.mean(), 4),
                    "cost_usd": _r(gr.size * _price(prices, node_of(g))),
                }
            )
    for (uuid, node, nk), hours in sorted(obs.unallocated_gpu.items()):
        h = float(hours.sum())
        if h >= UNALLOCATED_GPU_SHARE * obs.hours:
            out.append(
                {
                    "uuid": uuid,
                    "node": node,
                    "pool": as_dict(nk, NODE)["pool"],
                    "state": "unallocated",
                    "holder": None,
                    "idle_gpu_hours": _r(h, 3),
                    "mean_gr_engine_active": 0.0,
                    "cost_usd": _r(h * _price(prices, nk)),
                }
            )
    return out


def _daily(obs: Observed, prices: PriceBook) -> list[dict]:
    """Cost per UTC day and team (plus unallocated capacity): the HTML chart and FOCUS rows."""
    days = (obs.hour_ends - 1) // 86400 * 86400
    acc: dict[tuple[int, GroupKey], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for g, alloc in obs.allocated.items():
        p = _price(prices, node_of(g))
        act = obs.active.get(g, np.zeros_like(alloc))
        for day in np.unique(days):
            m = days == day
            acc[(int(day), g)][0] += float(alloc[m].sum())
            acc[(int(day), g)][1] += float(act[m].sum())
    alloc_by_node: dict[tuple, Any] = defaultdict(lambda: 0)
    for g, alloc in obs.allocated.items():
        alloc_by_node[node_of(g)] = alloc_by_node[node_of(g)] + alloc
    rows = []
    for (day, g), (a, busy) in sorted(acc.items()):
        p = _price(prices, node_of(g))
        rows.append({"day": day, **as_dict(g, GROUP), "allocated_gpu_hours": a,
                     "active_gpu_hours": busy, "cost_usd": a * p, "unit_price": p})  # fmt: skip
    for nk, cap in sorted(obs.capacity.items()):
        free = cap - alloc_by_node.get(nk, 0)
        p = _price(prices, nk)
        for day in np.unique(days):
            h = float(free[days == day].sum())
            if h > 1e-9:
                rows.append({"day": int(day), **dict.fromkeys(WORKLOAD, ""), "team": "unallocated",
                             **as_dict(nk, NODE), "allocated_gpu_hours": h, "active_gpu_hours": 0.0,
                             "cost_usd": h * p, "unit_price": p})  # fmt: skip
    return rows


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def window_notes(obs: Observed) -> list[str]:
    """What differs between the window asked for and the one the data covered (an hour or more):
    the report's per-month figures are scaled from the covered hours, so the reader must know."""
    notes = []
    asked_start = obs.requested_start if obs.requested_start is not None else obs.start
    asked_end = obs.requested_end if obs.requested_end is not None else obs.end
    asked_h = (asked_end - asked_start) / 3600.0
    if obs.start - asked_start >= 3600:
        notes.append(
            f"the data starts at {_iso(obs.start)}, {(obs.start - asked_start) / 3600:,.0f} h "
            f"after the requested start: the report covers {obs.hours:,.0f} h of the "
            f"{asked_h:,.0f} h asked for, and monthly figures are scaled from the {obs.hours:,.0f} h"
        )
    if asked_end - obs.end >= 3600:
        notes.append(
            f"the data ends at {_iso(obs.end)}, {(asked_end - obs.end) / 3600:,.0f} h before the "
            "requested end"
        )
    return notes


def build_report(
    obs: Observed,
    prices: PriceBook,
    *,
    source: str = "",
    output_token_weight: float = 4.0,
    thresholds: Thresholds = Thresholds(),
) -> dict:
    by_pool = _rows(
        obs, prices, ("pool", "capacity_type", "instance_type", "gpu_model"), pool_rows=True
    )
    # pools that had capacity but no allocation at all still belong in by_pool (handled in _rows)
    cap_h = sum(r.get("capacity_gpu_hours", 0) for r in by_pool)
    cap_c = sum(r.get("capacity_cost_usd", 0) for r in by_pool)
    alloc_h = sum(float(a.sum()) for a in obs.allocated.values())
    act_h = sum(float(a.sum()) for a in obs.active.values())
    cost = sum(r["cost_usd"] for r in by_pool)
    alloc_idle = sum(r["allocated_idle_cost_usd"] for r in by_pool)
    recs = recommend(obs, prices, thresholds)
    return {
        "schema": "tandem.finops.report/v1",
        "window": {
            "start": _iso(obs.start),
            "end": _iso(obs.end),
            "hours": _r(obs.hours, 3),
            "sample_interval_s": obs.sample_interval_s,
            "source": source,
            "requested_start": _iso(obs.requested_start or obs.start),
            "requested_end": _iso(obs.requested_end or obs.end),
            "notes": window_notes(obs),
        },
        "prices": {
            "source": prices.source,
            "spot_factor": prices.spot_factor,
            "output_token_weight": output_token_weight,
        },  # fmt: skip
        "totals": {
            "capacity_gpu_hours": _r(cap_h, 3),
            "allocated_gpu_hours": _r(alloc_h, 3),
            "active_gpu_hours": _r(act_h, 3),
            "capacity_cost_usd": _r(cap_c),
            "cost_usd": _r(cost),
            "unallocated_cost_usd": _r(cap_c - cost),
            "allocated_idle_cost_usd": _r(alloc_idle),
            "idle_cost_usd": _r(cap_c - cost + alloc_idle),
            "monthly_capacity_cost_usd": _r(cap_c * HOURS_PER_MONTH / obs.hours)
            if obs.hours
            else 0.0,
            "monthly_savings_usd": _r(
                sum(r["monthly_savings_usd"] for r in recs if r["counted_in_total"])
            ),
        },
        "by_team": _rows(obs, prices, ("team",)),
        "by_use_case": _rows(obs, prices, ("team", "use_case")),
        "by_model": _rows(obs, prices, ("model", "model_version")),
        "by_pool": by_pool,
        "utilization": _utilization(obs),
        "capacity_types": _capacity_types(obs, prices),
        "tokens": _tokens(obs, prices, output_token_weight),
        "idle_gpus": _idle_gpus(obs, prices),
        "recommendations": recs,
        "daily": _daily(obs, prices),
    }
