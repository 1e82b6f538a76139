"""The use-case file (`stacks/usecases/<name>.yaml`): one AI feature a product team ships.

Pure (pydantic + yaml); a bad file raises vocabulary.errors.ConfigError naming it. Each section has its type on this floor: `deployments`
(vocabulary.deployment.ModelDeployment), `gateway:` (vocabulary.gateway.UseCaseGateway),
`features:` (vocabulary.features.UseCaseFeatures), `review:` (vocabulary.review.ReviewGate); the domains read them (serving builds Serve configs,
the gateway routes, the policy pack judges the review). Spend limits live where they are enforced: `gateway.budget`
(USD per period, per team, by the gateway) and the stack's `observability.teamBudgetsUsd` (GPU
spend alerts); a top-level `budget:` is refused with that pointer rather than silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vocabulary.deployment import ModelDeployment
from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.features import UseCaseFeatures
from vocabulary.gateway import UseCaseGateway
from vocabulary.labels import dns_label
from vocabulary.monitoring import Monitoring
from vocabulary.registry import Resolutions, Resolved, resolve
from vocabulary.review import ReviewGate
from vocabulary.rollout import Rollout, canary_name
from vocabulary.yamlfile import load_yaml

UpgradeStrategy = Literal["NewCluster", "NewClusterWithIncrementalUpgrade"]
UPGRADE_NEW_CLUSTER: UpgradeStrategy = "NewCluster"
UPGRADE_INCREMENTAL: UpgradeStrategy = "NewClusterWithIncrementalUpgrade"


class Upgrade(BaseModel):
    """How the RayService rolls out a new Serve config or image (KubeRay `upgradeStrategy`).

    NewCluster: blue-green, a whole second cluster until the new one is healthy (surge = the
    whole GPU footprint). Incremental: traffic shifts in steps through a Gateway API class,
    surging at most `max_surge_percent` of capacity at a time.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: UpgradeStrategy = UPGRADE_NEW_CLUSTER
    max_surge_percent: int = Field(100, ge=1, le=100)
    step_size_percent: int = Field(25, ge=1, le=100)
    interval_seconds: int = Field(60, ge=1)
    gateway_class_name: str = "istio"

    @model_validator(mode="after")
    def _incremental_only(self) -> Upgrade:
        options = sorted(self.model_fields_set - {"strategy"})
        if self.strategy != UPGRADE_INCREMENTAL and options:
            raise ValueError(
                f"{', '.join(options)} apply only to strategy '{UPGRADE_INCREMENTAL}' "
                f"(NewCluster replaces the whole cluster at once); set strategy: "
                f"{UPGRADE_INCREMENTAL} or remove them"
            )
        return self


# sections the gateway carries out, each with what it does for the use case (said when missing)
_GATEWAY_SECTIONS = (
    ("features", "reads a use case's features for each request"),
    ("monitoring", "samples a use case's drift signals"),
    ("prompts", "renders a use case's prompts"),
)


class UseCaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    team: str
    description: str = ""
    pool: str  # the GPU pool (its SchedulingContract) the GPU deployments run on
    deployments: list[ModelDeployment] = Field(min_length=1)
    upgrade: Upgrade = Field(default_factory=Upgrade)
    gateway: UseCaseGateway | None = None
    # the Feast feature service the gateway reads for each request (vocabulary/features.py)
    features: UseCaseFeatures | None = None
    review: ReviewGate | None = None
    rollout: Rollout | None = None  # how a new registry version reaches production
    # drift signals, tests and receivers (vocabulary/monitoring.py, docs/drift.md)
    monitoring: Monitoring | None = None
    # prompt templates callers of this use case name (stacks/prompts/<namespace>/<name>.yaml),
    # shipped to the gateway with its route (docs/prompts.md)
    prompts: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_top_level_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and "budget" in data:
            raise ValueError(
                "budget: a use case has no top-level budget (it was never enforced); set "
                "gateway.budget {usd, period: hour|day|month, soft_fraction} for the team's API spend, "
                "or observability.teamBudgetsUsd in the stack config for its GPU spend"
            )
        return data

    @field_validator("name", "team")
    @classmethod
    def _label(cls, value: str) -> str:
        return dns_label(value, "use case name / team")

    @model_validator(mode="after")
    def _unique(self) -> UseCaseSpec:
        names = [d.name for d in self.deployments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"deployment names must be unique in a use case: {dupes}")
        clash = sorted({canary_name(n) for n in names} & set(names))
        if clash:
            raise ValueError(f"deployment names {clash} are reserved for canary copies")
        if self.rollout is not None:
            self._check_rollout()
        if self.gateway is None:
            needs = [
                f"{k}: the gateway {why}, so a use case with `{k}:` needs a `gateway:` section too"
                for k, why in _GATEWAY_SECTIONS
                if getattr(self, k)
            ]
            if needs:
                raise ValueError("; ".join(needs))
        return self

    def _check_rollout(self) -> None:
        ro = self.rollout
        assert ro is not None
        names = [d.name for d in self.deployments]
        if ro.deployment is not None and ro.deployment not in names:
            raise ValueError(
                f"rollout.deployment: {ro.deployment!r} is not a deployment; allowed: {names}"
            )
        d = self.rollout_deployment
        if d is None or d.registry is None:
            raise ValueError(
                "rollout: the deployment that rolls takes its model from the registry "
                "(registry: {name: ..., alias: champion}); a rollout moves between registered "
                "versions"
            )
        if self.gateway is None:
            raise ValueError(
                "rollout: needs a gateway: section (the gateway splits traffic between the "
                "stable and canary versions)"
            )
        if len(canary_name(d.name)) > 40:
            raise ValueError(f"rollout: deployment name {d.name!r} is too long for its canary copy")
        for check in ro.analysis.promql:
            if "{{rollout}}" not in check.query:
                raise ValueError(
                    f"rollout.analysis.promql.{check.name}: a model's rollout selects the arm "
                    'with {{rollout}} (e.g. rollout="{{rollout}}"); {{prompt_version}} is for '
                    "a prompt's rollout"
                )

    @property
    def rollout_deployment(self) -> ModelDeployment | None:
        """The deployment a rollout moves: `rollout.deployment`, else the one with registry:."""
        if self.rollout is None:
            return None
        if self.rollout.deployment is not None:
            return next(d for d in self.deployments if d.name == self.rollout.deployment)
        registered = [d for d in self.deployments if d.registry is not None]
        return registered[0] if len(registered) == 1 else None

    @property
    def gpu_deployments(self) -> list[ModelDeployment]:
        return [d for d in self.deployments if d.uses_gpu]


def resolve_registry(
    spec: UseCaseSpec, resolutions: Resolutions, where: str
) -> tuple[UseCaseSpec, list[Resolved]]:
    """The use case with every `registry:` deployment's source and version filled in from the
    recorded resolutions (ConfigError when one is not recorded), and what each resolved to."""
    found: list[Resolved] = []
    deployments = []
    for i, d in enumerate(spec.deployments):
        if d.registry is None or d.source:
            deployments.append(d)
            continue
        r = resolve(spec.name, d.name, d.registry, resolutions, where, f"deployments[{i}].registry")
        found.append(r)
        deployments.append(d.model_copy(update={"source": r.source, "version": r.version}))
    if not found:
        return spec, []
    return spec.model_copy(update={"deployments": deployments}), found


def with_version(spec: UseCaseSpec, deployment: str, version: str, source: str) -> UseCaseSpec:
    """The use case with one deployment at another registry version (a canary's candidate)."""
    return spec.model_copy(
        update={
            "deployments": [
                d.model_copy(update={"source": source, "version": version})
                if d.name == deployment
                else d
                for d in spec.deployments
            ]
        }
    )


def _validated(model: type[BaseModel], data: Any, path: str | Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model), str(path)) from None


def load_use_case(path: str | Path) -> UseCaseSpec:
    """Read and validate one use-case file. Raises ConfigError naming the file and field paths
    (InputError when the file cannot be read)."""
    data = load_yaml(path, "use-case file")
    if not isinstance(data, dict):
        raise ConfigError(
            ["(root): a use-case file is a mapping (name, team, pool, deployments)"], str(path)
        )
    return _validated(UseCaseSpec, data, path)


def load_deployment_or_use_case(path: str | Path) -> UseCaseSpec:
    """A use-case file, or a single ModelDeployment file wrapped as a one-deployment use case."""
    data = load_yaml(path, "use-case file")
    if isinstance(data, dict) and "deployments" in data:
        return _validated(UseCaseSpec, data, path)
    if not isinstance(data, dict):
        raise ConfigError(
            ["(root): expected a use-case file (name, team, pool, deployments) or one "
             "ModelDeployment (name, model, source, ...)"],
            str(path),
        )  # fmt: skip
    d = _validated(ModelDeployment, data, path)
    return UseCaseSpec(name=d.name, team="local", pool="local", deployments=[d])
