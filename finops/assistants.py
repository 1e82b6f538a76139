"""`tandem assistants report`: coding-assistant adoption and cost per team, from Prometheus.

What a CTO reads about Claude Code, Codex and IDE agents going through the gateway: per team,
adoption (developers active in the last 7 days over developers with keys), sessions, tokens and
dollars per active developer, the tool mix, and what prompt caching saved; then per developer and
per tool. Everything is read from the gateway's `tandem_gateway_assistant_*` counters and the
`tandem_gateway_developers_with_keys` gauge (gateway/metrics.py), the same series the assistants
dashboard shows (observability/dashboards.py).

A counter's growth over the window is taken per series as its last value in the window minus its
last value before it, or, for a series that first appeared inside the window (a developer's first
request, a new gateway pod), its whole last value; a series that reset inside the window (a
restarted container) falls back to `increase()`. Plain `increase()` would miss each new series'
first count, and new series are the norm here: every developer, tool and pod starts one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from finops.prom import PromClient
from finops.tables import Table
from observability import promql as q

ACTIVE_WINDOW = "7d"  # "weekly active"


class NoAssistantData(RuntimeError):
    pass


def grown(metric: str, by: str, window: str) -> str:
    """PromQL: each group's counter growth over `window` ending at the query time."""
    last = f"last_over_time({metric}[{window}])"
    before = f"last_over_time({metric}[{window}] offset {window})"
    resets = f"resets({metric}[{window}]) > 0"
    steady = f"(({last} - {before}) or {last}) unless ({resets})"
    reset = f"increase({metric}[{window}]) and ({resets})"
    return f"sum by ({by}) ({steady} or {reset})"


