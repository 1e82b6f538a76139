"""A self-contained HTML report: inline SVG charts drawn here, no scripts, no network."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from finops.tables import Table, report_tables

# What a bar segment means: busy (green), allocated but idle (amber), unallocated (grey).
ACTIVE, ALLOC_IDLE, UNALLOC = "#10b981", "#f59e0b", "#94a3b8"
# Teams: hues far from those three (no green, amber, orange or grey), so a team is never read as
# "busy" or "idle"; a team keeps its colour wherever it appears.
TEAM_COLORS = (
    "#2563eb",  # blue
    "#7c3aed",  # violet
    "#db2777",  # pink
    "#0891b2",  # cyan
    "#1e3a8a",  # navy
    "#a21caf",  # magenta
    "#b91c1c",  # dark red
    "#0f172a",  # near black
)
PALETTE = (*TEAM_COLORS, "#64748b")  # any other series (a single-series chart takes the first)


def _money(v: float) -> str:
    return f"${v:,.0f}" if abs(v) >= 10 else f"${v:,.2f}"


def _legend(items: list[tuple[str, str]], x: int, y: int, width: int = 760) -> str:
    """Swatches laid out left to right, wrapping; spacing follows each label's length."""
    out, xx, yy = [], x, y
    for name, color in items:
        step = 28 + 7 * len(name)
        if xx + step > width and xx > x:
            xx, yy = x, yy + 18
        out.append(f'<rect x="{xx}" y="{yy - 10}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{xx + 16}" y="{yy}" class="l">{escape(name)}</text>')  # fmt: skip
        xx += step
    return "".join(out)


