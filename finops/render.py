"""Text renderers for the report: terminal table, Markdown, FOCUS CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from finops.tables import report_tables
from vocabulary.labels import METRIC_LABELS


def render_table(rep: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    w = rep["window"]
    console.print(
        f"GPU FinOps report {w['start']} .. {w['end']} ({w['hours']:g} h) — prices: {rep['prices']['source']}"
    )
    for title, header, rows in report_tables(rep):
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
    for title, header, rows in report_tables(rep):
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
