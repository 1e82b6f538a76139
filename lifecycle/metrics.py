"""The controller's Prometheus metrics (`tandem_rollout_*`), refreshed from the durable state.

Gauges are set from the state on every tick, so a restarted controller exports the same phase,
step and weight at once; counters (decisions, analyses, transitions) count what this process did.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from lifecycle.state import PHASES, RolloutState


class RolloutMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.phase = Gauge(
            "tandem_rollout_phase",
            "1 for the rollout's current phase",
            ["use_case", "phase"],
            registry=r,
        )
        self.step = Gauge(
            "tandem_rollout_step",
            "Current canary step (1-based, 0 before)",
            ["use_case"],
            registry=r,
        )
        self.weight = Gauge(
            "tandem_rollout_canary_weight_percent",
            "Traffic share of the canary",
            ["use_case"],
            registry=r,
        )
        self.decisions = Counter(
            "tandem_rollout_decisions",
            "Decisions: advance, hold, pass, promote, rollback",
            ["use_case", "decision"],
            registry=r,
        )
        self.analyses = Counter(
            "tandem_rollout_analyses", "Analyses by outcome", ["use_case", "outcome"], registry=r
        )
        self.transitions = Counter(
            "tandem_rollout_transitions",
            "Phase transitions",
            ["use_case", "from_phase", "to_phase"],
            registry=r,
        )
        self.check = Gauge(
            "tandem_rollout_check_value",
            "Last analysed value per check (canary arm)",
            ["use_case", "check"],
            registry=r,
        )
        self.time_to_deploy = Gauge(
            "tandem_rollout_time_to_deploy_seconds",
            "Registered to 100 % traffic, of the last promoted version",
            ["use_case"],
            registry=r,
        )
        self.phase_seconds = Gauge(
            "tandem_rollout_phase_seconds",
            "Time spent per phase by the last rollout",
            ["use_case", "phase"],
            registry=r,
        )
        self._seen: dict[str, int] = {}  # use case -> events already turned into counters

    def observe(self, state: RolloutState) -> None:
        uc = state.use_case
        for p in PHASES:
            self.phase.labels(uc, p).set(1.0 if p == state.phase else 0.0)
        self.step.labels(uc).set(state.step + 1)
        self.weight.labels(uc).set(state.canary_weight)
        for p, seconds in state.phases.items():
            self.phase_seconds.labels(uc, p).set(seconds)
        if "time_to_deploy_s" in state.marks:
            self.time_to_deploy.labels(uc).set(state.marks["time_to_deploy_s"])
        key = f"{uc}:{state.id}"
        start = self._seen.get(key, 0)
        for e in state.events[start:]:
            if e["kind"] == "transition":
                src, _, dst = e["message"].partition(" -> ")
                self.transitions.labels(uc, src, dst).inc()
        self._seen[key] = len(state.events)

    def decided(self, use_case: str, decision: str) -> None:
        self.decisions.labels(use_case, decision).inc()

    def analysed(self, use_case: str, outcome: str, checks: list[dict[str, Any]]) -> None:
        self.analyses.labels(use_case, outcome).inc()
        for c in checks:
            if c.get("canary") is not None:
                self.check.labels(use_case, c["name"]).set(c["canary"])
