"""`tandem drift report`: which signals moved, since when, by how much; text, JSON or HTML (with
an inline SVG plot of every signal's score against its calibrated line, one panel per version).

Input is the drift service's `GET /status?use_case=...` document (drift/service.py)."""

from __future__ import annotations

import html
import json
import time
from typing import Any

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def moved(status: dict[str, Any], use_case: str) -> list[dict[str, Any]]:
    """One row per (version, signal), drifting first, then by score."""
    uc = status["use_cases"][use_case]
    rows = []
    for version, v in uc["versions"].items():
        for signal, s in v["signals"].items():
            rows.append({"model_version": version, "arm": v["arm"], "signal": signal, **s})
    return sorted(rows, key=lambda r: (not r["detected"], -r["score"]))


def render_json(status: dict[str, Any], use_case: str) -> str:
    uc = status["use_cases"][use_case]
    doc = {
        "use_case": use_case,
        "team": uc["team"],
        "reference": uc["reference"],
        "signals": [
            {k: v for k, v in r.items() if k != "history"} for r in moved(status, use_case)
        ],
        "actions": status.get("actions", []),
    }
    return json.dumps(doc, indent=2)


def render_text(status: dict[str, Any], use_case: str) -> str:
    uc = status["use_cases"][use_case]
    ref = uc["reference"]
    lines = [f"drift report: {use_case} (team {uc['team']})"]
    if ref is None:
        lines.append(
            f"  no reference pinned yet ({uc['samples']} samples so far): nothing is tested"
        )
    else:
        lines.append(
            f"  reference: version {ref['version']}, {ref['events']} samples "
            f"{_ts(ref['start'])} .. {_ts(ref['end'])}, pinned {_ts(ref['pinned_at'])} "
            f"({ref['source']})"
        )
    rows = moved(status, use_case)
    drifting = [r for r in rows if r["detected"]]
    lines.append(f"  {len(drifting)} signal(s) drifting" if drifting else "  no signal drifting")
    lines.append(f"  {'version':<9} {'arm':<7} {'signal':<18} {'score':>6}  {'since':<24} evidence")
    for r in rows:
        ev = ", ".join(f"{k}={v}" for k, v in r["evidence"].items() if k != "examples")
        mark = "DRIFT" if r["detected"] else ""
        lines.append(
            f"  {r['model_version']:<9} {r['arm']:<7} {r['signal']:<18} {r['score']:>6.2f}  "
            f"{_ts(r['since']) if r['detected'] else '-':<24} {mark} {ev}".rstrip()
        )
    for a in status.get("actions", []):
        lines.append(
            f"  action {_ts(a['t'])}: version {a['model_version']} ({a['role']}) "
            f"{a['signal']}: {', '.join(a['actions']) or 'none'}"
        )
    return "\n".join(lines)


def svg_plot(rows: list[dict[str, Any]], width: int = 720, height: int = 220) -> str:
    """Scores over time, one line per signal, the calibrated line at 1 dashed."""
    pts = [(t, s) for r in rows for t, s in r["history"]]
    if not pts:
        return "<p>No tests yet.</p>"
    t0, t1 = min(t for t, _ in pts), max(t for t, _ in pts)
    top = max(2.0, max(s for _, s in pts) * 1.1)
    pad = 40

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)

    def y(s: float) -> float:
        return height - pad - (height - 2 * pad) * min(max(s, 0.0), top) / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="drift scores">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{y(1):.1f}" x2="{width - pad}" y2="{y(1):.1f}" stroke="black" '
        'stroke-dasharray="6,4"/>',
        f'<text x="{width - pad + 4}" y="{y(1) + 4:.1f}" font-size="11">line</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#999"/>',
        f'<text x="{pad}" y="{height - 12}" font-size="11">{html.escape(_ts(t0))}</text>',
        f'<text x="{width - pad}" y="{height - 12}" font-size="11" text-anchor="end">'
        f"{html.escape(_ts(t1))}</text>",
    ]
    for i, r in enumerate(rows):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in r["history"])
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        )
        parts.append(
            f'<text x="{pad + 4}" y="{14 + 13 * i}" font-size="11" fill="{colour}">'
            f"{html.escape(r['signal'])}</text>"
        )
        if r["detected"] and r["since"]:
            parts.append(
                f'<line x1="{x(r["since"]):.1f}" y1="{pad / 2}" x2="{x(r["since"]):.1f}" '
                f'y2="{height - pad}" stroke="{colour}" stroke-dasharray="2,2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render_html(status: dict[str, Any], use_case: str) -> str:
    rows = moved(status, use_case)
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_version.setdefault(r["model_version"], []).append(r)
    body = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift report: {html.escape(use_case)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        ".drift{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>Drift: {html.escape(use_case)}</h1>",
        f"<pre>{html.escape(render_text(status, use_case))}</pre>",
    ]
    for version, vrows in by_version.items():
        body.append(
            f"<h2>version {html.escape(version)} ({html.escape(vrows[0]['arm'])})</h2>"
            + svg_plot(sorted(vrows, key=lambda r: r["signal"]))
        )
    body.append("</body></html>")
    return "\n".join(body)
