"""The rollout controller's durable state: one JSON record per use case in Redis, and the lease
that keeps a second controller from acting at the same time.

Every write is a compare-and-set on the record's revision (WATCH/MULTI): a controller that lost
its lease, or an operator command racing a tick, cannot overwrite a newer state. A killed
controller resumes from the record: the phase, the step and when it started, the promotion or
rollback steps already done, and the decision, which is taken once (`decision` is set in the
same write that enters `promoting`, and nothing sets it again), so a version is never promoted
twice. The gateway's split key lives in the same Redis; losing Redis loses the rollout's
progress, and the gateway, without a split key, serves the stable version: the safe state.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

STATE_PREFIX = "tandem:rollout"
LEASE_KEY = f"{STATE_PREFIX}:lease"
MAX_EVENTS = 500

# Phases. Active: deploying, progressing (canary), experimenting (A/B), promoting, rolling_back.
DEPLOYING = "deploying"
PROGRESSING = "progressing"
EXPERIMENTING = "experimenting"
PROMOTING = "promoting"
ROLLING_BACK = "rolling_back"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
ACTIVE = (DEPLOYING, PROGRESSING, EXPERIMENTING, PROMOTING, ROLLING_BACK)
FINAL = (PROMOTED, ROLLED_BACK)
PHASES = ACTIVE + FINAL


class Conflict(RuntimeError):
    """The record changed since it was read (another writer won); re-read and retry."""


@dataclass
class RolloutState:
    use_case: str
    plan: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    phase: str = DEPLOYING
    step: int = -1  # index into the canary steps; -1 before the first
    canary_weight: float = 0.0
    paused: bool = False
    started_at: float = field(default_factory=time.time)
    phase_started_at: float = field(default_factory=time.time)
    step_started_at: float = 0.0
    next_analysis_at: float = 0.0
    failures: int = 0
    inconclusive_streak: int = 0
    step_passed: bool = False  # the latest analysis of the current step passed
    decision: str | None = None  # promote | rollback, taken once
    reason: str = ""
    done: list[str] = field(default_factory=list)  # promotion / rollback steps completed
    waiting_until: float = 0.0  # a drain in progress ends then
    applied: str = ""  # the last Serve config applied (plan.configs key)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds spent
    marks: dict[str, float] = field(default_factory=dict)  # full_traffic_at, stable_at, ...
    analyses: list[dict[str, Any]] = field(default_factory=list)  # the last few verdicts
    experiment: dict[str, Any] | None = None  # the A/B report, once concluded
    events: list[dict[str, Any]] = field(default_factory=list)
    rev: int = 0

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def event(self, kind: str, message: str, **data: Any) -> dict[str, Any]:
        e = {"t": round(time.time(), 3), "kind": kind, "phase": self.phase, "message": message}
        if data:
            e["data"] = data
        self.events.append(e)
        del self.events[:-MAX_EVENTS]
        return e

    def enter(self, phase: str, now: float) -> None:
        spent = now - self.phase_started_at
        self.phases[self.phase] = round(self.phases.get(self.phase, 0.0) + spent, 3)
        self.event("transition", f"{self.phase} -> {phase}", to=phase)
        self.phase = phase
        self.phase_started_at = now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class Store:
    """Rollout records in Redis (`tandem:rollout:<use_case>`), written by compare-and-set."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    @staticmethod
    def key(use_case: str) -> str:
        return f"{STATE_PREFIX}:uc:{use_case}"

    def get(self, use_case: str) -> RolloutState | None:
        raw = self.client.get(self.key(use_case))
        return RolloutState.from_dict(json.loads(raw)) if raw else None

    def all(self) -> list[RolloutState]:
        keys = sorted(self.client.scan_iter(match=f"{STATE_PREFIX}:uc:*", count=100))
        out = []
        for raw in self.client.mget(keys) if keys else []:
            if raw:
                out.append(RolloutState.from_dict(json.loads(raw)))
        return out

    def put(self, state: RolloutState, *, create: bool = False) -> RolloutState:
        """Write `state` if the stored record is still at `state.rev` (or absent, with create);
        raises Conflict otherwise. Returns the state at its new revision."""
        key = self.key(state.use_case)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                stored = json.loads(raw) if raw else None
                if create:
                    if stored is not None and stored.get("phase") in ACTIVE:
                        raise Conflict(
                            f"use case {state.use_case!r} already has an active rollout "
                            f"({stored.get('phase')}, version {stored['plan']['canary_version']})"
                        )
                    state.rev = (stored or {}).get("rev", 0)
                elif stored is None or stored.get("rev") != state.rev:
                    raise Conflict(f"rollout of {state.use_case!r} changed meanwhile")
                state.rev += 1
                pipe.multi()
                pipe.set(key, json.dumps(state.to_dict()))
                pipe.execute()
            except redis.WatchError:
                raise Conflict(f"rollout of {state.use_case!r} changed meanwhile") from None
        return state

    # -- the lease: one acting controller -------------------------------------------------------
    def lease(self, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease; False while another controller holds it."""
        ms = int(ttl_s * 1000)
        if self.client.set(LEASE_KEY, owner, nx=True, px=ms):
            return True
        if self._holder() == owner:
            self.client.pexpire(LEASE_KEY, ms)
            return True
        return False

    def release(self, owner: str) -> None:
        if self._holder() == owner:
            self.client.delete(LEASE_KEY)

    def _holder(self) -> str | None:
        current = self.client.get(LEASE_KEY)
        if current is None:
            return None
        return current.decode() if isinstance(current, bytes) else str(current)