def hbar_stacked(
    title: str,
    rows: list[tuple[str, list[float]]],
    parts: list[tuple[str, str]],
    unit=_money,
    left: int = 190,
) -> str:
    """Horizontal stacked bars: one row per item, one segment per part."""
    width, bar_h, gap = 760 + max(left - 190, 0), 20, 8
    total_max = max((sum(v) for _, v in rows), default=0) or 1
    height = 60 + len(rows) * (bar_h + gap) + 20 * ((len(parts) + 3) // 4)
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"><title>{escape(title)}</title>',
           f'<text x="0" y="16" class="t">{escape(title)}</text>']  # fmt: skip
    for i, (name, vals) in enumerate(rows):
        y = 34 + i * (bar_h + gap)
        out.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" class="l">{escape(name)}</text>'
        )
        x: float = left
        for v, (pname, color) in zip(vals, parts, strict=True):
            w = (width - left - 90) * v / total_max
            if w > 0:
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"><title>{escape(name)} · {escape(pname)}: {unit(v)}</title></rect>'
                )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 15}" class="l">{unit(sum(vals))}</text>')
    out.append(_legend(parts, left, height - 8 - 18 * ((len(parts) - 1) // 4), width))
    out.append("</svg>")
    return "".join(out)


def columns_stacked(
    title: str,
    labels: list[str],
    series: list[tuple[str, list[float]]],
    unit=_money,
    colors: dict[str, str] | None = None,
) -> str:
    """Vertical stacked columns over time (one column per label)."""
    width, height, left, bottom, top = 760, 300, 60, 40, 30
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    vmax = max(totals, default=0) or 1
    plot_w, plot_h = width - left - 10, height - top - bottom - 20 * ((len(series) + 3) // 4)
    cw = plot_w / max(len(labels), 1)
    palette = [
        (colors or {}).get(name, c) for (name, _), c in zip(series, PALETTE * 5, strict=False)
    ]
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"><title>{escape(title)}</title>',
           f'<text x="0" y="16" class="t">{escape(title)}</text>']  # fmt: skip
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="l">{unit(vmax * frac)}</text>')  # fmt: skip
    for i, lab in enumerate(labels):
        x = left + i * cw
        y = top + plot_h
        for (name, vals), color in zip(series, palette, strict=False):
            h = plot_h * vals[i] / vmax
            if h > 0:
                y -= h
                out.append(
                    f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(cw - 2, 1):.1f}" height="{h:.1f}" fill="{color}"><title>{escape(lab)} · {escape(name)}: {unit(vals[i])}</title></rect>'
                )
        if len(labels) <= 16 or i % max(len(labels) // 8, 1) == 0:
            out.append(
                f'<text x="{x + cw / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="l">{escape(lab)}</text>'
            )
    out.append(
        _legend(
            [(n, c) for (n, _), c in zip(series, palette, strict=False)],
            left,
            height - 6 - 18 * ((len(series) - 1) // 4),
        )
    )
    out.append("</svg>")
    return "".join(out)


def team_colors(teams: list[str]) -> dict[str, str]:
    """Each team's colour, by its place in the sorted list of teams (stable between charts)."""
    named = sorted(t for t in teams if t != "unallocated")
    return {t: TEAM_COLORS[i % len(TEAM_COLORS)] for i, t in enumerate(named)}


def _day_labels(days: list[int], start: str, end: str) -> tuple[list[str], bool]:
    """`MM-DD` per UTC day, with `(N h)` on a day the window covers only partly."""
    t0, t1 = (datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in (start, end))
    labels, partial = [], False
    for d in days:
        hours = (min(d + 86400, t1) - max(d, t0)) / 3600
        label = datetime.fromtimestamp(d, UTC).strftime("%m-%d")
        if hours < 23.99:
            label, partial = f"{label} ({hours:.0f} h)", True
        labels.append(label)
    return labels, partial


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#0f172a}
h1{margin-bottom:4px} .sub{color:#475569;margin-top:0}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.kpi{border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:22px} .kpi span{color:#475569;font-size:12px}
svg{display:block;margin:18px 0;font-size:12px} .t{font-weight:600;font-size:14px}
.l{fill:#334155;font-size:11px} .g{stroke:#e2e8f0}
table{border-collapse:collapse;margin:8px 0 24px;font-size:12px}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 8px;text-align:left} th{background:#f8fafc}
.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#475569;font-size:12px;margin:-10px 0 24px;max-width:760px}
.warn{border-left:4px solid #f59e0b;background:#fffbeb;padding:6px 10px;max-width:900px}
"""


def render_html(rep: dict) -> str:
    t, w = rep["totals"], rep["window"]
    kpis = [
        ("GPU capacity cost", _money(t["capacity_cost_usd"])),
        ("allocated", _money(t["cost_usd"])),
        ("idle (unallocated + allocated-idle)", _money(t["idle_cost_usd"])),
        (
            "fleet utilization",
            f"{t['active_gpu_hours'] / t['capacity_gpu_hours']:.0%}"
            if t["capacity_gpu_hours"]
            else "n/a",
        ),
        ("recommended savings / month", _money(t["monthly_savings_usd"])),
    ]
    team_note = (
        f"<p class=note>The team bars add up to the allocated cost, {_money(t['cost_usd'])}, not "
        f"to the bill ({_money(t['capacity_cost_usd'])} of GPU capacity): the other "
        f"{_money(t['unallocated_cost_usd'])} is capacity no pod requested, shown grey under "
        "Pools and in the daily chart.</p>"
    )
    charts = [
        hbar_stacked(
            "Cost by team: busy vs allocated-but-idle",
            [
                (r["team"], [r["active_cost_usd"], r["allocated_idle_cost_usd"]])
                for r in rep["by_team"]
            ],
            [("busy (GR_ENGINE_ACTIVE-weighted)", ACTIVE), ("allocated but idle", ALLOC_IDLE)],
        )
        + team_note,
        hbar_stacked(
            "Pools: where the capacity money goes",
            [
                (
                    f"{r['pool']} ({r['instance_type']}, {r['capacity_type']})",
                    [r["active_cost_usd"], r["allocated_idle_cost_usd"], r["unallocated_cost_usd"]],
                )
                for r in rep["by_pool"]
            ],
            [("busy", ACTIVE), ("allocated but idle", ALLOC_IDLE), ("unallocated", UNALLOC)],
        ),  # fmt: skip
    ]
    days = sorted({r["day"] for r in rep["daily"]})
    teams = sorted({r["team"] for r in rep["daily"]}, key=lambda x: (x == "unallocated", x))
    per = {(r["day"], r["team"]): 0.0 for r in rep["daily"]}
    for r in rep["daily"]:
        per[(r["day"], r["team"])] += r["cost_usd"]
    labels, partial = _day_labels(days, w["start"], w["end"])
    charts.append(
        columns_stacked(
            "Daily GPU cost by team (unallocated capacity last)",
            labels,
            [(team, [per.get((d, team), 0.0) for d in days]) for team in teams],
            colors={**team_colors(teams), "unallocated": UNALLOC},
        )
        + (
            "<p class=note>A day marked (N h) is partial: the window covers N hours of it, so "
            "its column is shorter.</p>"
            if partial
            else ""
        )
    )
    u = rep["utilization"]
    edges = u["sm_active_histogram"]["bins"]
    charts.append(
        columns_stacked(
            f"Allocated GPU-hours by SM_ACTIVE (p50 {u['sm_active']['p50']:.2f}, p95 {u['sm_active']['p95']:.2f}; "
            f"{u['share_gpu_hours_sm_active_below_0_5']:.0%} below 0.5)",
            [f"{a:.1f}-{b:.1f}" for a, b in zip(edges, edges[1:], strict=False)],
            [("GPU-hours", [float(v) for v in u["sm_active_histogram"]["gpu_hours"]])],
            unit=lambda v: f"{v:,.0f}",
        )
    )
    tok = [r for r in rep["tokens"] if r["usd_per_m_input_allocation"] is not None]
    charts.append(
        hbar_stacked(
            "$ per million output tokens by model (allocation basis: usage part + idle part)",
            [
                (
                    r["model"],
                    [
                        r["usd_per_m_output_usage"],
                        r["usd_per_m_output_allocation"] - r["usd_per_m_output_usage"],
                    ],
                )
                for r in tok
            ],
            [("usage basis", ACTIVE), ("extra paid for idle allocation", ALLOC_IDLE)],
            unit=lambda v: f"${v:,.2f}",
        )
    )
    recs = rep["recommendations"]
    charts.append(
        hbar_stacked(
            "Recommendations: projected monthly savings (light: alternative on the same target, not in the total)",
            [(f"{r['target']} · {r['kind']}"[:52],
              [r["monthly_savings_usd"] if r["counted_in_total"] else 0.0,
               0.0 if r["counted_in_total"] else r["monthly_savings_usd"]]) for r in recs],
            [("counted in the total", PALETTE[0]), ("alternative", "#93c5fd")],
            left=360,
        )
    )  # fmt: skip
    return page(
        "GPU FinOps report",
        f"{w['start']} to {w['end']} ({w['hours']:g} h) · prices: {rep['prices']['source']}",
        kpis,
        charts,
        report_tables(rep),
        w.get("notes", []),
    )


def table_html(table: Table) -> str:
    """One report table: a heading, the table (numbers right-aligned), its note."""
    cls = [' class="n"' if n else "" for n in table.numeric]
    body = "".join(
        "<tr>"
        + "".join(f"<td{a}>{escape(c)}</td>" for a, c in zip(cls, row, strict=True))
        + "</tr>"
        for row in table.rows
    )
    head = "".join(f"<th{a}>{escape(h)}</th>" for a, h in zip(cls, table.header, strict=True))
    note = f"<p class=note>{escape(table.note)}</p>" if table.note else ""
    title = escape(table.title[0].upper() + table.title[1:])
    return f"<h2>{title}</h2><table><tr>{head}</tr>{body}</table>{note}"


def page(
    title: str,
    subtitle: str,
    kpis: list[tuple[str, str]],
    charts: list[str],
    tables: list[Table],
    warnings: Sequence[str] = (),
) -> str:
    """A self-contained report page: title, KPI tiles, charts (inline SVG), tables."""
    tiles = "".join(
        f"<div class=kpi><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in kpis
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<p class=sub>{escape(subtitle)}</p>"
        + "".join(f"<p class=warn>{escape(n)}</p>" for n in warnings)
        + f"<div class=kpis>{tiles}</div>"
        + "".join(charts)
        + "".join(table_html(t) for t in tables)
        + "</body></html>\n"
    )
