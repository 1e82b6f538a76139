"""A rollout plan: everything the controller needs to take one use case from its stable version to
a candidate, computed once by `tandem deploy` from the use-case file.

The controller never reads use-case files: the plan carries the four Serve configs it may apply
(stable only; stable + canary; promoted + canary; promoted only), built by the same
`serving.builder` that renders the RayService's `serveConfigV2`, the gateway names of both arms,
the registry reference to move on promotion and the rollout spec. A plan is plain JSON, so it
survives in the controller's durable state and a restarted controller resumes from it.

Why two Serve applications in one RayService (and not two RayServices): a second RayService is a
second Ray cluster (its own head, GCS, autoscaler and dashboard) for the length of a canary, and
KubeRay would build it from scratch; a Serve application added to the running cluster's
`serveConfigV2` is applied in place (KubeRay updates Serve without a new cluster when only the
Serve config changes), its replicas land on the workers the autoscaler adds to the existing worker
group, and both versions share the head, the PodMonitor and the network policy. The worker group
is sized for both versions whenever a use case declares `rollout:` (its maxReplicas doubles), so
adding the canary never changes the cluster spec, which would trigger KubeRay's blue-green
upgrade. Names are fixed: `<deployment>` is always the stable app and `<deployment>-canary` the
candidate, so the gateway's two backends never change URL; promotion re-deploys the stable app
at the new version while the canary carries all traffic, then moves traffic back and removes the
canary (one extra model load, traded for URLs that never move).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import TypeAdapter

from lifecycle.analysis import Arms, PromptArms
from prompts.registry import SPLIT_PREFIX
from serving import builder
from vocabulary.prompts import DEFAULT_LABEL, PromptFile
from vocabulary.rollout import Canary, Rollout, canary_name, split_key
from vocabulary.usecase import UseCaseSpec, with_version

ROLLOUT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Rollout)
GATEWAY_REDIS_PREFIX = "tandem:gw"  # components/gateway.py writes the same prefix
MODEL, PROMPT = "model", "prompt"
PROMPT_KEY = "prompt:"  # a prompt's rollout is kept under `prompt:<namespace>/<name>`


@dataclass
class RolloutPlan:
    use_case: str
    team: str
    alias: str  # the gateway route
    deployment: str  # the deployment that rolls (its stable Serve app name)
    canary_app: str
    stable_backend: str  # gateway backend names
    canary_backend: str
    split_key: str
    registry_name: str
    registry_alias: str | None  # moved on promotion (None: the use case pins a version)
    stable_version: str
    canary_version: str
    stable_source: str
    canary_source: str
    rollout: dict[str, Any]  # the use case's rollout: section (vocabulary.rollout.Rollout)
    configs: dict[str, dict[str, Any]]  # stable | canary | promoted | final
    registered_at: float = 0.0  # epoch seconds the candidate was registered (time to deploy)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = MODEL  # model | prompt (a prompt version: no Serve configs, arms by version)

    def spec(self) -> Any:
        return ROLLOUT_ADAPTER.validate_python(self.rollout)

    @property
    def is_prompt(self) -> bool:
        return self.kind == PROMPT

    def arms(self) -> Arms | PromptArms:
        """Where the analysis finds the two arms in the gateway's metrics."""
        if self.is_prompt:
            return PromptArms(self.registry_name, self.stable_version, self.canary_version)
        return Arms(self.use_case, self.stable_backend, self.canary_backend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutPlan:
        return cls(**data)


def backend_names(use_case: str) -> tuple[str, str]:
    """The gateway backends of a use case's stable and canary arms (gateway.spec uses them)."""
    return use_case, f"{use_case}-canary"


def build_plan(
    spec: UseCaseSpec,
    canary_version: str,
    canary_source: str,
    *,
    registered_at: float = 0.0,
    redis_prefix: str = GATEWAY_REDIS_PREFIX,
) -> RolloutPlan:
    """The plan for moving `spec` (registry references already resolved: its rolling
    deployment carries the stable version's source) to `canary_version`."""
    if spec.rollout is None or spec.gateway is None:
        raise ValueError(f"use case {spec.name!r} has no rollout: section")
    d = spec.rollout_deployment
    assert d is not None and d.registry is not None
    if not d.source or d.version is None:
        raise ValueError(f"deployment {d.name!r}: resolve its registry reference first")
    if canary_version == d.version:
        raise ValueError(
            f"version {canary_version} of {d.registry.name} is already the stable version of "
            f"{spec.name!r}; nothing to roll out"
        )
    candidate = with_version(spec, d.name, canary_version, canary_source)
    new_d = next(x for x in candidate.deployments if x.name == d.name)
    canary = new_d.model_copy(update={"name": canary_name(d.name)})
    configs = {
        "stable": builder.serve_config(spec.deployments),
        "canary": builder.serve_config([*spec.deployments, canary]),
        "promoted": builder.serve_config([*candidate.deployments, canary]),
        "final": builder.serve_config(candidate.deployments),
    }
    stable_backend, canary_backend = backend_names(spec.name)
    alias = spec.gateway.alias or spec.name
    return RolloutPlan(
        use_case=spec.name,
        team=spec.team,
        alias=alias,
        deployment=d.name,
        canary_app=canary.name,
        stable_backend=stable_backend,
        canary_backend=canary_backend,
        split_key=split_key(redis_prefix, alias),
        registry_name=d.registry.name,
        registry_alias=d.registry.alias,
        stable_version=d.version,
        canary_version=canary_version,
        stable_source=d.source,
        canary_source=canary_source,
        rollout=ROLLOUT_ADAPTER.dump_python(spec.rollout, mode="json"),
        configs=configs,
        registered_at=registered_at,
    )


def prompt_rollout_key(name: str) -> str:
    """The controller's key for the rollouts of prompt `name` (a use case's key is its name)."""
    return PROMPT_KEY + name


def build_prompt_plan(
    name: str,
    prompt: PromptFile,
    canary_version: int,
    *,
    redis_prefix: str = GATEWAY_REDIS_PREFIX,
    registered_at: float = 0.0,
) -> RolloutPlan:
    """The plan for moving prompt `name`'s `production` references from the version its file
    labels `production` to `canary_version`, with the prompt file's `rollout:` (default: the
    canary defaults a model gets).

    The same controller, split record and analysis as a model version; what differs is that
    nothing is deployed (every gateway already holds every version of the file), the arms are
    told apart by the `prompt_version` label instead of the backend, and promotion leaves the
    split holding the new version at 100 % until the file's `production` label is moved to it
    (prompts are code: the release is a reviewed change; the gateway drops a split whose stable
    version is no longer the file's `production`, prompts/registry.py)."""
    numbers = [v.version for v in prompt.versions]
    stable = prompt.labels[DEFAULT_LABEL]
    if canary_version not in numbers:
        raise ValueError(f"{name} has no version {canary_version}; versions: {numbers}")
    if canary_version == stable:
        raise ValueError(
            f"version {canary_version} of {name} is already its {DEFAULT_LABEL!r} version; "
            "nothing to roll out"
        )
    rollout = prompt.rollout or Canary(strategy="canary")
    return RolloutPlan(
        use_case=prompt_rollout_key(name),
        team=prompt.owner,
        alias=prompt.model,
        deployment="",
        canary_app="",
        stable_backend="",
        canary_backend="",
        split_key=split_key(redis_prefix, SPLIT_PREFIX + name),
        registry_name=name,
        registry_alias=None,
        stable_version=str(stable),
        canary_version=str(canary_version),
        stable_source="",
        canary_source="",
        rollout=ROLLOUT_ADAPTER.dump_python(rollout, mode="json"),
        configs={},
        registered_at=registered_at,
        kind=PROMPT,
    )
