"""A prompt version rolled out by the rollout controller, on real parts: the gateway serving a prompt
file's versions, a real Redis holding the split and the controller's state, a real Prometheus
scraping the gateway, the controller as its own process (`tandem rollout controller`) and
`tandem prompts rollout` as a user runs it, while a client sends steady traffic naming
`support/reply` (no version: the `production` label).

(a) a good version walks every canary step (the analysis reads the arms by `prompt_version`) and
    is promoted: the split then holds it at 100 %, every `production` reference gets it, and
    nothing the client sent failed;
(b) a version whose template wants a variable the callers do not send (`order_id`) is rolled back
    at its first analysis: its refusals (400 `prompt_variables_invalid`) are the canary's
    failures, the split returns to the stable version, and only canary requests failed;
(c) once the file's `production` label names the promoted version, the gateway drops the now
    stale split and the file decides again.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from tests.support.gateway_harness import RunningGateway, upstream_servers
from tests.support.lifecycle import REPO, _stop, _wait_http, empty_dashboard_panels, prometheus
from tests.support.redis_server import redis_server
from tests.support.upstream import wait_until
from vocabulary.net import free_port
from vocabulary.rollout import TrafficSplit, split_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAME = "support/reply"
PREFIX = "t"
ROLLOUT = {
    "strategy": "canary",
    "steps": [30, 60],
    "step_duration_s": 3,
    "interval_s": 3,
    "drain_s": 1,
    "analysis": {"error_rate": {"max": 0.05}, "min_requests": 5},
}


def _version(n: int, system: str, user: str = "{{question}}") -> dict:
    return {
        "version": n,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "parameters": {"max_tokens": 64},
    }


def prompt_file(production: int = 1) -> dict:
    return {
        "owner": "customer-care",
        "model": "support-chat",
        "labels": {"production": production},
        "versions": [
            _version(1, "You answer support questions."),
            _version(2, "You answer support questions briefly and politely."),
            _version(3, "You answer questions about order {{order_id}}."),  # callers lack it
            _version(4, "You answer support questions in one sentence."),
        ],
        "rollout": ROLLOUT,
    }


@dataclass
class Sent:
    t: float
    status: int
    served: str  # X-Tandem-Prompt: support/reply@<version>


@dataclass
class Client:
    """Steady requests naming the prompt by name only, from a few callers, until stopped."""

    url: str
    rps: float = 40.0
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Client:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(7)
        end = time.monotonic() + 240  # bounded even if a test hangs
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set() and time.monotonic() < end:
                body = {
                    "prompt": NAME,
                    "variables": {"question": f"Where is my refund #{rng.randrange(1000)}?"},
                    "user": f"customer-{rng.randrange(50)}",
                }
                try:
                    r = http.post(self.url + "/v1/chat/completions", json=body)
                    self.sent.append(
                        Sent(time.time(), r.status_code, r.headers.get("X-Tandem-Prompt", ""))
                    )
                except httpx.HTTPError:
                    self.sent.append(Sent(time.time(), -1, ""))
                time.sleep(1 / self.rps)

    def between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.t <= end]


@dataclass
class Rig:
    gateway: RunningGateway
    client: Client
    redis_url: str
    controller_url: str
    tmp: Path
    routes: Path
    config: dict
    prometheus_url: str

    def rollout(self, version: int, prompts_dir) -> tuple[int, dict]:
        """`tandem prompts rollout ... --wait --output json` as a user runs it."""
        done = subprocess.run(
            [
                sys.executable, "-m", "tandem.cli", "prompts", "rollout", NAME,
                "--version", str(version), "--dir", str(prompts_dir), "--prefix", PREFIX,
                "--controller", self.controller_url, "--wait", "--output", "json",
                "--poll", "0.3",
            ],
            capture_output=True, text=True, cwd=REPO, timeout=150,
        )  # fmt: skip
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def split(self) -> TrafficSplit | None:
        raw = redis.Redis.from_url(self.redis_url).get(split_key(PREFIX, "prompt:" + NAME))
        return TrafficSplit.model_validate_json(raw) if raw else None


def _write(tmp: Path, production: int) -> Path:
    folder = tmp / "prompts" / "support"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reply.yaml").write_text(yaml.safe_dump(prompt_file(production), sort_keys=False))
    return tmp / "prompts"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prompt-rollout")
    with (
        upstream_servers("short") as ups,
        redis_server("the prompt rollout") as redis_url,
    ):
        config = {
            "backends": {"short": {"url": ups["short"][1].url + "/v1"}},
            "routes": {"support-chat": {"backends": [{"backend": "short"}]}},
            "prompts": {NAME: prompt_file(1)},
            "redis": {"url": redis_url, "prefix": PREFIX},
            "server": {"split_poll_s": 0.2, "reload_interval_s": 0.1},
        }
        routes = tmp / "routes.yaml"  # the gateway's ConfigMap: the prompt files it serves
        routes.write_text(yaml.safe_dump(config, sort_keys=False))
        with RunningGateway(config, config_path=routes) as gw:
            target = gw.url.removeprefix("http://").rstrip("/")
            port = free_port()
            scrape = {"gateway": target, "controller": f"127.0.0.1:{port}"}
            with prometheus(scrape, tmp, scrape_s=1) as prom_url:
                log_path = tmp / "controller.log"
                with open(log_path, "ab") as log:
                    controller = subprocess.Popen(
                        [
                            sys.executable, "-m", "tandem.cli", "rollout", "controller",
                            "--redis", redis_url, "--prometheus", prom_url,
                            "--serve", "local:http://127.0.0.1:9",  # never called for a prompt
                            "--port", str(port), "--tick", "0.3", "--lease", "3",
                        ],
                        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                    )  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                try:
                    _wait_http(url + "/healthz", 60, controller, log_path)
                    client = Client(gw.url).start()
                    try:
                        yield Rig(gw, client, redis_url, url, tmp, routes, config, prom_url)
                    finally:
                        client.stop()
                finally:
                    _stop(controller)


def _story(state: dict) -> str:
    analyses = [a.get("reason") for a in state.get("analyses") or []]
    return f"{state.get('phase')}: {state.get('reason')}; analyses: {analyses}"


def test_a_good_version_walks_every_step_and_holds_production_after_promotion(rig) -> None:
    start = time.time()
    code, state = rig.rollout(2, _write(rig.tmp, production=1))
    end = time.time()
    assert code == 0 and state["phase"] == "promoted", _story(state)
    assert state["use_case"] == "prompt:" + NAME
    passed = [a for a in state["analyses"] if a["outcome"] == "pass"]
    assert passed and all(a["attempts"] > 0 for a in passed)
    # the analysis read the arms by prompt_version, not by backend
    queries = [c["query"] for a in state["analyses"] for c in a["checks"]]
    assert queries and all('prompt_version="2"' in q for q in queries)
    split = rig.split()
    assert split is not None and split.canary_weight == 100 and split.canary_version == "2"
    sent = rig.client.between(start, end)
    assert sent and all(s.status == 200 for s in sent)  # nothing failed while the split moved
    assert {s.served for s in sent} == {f"{NAME}@1", f"{NAME}@2"}  # both versions served
    time.sleep(0.5)
    latest = rig.client.sent[-10:]
    assert latest and {s.served for s in latest} == {f"{NAME}@2"}


def test_b_a_version_callers_cannot_fill_is_rolled_back_at_its_first_analysis(rig) -> None:
    # back to the file's production (1) without a split, as an operator would leave it
    redis.Redis.from_url(rig.redis_url).delete(split_key(PREFIX, "prompt:" + NAME))
    assert wait_until(lambda: rig.client.sent[-1].served == f"{NAME}@1", timeout=10)
    start = time.time()
    code, state = rig.rollout(3, _write(rig.tmp, production=1))
    end = time.time()
    assert code == 1 and state["phase"] == "rolled_back", _story(state)
    assert state["decision"] == "rollback" and "error_rate" in state["reason"]
    judged = [a for a in state["analyses"] if a["outcome"] != "inconclusive"]
    assert judged[0]["outcome"] == "fail"  # the first analysis that saw the canary
    split = rig.split()
    assert split is not None and split.canary_weight == 0
    sent = rig.client.between(start, end)
    failed = [s for s in sent if s.status != 200]
    assert failed and all(s.status == 400 for s in failed)  # the canary's refusals only
    assert any(s.served == f"{NAME}@1" and s.status == 200 for s in sent)
    time.sleep(0.5)
    assert all(s.status == 200 for s in rig.client.sent[-10:])
    refused = rig.gateway.metric(
        "tandem_gateway_prompt_renders_total", prompt=NAME, prompt_version="3", outcome="invalid"
    )
    assert refused == len(failed)


def test_c_a_split_written_against_an_old_production_is_ignored(rig) -> None:
    """After a promotion the team moves `production` in the file (a reviewed change, shipped to
    the gateways' routes file); a record written against the old production stops applying, so a
    stale split can never pin an old version."""
    r = redis.Redis.from_url(rig.redis_url)
    record = TrafficSplit(canary_weight=100, stable_version="1", canary_version="2", salt="x")
    r.set(split_key(PREFIX, "prompt:" + NAME), record.model_dump_json())
    # the file's production (1) is the record's stable version: the record applies
    assert wait_until(lambda: rig.client.sent[-1].served == f"{NAME}@2", timeout=10)
    # the team releases version 4 in the file: the record, written against 1, no longer applies
    moved = {**rig.config, "prompts": {NAME: prompt_file(production=4)}}
    rig.routes.write_text(yaml.safe_dump(moved, sort_keys=False))
    assert wait_until(lambda: rig.client.sent[-1].served == f"{NAME}@4", timeout=10)
    r.delete(split_key(PREFIX, "prompt:" + NAME))


def test_d_the_rollouts_dashboard_shows_the_prompts_rollouts(rig) -> None:
    """Every panel of Tandem / Rollouts but the model arms' reads the controller's and the
    gateway's real series (scraped by the real Prometheus) for the rollouts above."""
    from observability.dashboards import MODEL_ROLLOUT_PANELS, rollouts

    time.sleep(2)  # one more scrape of the controller after its last decision
    empty = empty_dashboard_panels(rig.prometheus_url, rollouts(), skip=MODEL_ROLLOUT_PANELS)
    assert not empty, "\n".join(empty)