def _seconds(duration: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    return int(duration[:-1]) * units[duration[-1]]


def _window(seconds: float) -> str:
    return f"{int(seconds)}s"


def queries(range_s: float) -> dict[str, str]:
    """Every query the report runs (instant, at the window's end)."""
    w = _window(range_s)
    return {
        "with_keys": f"max by (team) (max_over_time({q.GW_DEVELOPERS_WITH_KEYS}[{w}]))",
        "requests": grown(q.GW_ASSISTANT_REQUESTS, "team, developer, tool", w),
        "weekly": grown(q.GW_ASSISTANT_REQUESTS, "team, developer", ACTIVE_WINDOW),
        "sessions": grown(q.GW_ASSISTANT_SESSIONS, "team, developer", w),
        "tokens": grown(q.GW_ASSISTANT_TOKENS, "team, developer, direction", w),
        "cost": grown(q.GW_ASSISTANT_COST, "team, developer, tool", w),
        "saved": grown(q.GW_ASSISTANT_SAVED, "team, developer", w),
    }


def fetch(client: PromClient, end: float, range_s: float) -> dict[str, list[tuple[dict, float]]]:
    """(labels, value) per series of every query."""
    return {
        name: [(s.labels, float(s.values[-1])) for s in client.query(expr, end)]
        for name, expr in queries(range_s).items()
    }


def build_report(
    raw: dict[str, list[tuple[dict, float]]], end: float, range_s: float, source: str
) -> dict[str, Any]:
    """The report (JSON-able) from the query results; NoAssistantData when there is none."""
    if not raw["with_keys"] and not raw["requests"]:
        raise NoAssistantData(
            "no coding-assistant data in the window: no developer has a key "
            f"({q.GW_DEVELOPERS_WITH_KEYS}) and no developer request was counted "
            f"({q.GW_ASSISTANT_REQUESTS}); is this the Prometheus that scrapes the gateway?"
        )
    devs: dict[tuple[str, str], dict[str, Any]] = {}

    def dev(labels: dict) -> dict[str, Any]:
        key = (labels.get("team", ""), labels.get("developer", ""))
        return devs.setdefault(
            key,
            {
                "team": key[0],
                "developer": key[1],
                "requests": 0.0,
                "sessions": 0.0,
                "tokens_in": 0.0,
                "tokens_out": 0.0,
                "tokens_cached": 0.0,
                "cost_usd": 0.0,
                "cache_saved_usd": 0.0,
                "tools": {},
                "weekly_active": False,
            },
        )

    tools: dict[str, dict[str, Any]] = {}
    for labels, v in raw["requests"]:
        d = dev(labels)
        d["requests"] += v
        tool = labels.get("tool", "other")
        d["tools"][tool] = d["tools"].get(tool, 0.0) + v
        t = tools.setdefault(tool, {"tool": tool, "requests": 0.0, "cost_usd": 0.0, "devs": set()})
        t["requests"] += v
        if v > 0:
            t["devs"].add((d["team"], d["developer"]))
    for labels, v in raw["cost"]:
        dev(labels)["cost_usd"] += v
        tool = labels.get("tool", "other")
        tools.setdefault(tool, {"tool": tool, "requests": 0.0, "cost_usd": 0.0, "devs": set()})
        tools[tool]["cost_usd"] += v
    for labels, v in raw["sessions"]:
        dev(labels)["sessions"] += v
    for labels, v in raw["saved"]:
        dev(labels)["cache_saved_usd"] += v
    for labels, v in raw["tokens"]:
        direction = labels.get("direction", "in")
        if direction in ("in", "out", "cached"):
            dev(labels)[f"tokens_{direction}"] += v
    for labels, v in raw["weekly"]:
        if v > 0:
            dev(labels)["weekly_active"] = True

    with_keys = {labels.get("team", ""): int(v) for labels, v in raw["with_keys"]}
    team_names = sorted(set(with_keys) | {t for t, _ in devs})
    teams = [
        _team(name, with_keys.get(name, 0), [d for d in devs.values() if d["team"] == name])
        for name in team_names
    ]
    total_requests = sum(t["requests"] for t in tools.values()) or 1.0
    tool_rows = [
        {
            "tool": t["tool"],
            "requests": round(t["requests"]),
            "share": round(t["requests"] / total_requests, 4),
            "developers": len(t["devs"]),
            "cost_usd": round(t["cost_usd"], 4),
        }
        for t in sorted(tools.values(), key=lambda t: -t["requests"])
    ]
    developers = [
        {
            **{
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in d.items()
                if k != "tools"
            },
            "tools": {
                k: round(v) for k, v in sorted(d["tools"].items(), key=lambda kv: -kv[1]) if v > 0
            },
        }
        for d in sorted(devs.values(), key=lambda d: (-d["cost_usd"], d["team"], d["developer"]))
    ]
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "window": {"start": iso(end - range_s), "end": iso(end), "hours": round(range_s / 3600, 2)},
        "source": source,
        "active_window": ACTIVE_WINDOW,
        "totals": _team("all teams", sum(with_keys.values()), list(devs.values())),
        "teams": teams,
        "tools": tool_rows,
        "developers": developers,
    }


def _team(name: str, with_keys: int, devs: list[dict[str, Any]]) -> dict[str, Any]:
    active = [d for d in devs if d["requests"] > 0]
    weekly = sum(1 for d in devs if d["weekly_active"])
    n = len(active)

    def per_active(x: float) -> float | None:
        return round(x / n, 4) if n else None

    total = {k: sum(d[k] for d in devs) for k in ("requests", "sessions", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "cache_saved_usd")}  # fmt: skip
    return {
        "team": name,
        "developers_with_keys": with_keys,
        "active_developers": n,
        "weekly_active_developers": weekly,
        "adoption": round(weekly / with_keys, 4) if with_keys else None,
        "requests": round(total["requests"]),
        "sessions": round(total["sessions"]),
        "sessions_per_active_developer": per_active(total["sessions"]),
        "tokens_in": round(total["tokens_in"]),
        "tokens_out": round(total["tokens_out"]),
        "tokens_cached": round(total["tokens_cached"]),
        "tokens_per_active_developer": per_active(total["tokens_in"] + total["tokens_out"]),
        "cost_usd": round(total["cost_usd"], 4),
        "cost_per_active_developer_usd": per_active(total["cost_usd"]),
        "cache_saved_usd": round(total["cache_saved_usd"], 4),
        "cached_input_share": (
            round(total["tokens_cached"] / total["tokens_in"], 4) if total["tokens_in"] else None
        ),
    }


# -- rendering ----------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.2f}"


