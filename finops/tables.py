"""The report as tables (title, header, rows, note): what every renderer shows, in one place.

The terminal, Markdown and HTML renderers all lay out these tables, so a column added here
appears in each of them, and so does a note that says how to read one (team rows add up to the
allocated cost, not the bill). Numeric columns are right-aligned, text columns left-aligned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

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
)
# only pools hold unallocated capacity: on team, use-case and model rows the column is always 0
POOL_FIELDS = (("unallocated_cost_usd", "unalloc $"),)
_NUMBER = re.compile(r"-?[\d,]+(\.\d+)?( \*)?")


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""  # how to read it, printed under it
    numeric: list[bool] = field(init=False)  # per column: right-align

    def __post_init__(self) -> None:
        cells = [[row[i] for row in self.rows if row[i]] for i in range(len(self.header))]
        numeric = [bool(col) and all(_NUMBER.fullmatch(c) for c in col) for col in cells]
        object.__setattr__(self, "numeric", numeric)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if abs(v) < 0.0005:
            return "0.00"  # not -0.00 from a capacity - allocated rounding difference
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3f}"
    return "" if v is None else str(v)


def _usd(v: float) -> str:
    return f"${v:,.2f}"


def report_tables(rep: dict) -> list[Table]:
    """Every table, shared by the terminal, Markdown and HTML renderers."""
    out = []
    t = rep["totals"]
    out.append(
        Table(
            "Totals",
            ["capacity GPU-h", "allocated GPU-h", "active GPU-h", "capacity $", "allocated $",
             "unallocated $", "alloc-idle $", "savings $/month"],
            [[_fmt(t[k]) for k in ("capacity_gpu_hours", "allocated_gpu_hours", "active_gpu_hours",
                                   "capacity_cost_usd", "cost_usd", "unallocated_cost_usd",
                                   "allocated_idle_cost_usd", "monthly_savings_usd")]],
        )
    )  # fmt: skip
    allocated_only = (
        f"Rows add up to the allocated cost, {_usd(t['cost_usd'])}, not to the bill: the GPU "
        f"capacity cost is {_usd(t['capacity_cost_usd'])}, and the other "
        f"{_usd(t['unallocated_cost_usd'])} is capacity no pod requested (unalloc $ under by pool)."
    )
    for section, keys in SECTIONS:
        fields = ROW_FIELDS + (POOL_FIELDS if section == "by_pool" else ())
        header = list(keys) + [h for _, h in fields]
        rows = [
            [_fmt(r.get(k)) for k in keys] + [_fmt(r.get(f, 0.0)) for f, _ in fields]
            for r in rep[section]
        ]
        note = allocated_only if section == "by_team" else ""
        if section == "by_pool":
            note = "cost $ + unalloc $ is a pool's capacity cost; over all pools, that is the bill."
        out.append(Table(section.replace("_", " "), header, rows, note))
    u = rep["utilization"]
    out.append(
        Table(
            "Utilization (hourly mean per allocated GPU-hour)",
            ["metric", "p50", "p95"],
            [["GR_ENGINE_ACTIVE", _fmt(u["gr_engine_active"]["p50"]), _fmt(u["gr_engine_active"]["p95"])],
             ["SM_ACTIVE", _fmt(u["sm_active"]["p50"]), _fmt(u["sm_active"]["p95"])],
             ["GPU-h share SM < 0.5", _fmt(u["share_gpu_hours_sm_active_below_0_5"]), ""]],
        )
    )  # fmt: skip
    out.append(
        Table(
            "Capacity type",
            ["capacity type", "GPU-h", "cost $", "GPU-h share", "cost share"],
            [[r["capacity_type"], _fmt(r["capacity_gpu_hours"]), _fmt(r["cost_usd"]),
              _fmt(r["share_gpu_hours"]), _fmt(r["share_cost"])] for r in rep["capacity_types"]],
        )
    )  # fmt: skip
    out.append(
        Table(
            "$ per million tokens",
            ["model", "input tok", "output tok", "$/M in (alloc)", "$/M out (alloc)", "$/M in (usage)", "$/M out (usage)"],
            [[r["model"], f"{r['input_tokens']:,}", f"{r['output_tokens']:,}",
              *(_fmt(r[f"usd_per_m_{d}_{b}"]) for b in ("allocation", "usage") for d in ("input", "output"))]
             for r in rep["tokens"]],
        )
    )  # fmt: skip
    out.append(
        Table(
            "Idle GPUs",
            ["uuid", "node", "pool", "state", "holder", "idle GPU-h", "cost $"],
            [[g["uuid"], g["node"], g["pool"], g["state"], g["holder"] or "", _fmt(g["idle_gpu_hours"]),
              _fmt(g["cost_usd"])] for g in rep["idle_gpus"]],
        )
    )  # fmt: skip
    out.append(
        Table(
            "Recommendations",
            ["kind", "target", "$/month", "evidence"],
            [[r["kind"], r["target"], _fmt(r["monthly_savings_usd"]) + ("" if r["counted_in_total"] else " *"),
              evidence_text(r)] for r in rep["recommendations"]],
            "* overlaps a larger recommendation on the same target; not counted in the total."
            if any(not r["counted_in_total"] for r in rep["recommendations"]) else "",
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
