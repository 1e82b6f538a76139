"""The model lifecycle on real parts: MLflow on Postgres, Ray Serve on a local Ray, the gateway,
Prometheus scraping it, the rollout controller, and a client sending steady traffic throughout.

One tier per module (tests/support/lifecycle.py): v1 (a good MiniLM) is registered, aliased
`champion` and serving; each scenario registers a new version with `tandem deploy` as a user
would, on a compressed schedule (4 s steps and analyses):

(a) a good version goes through every canary step and is promoted (alias moved, canary removed);
(b) a version that fails every long input is rolled back at its first analysis (the first that
    saw canary data), alias untouched;
(c) the controller is SIGKILLed mid-rollout and a new one resumes at the recorded step, promoting
    once;
(d) an A/B experiment with a 3x slower treatment keeps each user on one arm and reports per-arm
    metrics with a p-value (and keeps the control).

Throughout: no client request fails because of the mechanics (weights moving, applications
added, updated and removed); the bad version's own failures are counted separately.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lifecycle.registry import Registry
from tests.support.lifecycle import REGISTERED_MODEL, Traffic, canary_rollout, local_tier
from vocabulary.registry import load_resolutions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    with local_tier(tmp_path_factory.mktemp("lifecycle"), canary_rollout()) as t:
        traffic = Traffic(t.gateway_url, "embed").start()
        t.traffic = traffic  # type: ignore[attr-defined]
        try:
            yield t
        finally:
            traffic.stop()


def _champion(tier) -> str:
    mv = Registry(tier.registry_url).alias(REGISTERED_MODEL, "champion")
    assert mv is not None
    return mv.version


def _window(tier, state: dict) -> tuple[float, float]:
    return state["started_at"], state["marks"].get("finished_at", time.time())


def _story(state: dict) -> str:
    """What the controller saw, for a failure message: the phase, its reason and each analysis."""
    analyses = [e["message"] for e in state["events"] if e["kind"] == "analysis"]
    return f"{state['phase']}: {state.get('reason')}; analyses: {analyses}"


def _failures(tier, start: float, end: float) -> list:
    return [a for a in tier.traffic.between(start, end) if a.status != 200]


def test_a_good_version_is_promoted_through_every_step(tier):
    code, out = tier.deploy(
        tier.use_case_file(canary_rollout()), "--model-dir", str(tier.model("good"))
    )
    assert code == 0 and out["outcome"] == "promoted", out
    state = tier.status()
    steps = [e["data"]["step"] for e in state["events"] if e["kind"] == "step"]
    assert steps == [0, 1, 2]  # every step, in order
    assert [e["data"]["decision"] for e in state["events"] if e["kind"] == "decision"] == [
        "promote"
    ]
    assert _champion(tier) == out["version"]
    assert (
        load_resolutions(tier.resolutions).models[REGISTERED_MODEL].aliases["champion"]
        == out["version"]
    )
    assert out["register_to_full_traffic_s"] > 0 and {"register", "checks", "progressing"} <= set(
        out["phases"]
    )
    start, end = _window(tier, state)
    answered = tier.traffic.between(start, end)
    assert {a.arm for a in answered if a.status == 200} == {"stable", "canary"}
    assert _failures(tier, start, end) == []  # nothing failed while the traffic moved
    # after the promotion the new version answers on the stable arm
    time.sleep(2)
    latest = [a for a in tier.traffic.answers[-20:] if a.status == 200]
    assert latest and {a.version for a in latest} == {out["version"]}


def test_b_bad_version_rolled_back_at_its_first_analysis(tier):
    before = _champion(tier)
    code, out = tier.deploy(
        tier.use_case_file(canary_rollout()), "--model-dir", str(tier.model("errors"))
    )
    assert code == 1 and out["outcome"] == "rolled_back", out
    state = tier.status()
    analyses = [
        (e["data"]["outcome"], e["message"]) for e in state["events"] if e["kind"] == "analysis"
    ]
    # caught by the first analysis that saw the canary: on a loaded machine the first 4 s window
    # can end before Prometheus scraped the canary's new series (inconclusive, "no data"), never
    # more than once, and no analysis passed it
    assert analyses[-1][0] == "fail" and len(analyses) <= 2, analyses
    assert all(o == "inconclusive" for o, _ in analyses[:-1]), analyses
    assert "error_rate" in state["reason"]
    assert [e["data"]["step"] for e in state["events"] if e["kind"] == "step"] == [0]
    assert _champion(tier) == before  # alias untouched
    # 100 % stable within one analysis interval of the decision
    decided = next(e["t"] for e in state["events"] if e["kind"] == "decision")
    assert state["marks"]["stable_at"] - decided < canary_rollout()["interval_s"]
    start, end = _window(tier, state)
    bad = [a for a in _failures(tier, start, end) if a.arm == "canary" or a.long]
    mechanics = [a for a in _failures(tier, start, end) if a not in bad]
    assert mechanics == []
    # the bad version's own failures: retried on the stable arm, so callers got answers; those
    # that could not be (every retry used up) were long inputs on the canary
    assert all(a.long for a in bad)
    time.sleep(3)
    after = [a for a in tier.traffic.between(end + 0.5, time.time()) if a.status == 200]
    assert after and {a.arm for a in after} == {"stable"}


def test_c_controller_killed_mid_rollout_resumes_and_promotes_once(tier):
    code, out = tier.deploy(
        tier.use_case_file(canary_rollout()), "--model-dir", str(tier.model("good")), "--no-follow"
    )
    assert code == 0, out
    deadline = time.time() + 120
    while time.time() < deadline:
        state = tier.status()
        if state["phase"] == "progressing" and state["step"] == 1:
            break
        time.sleep(0.2)
    assert state["step"] == 1, _story(state)
    tier.kill_controller()
    killed_at = time.time()
    time.sleep(3)  # no controller: the gateway keeps the last split
    during = [a for a in tier.traffic.between(killed_at, time.time()) if a.status == 200]
    assert {a.arm for a in during} == {"stable", "canary"}
    tier.start_controller()
    deadline = time.time() + 180
    while time.time() < deadline and tier.status()["phase"] not in ("promoted", "rolled_back"):
        time.sleep(0.5)
    state = tier.status()
    assert state["phase"] == "promoted", _story(state)
    steps = [e["data"]["step"] for e in state["events"] if e["kind"] == "step"]
    assert steps == [0, 1, 2]  # resumed at step 1: no step repeated, none skipped
    assert [e for e in state["events"] if e["kind"] == "decision"][0]["data"][
        "decision"
    ] == "promote"
    assert len([e for e in state["events"] if e["kind"] == "decision"]) == 1
    assert len([e for e in state["events"] if e["kind"] == "promoted"]) == 1
    assert _champion(tier) == state["plan"]["canary_version"]
    start, end = _window(tier, state)
    assert _failures(tier, start, end) == []


def test_d_experiment_reports_per_arm_metrics_and_keeps_users_on_one_arm(tier):
    experiment = {
        "strategy": "experiment",
        "split": 50,
        "sticky_by": "user",
        "duration_s": 25,
        "interval_s": 5,
        "drain_s": 2,
        "deploy_timeout_s": 120,
        "primary_metric": "latency",
        "alpha": 0.05,
        "min_samples": 50,
        "analysis": {"error_rate": {"max": 0.05}, "min_requests": 5},
    }
    before = _champion(tier)
    code, out = tier.deploy(
        tier.use_case_file(experiment, "experiment.yaml"), "--model-dir", str(tier.model("slow"))
    )
    report = out["experiment"]
    assert report is not None, out
    control, treatment = report["arms"]
    assert control["arm"] == "control" and treatment["arm"] == "treatment"
    for arm in (control, treatment):
        assert arm["attempts"] >= 50 and arm["latency_p95_ms"] is not None
        assert arm["error_rate"] is not None and arm["cost_per_request_usd"] is not None
    test = report["test"]
    assert test["test"] == "mann_whitney_u" and test["p_value"] is not None
    # the treatment is 3x the compute: slower, significantly, so the control stays
    assert test["effect"] > 0 and test["p_value"] < 0.05
    assert out["outcome"] == "rolled_back" and code == 1 and _champion(tier) == before
    state = tier.status()
    begin = state["marks"]["experiment_started_at"] + 1.5  # the gateways' poll interval
    end = begin + experiment["duration_s"] - 3
    arms: dict[str, set[str]] = {}
    for a in tier.traffic.between(begin, end):
        if a.status == 200:
            arms.setdefault(a.user, set()).add(a.arm)
    assert len(arms) >= 20
    assert all(len(seen) == 1 for seen in arms.values()), {
        u: s for u, s in arms.items() if len(s) > 1
    }
    assert {next(iter(s)) for s in arms.values()} == {"stable", "canary"}
    assert _failures(tier, *_window(tier, state)) == []


def test_e_an_mlflow_run_registers_as_a_version_and_resolves_to_the_bucket(tier):
    """`tandem deploy --run RUN_ID[:PATH]`'s registration: a version sourced from a run's
    artifacts, which serving reads from the artifact store, not through the server."""
    from lifecycle.registry import serving_source

    registry = Registry(tier.registry_url)
    first = registry.register_directory(REGISTERED_MODEL, tier.model("good"))
    again = registry.register_run(REGISTERED_MODEL, first.run_id, "model")
    assert int(again.version) > int(first.version) and again.run_id == first.run_id
    assert registry.get_version(REGISTERED_MODEL, again.version).source == again.source
    local = serving_source(again.source, str(tier.artifacts))
    assert Path(local, "config.json").exists(), local  # the run's files, where serving reads them
    assert _champion(tier) not in (first.version, again.version)  # registering moves no alias


def test_f_the_rollouts_dashboard_shows_the_model_rollouts(tier):
    """Every panel of Tandem / Rollouts but the prompt versions' reads the controller's and the
    gateway's real series for the rollouts above."""
    from observability.dashboards import PROMPT_ROLLOUT_PANELS, rollouts
    from tests.support.lifecycle import empty_dashboard_panels

    time.sleep(2)
    empty = empty_dashboard_panels(tier.prometheus_url, rollouts(), skip=PROMPT_ROLLOUT_PANELS)
    assert not empty, "\n".join(empty)
