"""Text renderers for the report: terminal table, Markdown, FOCUS CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from vocabulary.labels import METRIC_LABELS

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


def _tables(rep: dict) -> list[tuple[str, list[str], list[list[str]]]]:
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


def render_table(rep: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    w = rep["window"]
    console.print(
        f"GPU FinOps report {w['start']} .. {w['end']} ({w['hours']:g} h) — prices: {rep['prices']['source']}"
    )
    for title, header, rows in _tables(rep):
        table = Table(title=title, title_justify="left")
        for h in header:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return buf.getvalue()


def render_md(rep: dict) -> str:
    w = rep["window"]
    lines = [
        "# GPU FinOps report",
        "",
        f"Window {w['start']} .. {w['end']} ({w['hours']:g} h); prices: {rep['prices']['source']}.",
        "",
    ]
    for title, header, rows in _tables(rep):
        lines += [
            f"## {title[0].upper()}{title[1:]}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines.append(
        "`*` overlaps a larger recommendation on the same target; not counted in the total."
    )
    return "\n".join(lines) + "\n"


FOCUS_COLUMNS = (
    "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeDescription", "ServiceCategory", "ServiceName", "ProviderName",
    "ResourceId", "ResourceName", "ResourceType", "SkuId", "PricingCategory", "PricingUnit",
    "PricingQuantity", "ConsumedQuantity", "ConsumedUnit", "ListUnitPrice", "ListCost",
    "BilledCost", "EffectiveCost", "BillingCurrency", "Tags",
)  # fmt: skip


def render_csv(rep: dict) -> str:
    """FOCUS 1.x columns, one row per UTC day and group (team, use case, model, pool)."""
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    start, end = rep["window"]["start"], rep["window"]["end"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, FOCUS_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rep["daily"]:
        tags = {
            k: r[k]
            for k in (*METRIC_LABELS, "capacity_type", "instance_type", "gpu_model")
            if r.get(k)
        }
        rid = "/".join(
            r.get(k) or "-"
            for k in ("pool", "team", "use_case", "model", "model_version", "rollout")
        )
        unalloc = r["team"] == "unallocated"
        w.writerow(
            {
                "BillingPeriodStart": start, "BillingPeriodEnd": end,
                "ChargePeriodStart": iso(r["day"]), "ChargePeriodEnd": iso(r["day"] + 86400),
                "ChargeCategory": "Usage",
                "ChargeDescription": "Unallocated GPU capacity" if unalloc else "GPU allocation",
                "ServiceCategory": "Compute", "ServiceName": "Tandem GPU pools", "ProviderName": "Tandem",
                "ResourceId": rid, "ResourceName": rid,
                "ResourceType": "Unallocated GPU" if unalloc else "GPU allocation",
                "SkuId": r.get("instance_type", ""),
                "PricingCategory": "Dynamic" if r.get("capacity_type") == "spot" else "Standard",
                "PricingUnit": "GPU-Hours", "PricingQuantity": f"{r['allocated_gpu_hours']:.4f}",
                "ConsumedQuantity": f"{r['allocated_gpu_hours']:.4f}", "ConsumedUnit": "GPU-Hours",
                "ListUnitPrice": f"{r['unit_price']:.6f}", "ListCost": f"{r['cost_usd']:.4f}",
                "BilledCost": f"{r['cost_usd']:.4f}", "EffectiveCost": f"{r['cost_usd']:.4f}",
                "BillingCurrency": "USD", "Tags": json.dumps(tags, sort_keys=True),
            }
        )  # fmt: skip
    return buf.getvalue()


def render_json(rep: dict) -> str:
    return json.dumps(rep, indent=2) + "\n"


def render(rep: dict, fmt: str) -> str:
    if fmt == "html":
        from finops.html import render_html

        return render_html(rep)
    return {"table": render_table, "md": render_md, "csv": render_csv, "json": render_json}[fmt](
        rep
    )
