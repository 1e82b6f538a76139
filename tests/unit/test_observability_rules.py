"""Generated rules are valid Prometheus rules, and every alert fires and stays quiet when it should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observability import dashboards, rule_tests, rules
from vocabulary.config import BudgetConfig, GpuPoolConfig, ObservabilityConfig
from vocabulary.labels import METRIC_LABELS

SETTINGS = {
    "defaults": rules.RuleSettings(),
    "test": rule_tests.TEST_SETTINGS,
    "team budgets only": rules.RuleSettings(
        team_budgets_usd={"a": 10.0}, gpu_prices={("g5.xlarge", "spot"): 0.4}
    ),
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if not binary:
        pytest.fail("promtool not found: apt-get install -y prometheus")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True)


def _stack_settings() -> rules.RuleSettings:
    """What the component generates for a stack: catalog prices for its pools, its budgets."""
    cfg = ObservabilityConfig(
        ttftSloSeconds=0.5, teamBudgetsUsd={"support": 9000}, scrapeInterval="15s"
    )
    pools = [
        GpuPoolConfig(name="h100", instance_types=["p5.48xlarge"], max_nodes=2),
        GpuPoolConfig(
            name="l4",
            instance_types=["g6.xlarge", "g6.12xlarge"],
            capacity_type="spot",
            max_nodes=4,
        ),
    ]
    return rules.settings_for(cfg, pools, BudgetConfig(monthlyUsd=50_000))


SETTINGS["stack"] = _stack_settings()


def test_stack_settings_price_every_pool_instance() -> None:
    s = SETTINGS["stack"]
    assert s.gpu_prices[("p5.48xlarge", "on-demand")] == pytest.approx(55.04 / 8)
    assert s.gpu_prices[("g6.xlarge", "spot")] == pytest.approx(0.8048 * rules.SPOT_FACTOR)
    assert s.scrape_interval_s == 15 and s.ttft_slo_seconds == "0.5"


@pytest.mark.parametrize("name", SETTINGS)
def test_promtool_check_rules(name: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(rules.rule_file(SETTINGS[name]))
    proc = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_fires_and_stays_quiet(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        rules.rule_file(rule_tests.TEST_SETTINGS, annotations=False)
    )
    doc = rule_tests.unit_tests("rules.yaml")
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    alerts = {r["alert"] for g in rules.alert_rules(rule_tests.TEST_SETTINGS) for r in g["rules"]}
    checks = [c for t in doc["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert fires == alerts
    # quiet: either an explicit no-alert check, or a healthy twin in the same case (promtool fails
    # on any alert the case does not list)
    assert quiet >= {
        "TandemGpuAllocatedIdle",
        "TandemGatewayBreakerOpen",
        "TandemDcgmXidError",
        "TandemTeamBudgetBurn",
    }


def test_gpu_recording_rules_keep_the_platform_label_set() -> None:
    recorded = {
        r["record"]: r["expr"]
        for g in rules.recording_rules(rules.RuleSettings())
        for r in g["rules"]
    }
    for name in (
        "tandem:gpu_allocated:sum",
        "tandem:gpu_active:sum",
        "tandem:gpu_allocated_hours:sum1h",
    ):
        head = recorded[name].split("(", 2)[1]
        assert all(label in head for label in METRIC_LABELS), name
    # recording rules never read other recorded series: each can be backfilled on its own
    assert not any("tandem:" in expr for expr in recorded.values())


def test_dashboards_are_well_formed() -> None:
    boards = dashboards.all_dashboards()
    assert set(boards) == {
        "tandem-gpu-fleet.json",
        "tandem-serving-slo.json",
        "tandem-gateway.json",
        "tandem-finops.json",
        "tandem-assistants.json",
        "tandem-rollouts.json",
    }
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            assert p["targets"] and all(
                t["expr"] and t["datasource"]["uid"] == "${datasource}" for t in p["targets"]
            )
            assert {"x", "y", "w", "h"} <= set(p["gridPos"])
