"""The rollout controller: one state machine per use case, advanced a little on every tick.

    deploying ──► progressing (canary steps) ──┬──► promoting ──► promoted
        │         experimenting (A/B)  ────────┤
        └────────────────(failure)─────────────┴──► rolling_back ──► rolled_back

- deploying: the Serve config with the canary application is applied; the canary takes traffic
  only once Serve reports it RUNNING (a canary that fails to deploy is rolled back unseen).
- progressing: each step's weight is written to the gateway's split; every `interval_s` the
  analysis (lifecycle/analysis.py) judges the canary; a step ends when its duration is over and
  its latest analysis passed; after the last step the canary is promoted.
- experimenting: a fixed, sticky split for `duration_s` (analysis as guard rails), then the
  significance test (lifecycle/experiment.py) decides.
- promoting: canary at 100 % → wait for the gateways (`drain_s`) → registry alias to the new
  version → the stable application re-deployed at the new version → traffic back to it → drain →
  canary application removed.
- rolling_back: 100 % stable at once (one write; every gateway applies it within its poll
  interval) → drain → canary application removed. The alias is not touched.

Each tick does at most one thing with side effects and then saves the state (compare-and-set),
so a controller killed at any point resumes where the record says: the same step, with the time
already spent in it, and promotion steps already done are not repeated in a way that matters
(each one is idempotent: the alias, the configs and the weights are set, not toggled). The
decision to promote or roll back is taken once.

A prompt version (plan kind `prompt`, key `prompt:<name>`) goes through the same phases with
nothing to deploy: deploying moves straight to the first step, the analysis reads the arms by
`prompt_version`, promotion ends with the split holding the new version at 100 % (the prompt
file's `production` label is moved by a reviewed change), and rollback only moves the split.

`rollback(use_case, reason)` is the entry point for other systems (the drift monitor: "roll back
this canary"); `command()` carries the operators' pause / resume / abort.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from lifecycle import experiment
from lifecycle.analysis import FAIL, INCONCLUSIVE, PASS, PromError, Prometheus, analyse
from lifecycle.http import HttpError
from lifecycle.metrics import RolloutMetrics
from lifecycle.plan import RolloutPlan
from lifecycle.registry import Registry, RegistryError
from lifecycle.serve_target import FAILED, ServeTarget
from lifecycle.state import (
    DEPLOYING,
    EXPERIMENTING,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    ROLLING_BACK,
    Conflict,
    RolloutState,
    Store,
)
from vocabulary.rollout import Canary, Experiment, TrafficSplit

log = logging.getLogger("tandem.rollout")
MAX_ANALYSES = 50


class Traffic:
    """Writes the gateway's live split for a route (vocabulary.rollout.TrafficSplit)."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    def set(self, plan: RolloutPlan, state: RolloutState, weight: float, stable: str) -> None:
        spec = plan.spec()
        split = TrafficSplit(
            canary_weight=weight,
            stable_version=stable,
            canary_version=plan.canary_version,
            salt=state.id,
            sticky_by=spec.sticky_by if isinstance(spec, Experiment) else None,
            epoch=int(time.time() * 1000),
        )
        self.client.set(plan.split_key, split.model_dump_json())

    def get(self, plan: RolloutPlan) -> TrafficSplit | None:
        raw = self.client.get(plan.split_key)
        return TrafficSplit.model_validate(json.loads(raw)) if raw else None


class CommandError(ValueError):
    """An operator command that does not apply to the rollout's phase (HTTP 409)."""


