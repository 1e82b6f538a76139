"""The Alertmanager configuration Tandem renders, checked by Alertmanager's own tool.

`amtool check-config` parses it the way Alertmanager does (receivers, routes, inhibit rules);
`amtool config routes test` routes label sets through it: an alert with `team=customer-care`
reaches that team's Slack, a critical one also pages on-call, the platform budget alert reaches
every `budget.notify` receiver, and an alert nobody claims reaches the default receiver.
Requires Debian's prometheus-alertmanager (amtool; `make system-packages`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from observability.alerting import alertmanager_config, render
from tandem.stack import load
from vocabulary.config import ALERTING_SECRET_PREFIX

pytestmark = pytest.mark.integration

# What each receiver kind's Pulumi secret holds, as a platform engineer would set it.
SECRETS = {
    "platform-oncall": "0123456789abcdef0123456789abcdef",
    "ml-platform": "smtp-password",
    "customer-care": "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "knowledge": "https://hooks.example.com/tandem-alerts",
}


def _amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: install prometheus-alertmanager (make system-packages)")
    return path


@pytest.fixture(scope="module")
def prod_config(tmp_path_factory) -> Path:
    stack = load("prod")
    config = alertmanager_config(stack.config.alerting, stack.config.budget, SECRETS)
    path = tmp_path_factory.mktemp("alertmanager") / "alertmanager.yml"
    path.write_text(render(config))
    return path


def _route(config: Path, *labels: str) -> set[str]:
    run = subprocess.run(
        [_amtool(), "config", "routes", "test", f"--config.file={config}", *labels],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return {r.strip() for r in run.stdout.strip().split(",")}


def test_prod_alertmanager_config_is_valid(prod_config: Path) -> None:
    run = subprocess.run(
        [_amtool(), "check-config", str(prod_config)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 receivers" in run.stdout or "receivers" in run.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            ["alertname=TandemGpuAllocatedIdle", "team=customer-care", "severity=warning"],
            {"customer-care"},
        ),
        (["alertname=TandemTeamBudgetBurn", "team=knowledge", "severity=warning"], {"knowledge"}),
        (["alertname=TandemDcgmXidError", "severity=critical"], {"platform-oncall"}),
        (
            ["alertname=TandemTTFTBudgetBurnFast", "team=customer-care", "severity=critical"],
            {"platform-oncall", "customer-care"},
        ),
        (
            ["alertname=TandemPlatformBudgetBurn", "severity=warning", "threshold=0.8"],
            {"ml-platform", "platform-oncall"},
        ),
        (["alertname=TandemGatewayBreakerOpen", "severity=warning"], {"ml-platform"}),
        (
            ["alertname=TandemGpuAllocatedIdle", "team=research", "severity=warning"],
            {"ml-platform"},
        ),
    ],
)
def test_alerts_reach_their_team(prod_config: Path, labels: list[str], receivers: set[str]) -> None:
    assert _route(prod_config, *labels) == receivers


def test_dev_config_and_a_stack_without_receivers_are_valid(tmp_path: Path) -> None:
    dev = load("dev")
    for name, config in {
        "dev": alertmanager_config(
            dev.config.alerting,
            dev.config.budget,
            {"ml-platform": SECRETS["customer-care"]},
        ),
        "none": alertmanager_config(type(dev.config.alerting)(), None, {}),
    }.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(render(config))
        run = subprocess.run(
            [_amtool(), "check-config", str(path)], capture_output=True, text=True, timeout=30
        )
        assert run.returncode == 0, f"{name}: {run.stdout}{run.stderr}"


def test_every_receiver_secret_has_a_config_key() -> None:
    stack = load("prod")
    keys = {r.secret_config_key for r in stack.config.alerting.receivers if r.needs_secret}
    assert keys == {f"{ALERTING_SECRET_PREFIX}{n}" for n in SECRETS}