def tables(rep: dict[str, Any]) -> list[Table]:
    """The report's tables, for every renderer."""
    team_rows = [
        [
            t["team"],
            str(t["developers_with_keys"]),
            str(t["weekly_active_developers"]),
            _pct(t["adoption"]),
            _num(t["sessions_per_active_developer"]),
            _num(t["tokens_per_active_developer"]),
            _usd(t["cost_usd"]),
            _usd(t["cost_per_active_developer_usd"]),
            _usd(t["cache_saved_usd"]),
            _pct(t["cached_input_share"]),
        ]
        for t in [*rep["teams"], rep["totals"]]
    ]
    header = ["team", "with keys", "weekly active", "adoption", "sessions / active dev",
              "tokens / active dev", "cost", "cost / active dev", "prompt-cache saved",
              "cached input"]  # fmt: skip
    out = [
        Table(
            "Adoption and cost by team",
            header,
            team_rows,
            f"Adoption: developers with a request in the last {rep['active_window']} over "
            "developers with a key (their own, or on the team's roster). Per active developer: "
            "developers with a request in the window.",
        ),
        Table(
            "Tool mix",
            ["tool", "requests", "share", "developers", "cost"],
            [
                [
                    t["tool"],
                    _num(t["requests"]),
                    _pct(t["share"]),
                    str(t["developers"]),
                    _usd(t["cost_usd"]),
                ]
                for t in rep["tools"]
            ],
        ),
        Table(
            "Developers",
            [
                "team",
                "developer",
                "requests",
                "sessions",
                "tokens in",
                "tokens out",
                "cost",
                "tools",
            ],
            [
                [
                    d["team"],
                    d["developer"],
                    _num(d["requests"]),
                    _num(d["sessions"]),
                    _num(d["tokens_in"]),
                    _num(d["tokens_out"]),
                    _usd(d["cost_usd"]),
                    ", ".join(d["tools"]) or "-",
                ]
                for d in rep["developers"]
            ],  # fmt: skip
        ),
    ]
    return out


def render(rep: dict[str, Any], fmt: str) -> str:
    w = rep["window"]
    title = "Coding assistants report"
    span = f"{w['start']} .. {w['end']} ({w['hours']:g} h)"
    if fmt == "json":
        return json.dumps(rep, indent=2) + "\n"
    if fmt == "md":
        from finops.render import tables_md

        return tables_md(title, f"Window {span}; from {rep['source']}.", [], tables(rep))
    if fmt == "html":
        from finops.html import PALETTE, UNALLOC, hbar_stacked, page

        t = rep["totals"]
        kpis = [
            ("adoption (weekly active / with keys)", _pct(t["adoption"])),
            ("weekly active developers", str(t["weekly_active_developers"])),
            ("cost per active developer", _usd(t["cost_per_active_developer_usd"])),
            ("sessions per active developer", _num(t["sessions_per_active_developer"])),
            ("saved by prompt caching", _usd(t["cache_saved_usd"])),
        ]
        charts = [
            hbar_stacked(
                "Developers by team: weekly active vs holding a key",
                [
                    (r["team"], [float(r["weekly_active_developers"]), float(max(0, r["developers_with_keys"] - r["weekly_active_developers"]))])
                    for r in rep["teams"]
                ],
                [("weekly active", PALETTE[0]), ("with a key, not active", UNALLOC)],
                unit=lambda v: f"{v:,.0f}",
            ),
            hbar_stacked(
                "Tool mix: requests",
                [(r["tool"], [float(r["requests"])]) for r in rep["tools"]],
                [("requests", PALETTE[1])],
                unit=lambda v: f"{v:,.0f}",
            ),
            hbar_stacked(
                "Cost by team: spent, and saved by prompt caching",
                [(r["team"], [r["cost_usd"], r["cache_saved_usd"]]) for r in rep["teams"]],
                [("spent", PALETTE[2]), ("saved by prompt caching", "#10b981")],
            ),
        ]  # fmt: skip
        return page(title, f"{span} · from {rep['source']}", kpis, charts, tables(rep))
    from finops.render import tables_text

    return tables_text(f"{title} {span} — from {rep['source']}", [], tables(rep))
