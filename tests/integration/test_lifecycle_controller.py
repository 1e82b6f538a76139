"""The rollout controller's state machine on a real Redis (its durable state and the gateway's split
key), with Prometheus answers and the Serve target faked and the clock stepped by hand: every
transition in milliseconds, without Ray or MLflow (test_lifecycle_rollout.py runs the real parts).

Covers what the end-to-end scenarios cannot pin down cheaply: the split written at each step,
the hold on an inconclusive analysis, the rollback at the first failed analysis with the alias
untouched, a restarted controller resuming mid-step and mid-promotion without a second
promotion, the operators' pause / resume / abort, the drift monitor's `rollback()` entry point,
and the lease that keeps a second controller idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lifecycle.analysis import Arms, PromptArms, attempts_query, error_rate_query, window_of
from lifecycle.controller import CommandError, RolloutController, Traffic
from lifecycle.metrics import RolloutMetrics
from lifecycle.plan import RolloutPlan, build_prompt_plan
from lifecycle.state import Conflict, RolloutState, Store
from tests.support.redis_server import redis_server
from vocabulary.prompts import PromptFile
from vocabulary.rollout import CANARY, STABLE

pytestmark = pytest.mark.integration

INTERVAL = 10.0
UC = "chat"


def _config(*apps: tuple[str, str]) -> dict[str, Any]:
    return {
        "applications": [
            {
                "name": n,
                "import_path": "serving.apps:llm",
                "route_prefix": f"/{n}",
                "args": {"v": v},
            }
            for n, v in apps
        ]
    }


def plan(rollout: dict[str, Any] | None = None) -> RolloutPlan:
    return RolloutPlan(
        use_case=UC,
        team="support",
        alias="chat",
        deployment="llm",
        canary_app="llm-canary",
        stable_backend=UC,
        canary_backend=f"{UC}-canary",
        split_key="tandem:gw:split:chat",
        registry_name="support-chat",
        registry_alias="champion",
        stable_version="3",
        canary_version="4",
        stable_source="s3://models/3",
        canary_source="s3://models/4",
        rollout=rollout
        or {
            "strategy": "canary",
            "steps": [10, 50],
            "step_duration_s": 20,
            "interval_s": INTERVAL,
            "drain_s": 5,
            "analysis": {"error_rate": {"max": 0.05}, "min_requests": 10},
        },
        configs={
            "stable": _config(("llm", "3")),
            "canary": _config(("llm", "3"), ("llm-canary", "4")),
            "promoted": _config(("llm", "4"), ("llm-canary", "4")),
            "final": _config(("llm", "4")),
        },
        registered_at=1000.0,
    )


@dataclass
class FakeServe:
    applied: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, config: dict[str, Any]) -> None:
        self.applied.append(config)

    def status(self, app: str) -> tuple[str, str]:
        return ("RUNNING", "") if self.app_ready(app, {}) else ("", "")

    def app_ready(self, name: str, app: dict[str, Any]) -> bool:
        return bool(self.applied) and any(
            a["name"] == name for a in self.applied[-1]["applications"]
        )


class FakeProm:
    """Answers the analysis' queries for the canary: attempts, error rate, and how many scrapes
    of its failure counters the window holds (enough, unless a test says otherwise)."""

    def __init__(self, arms: Arms | PromptArms | None = None) -> None:
        arms = arms or Arms(UC, UC, f"{UC}-canary")
        w = window_of(INTERVAL)
        self.attempts_q = attempts_query(arms, CANARY, w)
        self.errors_q = error_rate_query(arms, CANARY, w)
        self.stable_errors_q = error_rate_query(arms, STABLE, w)
        self.samples_q = arms.failure_samples_query(CANARY, w)
        self.attempts, self.error_rate, self.samples = 100.0, 0.0, 4.0

    def scalar(self, expr: str) -> float | None:
        answers = {self.attempts_q: self.attempts, self.errors_q: self.error_rate}
        if self.samples_q is not None:
            answers[self.samples_q] = self.samples
        return answers.get(expr)


@dataclass
class FakeRegistry:
    aliases: dict[str, str] = field(default_factory=lambda: {"champion": "3"})
    moves: int = 0

    def alias(self, name: str, alias: str):
        v = self.aliases.get(alias)
        return None if v is None else type("MV", (), {"version": v})()

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version
        self.moves += 1


class Clock:
    def __init__(self) -> None:
        self.now = 2000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url():
    with redis_server("the rollout controller's state") as url:
        yield url


@dataclass
class Rig:
    store: Store
    traffic: Traffic
    prom: FakeProm
    serve: FakeServe
    registry: FakeRegistry
    clock: Clock
    controller: RolloutController
    url: str

    def new_controller(self) -> RolloutController:
        """A fresh process: nothing shared with the old one but Redis."""
        return RolloutController(
            Store(self.url),
            self.traffic,
            self.prom,  # type: ignore[arg-type]
            self.registry,  # type: ignore[arg-type]
            lambda p: self.serve,
            RolloutMetrics(),
            self.clock,
        )

    def run(self, seconds: float, step: float = 1.0, controller=None) -> RolloutState | None:
        c = controller or self.controller
        end = self.clock.now + seconds
        while self.clock.now < end:
            c.tick_all()
            self.clock.now += step
        return self.store.get(UC)

    def weight(self) -> float:
        split = self.traffic.get(plan())
        return -1.0 if split is None else split.canary_weight


@pytest.fixture
def rig(redis_url):
    store = Store(redis_url)
    store.client.flushall()
    prom, serve, registry, clock = FakeProm(), FakeServe(), FakeRegistry(), Clock()
    traffic = Traffic(redis_url)
    ctl = RolloutController(
        store,
        traffic,
        prom,
        registry,
        lambda p: serve,
        RolloutMetrics(),
        clock,  # type: ignore[arg-type]
    )
    return Rig(store, traffic, prom, serve, registry, clock, ctl, redis_url)


def kinds(state: RolloutState, kind: str) -> list[dict[str, Any]]:
    return [e for e in state.events if e["kind"] == kind]


def test_a_healthy_canary_walks_every_step_and_is_promoted_once(rig) -> None:
    rig.controller.start(plan())
    state = rig.run(1)
    assert state.phase == "deploying" and rig.serve.applied[-1] == plan().configs["canary"]
    state = rig.run(1)
    assert state.phase == "progressing" and rig.weight() == 10.0
    state = rig.run(25)  # 20 s step with passing analyses at 10 s and 20 s
    assert state.step == 1 and rig.weight() == 50.0
    state = rig.run(60)
    assert state.phase == "promoted", state.events[-5:]
    assert [e["data"]["step"] for e in kinds(state, "step")] == [0, 1]
    assert [e["data"]["decision"] for e in kinds(state, "decision")] == ["promote"]
    assert rig.registry.aliases["champion"] == "4" and rig.registry.moves == 1
    # stable re-deployed at the new version, then the canary removed; traffic back on stable
    assert rig.serve.applied[-2:] == [plan().configs["promoted"], plan().configs["final"]]
    assert rig.weight() == 0.0 and rig.traffic.get(plan()).stable_version == "4"
    assert state.marks["time_to_deploy_s"] == state.marks["full_traffic_at"] - 1000.0
    assert {"deploying", "progressing", "promoting"} <= set(state.phases)


def test_a_breach_rolls_back_at_the_first_analysis_and_leaves_the_alias(rig) -> None:
    rig.controller.start(plan())
    rig.run(2)
    assert rig.weight() == 10.0
    rig.prom.error_rate = 0.4
    decided_at = rig.clock.now
    state = rig.run(INTERVAL + 1)
    assert state.phase == "rolling_back" or state.phase == "rolled_back"
    assert rig.weight() == 0.0  # 100 % stable within one interval of the breach
    assert state.marks["stable_at"] - decided_at <= INTERVAL + 1
    (analysis,) = kinds(state, "analysis")
    assert analysis["data"]["outcome"] == "fail" and "error_rate" in state.reason
    state = rig.run(10)
    assert state.phase == "rolled_back" and rig.serve.applied[-1] == plan().configs["stable"]
    assert rig.registry.aliases["champion"] == "3" and rig.registry.moves == 0


def test_too_little_traffic_holds_the_step_then_counts_as_a_failure(rig) -> None:
    rig.controller.start(plan())
    rig.prom.attempts = 2  # < min_requests 10
    state = rig.run(2 + 3 * INTERVAL)
    assert state.phase == "progressing" and state.step == 0  # held, not advanced
    outcomes = [e["data"]["outcome"] for e in kinds(state, "analysis")]
    assert outcomes == ["inconclusive"] * 3
    state = rig.run(INTERVAL)  # the 4th in a row exceeds max_inconclusive (3)
    assert state.decision == "rollback" and "inconclusive" in state.reason


def test_failures_not_yet_countable_hold_the_step_instead_of_passing_it(rig) -> None:
    # the canary backend was just (re)added: its failure counters have one scrape in the window,
    # so increase() reads no failures whatever happened; the step holds until it can count
    rig.controller.start(plan())
    rig.prom.samples = 1
    state = rig.run(2 + INTERVAL)
    assert state.step == 0
    assert [e["message"] for e in kinds(state, "analysis")] == [
        "inconclusive: no data for error_rate"
    ]
    rig.prom.samples = 4
    state = rig.run(25)
    assert state.step >= 1


def test_a_restarted_controller_resumes_at_its_step_and_never_promotes_twice(rig) -> None:
    rig.controller.start(plan())
    state = rig.run(25)
    assert state.step == 1
    step_started = state.step_started_at
    # the old process is gone; a new one (new metrics, new objects) reads only Redis
    fresh = rig.new_controller()
    state = rig.run(1, controller=fresh)
    assert state.step == 1 and state.step_started_at == step_started  # same step, same clock
    # run into the promotion, then "crash" mid-promotion and resume with yet another process
    while state.phase != "promoting":
        state = rig.run(1, controller=fresh)
    state = rig.run(6, controller=fresh)
    assert "alias" in state.done or "settled" in state.done
    third = rig.new_controller()
    state = rig.run(30, controller=third)
    assert state.phase == "promoted"
    assert len(kinds(state, "decision")) == 1 and len(kinds(state, "promoted")) == 1
    assert rig.registry.moves == 1
    assert [e["data"]["step"] for e in kinds(state, "step")] == [0, 1]  # none repeated


def test_pause_holds_resume_continues_abort_rolls_back(rig) -> None:
    rig.controller.start(plan())
    rig.run(2)
    rig.controller.command(UC, "pause", "looking at a dashboard")
    state = rig.run(60)
    assert state.phase == "progressing" and state.step == 0 and state.paused
    rig.controller.command(UC, "resume")
    state = rig.run(15)
    assert state.step == 1
    rig.controller.command(UC, "abort", "wrong tokenizer")
    state = rig.run(10)
    assert state.phase == "rolled_back" and state.reason == "wrong tokenizer"
    assert rig.weight() == 0.0 and rig.registry.moves == 0
    with pytest.raises(CommandError, match="no active rollout"):
        rig.controller.command(UC, "pause")


def test_rollback_is_the_entry_point_for_other_systems(rig) -> None:
    """The drift monitor calls rollback(use_case, reason) on a running canary."""
    rig.controller.start(plan())
    rig.run(2)
    state = rig.controller.rollback(UC, "drift: embedding PSI 0.4 > 0.2")
    assert state.phase == "rolling_back" and state.decision == "rollback"
    state = rig.run(1)
    assert rig.weight() == 0.0 and state.reason.startswith("drift")
    with pytest.raises(CommandError, match="already rolling_back"):
        rig.controller.rollback(UC, "again")


def test_one_active_rollout_per_use_case_and_stale_writes_lose(rig) -> None:
    rig.controller.start(plan())
    with pytest.raises(Conflict, match="already has an active rollout"):
        rig.controller.start(plan())
    a, b = rig.store.get(UC), rig.store.get(UC)
    rig.store.put(a)
    with pytest.raises(Conflict):
        rig.store.put(b)  # read before a's write: refused, not overwritten


def test_the_lease_keeps_a_second_controller_idle(rig) -> None:
    assert rig.store.lease("one", 5) and rig.store.lease("one", 5)
    assert not rig.store.lease("two", 5)
    rig.store.release("one")
    assert rig.store.lease("two", 5)


def test_metrics_export_phase_step_weight_and_decisions(rig) -> None:
    from prometheus_client import generate_latest

    rig.controller.start(plan())
    rig.run(90)
    text = generate_latest(rig.controller.metrics.registry).decode()
    assert 'tandem_rollout_phase{phase="promoted",use_case="chat"} 1.0' in text
    assert 'tandem_rollout_decisions_total{decision="promote",use_case="chat"} 1.0' in text
    assert 'tandem_rollout_canary_weight_percent{use_case="chat"} 0.0' in text
    assert "tandem_rollout_time_to_deploy_seconds" in text
    assert 'tandem_rollout_transitions_total{from_phase="promoting"' in text


def prompt_plan():
    versions = [{"version": n, "messages": [{"role": "user", "content": "{{q}}"}]} for n in (1, 2)]
    prompt = PromptFile(
        owner="care",
        model="chat",
        labels={"production": 1},
        versions=versions,
        rollout=plan().rollout,
    )
    return build_prompt_plan("support/answer", prompt, 2)


def test_a_prompt_version_is_stepped_and_promoted_without_deploying_anything(rig) -> None:
    """The same steps and analysis; the arms are the prompt's versions, nothing is applied to
    Serve, no alias moves, and the split holds the new version at 100 % (the file's label
    moves next)."""
    p = prompt_plan()
    rig.prom = FakeProm(PromptArms("support/answer", "1", "2"))
    rig.controller.prom = rig.prom  # type: ignore[assignment]
    rig.controller.start(p)
    key = "prompt:support/answer"
    rig.controller.tick_all()
    state = rig.store.get(key)
    assert state.phase == "progressing" and rig.traffic.get(p).canary_weight == 10.0
    end = rig.clock.now + 90
    while rig.clock.now < end and state.active:
        rig.controller.tick_all()
        rig.clock.now += 1
        state = rig.store.get(key)
    assert state.phase == "promoted", state.events[-5:]
    assert [e["data"]["step"] for e in kinds(state, "step")] == [0, 1]
    assert rig.serve.applied == [] and rig.registry.moves == 0
    split = rig.traffic.get(p)
    assert split.canary_weight == 100.0 and (split.stable_version, split.canary_version) == (
        "1",
        "2",
    )
    assert "move `production: 2` into its prompt file" in kinds(state, "promoted")[0]["message"]


def test_a_prompt_versions_breach_rolls_it_back_without_touching_serve(rig) -> None:
    p = prompt_plan()
    rig.prom = FakeProm(PromptArms("support/answer", "1", "2"))
    rig.controller.prom = rig.prom  # type: ignore[assignment]
    rig.controller.start(p)
    rig.prom.error_rate = 0.5  # its callers cannot fill the new template
    key = "prompt:support/answer"
    end = rig.clock.now + 30
    state = rig.store.get(key)
    while rig.clock.now < end and state.active:
        rig.controller.tick_all()
        rig.clock.now += 1
        state = rig.store.get(key)
    assert state.phase == "rolled_back" and "error_rate" in state.reason
    assert rig.traffic.get(p).canary_weight == 0.0 and rig.serve.applied == []
