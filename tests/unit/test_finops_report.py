"""The report's maths and renderers on the simulator's ground truth (no Prometheus: seconds)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from finops import fleet, render, report, tables, truth
from finops.html import render_html
from finops.prices import load_prices
from tandem.cli import finops as cli


@pytest.fixture(scope="module")
def rep() -> dict:
    spec = fleet.base_fleet(days=2, step_s=300, end=1_800_000_000 // 3600 * 3600, full=False)
    return report.build_report(truth.observed_from_truth(fleet.simulate(spec)), load_prices())


def test_idle_cost_splits_into_unallocated_and_allocated_idle(rep: dict) -> None:
    t = rep["totals"]
    assert t["capacity_cost_usd"] == pytest.approx(
        t["cost_usd"] + t["unallocated_cost_usd"], abs=0.05
    )
    assert t["idle_cost_usd"] == pytest.approx(
        t["unallocated_cost_usd"] + t["allocated_idle_cost_usd"], abs=0.05
    )
    assert sum(r["cost_usd"] for r in rep["by_team"]) == pytest.approx(t["cost_usd"], abs=0.05)
    a10g = next(r for r in rep["by_pool"] if r["pool"] == "a10g")
    # four of eight A10Gs never requested: half the pool's capacity cost is unallocated
    assert a10g["unallocated_cost_usd"] == pytest.approx(a10g["capacity_cost_usd"] / 2, rel=1e-3)
    h100 = next(r for r in rep["by_pool"] if r["pool"] == "h100")
    assert h100["unallocated_cost_usd"] == pytest.approx(0, abs=0.01)


def test_spot_priced_by_factor(rep: dict) -> None:
    spot = next(r for r in rep["by_pool"] if r["capacity_type"] == "spot")
    hours = spot["capacity_gpu_hours"]
    assert spot["capacity_cost_usd"] == pytest.approx(hours * 4.6016 / 4 * 0.4, rel=1e-3)


def test_price_override_file(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text("on_demand: {p5.48xlarge: 40.0}\nspot: {g6.12xlarge: 1.0}\nspot_factor: 0.3\n")
    book = load_prices(f)
    assert book.gpu_hour("p5.48xlarge") == 5.0
    assert book.gpu_hour("g6.12xlarge", "spot") == 0.25
    assert book.gpu_hour("g5.12xlarge", "spot") == pytest.approx(5.672 / 4 * 0.3)
    f.write_text("ondemand: {}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_prices(f)


def test_tokens_cost_split_by_output_weight(rep: dict) -> None:
    for row in rep["tokens"]:
        if row["usd_per_m_input_allocation"] is None:
            assert row["input_tokens"] == 0
            continue
        assert row["usd_per_m_output_allocation"] == pytest.approx(
            4 * row["usd_per_m_input_allocation"], rel=1e-3
        )
        assert row["usd_per_m_input_usage"] <= row["usd_per_m_input_allocation"]


def test_recommendations_carry_evidence(rep: dict) -> None:
    kinds = {r["kind"] for r in rep["recommendations"]}
    assert kinds == {
        "smaller_gpu_class",
        "mig_or_time_slicing",
        "consolidation",
        "scale_to_zero",
        "lower_min_replicas",
    }
    for r in rep["recommendations"]:
        assert r["monthly_savings_usd"] > 0 and r["evidence"]
        assert tables.evidence_text(r)
    counted = [r for r in rep["recommendations"] if r["counted_in_total"]]
    assert len({r["target"] for r in counted}) == len(counted)  # one per target in the total


def test_focus_csv(rep: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(render.render_csv(rep))))
    assert set(render.FOCUS_COLUMNS) == set(rows[0])
    assert sum(float(r["EffectiveCost"]) for r in rows) == pytest.approx(
        rep["totals"]["capacity_cost_usd"], rel=1e-4
    )
    assert {r["ConsumedUnit"] for r in rows} == {"GPU-Hours"}
    tags = json.loads(next(r for r in rows if r["ResourceType"] == "GPU allocation")["Tags"])
    assert {"team", "use_case", "model", "pool"} <= set(tags)


def test_html_is_self_contained_with_charts(rep: dict) -> None:
    html = render_html(rep)
    assert html.count("<svg") >= 6
    assert "<script" not in html and "https://" not in html and "http://" not in html
    assert "support/chatbot/llama-3-8b" in html


@pytest.mark.parametrize("fmt", ["md", "table", "json"])
def test_text_formats(rep: dict, fmt: str) -> None:
    out = render.render(rep, fmt)
    assert "research" in out


def test_duration_and_time_parsing() -> None:
    assert cli.parse_duration("30d") == 30 * 86400
    assert cli.parse_duration("90m") == 5400
    assert cli.parse_time("2026-01-01T00:00:00Z") == 1767225600
    with pytest.raises(Exception, match="unit"):
        cli.parse_duration("30 days")


def test_report_fails_clearly_without_prometheus(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.report_main(["--prometheus", "http://127.0.0.1:9", "--range", "1d"])
    assert rc == 3  # the environment: docs/architecture.md, exit codes
    assert "cannot reach Prometheus" in capsys.readouterr().err


@pytest.fixture(scope="module")
def partial() -> dict:
    """A window starting at 15:00 and ending at 15:00: its first and last UTC days are partial."""
    end = 1_800_000_000 // 86400 * 86400 + 15 * 3600
    spec = fleet.base_fleet(days=2, step_s=300, end=end, full=False)
    return report.build_report(truth.observed_from_truth(fleet.simulate(spec)), load_prices())


def test_focus_charge_periods_stay_inside_the_billing_period(partial: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(render.render(partial, "csv"))))
    starts = sorted({r["ChargePeriodStart"] for r in rows})
    ends = sorted({r["ChargePeriodEnd"] for r in rows})
    billing = rows[0]["BillingPeriodStart"], rows[0]["BillingPeriodEnd"]
    assert starts[0] == billing[0] == partial["window"]["start"]  # 15:00, not midnight
    assert ends[-1] == billing[1] == partial["window"]["end"]
    assert all(
        billing[0] <= r["ChargePeriodStart"] < r["ChargePeriodEnd"] <= billing[1] for r in rows
    )
    total = sum(float(r["BilledCost"]) for r in rows)
    assert total == pytest.approx(partial["totals"]["capacity_cost_usd"], abs=0.5)


def test_html_team_colours_are_not_the_busy_idle_colours(partial: dict) -> None:
    from finops import html

    page = html.render_html(partial)
    daily = page[page.index("Daily GPU cost by team") :]
    daily = daily[: daily.index("</svg>")]
    legend = dict(re.findall(r'fill="(#[0-9a-f]{6})"/><text[^>]*>([^<]+)</text>', daily))
    teams = {team: color for color, team in legend.items()}
    assert {"research", "support", "marketing", "unallocated"} <= set(teams)
    reserved = {html.ACTIVE, html.ALLOC_IDLE, html.UNALLOC}
    assert teams.pop("unallocated") == html.UNALLOC
    assert not reserved & set(teams.values())
    assert len(set(teams.values())) == len(teams)  # and one colour per team


def test_html_labels_partial_days_and_aligns_text_left(partial: dict) -> None:
    page = render_html(partial)
    days = sorted({r["day"] for r in partial["daily"]})
    assert len(days) == 3  # 9 h, a whole day, 15 h
    assert "(9 h)</text>" in page and "(15 h)</text>" in page and "A day marked (N h)" in page
    use_cases = page[page.index("<h2>By use case</h2>") :]
    use_cases = use_cases[: use_cases.index("</table>")]
    assert "<th>use_case</th>" in use_cases and '<th class="n">cost $</th>' in use_cases
    assert "<td>eval</td>" in use_cases  # text left, numbers right
    assert re.search(r'<td class="n">[\d,]+\.\d\d</td>', use_cases)


@pytest.mark.parametrize("fmt", ["html", "md", "table"])
def test_team_rows_say_they_add_up_to_allocated_not_the_bill(partial: dict, fmt: str) -> None:
    text = " ".join(render.render(partial, fmt).split())
    t = partial["totals"]
    assert "add up to the allocated cost" in text and "not to the bill" in text
    assert f"${t['unallocated_cost_usd']:,.2f}" in text and f"${t['cost_usd']:,.2f}" in text
    by_team = sum(r["cost_usd"] for r in partial["by_team"])
    assert by_team == pytest.approx(t["cost_usd"], abs=0.05)
    assert by_team < t["capacity_cost_usd"]


def test_a_window_wider_than_the_data_is_noted() -> None:
    spec = fleet.base_fleet(days=1, step_s=600, end=1_800_000_000 // 3600 * 3600, full=False)
    obs = truth.observed_from_truth(fleet.simulate(spec))
    assert report.window_notes(obs) == []
    obs.requested_start = obs.start - 2 * 86400
    (note,) = report.window_notes(obs)
    assert "48 h after the requested start" in note and "24 h of the 72 h asked for" in note


def test_assistants_report_per_active_developer_and_without_keys() -> None:
    from finops.assistants import NoAssistantData, build_report

    raw = {
        "with_keys": [({"team": "a"}, 4.0)],
        "requests": [
            ({"team": "a", "developer": "x", "tool": "codex"}, 10.0),
            ({"team": "b", "developer": "y", "tool": "cursor"}, 5.0),
        ],
        "weekly": [({"team": "a", "developer": "x"}, 3.0)],
        "sessions": [({"team": "a", "developer": "x"}, 2.0)],
        "tokens": [({"team": "a", "developer": "x", "direction": "in"}, 100.0)],
        "cost": [({"team": "a", "developer": "x", "tool": "codex"}, 1.5)],
        "saved": [],
    }
    rep = build_report(raw, 1_800_000_000, 86400, "http://p")
    a, b = rep["teams"]
    assert (
        a["adoption"],
        a["cost_per_active_developer_usd"],
        a["sessions_per_active_developer"],
    ) == (0.25, 1.5, 2.0)
    assert b["adoption"] is None and b["developers_with_keys"] == 0  # no keys known for b
    assert rep["tools"][0] == {
        "tool": "codex",
        "requests": 10,
        "share": 0.6667,
        "developers": 1,
        "cost_usd": 1.5,
    }
    empty = {k: [] for k in raw}
    with pytest.raises(NoAssistantData):
        build_report(empty, 1_800_000_000, 86400, "http://p")
