"""The report as tables (title, header, rows): what every renderer shows, in one place.

The terminal, Markdown and HTML renderers all lay out these tables, so a column added here
appears in each of them.
"""

from __future__ import annotations

import json

SECTIONS = (
    ("by_team", ("team",)),
    ("by_use_case", ("team", "use_case")),
    ("by_model", ("model", "model_version")),
    ("by_pool", ("pool", "capacity_type", "instance_type")),
)
ROW_FIELDS = (
    ("allocated_gpu_hours", "alloc GPU-h"),
    ("active_gpu_hours", "active GPU-h"),
    ("utilization", "util"),
    ("cost_usd", "cost $"),
    ("allocated_idle_cost_usd", "alloc-idle $"),
    ("unallocated_cost_usd", "unalloc $"),
)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"
    return "" if v is None else str(v)


def report_tables(rep: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table, shared by the terminal and Markdown renderers."""
    out = []
    t = rep["totals"]
    out.append(
        (
            "Totals",
            ["capacity GPU-h", "allocated GPU-h", "active GPU-h", "capacity $", "allocated $",
             "unallocated $", "alloc-idle $", "savings $/month"],
            [[_fmt(t[k]) for k in ("capacity_gpu_hours", "allocated_gpu_hours", "active_gpu_hours",
                                   "capacity_cost_usd", "cost_usd", "unallocated_cost_usd",
                                   "allocated_idle_cost_usd", "monthly_savings_usd")]],
        )
    )  # fmt: skip
    for section, keys in SECTIONS:
        header = list(keys) + [h for _, h in ROW_FIELDS]
        rows = [
            [_fmt(r.get(k)) for k in keys] + [_fmt(r.get(f, 0.0)) for f, _ in ROW_FIELDS]
            for r in rep[section]
        ]
        out.append((section.replace("_", " "), header, rows))
    u = rep["utilization"]
    out.append(
        (
            "Utilization (hourly mean per allocated GPU-hour)",
            ["metric", "p50", "p95"],
            [["GR_ENGINE_ACTIVE", _fmt(u["gr_engine_active"]["p50"]), _fmt(u["gr_engine_active"]["p95"])],
             ["SM_ACTIVE", _fmt(u["sm_active"]["p50"]), _fmt(u["sm_active"]["p95"])],
             ["GPU-h share SM < 0.5", _fmt(u["share_gpu_hours_sm_active_below_0_5"]), ""]],
        )
    )  # fmt: skip
    out.append(
        (
            "Capacity type",
            ["capacity type", "GPU-h", "cost $", "GPU-h share", "cost share"],
            [[r["capacity_type"], _fmt(r["capacity_gpu_hours"]), _fmt(r["cost_usd"]),
              _fmt(r["share_gpu_hours"]), _fmt(r["share_cost"])] for r in rep["capacity_types"]],
        )
    )  # fmt: skip
    out.append(
        (
            "$ per million tokens",
            ["model", "input tok", "output tok", "$/M in (alloc)", "$/M out (alloc)", "$/M in (usage)", "$/M out (usage)"],
            [[r["model"], f"{r['input_tokens']:,}", f"{r['output_tokens']:,}",
              *(_fmt(r[f"usd_per_m_{d}_{b}"]) for b in ("allocation", "usage") for d in ("input", "output"))]
             for r in rep["tokens"]],
        )
    )  # fmt: skip
    out.append(
        (
            "Idle GPUs",
            ["uuid", "node", "pool", "state", "holder", "idle GPU-h", "cost $"],
            [[g["uuid"], g["node"], g["pool"], g["state"], g["holder"] or "", _fmt(g["idle_gpu_hours"]),
              _fmt(g["cost_usd"])] for g in rep["idle_gpus"]],
        )
    )  # fmt: skip
    out.append(
        (
            "Recommendations",
            ["kind", "target", "$/month", "evidence"],
            [[r["kind"], r["target"], _fmt(r["monthly_savings_usd"]) + ("" if r["counted_in_total"] else " *"),
              evidence_text(r)] for r in rep["recommendations"]],
        )
    )  # fmt: skip
    return out


def evidence_text(rec: dict) -> str:
    e = rec["evidence"]
    k = rec["kind"]
    if k == "scale_to_zero":
        return f"idle {e['idle_share']:.0%} of allocated hours ({e['idle_hours']} h with GR < {e['idle_gr_engine_active_below']})"
    if k == "lower_min_replicas":
        return f"{e['replicas']} replicas; work needed {e['suggested_min_replicas']} (p95 {e['p95_replicas_needed']:g}) at GR {e['target_gr_engine_active']}"
    if k == "mig_or_time_slicing":
        return f"{e['mode']}: p95 SM {e['p95_sm_active']}, peak FB {e['peak_framebuffer_gib']} GiB -> {e['tenants_per_gpu']}/GPU, {e['replicas']} -> {e['gpus_after']} GPUs"
    if k == "smaller_gpu_class":
        return f"{e['current_gpu']} -> {e['suggested_gpu']} ({e['suggested_instance_type']}): peak FB {e['peak_framebuffer_gib']} GiB, p95 SM {e['p95_sm_active']}"
    if k == "consolidation":
        return f"{e['removable_nodes']} of {e['nodes']:g} nodes never needed (min {e['min_unallocated_gpus']:g} GPUs free, allocation {e['mean_allocation_ratio']:.0%})"
    return json.dumps(e)