class RolloutController:
    def __init__(
        self,
        store: Store,
        traffic: Traffic,
        prometheus: Prometheus,
        registry: Registry | None,
        target: Callable[[RolloutPlan], ServeTarget],
        metrics: RolloutMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.prom = prometheus
        self.registry = registry
        self.target = target
        self.metrics = metrics or RolloutMetrics()
        self.clock = clock

    # -- requests ---------------------------------------------------------------------------
    def start(self, plan: RolloutPlan) -> RolloutState:
        plan.spec()  # validates the rollout section
        now = self.clock()
        state = RolloutState(
            use_case=plan.use_case, plan=plan.to_dict(), started_at=now, phase_started_at=now
        )
        state.event(
            "started",
            f"{plan.registry_name} version {plan.canary_version} against stable "
            f"{plan.stable_version}",
        )
        state = self.store.put(state, create=True)
        self.metrics.observe(state)
        return state

    def command(self, use_case: str, action: str, reason: str = "") -> RolloutState:
        """pause | resume | abort | rollback, recorded in the state (the next tick acts)."""
        for _ in range(5):
            state = self._active(use_case)
            if action == "pause":
                state.paused = True
                state.event("paused", reason or "paused by an operator")
            elif action == "resume":
                state.paused = False
                state.event("resumed", reason or "resumed by an operator")
            elif action in ("abort", "rollback"):
                if state.phase in (PROMOTING, ROLLING_BACK):
                    raise CommandError(
                        f"the rollout of {use_case!r} is already {state.phase} (decided: "
                        f"{state.decision}); roll back a promoted version by deploying the "
                        "previous one"
                    )
                why = reason or ("aborted by an operator" if action == "abort" else "rollback")
                self._decide(state, "rollback", why)
                state.enter(ROLLING_BACK, self.clock())
            else:
                raise CommandError(f"unknown action {action!r}; allowed: pause, resume, abort")
            try:
                state = self.store.put(state)
            except Conflict:
                continue
            self.metrics.observe(state)
            return state
        raise CommandError(f"the rollout of {use_case!r} kept changing; try again")

    def rollback(self, use_case: str, reason: str) -> RolloutState:
        """Roll the active canary of `use_case` back now (the drift monitor's entry point)."""
        return self.command(use_case, "rollback", reason)

    def _active(self, use_case: str) -> RolloutState:
        state = self.store.get(use_case)
        if state is None or not state.active:
            raise CommandError(f"use case {use_case!r} has no active rollout")
        return state

    # -- the loop -------------------------------------------------------------------------------
    def tick_all(self) -> None:
        for state in self.store.all():
            if state.active:
                try:
                    self.tick(state)
                except Conflict:
                    pass  # an operator command won; the next tick reads it
                except Exception:  # one use case's trouble must not stop the others
                    log.exception("rollout of %s: tick failed", state.use_case)
            self.metrics.observe(state)

    def tick(self, state: RolloutState) -> RolloutState:
        plan = RolloutPlan.from_dict(state.plan)
        now = self.clock()
        handler = {
            DEPLOYING: self._deploying,
            PROGRESSING: self._progressing,
            EXPERIMENTING: self._experimenting,
            PROMOTING: self._promoting,
            ROLLING_BACK: self._rolling_back,
        }[state.phase]
        if handler(state, plan, now):
            state = self.store.put(state)
            self.metrics.observe(state)
        return state

    # -- phases (each returns True when the state changed) --------------------------------------
    def _deploying(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        if plan.is_prompt:  # every gateway already holds every version of the prompt file
            return self._first_traffic(state, plan, now)
        target = self.target(plan)
        if state.applied != "canary":
            target.apply(plan.configs["canary"])
            state.applied = "canary"
            state.event(
                "applied", f"Serve config with {plan.canary_app} (version {plan.canary_version})"
            )
            return True
        status, message = target.status(plan.canary_app)
        spec = plan.spec()
        if status in FAILED:
            return self._fail(state, now, f"the canary did not deploy: {status}: {message[:300]}")
        if not target.app_ready(plan.canary_app, _app(plan, "canary", plan.canary_app)):
            if now - state.phase_started_at > spec.deploy_timeout_s:
                return self._fail(
                    state, now, f"the canary was not RUNNING after {spec.deploy_timeout_s:g} s"
                )
            return False
        return self._first_traffic(state, plan, now)

    def _first_traffic(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        spec = plan.spec()
        if isinstance(spec, Canary):
            self._step(state, plan, 0, now)
            state.enter(PROGRESSING, now)
        else:
            self.traffic.set(plan, state, spec.split, plan.stable_version)
            state.canary_weight = spec.split
            state.marks["experiment_started_at"] = now
            state.next_analysis_at = now + spec.interval_s
            state.event("split", f"experiment: {spec.split:g} % to version {plan.canary_version}")
            state.enter(EXPERIMENTING, now)
        return True

    def _step(self, state: RolloutState, plan: RolloutPlan, step: int, now: float) -> None:
        spec = plan.spec()
        weight = spec.steps[step]
        self.traffic.set(plan, state, weight, plan.stable_version)
        state.step, state.canary_weight = step, weight
        state.step_started_at = now
        state.step_passed = False
        state.next_analysis_at = now + spec.interval_s
        if step == 0:
            state.marks["first_traffic_at"] = now
        state.event("step", f"step {step + 1}/{len(spec.steps)}: canary {weight:g} %", step=step)

    def _analyse(self, state: RolloutState, plan: RolloutPlan, now: float) -> str:
        spec = plan.spec()
        try:
            verdict = analyse(self.prom, plan.arms(), spec.analysis, spec.interval_s)
        except PromError as exc:
            verdict_d: dict[str, Any] = {"outcome": INCONCLUSIVE, "reason": str(exc)[:300]}
            outcome = INCONCLUSIVE
        else:
            verdict_d, outcome = verdict.to_dict(), verdict.outcome
        verdict_d |= {"t": round(now, 3), "step": state.step, "weight": state.canary_weight}
        state.analyses.append(verdict_d)
        del state.analyses[:-MAX_ANALYSES]
        state.next_analysis_at = now + spec.interval_s
        self.metrics.analysed(state.use_case, outcome, verdict_d.get("checks", []))
        state.event("analysis", f"{outcome}: {verdict_d.get('reason', '')}", outcome=outcome)
        if outcome == PASS:
            state.inconclusive_streak = 0
        elif outcome == INCONCLUSIVE:
            state.inconclusive_streak += 1
            if state.inconclusive_streak > spec.max_inconclusive:
                state.inconclusive_streak = 0
                outcome = FAIL
                verdict_d["reason"] = f"{spec.max_inconclusive + 1} inconclusive analyses in a row"
        if outcome == FAIL:
            state.failures += 1
            if state.failures > spec.failure_limit:
                state.reason = verdict_d.get("reason", "")
        return outcome

    def _progressing(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        spec = plan.spec()
        assert isinstance(spec, Canary)
        if now >= state.next_analysis_at:
            outcome = self._analyse(state, plan, now)
            if outcome == FAIL and state.failures > spec.failure_limit:
                return self._fail(state, now, f"analysis failed: {state.reason}")
            state.step_passed = outcome == PASS
            self.metrics.decided(state.use_case, "hold" if not state.step_passed else "pass")
            return True
        if state.paused or not state.step_passed:
            return False
        if now - state.step_started_at < spec.step_duration_s:
            return False
        if state.step + 1 < len(spec.steps):
            self.metrics.decided(state.use_case, "advance")
            self._step(state, plan, state.step + 1, now)
            return True
        self._decide(state, "promote", f"all {len(spec.steps)} steps passed their analysis")
        state.enter(PROMOTING, now)
        return True

    def _experimenting(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        spec = plan.spec()
        assert isinstance(spec, Experiment)
        started = state.marks.get("experiment_started_at", state.phase_started_at)
        if now - started >= spec.duration_s:
            report = experiment.conclude(self.prom, plan, spec, now - started)
            state.experiment = report
            state.event("experiment", report["summary"], p_value=report["test"].get("p_value"))
            if report["decision"] == "promote":
                self._decide(state, "promote", report["summary"])
                state.enter(PROMOTING, now)
            else:
                self._decide(state, "rollback", report["summary"])
                state.enter(ROLLING_BACK, now)
            return True
        if now >= state.next_analysis_at:  # guard rails while the experiment runs
            outcome = self._analyse(state, plan, now)
            if outcome == FAIL and state.failures > spec.failure_limit:
                return self._fail(state, now, f"guard rail failed: {state.reason}")
            return True
        return False

    def _promoting(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        target = self.target(plan)
        spec = plan.spec()
        if "full_traffic" not in state.done:
            self.traffic.set(plan, state, 100.0, plan.stable_version)
            state.canary_weight = 100.0
            state.marks["full_traffic_at"] = now
            state.waiting_until = now + spec.drain_s
            return self._done(state, "full_traffic", f"canary {plan.canary_version} at 100 %")
        if "settled" not in state.done:
            if now < state.waiting_until:
                return False
            return self._done(state, "settled", "gateways moved off the stable application")
        if plan.is_prompt:
            return self._promoted_prompt(state, plan, now)
        if "alias" not in state.done:
            if plan.registry_alias and self.registry is not None:
                try:
                    current = self.registry.alias(plan.registry_name, plan.registry_alias)
                    if current is None or current.version != plan.canary_version:
                        self.registry.set_alias(
                            plan.registry_name, plan.registry_alias, plan.canary_version
                        )
                except RegistryError as exc:  # retried next tick; traffic stays on the canary
                    state.event("registry", f"alias not moved yet: {exc}")
                    return True
                msg = f"{plan.registry_name}@{plan.registry_alias} -> {plan.canary_version}"
            else:
                msg = "no alias to move (the use case pins a version)"
            return self._done(state, "alias", msg)
        if "stable_applied" not in state.done:
            if state.applied != "promoted":
                target.apply(plan.configs["promoted"])
                state.applied = "promoted"
                state.event("applied", f"{plan.deployment} re-deployed at {plan.canary_version}")
                return True
            status, message = target.status(plan.deployment)
            if status in FAILED:  # the canary still serves everything; say so, keep trying
                state.event(
                    "serve", f"{plan.deployment} at the new version: {status}: {message[:200]}"
                )
            if not target.app_ready(plan.deployment, _app(plan, "promoted", plan.deployment)):
                return False
            return self._done(
                state, "stable_applied", f"{plan.deployment} RUNNING at the new version"
            )
        if "stable_traffic" not in state.done:
            self.traffic.set(plan, state, 0.0, plan.canary_version)
            state.canary_weight = 0.0
            state.waiting_until = now + spec.drain_s
            return self._done(state, "stable_traffic", "traffic back on the stable application")
        if "drained" not in state.done:
            if now < state.waiting_until:
                return False
            return self._done(state, "drained", f"{plan.canary_app} drained")
        target.apply(plan.configs["final"])
        state.applied = "final"
        state.done.append("canary_removed")
        return self._promoted(state, plan, now, f"version {plan.canary_version} promoted")

    def _promoted_prompt(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        """A prompt's promotion ends with its split holding the new version at 100 %: the
        `production` label lives in the prompt file, and moving it is a reviewed change; once it
        names this version the gateways stop applying the split (prompts/registry.py)."""
        return self._promoted(
            state,
            plan,
            now,
            f"version {plan.canary_version} of {plan.registry_name} serves every `production` "
            f"reference; move `production: {plan.canary_version}` into its prompt file (the "
            "split holds it until then)",
        )

    def _promoted(self, state: RolloutState, plan: RolloutPlan, now: float, message: str) -> bool:
        """The end of a promotion: its time to deploy (registered to 100 % traffic) recorded."""
        state.marks["finished_at"] = now
        ttd = state.marks["full_traffic_at"] - (plan.registered_at or state.started_at)
        state.marks["time_to_deploy_s"] = round(ttd, 3)
        state.event("promoted", message, time_to_deploy_s=ttd)
        state.enter(PROMOTED, now)
        return True

    def _rolling_back(self, state: RolloutState, plan: RolloutPlan, now: float) -> bool:
        spec = plan.spec()
        if "stable_traffic" not in state.done:
            self.traffic.set(plan, state, 0.0, plan.stable_version)
            state.canary_weight = 0.0
            state.marks["stable_at"] = now
            state.waiting_until = now + spec.drain_s
            return self._done(state, "stable_traffic", "100 % on the stable version")
        if "drained" not in state.done:
            if now < state.waiting_until:
                return False
            return self._done(state, "drained", f"{plan.canary_app or 'the canary'} drained")
        if not plan.is_prompt:  # a prompt version has no application to remove
            try:
                self.target(plan).apply(plan.configs["stable"])
            except HttpError as exc:
                state.event("serve", f"canary not removed yet: {exc}")
                return True
            state.applied = "stable"
        state.done.append("canary_removed")
        state.marks["finished_at"] = now
        state.event("rolled_back", f"version {plan.canary_version} rolled back: {state.reason}")
        state.enter(ROLLED_BACK, now)
        return True

    # -- helpers --------------------------------------------------------------------------------
    def _done(self, state: RolloutState, step: str, message: str) -> bool:
        state.done.append(step)
        state.event(step, message)
        return True

    def _decide(self, state: RolloutState, decision: str, reason: str) -> None:
        if state.decision is not None:
            return  # taken once
        state.decision, state.reason = decision, reason
        state.done = []
        state.event("decision", f"{decision}: {reason}", decision=decision)
        self.metrics.decided(state.use_case, decision)

    def _fail(self, state: RolloutState, now: float, reason: str) -> bool:
        self._decide(state, "rollback", reason)
        state.enter(ROLLING_BACK, now)
        return True


def _app(plan: RolloutPlan, config: str, name: str) -> dict[str, Any]:
    return next(a for a in plan.configs[config]["applications"] if a["name"] == name)
