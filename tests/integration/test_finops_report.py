"""The FinOps report, read from a real Prometheus over a backfilled simulated fleet, matches the truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finops import demo, fleet, localprom, query, report, truth
from finops.prices import load_prices
from finops.prom import PromClient
from tandem.cli import finops as cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    spec = fleet.base_fleet(days=3, step_s=60, full=False)
    built = demo.build(spec, tmp_path_factory.mktemp("fleet"))
    prom = localprom.LocalPrometheus(built.data_dir).start()
    try:
        yield built, prom
    finally:
        prom.stop()


@pytest.fixture(scope="module")
def reports(served):
    built, prom = served
    prices = load_prices()
    spec = built.truth.spec
    got = report.build_report(
        query.observed_from_prometheus(PromClient(prom.url), spec.start, spec.end), prices
    )
    want = report.build_report(truth.observed_from_truth(built.truth), prices)
    return got, want


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(b), 1e-9)


@pytest.mark.parametrize("section", ["by_team", "by_model", "by_pool", "by_use_case"])
def test_gpu_hours_and_cost_within_one_percent(reports, section: str) -> None:
    got, want = reports
    key = lambda r: tuple(v for k, v in r.items() if isinstance(v, str))  # noqa: E731
    g = {key(r): r for r in got[section]}
    assert set(g) == {key(r) for r in want[section]}
    for w in want[section]:
        for field in (
            "allocated_gpu_hours",
            "active_gpu_hours",
            "cost_usd",
            "allocated_idle_cost_usd",
        ):
            assert _close(g[key(w)][field], w[field], 0.01), (section, key(w), field)


def test_fleet_totals_and_idle_split(reports) -> None:
    got, want = reports
    t = got["totals"]
    assert t["capacity_gpu_hours"] == pytest.approx(20 * 72, rel=0.01)  # 20 GPUs x 72 h
    assert t["allocated_gpu_hours"] == pytest.approx(16 * 72, rel=0.01)  # 16 GPUs requested
    for field in ("unallocated_cost_usd", "allocated_idle_cost_usd", "idle_cost_usd"):
        assert _close(t[field], want["totals"][field], 0.01)
    ct = {r["capacity_type"]: r for r in got["capacity_types"]}
    assert ct["spot"]["share_gpu_hours"] == pytest.approx(4 / 20, abs=0.005)


def test_gpus_held_by_unlabelled_pods_stay_visible(reports) -> None:
    """A debug pod without Tandem labels holds an H100: its cost is reported, not dropped."""
    got, _ = reports
    row = next(r for r in got["by_team"] if r["team"] == "unlabelled")
    assert row["allocated_gpu_hours"] == pytest.approx(72, rel=0.01)
    assert row["cost_usd"] == pytest.approx(72 * 55.04 / 8, rel=0.01)
    assert not [r for r in got["recommendations"] if r["target"].startswith("unlabelled")]


def test_idle_gpus_found(reports, served) -> None:
    got, _ = reports
    built, _ = served
    sandbox = next(
        g.uuid
        for g in built.truth.gpus
        if any(built.truth.spec.workloads[s[2]].use_case == "sandbox" for s in g.segments)
    )
    never_held = {g.uuid for g in built.truth.gpus if not g.segments}
    idle = {g["uuid"]: g["state"] for g in got["idle_gpus"]}
    assert idle == {sandbox: "allocated_idle", **dict.fromkeys(never_held, "unallocated")}
    assert len(never_held) == 4  # the A10Gs nobody asked for


EXPECTED = {
    ("smaller_gpu_class", "support/chatbot/llama-3-8b"),
    ("lower_min_replicas", "support/chatbot/llama-3-8b"),
    ("mig_or_time_slicing", "support/chatbot/llama-3-8b"),
    ("scale_to_zero", "research/sandbox/qwen-2.5-7b"),
    ("smaller_gpu_class", "research/sandbox/qwen-2.5-7b"),
    ("consolidation", "pool/a10g"),
    ("lower_min_replicas", "support/classifier/distilbert"),
    ("mig_or_time_slicing", "support/classifier/distilbert"),
    ("lower_min_replicas", "marketing/copywriter/mistral-7b"),
    ("scale_to_zero", "legal/contract-review/llama-3-8b"),
}


def test_expected_recommendations_with_savings_within_five_percent(reports) -> None:
    got, want = reports
    g = {(r["kind"], r["target"]): r for r in got["recommendations"]}
    assert set(g) == EXPECTED  # and nothing for the healthy eval and rerank deployments
    for w in want["recommendations"]:
        assert _close(
            g[(w["kind"], w["target"])]["monthly_savings_usd"], w["monthly_savings_usd"], 0.05
        )
    p5 = 55.04 / 8  # p5.48xlarge per GPU-hour
    assert g[("scale_to_zero", "research/sandbox/qwen-2.5-7b")][
        "monthly_savings_usd"
    ] == pytest.approx(p5 * 730, rel=0.05)
    assert g[("consolidation", "pool/a10g")]["monthly_savings_usd"] == pytest.approx(
        5.672 * 730, rel=0.05
    )
    small = g[("smaller_gpu_class", "support/chatbot/llama-3-8b")]
    assert small["evidence"]["suggested_gpu"] == "L40S"
    assert small["monthly_savings_usd"] == pytest.approx(2 * (p5 - 1.861) * 730, rel=0.05)


def test_tokens_and_utilization(reports) -> None:
    got, want = reports
    g = {r["model"]: r for r in got["tokens"]}
    for w in want["tokens"]:
        assert _close(g[w["model"]]["input_tokens"], w["input_tokens"], 0.01)
        assert _close(g[w["model"]]["output_tokens"], w["output_tokens"], 0.01)
        for f in ("usd_per_m_input_allocation", "usd_per_m_output_usage"):
            if w[f] is None:
                assert g[w["model"]][f] is None
            else:
                assert _close(g[w["model"]][f], w[f], 0.01)
    for metric in ("gr_engine_active", "sm_active"):
        for p in ("p50", "p95"):
            assert got["utilization"][metric][p] == pytest.approx(
                want["utilization"][metric][p], abs=0.005
            )
    share = got["utilization"]["share_gpu_hours_sm_active_below_0_5"]
    assert share == pytest.approx(
        want["utilization"]["share_gpu_hours_sm_active_below_0_5"], abs=0.01
    )


def test_cli_formats(served, tmp_path: Path) -> None:
    """The command a FinOps user runs, in every format, against the same Prometheus."""
    built, prom = served
    end = str(built.truth.spec.end)
    outputs = {}
    for fmt in ("json", "csv", "html", "md", "table"):
        out = tmp_path / f"report.{fmt}"
        rc = cli.report_main(
            [
                "--prometheus",
                prom.url,
                "--range",
                "3d",
                "--end",
                end,
                "--format",
                fmt,
                "-o",
                str(out),
            ]
        )
        assert rc == 0
        outputs[fmt] = out.read_text()
    data = json.loads(outputs["json"])
    for field in ("by_team", "by_model", "by_pool", "tokens", "recommendations"):
        assert data[field], field
    assert {"kind", "target", "monthly_savings_usd", "evidence"} <= set(data["recommendations"][0])
    header = outputs["csv"].splitlines()[0].split(",")
    for col in (
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ResourceId",
        "ConsumedQuantity",
        "EffectiveCost",
        "Tags",
    ):
        assert col in header
    html = outputs["html"]
    assert html.count("<svg") >= 4 and "<script src" not in html and "https://" not in html
    assert "support/chatbot/llama-3-8b" in outputs["md"]


def test_a_range_longer_than_the_data_is_clipped_to_it_and_said(served, capsys) -> None:
    """--range 9d over 3 days of data: the report covers the 3 days and divides by them (not by
    9 days, which would understate every monthly figure by two thirds), and warns."""
    built, prom = served
    spec = built.truth.spec
    exact = report.build_report(
        query.observed_from_prometheus(PromClient(prom.url), spec.start, spec.end), load_prices()
    )
    rc = cli.report_main(
        ["--prometheus", prom.url, "--range", "9d", "--end", str(spec.end), "--format", "json"]
    )
    out = capsys.readouterr()
    assert rc == 0
    wide = json.loads(out.out)
    assert wide["window"]["hours"] == exact["window"]["hours"] == 72
    assert wide["window"]["start"] == exact["window"]["start"]
    assert wide["window"]["requested_start"] < wide["window"]["start"]
    assert wide["totals"]["monthly_capacity_cost_usd"] == pytest.approx(
        exact["totals"]["monthly_capacity_cost_usd"], rel=1e-6
    )
    assert wide["by_team"] == exact["by_team"]
    (note,) = wide["window"]["notes"]
    assert "144 h after the requested start" in note and "72 h of the 216 h asked for" in note
    assert f"warning: {note}" in out.err
    assert exact["window"]["notes"] == []
