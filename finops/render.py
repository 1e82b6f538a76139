"""Text renderers for the report: terminal table, Markdown, FOCUS CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from finops.tables import Table, report_tables
from vocabulary.labels import METRIC_LABELS


def render_table(rep: dict) -> str:
    w = rep["window"]
    return tables_text(
        f"GPU FinOps report {w['start']} .. {w['end']} ({w['hours']:g} h) — prices: {rep['prices']['source']}",
        w.get("notes", []),
        report_tables(rep),
    )


def tables_text(title: str, notes: Sequence[str], tables: Sequence[Table]) -> str:
    """A title line, notes, and tables as the terminal shows them (rich, 160 columns)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    console.print(title)
    for note in notes:
        console.print(f"Note: {note}")
    for t in tables:
        table = RichTable(title=t.title, title_justify="left", caption=t.note or None)
        for h, numeric in zip(t.header, t.numeric, strict=True):
            table.add_column(h, overflow="fold", justify="right" if numeric else "left")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
    return buf.getvalue()


def render_md(rep: dict) -> str:
    w = rep["window"]
    return tables_md(
        "GPU FinOps report",
        f"Window {w['start']} .. {w['end']} ({w['hours']:g} h); prices: {rep['prices']['source']}.",
        w.get("notes", []),
        report_tables(rep),
    )


def tables_md(title: str, intro: str, notes: Sequence[str], tables: Sequence[Table]) -> str:
    """The same as Markdown: a heading, a sentence, notes as quotes, one section per table."""
    lines = [f"# {title}", "", intro, ""]
    lines += [f"> Note: {note}\n" for note in notes]
    for t in tables:
        lines += [
            f"## {t.title[0].upper()}{t.title[1:]}",
            "",
            "| " + " | ".join(t.header) + " |",
            "|" + "".join("---:|" if n else "---|" for n in t.numeric),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines += ["", t.note, ""] if t.note else [""]
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
    # a charge period never leaves the billing period: the first and last days are partial
    t0, t1 = _epoch(start), _epoch(end)
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
                "ChargePeriodStart": iso(max(r["day"], t0)),
                "ChargePeriodEnd": iso(min(r["day"] + 86400, t1)),
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


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def render_json(rep: dict) -> str:
    return json.dumps(rep, indent=2) + "\n"


def render(rep: dict, fmt: str) -> str:
    if fmt == "html":
        from finops.html import render_html

        return render_html(rep)
    return {"table": render_table, "md": render_md, "csv": render_csv, "json": render_json}[fmt](
        rep
    )
