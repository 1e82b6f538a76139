"""A use case's model lifecycle sections: where its model comes from (`registry:` on a deployment)
and how a new version reaches production (`rollout:`), plus the one record the rollout controller
and the gateway share (the traffic split).

Floor 1, pydantic only. The use-case file, `tandem plan`, the rollout controller (lifecycle/) and
the gateway (gateway/split.py) all read these types, so the controller cannot write a split the
gateway does not understand, and a typo in a rollout (`step_duraton_s`) is an error naming the
field, not a rollout that silently uses a default.

The analysis semantics follow Flagger and Argo Rollouts: every `interval_s` the controller asks
Prometheus for each check over the last interval; a failed check counts against `failure_limit`
(0: the first failure rolls back, Argo's default), too little traffic to judge is inconclusive
(the step is held, at most `max_inconclusive` times in a row, then it counts as a failure).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STABLE, CANARY = "stable", "canary"
ARMS = (STABLE, CANARY)
# The gateway's Redis key for one route's live split: `<redis prefix>:split:<alias>`.
SPLIT_KEY = "split"
# Serve application name of a deployment's canary copy (route prefix `/<name>-canary`).
CANARY_SUFFIX = "-canary"
_VERSION = re.compile(r"^[0-9]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryRef(_Strict):
    """A deployment's model, taken from the model registry (MLflow): by alias or pinned version.

    The deployed version is always explicit: an alias is resolved from the stack's recorded
    resolution file (`stacks/registry/<stack>.yaml`, written by `tandem deploy` and `tandem
    registry resolve`), never to whatever is newest.
    """

    name: str = Field(min_length=1, description="registered model name")
    alias: str | None = Field(None, description="e.g. champion: the version the alias names")
    version: str | None = Field(None, description="a pinned version number")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if v is not None and (not isinstance(v, str) or not _VERSION.match(v)):
            raise ValueError("a registry version is a number (MLflow counts 1, 2, 3...)")
        return v

    @model_validator(mode="after")
    def _one(self) -> RegistryRef:
        if (self.alias is None) == (self.version is None):
            raise ValueError("registry: give exactly one of alias (e.g. champion) or version")
        return self

    @property
    def pointer(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


class Threshold(_Strict):
    """A bound on the canary's value: absolute (`max`), relative to the stable arm over the same
    interval (`max_vs_stable`, a ratio), or both."""

    max: float | None = Field(None, ge=0)
    max_vs_stable: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> Threshold:
        if self.max is None and self.max_vs_stable is None:
            raise ValueError("a threshold needs max and/or max_vs_stable")
        return self


class PromqlCheck(_Strict):
    """A team's own check: a PromQL expression with `{{use_case}}`, `{{rollout}}` (stable or
    canary) and `{{interval}}` (the analysis window, e.g. `30s`) filled in, and its bound. In a
    prompt's rollout `{{prompt}}` and `{{prompt_version}}` (the arm's version) are filled in too,
    and either `{{rollout}}` or `{{prompt_version}}` selects the arm."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    query: str = Field(min_length=1)
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> PromqlCheck:
        if self.max is None and self.min is None:
            raise ValueError(f"promql check {self.name!r} needs max and/or min")
        if "{{rollout}}" not in self.query and "{{prompt_version}}" not in self.query:
            raise ValueError(
                f"promql check {self.name!r}: the query must select the arm with "
                '{{rollout}} (e.g. rollout="{{rollout}}"; in a prompt\'s rollout also '
                'prompt_version="{{prompt_version}}"), or it judges both versions at once'
            )
        return self


class Analysis(_Strict):
    """What is checked every interval, each against its threshold (gateway metrics of the arm)."""

    error_rate: Threshold | None = Field(
        default_factory=lambda: Threshold(max=0.05),
        description="failed upstream attempts / attempts on the arm",
    )
    latency_p95_ms: Threshold | None = None
    ttft_p95_ms: Threshold | None = None
    cost_per_request_usd: Threshold | None = None
    promql: list[PromqlCheck] = Field(default_factory=list)
    min_requests: int = Field(20, ge=1, description="fewer attempts on the canary: inconclusive")

    @model_validator(mode="after")
    def _unique(self) -> Analysis:
        names = [c.name for c in self.promql]
        dupes = sorted({n for n in names if names.count(n) > 1} | (set(names) & BUILTIN_CHECKS))
        if dupes:
            raise ValueError(f"promql check names must be unique and not built-in: {dupes}")
        return self


