"""Drift on real parts: the lifecycle tier (MLflow on Postgres, Ray Serve with two model
versions, the real gateway sampling drift signals, the rollout controller, a Prometheus scraping
them and evaluating the drift rules) plus the drift service (`tandem drift serve`) and a webhook
receiver standing in for the team's Alertmanager receiver and ticket system.

The client sends steady traffic (30 % long prompts); the drift service pins its reference from
v1's first samples. Then:

(a) a canary (v2) takes traffic and the stream shifts to all-long prompts: the canary's version
    drifts, Prometheus fires TandemDriftDetected for it, and the controller rolls it back with the
    drift as the reason;
(b) on the champion alone, the stream shifts again: the alert fires, the receiver gets the
    evidence (signal, score, since, KS / PSI / medians) and a retraining ticket, and nothing is
    rolled back.

The shift (30 % -> 100 % long prompts: KS distance 0.7 against a line near 0.45) makes detection
certain; every wait is for a condition, with generous deadlines.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from drift import rules as drift_rules
from tests.support.lifecycle import REPO, USE_CASE, Traffic, _stop, _wait_http, local_tier
from vocabulary.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

HOLD = {  # a canary that stays at its first step until something rolls it back
    "strategy": "canary",
    "steps": [50],
    "step_duration_s": 3600,
    "interval_s": 4,
    "drain_s": 2,
    "deploy_timeout_s": 120,
    "analysis": {"error_rate": {"max": 0.05}, "min_requests": 8},
}


class Receiver:
    """A webhook receiver: every POST body, by path."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        got = self.got

        class H(BaseHTTPRequestHandler):
            def log_message(self, *_a):
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                got.append((self.path, json.loads(self.rfile.read(n) or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[dict]:
        return [b for p, b in list(self.got) if p == path]


def _wait(what: str, check, timeout: float = 240.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    receiver = Receiver()
    monitoring = {
        "sample_rate": 1.0,
        "signals": ["prompt_length"],
        "window_events": 50,
        "reference_events": 200,
        "receivers": {
            "webhook": f"{receiver.url}/alert",
            "ticket_webhook": f"{receiver.url}/ticket",
        },
    }
    drift_port = free_port()
    with local_tier(
        tmp,
        HOLD,
        monitoring=monitoring,
        scrape={"tandem-drift": f"127.0.0.1:{drift_port}"},
        rules=drift_rules.rule_file(for_="0m"),
    ) as t:
        config = tmp / "drift.yaml"
        config.write_text(
            yaml.safe_dump(
                {"use_cases": [{"name": USE_CASE, "team": "search", "monitoring": monitoring}]}
            )
        )
        log = open(tmp / "drift.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "python"), "-m", "tandem.cli", "drift", "serve",
                "--config", str(config), "--gateway", t.gateway_url,
                "--controller", t.controller_url, "--port", str(drift_port), "--poll", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        traffic = Traffic(t.gateway_url, "embed", rps=15, long_share=0.3).start()
        t.drift_url = f"http://127.0.0.1:{drift_port}"  # type: ignore[attr-defined]
        t.receiver = receiver  # type: ignore[attr-defined]
        t.traffic = traffic  # type: ignore[attr-defined]
        try:
            _wait_http(t.drift_url + "/healthz", 60, proc, tmp / "drift.log")
            yield t
        finally:
            traffic.stop()
            _stop(proc)
            receiver.server.shutdown()


def _status(tier) -> dict:
    return _get(f"{tier.drift_url}/status?use_case={USE_CASE}")


def _signal(tier, version: str) -> dict | None:
    v = _status(tier)["use_cases"][USE_CASE]["versions"].get(version)
    return v["signals"].get("prompt_length") if v else None


def _firing(tier, version: str) -> list:
    q = (
        'ALERTS{alertname="TandemDriftDetected",alertstate="firing",'
        f'use_case="{USE_CASE}",model_version="{version}"}}'
    )
    url = f"{tier.prometheus_url}/api/v1/query?query={urllib.parse.quote(q)}"
    return _get(url)["data"]["result"]


def test_a_drifting_canary_fires_the_alert_and_is_rolled_back(tier):
    ref = _wait(
        "the drift service pins v1's reference",
        lambda: _status(tier)["use_cases"][USE_CASE]["reference"],
        timeout=180,
    )
    assert ref["source"] == "auto" and ref["events"] >= 200
    assert "prompt_length" in ref["signals"]
    code, out = tier.deploy(
        tier.use_case_file(HOLD), "--model-dir", str(tier.model("good")), "--no-follow"
    )
    assert code == 0, out
    canary = out["version"]
    _wait("the canary takes traffic", lambda: tier.status()["phase"] == "progressing")
    _wait(
        "the canary's signal is tested clean",
        lambda: (s := _signal(tier, canary)) is not None and not s["detected"],
    )
    tier.traffic.long_share = 1.0  # the shifted stream
    try:
        state = _wait(
            "the controller rolls the canary back",
            lambda: (s := tier.status())["phase"] in ("rolling_back", "rolled_back") and s,
        )
        assert state["decision"] == "rollback"
        assert "drift on prompt_length" in state["reason"], state["reason"]
        fired = _wait("Prometheus fires the canary's drift alert", lambda: _firing(tier, canary))
        assert fired[0]["metric"]["signal"] == "prompt_length"
        assert fired[0]["metric"]["team"] == "search"
        actions = [a for a in _status(tier)["actions"] if a["model_version"] == canary]
        assert actions and actions[0]["role"] == "canary"
        assert "rollback" in actions[0]["actions"]
        _wait("rolled back", lambda: tier.status()["phase"] == "rolled_back")
    finally:
        tier.traffic.long_share = 0.3


def test_a_drifting_champion_alerts_with_evidence_and_is_not_rolled_back(tier, tmp_path):
    stable = _status(tier)["use_cases"][USE_CASE]["reference"]["version"]
    _wait(
        "the champion's earlier episode clears on normal traffic",
        lambda: (s := _signal(tier, stable)) is not None and not s["detected"],
        timeout=300,
    )
    before = tier.status()
    n_alerts = len(tier.receiver.bodies("/alert"))
    n_tickets = len(tier.receiver.bodies("/ticket"))
    tier.traffic.long_share = 1.0
    try:
        alert = _wait(
            "the team's receiver gets the champion's drift alert",
            lambda: [
                b for b in tier.receiver.bodies("/alert")[n_alerts:] if b["model_version"] == stable
            ],
        )[0]
        assert alert["role"] == "champion" and alert["signal"] == "prompt_length"
        assert alert["score"] > 1 and alert["since"] <= alert["detected_at"]
        ev = alert["evidence"]
        assert ev["window_median"] > ev["reference_median"]  # the prompts got longer
        assert {"ks", "psi", "wasserstein"} <= set(ev)
        assert "rollback" not in alert["actions"]
        ticket = _wait(
            "a retraining ticket",
            lambda: tier.receiver.bodies("/ticket")[n_tickets:],
        )[-1]
        assert ticket["kind"] == "retraining" and ticket["model_version"] == stable
        _wait("Prometheus fires the champion's drift alert", lambda: _firing(tier, stable))
        after = tier.status()
        assert (after["id"], after["phase"], after["rev"]) == (
            before["id"],
            before["phase"],
            before["rev"],
        )  # nothing rolled back, nothing started
    finally:
        tier.traffic.long_share = 0.3
    html = tmp_path / "report.html"
    done = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"), "-m", "tandem.cli", "drift", "report",
            USE_CASE, "--service", tier.drift_url, "--output", "html", "-o", str(html),
        ],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = html.read_text()
    assert "<svg" in page and "prompt_length" in page and "DRIFT" in page
