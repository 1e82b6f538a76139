"""Every recording rule and every dashboard query returns data on a backfilled simulated fleet.

A typo in a metric or label name does not make PromQL fail; it makes it return nothing. So each
expression is evaluated against a real Prometheus holding a simulated fleet (DCGM with pod
attribution, kube-state-metrics, vLLM, gateway), and an empty answer fails the test. Dashboards
read recorded series, so the rules are first backfilled with `promtool tsdb create-blocks-from rules`.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from finops import demo, fleet, localprom
from finops.prom import PromClient
from observability import dashboards, rules

pytestmark = pytest.mark.integration

SETTINGS = rules.RuleSettings(
    scrape_interval_s=60,
    gpu_prices={
        ("p5.48xlarge", "on-demand"): 6.88,
        ("g5.12xlarge", "on-demand"): 1.418,
        ("g6.12xlarge", "spot"): 0.46,
    },
)
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$team": ".*", "${datasource}": ""}


@pytest.fixture(scope="module")
def fleet_prom(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("obs")
    spec = fleet.base_fleet(days=2, step_s=60, full=True)
    built = demo.build(spec, work)
    prom = localprom.LocalPrometheus(built.data_dir).start()
    try:
        yield spec, built, prom, work
    finally:
        prom.stop()


def _recorded() -> list[tuple[str, str]]:
    return [(r["record"], r["expr"]) for g in rules.recording_rules(SETTINGS) for r in g["rules"]]


def test_every_recording_rule_returns_data(fleet_prom) -> None:
    spec, _, prom, _ = fleet_prom
    client = PromClient(prom.url)
    at = spec.end - 1800
    empty = [name for name, expr in _recorded() if not client.query(expr, at)]
    assert not empty, f"recording rules with no data: {empty}"


def test_gpu_hour_rules_count_each_sample_once(fleet_prom) -> None:
    """16 GPUs are requested all the time: the last hour holds exactly 16 allocated GPU-hours."""
    spec, _, prom, _ = fleet_prom
    client = PromClient(prom.url)
    rec = dict(_recorded())
    (alloc,) = client.query(f"sum({rec['tandem:gpu_allocated_hours:sum1h']})", spec.end - 1800)
    assert alloc.values[0] == pytest.approx(16.0, rel=1e-6)
    (now,) = client.query(f"sum({rec['tandem:gpu_allocated:sum']})", spec.end - 1800)
    assert now.values[0] == 16


def test_report_queries_return_data(fleet_prom) -> None:
    from finops.query import WINDOW, queries

    spec, _, prom, _ = fleet_prom
    client = PromClient(prom.url)
    empty = [
        name for name, expr in queries(WINDOW).items() if not client.query(expr, spec.end - 1800)
    ]
    assert not empty


def test_every_dashboard_query_returns_data(fleet_prom) -> None:
    spec, built, prom, work = fleet_prom
    rule_path = work / "rules.yaml"
    rule_path.write_text(rules.rule_file(SETTINGS))
    out = work / "rule-blocks"
    promtool = shutil.which("promtool")
    assert promtool, "apt-get install -y prometheus"
    proc = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "rules", f"--start={spec.end - 3 * 3600}",
         f"--end={spec.end}", f"--url={prom.url}", f"--output-dir={out}", "--eval-interval=1m",
         str(rule_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    prom.stop()
    for block in out.iterdir():
        shutil.move(str(block), built.data_dir / block.name)
    prom.start()
    client = PromClient(prom.url)
    empty = []
    for board in dashboards.all_dashboards().values():
        if board["uid"] == "tandem-rollouts":
            continue  # read against a real controller: test_lifecycle_rollout, test_prompts_rollout
        for title, expr in dashboards.panel_queries(board):
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            if not client.query(expr, spec.end - 1800):
                empty.append(f"{board['uid']}: {title}: {expr[:120]}")
    assert not empty, "\n".join(empty)