BUILTIN_CHECKS = frozenset({"error_rate", "latency_p95_ms", "ttft_p95_ms", "cost_per_request_usd"})


class _Common(_Strict):
    deployment: str | None = Field(
        None, description="the deployment that rolls (default: the one with a registry:)"
    )
    interval_s: float = Field(60.0, gt=0, description="analysis interval (Flagger's default 60 s)")
    failure_limit: int = Field(0, ge=0, description="failed analyses tolerated before rollback")
    max_inconclusive: int = Field(3, ge=0, description="inconclusive analyses in a row tolerated")
    drain_s: float = Field(15.0, ge=0, description="wait after moving traffic off an arm")
    deploy_timeout_s: float = Field(900.0, gt=0, description="canary app must be RUNNING by then")
    analysis: Analysis = Field(default_factory=Analysis)


class Canary(_Common):
    """Progressive traffic: each step's weight held for `step_duration_s`, analysed every
    `interval_s`; after the last step the canary takes all traffic and is promoted."""

    strategy: Literal["canary"]
    steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0], min_length=1, max_length=20
    )
    step_duration_s: float = Field(300.0, gt=0)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(not 0 < w < 100 for w in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(
                "steps are canary weights in percent, each above 0 and below 100, increasing "
                "(100 % is the promotion itself), e.g. [10, 25, 50]"
            )
        return v


PrimaryMetric = Literal["error_rate", "latency", "ttft"]


class Experiment(_Common):
    """A/B test: a fixed split for `duration_s`, each caller kept on one arm by a request
    attribute, then a significance test on the primary metric. The treatment (the new version)
    is promoted when it is significantly better (p < alpha in its favour); otherwise the control
    stays and the treatment is removed. The analysis checks run every interval as guard rails."""

    strategy: Literal["experiment"]
    split: float = Field(50.0, gt=0, lt=100, description="percent of callers on the new version")
    sticky_by: str = Field(
        "user",
        description="request attribute that keeps a caller on one arm: the OpenAI `user` field, "
        "or metadata.<key> (e.g. metadata.session_id)",
    )
    duration_s: float = Field(3600.0, gt=0)
    primary_metric: PrimaryMetric = "error_rate"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_samples: int = Field(100, ge=2, description="per arm; fewer at the end: no promotion")

    @field_validator("sticky_by")
    @classmethod
    def _attribute(cls, v: str) -> str:
        if v != "user" and not re.fullmatch(r"metadata\.[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("sticky_by: 'user' or 'metadata.<key>' (e.g. metadata.session_id)")
        return v


Rollout = Annotated[Canary | Experiment, Field(discriminator="strategy")]


class TrafficSplit(BaseModel):
    """The live split of one gateway route, written by the rollout controller to Redis
    (`<prefix>:split:<alias>`) and applied by every gateway replica within its poll interval.

    `canary_weight` is the percentage of calls to the canary backend; `sticky_by` (an
    experiment's request attribute) keeps each caller on one arm, and `salt` changes per rollout
    so assignments are drawn afresh for each experiment; the versions label the metrics.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)  # newer controllers may add fields

    canary_weight: float = Field(ge=0, le=100)
    stable_version: str = ""
    canary_version: str = ""
    salt: str = ""
    sticky_by: str | None = None
    epoch: int = Field(0, ge=0, description="increases with every write (for logs)")


def sticky_value(body: dict[str, Any], sticky_by: str) -> str | None:
    """The caller attribute that pins the arm: body `user`, or `metadata.<key>`."""
    if sticky_by == "user":
        value = body.get("user")
    else:
        meta = body.get("metadata")
        value = meta.get(sticky_by.partition(".")[2]) if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


def sticky_point(sticky: tuple[str, str], body: dict[str, Any]) -> float | None:
    """A point in [0, 1) fixed for this caller and this split (`sticky`: the split's attribute
    and salt), or None when the request does not carry the attribute (routed by weight). One
    function for a route's experiment (gateway/split.py) and a prompt's (prompts/registry.py), so
    a caller hashes alike in both."""
    attribute, salt = sticky
    value = sticky_value(body, attribute)
    if value is None:
        return None
    digest = hashlib.blake2b(f"{salt}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_key(prefix: str, alias: str) -> str:
    return f"{prefix}:{SPLIT_KEY}:{alias}"


def canary_name(deployment: str) -> str:
    return f"{deployment}{CANARY_SUFFIX}"
