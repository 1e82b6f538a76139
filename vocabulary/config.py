"""The typed stack configuration: one pydantic model for the whole platform.

Read from Pulumi config (`tandem:*` keys in `stacks/Pulumi.<stack>.yaml`). Validation happens
before any resource is registered, and every error names the field path as the user wrote it
(camelCase, with list indexes), the bad value and what is allowed: a platform engineer should
fix a config from the message alone, without reading this module.

Pure: no pulumi import at module level (`from_pulumi` imports it lazily).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from vocabulary.cache import CacheSection
from vocabulary.catalog import load_catalog
from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.features import FeatureStoreConfig
from vocabulary.gateway import Budget, Price
from vocabulary.labels import dns_label
from vocabulary.tracing import TraceCapture

if TYPE_CHECKING:
    from vocabulary.usecase import UseCaseSpec

CONFIG_NAMESPACE = "tandem"
SECRET_KEY_PREFIX = "gatewayKey-"  # tandem:gatewayKey-<id>: one team's raw API key (secret)
# tandem:alertingSecret-<receiver>: a receiver's credential (Slack or webhook URL, PagerDuty
# routing key, SMTP password), a Pulumi secret that reaches the cluster only inside a Secret
ALERTING_SECRET_PREFIX = "alertingSecret-"
PROVIDER_KEY_PREFIX = "providerKey-"  # tandem:providerKey-<name>: an external provider's API key
SECRET_PREFIXES = (SECRET_KEY_PREFIX, ALERTING_SECRET_PREFIX, PROVIDER_KEY_PREFIX)
# tandem:huggingFaceToken (optional secret): the Hub token workers of Hub-sourced models read
HF_TOKEN_KEY = "huggingFaceToken"
# tandem:batchWebhookSecret (optional secret, whsec_...): signs async jobs' webhooks
BATCH_WEBHOOK_SECRET_KEY = "batchWebhookSecret"
# tandem:registryDbPassword (secret): the model registry's Postgres password on EKS (RDS)
REGISTRY_DB_PASSWORD_KEY = "registryDbPassword"
# tandem:tracingSecret (secret): the trace backend's (Phoenix's) secrets are derived from it
TRACING_SECRET_KEY = "tracingSecret"
# secrets with a name of their own (no prefix): the program reads them as Pulumi secrets, so the
# schema never sees them (a set one must not be refused as an unknown key)
NAMED_SECRET_KEYS = (
    HF_TOKEN_KEY,
    BATCH_WEBHOOK_SECRET_KEY,
    REGISTRY_DB_PASSWORD_KEY,
    TRACING_SECRET_KEY,
)
GPU_AMI_TYPES = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
K8S_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34", "1.35")


class Model(BaseModel):
    """Base for every config section: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _known_instance_type(name: str) -> str:
    catalog = load_catalog()
    if name not in catalog:
        raise ValueError(f"not a known GPU instance type; allowed: {', '.join(catalog.names())}")
    return name


InstanceTypeName = Annotated[str, AfterValidator(_known_instance_type)]


# --- cluster -------------------------------------------------------------------------------


class SystemNodeGroup(Model):
    instance_type: str = "m7i.large"
    min_nodes: int = Field(2, ge=1)
    max_nodes: int = Field(4, ge=1)

    @field_validator("instance_type")
    @classmethod
    def _priced(cls, v: str) -> str:
        from vocabulary.costs import system_instance_types

        known = system_instance_types()
        if v not in known:
            raise ValueError(
                f"{v!r} is not a system instance type the cost envelope can price "
                f"(vocabulary/costs.yaml); allowed: {', '.join(known)}"
            )
        return v

    @model_validator(mode="after")
    def _bounds(self) -> SystemNodeGroup:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes ({self.min_nodes}) must be <= maxNodes ({self.max_nodes})")
        return self


class AccessEntry(Model):
    principal_arn: str
    policy: Literal["cluster-admin", "admin", "edit", "view"] = "view"
    namespaces: list[str] = Field(default_factory=list)


LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
DEFAULT_LOG_TYPES: tuple[LogType, ...] = ("api", "audit", "authenticator")


EKS_ONLY_CLUSTER_KEYS = frozenset(
    {
        "endpoint_public_access",
        "public_access_cidrs",
        "log_types",
        "system_node_group",
        "access_entries",
    }
)


class ClusterConfig(Model):
    mode: Literal["eks", "existing"] = "eks"
    name: str | None = None
    kubernetes_version: str = "1.35"
    # eks mode
    endpoint_public_access: bool = False
    public_access_cidrs: list[str] = Field(default_factory=list)
    log_types: list[LogType] = Field(default_factory=lambda: list(DEFAULT_LOG_TYPES))
    system_node_group: SystemNodeGroup = SystemNodeGroup()
    access_entries: list[AccessEntry] = Field(default_factory=list)
    # existing mode
    kubeconfig: str | None = None
    context: str | None = None

    @field_validator("kubernetes_version")
    @classmethod
    def _k8s_version(cls, v: str) -> str:
        if v not in K8S_VERSIONS:
            raise ValueError(f"{v!r} is not supported; allowed: {', '.join(K8S_VERSIONS)}")
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> ClusterConfig:
        if self.mode == "existing" and not self.kubeconfig:
            raise ValueError(
                "kubeconfig is required when mode is 'existing' (a path, or the kubeconfig "
                "contents as a Pulumi secret)"
            )
        if self.mode == "eks" and (self.kubeconfig or self.context):
            raise ValueError("kubeconfig and context are only allowed when mode is 'existing'")
        if self.mode == "existing":
            # Tandem creates no control plane on an existing cluster: these would do nothing.
            eks_only = sorted(to_camel(f) for f in self.model_fields_set & EKS_ONLY_CLUSTER_KEYS)
            if eks_only:
                raise ValueError(
                    f"{', '.join(eks_only)} only apply when mode is 'eks' (Tandem builds the "
                    "control plane); with an existing cluster configure them on the cluster itself"
                )
        if self.public_access_cidrs and not self.endpoint_public_access:
            raise ValueError("publicAccessCidrs requires endpointPublicAccess: true")
        return self


class NetworkConfig(Model):
    vpc_cidr: str = "10.42.0.0/16"
    az_count: int = Field(2, ge=2, le=4)
    single_nat_gateway: bool = True


# --- GPU pools -----------------------------------------------------------------------------


class TimeSlicing(Model):
    replicas: int = Field(..., ge=2, le=48)


class GpuSoftwareConfig(Model):
    """How GPUs become schedulable: the device plugin alone, or the full GPU operator."""

    mode: Literal["device-plugin", "gpu-operator"] = "device-plugin"
    time_slicing: TimeSlicing | None = None
    mig_strategy: Literal["none", "single", "mixed"] = "none"

    @model_validator(mode="after")
    def _mig_needs_operator(self) -> GpuSoftwareConfig:
        if self.mig_strategy != "none" and self.mode != "gpu-operator":
            raise ValueError(
                f"migStrategy {self.mig_strategy!r} needs mode 'gpu-operator' "
                "(the device plugin alone does not partition GPUs)"
            )
        if self.mig_strategy != "none" and self.time_slicing:
            raise ValueError("timeSlicing and migStrategy are exclusive; choose one")
        return self


KARPENTER_ONLY_POOL_KEYS = frozenset(
    {"expire_after", "consolidate_after", "termination_grace_period"}
)


class GpuPoolConfig(Model):
    name: str
    mechanism: Literal["managed", "karpenter", "existing"] = "managed"
    instance_types: list[InstanceTypeName] = Field(..., min_length=1)
    capacity_type: Literal["on-demand", "spot", "reserved"] = "on-demand"
    min_nodes: int = Field(0, ge=0)
    max_nodes: int = Field(..., ge=1)
    desired_nodes: int | None = None
    workload: Literal["serving", "training", "batch"] = "serving"
    critical: bool = False
    fallback_pool: str | None = None
    team: str = "platform"
    ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"] = "AL2023_x86_64_NVIDIA"
    root_volume_gib: int = Field(200, ge=50, le=16384)
    efa: bool = False
    expire_after: str = "720h"
    consolidate_after: str = "5m"
    # Karpenter: how long a draining node may wait for its pods (PDBs, preStop) before it is
    # terminated anyway; bounds a drain that a PodDisruptionBudget would otherwise block forever
    termination_grace_period: str = "1h"
    capacity_reservation_ids: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        return dns_label(v, "pool name")

    @field_validator("expire_after", "consolidate_after", "termination_grace_period")
    @classmethod
    def _duration(cls, v: str) -> str:
        if v != "Never" and not re.fullmatch(r"(\d+(s|m|h))+", v):
            raise ValueError(f"{v!r} is not a duration; use e.g. '30s', '5m', '720h' or 'Never'")
        return v

    @model_validator(mode="after")
    def _pool_rules(self) -> GpuPoolConfig:
        catalog = load_catalog()
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes ({self.min_nodes}) must be <= maxNodes ({self.max_nodes})")
        if self.desired_nodes is not None and not (
            self.min_nodes <= self.desired_nodes <= self.max_nodes
        ):
            raise ValueError(
                f"desiredNodes ({self.desired_nodes}) must be between minNodes "
                f"({self.min_nodes}) and maxNodes ({self.max_nodes})"
            )
        if self.critical and self.capacity_type == "spot":
            raise ValueError(
                "capacityType 'spot' is not allowed in a pool marked critical (it serves "
                "production traffic and spot capacity can be reclaimed with 2 minutes' notice); "
                "allowed: 'on-demand', 'reserved', or set critical: false and name a fallbackPool"
            )
        if self.mechanism == "managed" and len(self.instance_types) > 1:
            models = {catalog.get(t).gpu.name for t in self.instance_types}
            if len(models) > 1:
                raise ValueError(
                    "a managed node group must use one GPU model; instanceTypes mixes "
                    f"{', '.join(sorted(models))} (use mechanism 'karpenter' to mix)"
                )
        if self.efa:
            no_efa = [t for t in self.instance_types if not catalog.get(t).efa]
            if no_efa:
                raise ValueError(
                    f"efa: true but {', '.join(no_efa)} do not support EFA; EFA-capable: "
                    + ", ".join(n for n in catalog.names() if catalog.get(n).efa)
                )
        if self.capacity_type == "reserved" and not self.capacity_reservation_ids:
            raise ValueError("capacityType 'reserved' needs capacityReservationIds")
        if self.capacity_reservation_ids and self.capacity_type != "reserved":
            raise ValueError(
                "capacityReservationIds are only used with capacityType 'reserved' (on-demand "
                "and spot pools never launch into a reservation); set capacityType: reserved"
            )
        if self.mechanism == "managed" and len(self.capacity_reservation_ids) > 1:
            raise ValueError(
                "capacityReservationIds: a managed node group's launch template targets one "
                "reservation; use mechanism 'karpenter' to draw from several"
            )
        set_here = self.model_fields_set
        karpenter_only = sorted(
            to_camel(f)
            for f in set_here & KARPENTER_ONLY_POOL_KEYS
            if self.mechanism != "karpenter"
        )
        if karpenter_only:
            raise ValueError(
                f"{', '.join(karpenter_only)} applies only to mechanism 'karpenter' (an EKS "
                "managed node group has no such setting)"
            )
        if "desired_nodes" in set_here and self.mechanism != "managed":
            raise ValueError(
                "desiredNodes applies only to mechanism 'managed' (Karpenter launches nodes "
                "for pending pods; there is no desired size)"
            )
        return self

    @property
    def primary_instance(self) -> str:
        """The instance type the cost envelope and the scheduling contract assume.

        For a Karpenter pool that may launch several types, the most expensive per node is the
        conservative choice for a ceiling; GPU count and memory come from the same type.
        """
        catalog = load_catalog()
        return max(self.instance_types, key=lambda t: catalog.get(t).usd_per_hour)


# --- budgets, observability, gateway, policies ----------------------------------------------


class BudgetConfig(Model):
    """The platform's monthly GPU budget: the policy pack prices every pool at its maximum against
    it, and Prometheus alerts (TandemPlatformBudgetBurn) when the spend rate crosses each of
    `alertThresholds` of it; those alerts go to the `notify` receivers of `tandem:alerting`."""

    monthly_usd: float = Field(..., gt=0)
    alert_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0], min_length=1)
    notify: list[str] = Field(default_factory=list)  # receiver names in tandem:alerting

    @field_validator("alert_thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        for i, t in enumerate(v):
            if not 0 < t <= 2:
                raise ValueError(
                    f"alertThresholds[{i}]: {t} is not a share of the budget; allowed: "
                    "0 < threshold <= 2 (0.8 alerts at 80 % of monthlyUsd)"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"alertThresholds: duplicate thresholds in {v}")
        return sorted(v)


# --- alerting ----------------------------------------------------------------------------------


class EmailReceiver(Model):
    """SMTP delivery; the SMTP password (when `authUsername` is set) is the receiver's secret."""

    to: list[str] = Field(..., min_length=1)
    from_address: str
    smarthost: str  # host:port
    auth_username: str | None = None
    require_tls: bool = True

    @field_validator("smarthost")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", v):
            raise ValueError(f"{v!r} is not host:port (e.g. 'smtp.example.com:587')")
        return v

    @field_validator("to", "from_address")
    @classmethod
    def _addresses(cls, v: Any) -> Any:
        for addr in v if isinstance(v, list) else [v]:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", addr):
                raise ValueError(f"{addr!r} is not an email address")
        return v


class SlackReceiver(Model):
    """Slack incoming webhook; the webhook URL is the receiver's secret."""

    channel: str

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not re.fullmatch(r"[#@][a-z0-9._-]{1,80}", v):
            raise ValueError(f"{v!r} is not a Slack channel like '#ml-alerts'")
        return v


class WebhookReceiver(Model):
    """A generic webhook (Alertmanager's JSON payload); the URL is the receiver's secret."""

    send_resolved: bool = True


class PagerDutyReceiver(Model):
    """PagerDuty Events API v2; the integration's routing key is the receiver's secret."""

    send_resolved: bool = True


RECEIVER_KINDS = ("email", "slack", "webhook", "pagerduty")


class Receiver(Model):
    name: str
    email: EmailReceiver | None = None
    slack: SlackReceiver | None = None
    webhook: WebhookReceiver | None = None
    pagerduty: PagerDutyReceiver | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return dns_label(v, "receiver name")

    @model_validator(mode="after")
    def _one_kind(self) -> Receiver:
        kinds = [k for k in RECEIVER_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"receiver {self.name!r} sets {kinds or 'no kind'}; set exactly one of "
                + ", ".join(RECEIVER_KINDS)
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RECEIVER_KINDS if getattr(self, k) is not None)

    @property
    def needs_secret(self) -> bool:
        return self.kind != "email" or bool(self.email and self.email.auth_username)

    @property
    def secret_config_key(self) -> str:
        return f"{ALERTING_SECRET_PREFIX}{self.name}"


class AlertRoute(Model):
    """Alerts whose labels match go to `receiver`; `team` matches the alert's `team` label."""

    receiver: str
    team: str | None = None
    severity: Literal["warning", "critical"] | None = None
    continue_routing: bool = False  # also try the routes after this one

    @model_validator(mode="after")
    def _matches_something(self) -> AlertRoute:
        if self.team is None and self.severity is None:
            raise ValueError(
                "a route matches on team and/or severity; alerts that match nothing go to "
                "defaultReceiver"
            )
        return self


class AlertingConfig(Model):
    """Where Tandem's alerts go: Alertmanager receivers routed by the alerts' `team` label."""

    receivers: list[Receiver] = Field(default_factory=list)
    default_receiver: str | None = None
    routes: list[AlertRoute] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=lambda: ["alertname", "team"])
    repeat_interval: str = "4h"

    @field_validator("repeat_interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(m|h)", v):
            raise ValueError(f"{v!r} is not an Alertmanager duration like '30m' or '4h'")
        return v

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receivers: duplicate names {', '.join(dupes)}")
        allowed = ", ".join(names) or "none defined"
        if self.receivers and self.default_receiver is None:
            raise ValueError(f"defaultReceiver is required with receivers; allowed: {allowed}")
        if self.default_receiver is not None and self.default_receiver not in names:
            raise ValueError(
                f"defaultReceiver: {self.default_receiver!r} is not a receiver; allowed: {allowed}"
            )
        for i, route in enumerate(self.routes):
            if route.receiver not in names:
                raise ValueError(
                    f"routes[{i}].receiver: {route.receiver!r} is not a receiver; allowed: {allowed}"
                )
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


# --- images ------------------------------------------------------------------------------------

IMAGE_SERVICES = ("gateway", "serving")
_IMAGE_NAME = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def image_ref_error(ref: str) -> str | None:
    """Why `ref` is not a pinned image reference (registry/name:tag, registry/name@digest)."""
    name, _, digest = ref.partition("@")
    if digest and not _IMAGE_DIGEST.fullmatch(digest):
        return f"{ref!r}: the digest must be sha256:<64 hex digits>"
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if not _IMAGE_NAME.fullmatch(name) or (tag and not _IMAGE_TAG.fullmatch(tag)):
        return (
            f"{ref!r} is not a pinned image reference; use registry/name:tag or "
            "registry/name@sha256:<digest> (lowercase repository)"
        )
    if tag == "latest":
        return f"{ref!r}: ':latest' changes under a running cluster; pin a tag"
    if not (tag or digest):
        return f"{ref!r} is not a pinned image reference: add :tag or @sha256:<digest>"
    return None


class ImagesConfig(Model):
    """Prebuilt images per service. Unset: `pulumi up` builds the service's image from this
    repository and pushes it to the stack's ECR repository (EKS mode only)."""

    gateway: str | None = None
    serving: str | None = None

    @field_validator("gateway", "serving")
    @classmethod
    def _pinned(cls, v: str | None) -> str | None:
        if v is not None and (problem := image_ref_error(v)):
            raise ValueError(problem)
        return v

    def override(self, service: str) -> str | None:
        return getattr(self, service)


class ObservabilityConfig(Model):
    enabled: bool = True
    retention_days: int = Field(15, ge=1, le=400)
    storage_gib: int = Field(50, ge=5)
    storage_class: str | None = None  # cluster default when unset
    scrape_interval: str = "30s"
    remote_write_url: str | None = None
    grafana: bool = True
    # Alert thresholds (observability/rules.py); docs/observability.md explains each.
    idle_gpu_threshold: float = Field(0.05, gt=0, lt=1)  # mean GR_ENGINE_ACTIVE over 1 h
    idle_gpu_for: str = "2h"
    ttft_slo_seconds: float = 1.0
    ttft_slo_target: float = Field(0.99, gt=0, lt=1)
    error_slo_target: float = Field(0.995, gt=0, lt=1)
    # the wrong-hit alert's threshold for gateways that export none of their own (cache.recheck)
    cache_wrong_hit_max: float = Field(0.05, gt=0, lt=1)
    team_budgets_usd: dict[str, float] = Field(default_factory=dict)  # monthly GPU spend per team

    @field_validator("scrape_interval", "idle_gpu_for")
    @classmethod
    def _prom_duration(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(s|m|h)", v):
            raise ValueError(f"{v!r} is not a Prometheus duration like '30s', '5m' or '2h'")
        return v

    @field_validator("ttft_slo_seconds")
    @classmethod
    def _ttft_bucket(cls, v: float) -> float:
        buckets = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)  # fmt: skip
        if v not in buckets:
            raise ValueError(
                f"{v} is not a bucket of vLLM's TTFT histogram, so the SLO cannot be counted; "
                f"allowed: {', '.join(map(str, buckets))}"
            )
        return v


class GatewayKeyConfig(Model):
    """One API key: a team's, one developer's (`developer`), or an identity-aware proxy's that
    names the developer in a header (`developerHeader`). The key itself is the Pulumi secret
    `tandem:gatewayKey-<id>` (`pulumi config set --secret tandem:gatewayKey-<id> ...`); only its
    hash reaches the cluster."""

    id: str
    team: str
    models: list[str] = Field(default_factory=lambda: ["*"])
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    developer: str | None = None
    developer_header: str | None = None

    @field_validator("id", "team")
    @classmethod
    def _dns(cls, v: str, info: ValidationInfo) -> str:
        return dns_label(v, f"key {info.field_name}")

    @field_validator("developer_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", v):
            raise ValueError(f"{v!r} is not an HTTP header name (e.g. X-Forwarded-Email)")
        return v

    @model_validator(mode="after")
    def _one_identity(self) -> GatewayKeyConfig:
        if self.developer and self.developer_header:
            raise ValueError(
                "developer and developerHeader: a key is one developer's or a proxy's, not both"
            )
        return self

    @property
    def secret_config_key(self) -> str:
        return f"{SECRET_KEY_PREFIX}{self.id}"


class AssistantRouteConfig(Model):
    """A model coding assistants ask for by name (Claude Code's `--model`, Codex's `model`): an
    external provider's (`provider`, `url`), or a use case's self-hosted model (`useCase`, which
    Claude Code and Codex reach through translation to chat completions)."""

    alias: str
    provider: Literal["anthropic", "openai"] | None = None
    url: str | None = None
    model: str | None = None  # the name the provider knows the model by (default: the alias)
    api_key_secret: str | None = None  # the Pulumi secret tandem:providerKey-<apiKeySecret>
    auth: Literal["x-api-key", "bearer"] | None = None  # default: the provider's own
    use_case: str | None = None
    price: Price | None = None  # per million tokens (required with a team budget)
    fallbacks: list[str] = Field(default_factory=list)

    @field_validator("alias", "api_key_secret")
    @classmethod
    def _dns(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v is None else dns_label(v, f"assistant route {info.field_name}")

    @model_validator(mode="after")
    def _one_target(self) -> AssistantRouteConfig:
        external = self.provider is not None or self.url is not None
        if external == (self.use_case is not None):
            raise ValueError(
                f"{self.alias}: name either provider + url (an external provider) or useCase "
                "(a self-hosted model), not both and not neither"
            )
        if external and (self.provider is None or self.url is None):
            raise ValueError(f"{self.alias}: an external provider needs both provider and url")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"{self.alias}: url {self.url!r} must start with https://")
        if self.use_case is not None and (self.api_key_secret or self.auth):
            raise ValueError(f"{self.alias}: apiKeySecret and auth are for external providers")
        return self

    @property
    def secret_config_key(self) -> str | None:
        return f"{PROVIDER_KEY_PREFIX}{self.api_key_secret}" if self.api_key_secret else None


class AssistantTeamConfig(Model):
    budget: Budget | None = None  # the team's, for all its gateway traffic
    developer_budget: Budget | None = None  # each developer's, on their own
    developers: list[str] = Field(default_factory=list)  # roster: adoption's denominator


class AssistantsConfig(Model):
    """Coding assistants (Claude Code, Codex, IDE agents) on the gateway: the models they may call,
    and the teams' budgets and rosters. Keys are `gateway.keys` with `developer` or
    `developerHeader`; docs/assistants.md is the roll-out guide."""

    routes: list[AssistantRouteConfig] = Field(min_length=1)
    teams: dict[str, AssistantTeamConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> AssistantsConfig:
        aliases = [r.alias for r in self.routes]
        dupes = sorted({a for a in aliases if aliases.count(a) > 1})
        if dupes:
            raise ValueError(f"routes: duplicate aliases {', '.join(dupes)}")
        for i, r in enumerate(self.routes):
            for f in r.fallbacks:
                if f not in aliases or f == r.alias:
                    raise ValueError(
                        f"routes[{i}].fallbacks: {f!r} is not another assistant route; "
                        f"allowed: {', '.join(a for a in aliases if a != r.alias)}"
                    )
        return self


class GatewayConfig(Model):
    enabled: bool = True
    keys: list[GatewayKeyConfig] = Field(default_factory=list)
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(10, ge=1)
    redis: Literal["in-cluster", "elasticache", "none"] = "in-cluster"
    ingress_host: str | None = None
    tls_secret: str | None = None
    # the gateway's response cache: the routes file's top-level `cache:` section (snake_case keys,
    # vocabulary/cache.py, docs/semantic-cache.md); unset = no cache. Use cases set per-route policy.
    cache: CacheSection | None = None
    assistants: AssistantsConfig | None = None
    audit: bool = True  # one audit record per request on the gateway's standard output

    @field_validator("cache")
    @classmethod
    def _pairs_log_in_the_pod(cls, v: CacheSection | None) -> CacheSection | None:
        log = v.recheck.pairs_log if v is not None and v.recheck is not None else None
        if log is not None and not log.startswith("/"):
            raise ValueError(
                f"cache.recheck.pairs_log: must be an absolute path in the gateway pod "
                f"(got {log!r}); a volume is mounted at its folder"
            )
        return v

    @model_validator(mode="after")
    def _bounds(self) -> GatewayConfig:
        if self.tls_secret and not self.ingress_host:
            raise ValueError(
                "tlsSecret is used only by the ingress: set ingressHost too (without it no "
                "Ingress is created and the certificate is never served)"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class BatchConfig(Model):
    """`tandem:batch`: the Batch API, async jobs and their workers (docs/async.md). The workers
    scale with the queue (KEDA, to zero when idle) and run on the system nodes beside the
    gateway; the files live in an S3 bucket Tandem creates on EKS (or `filesBucket`)."""

    enabled: bool = False
    min_replicas: int = Field(0, ge=0, description="0: scale to zero when the queue is empty")
    max_replicas: int = Field(10, ge=1)
    lines_per_replica: int = Field(
        200, ge=1, description="queued lines per worker replica (KEDA's lagCount target)"
    )
    concurrency: int = Field(32, ge=1, le=1024, description="lines in flight per worker")
    min_concurrency: int = Field(1, ge=1, description="kept however busy online traffic is")
    yield_at_fraction: float = Field(
        0.8, gt=0, le=1, description="online p95 / SLO at which batch work starts yielding"
    )
    max_attempts: int = Field(3, ge=1, le=20)
    claim_idle_s: float = Field(60.0, gt=0)
    cooldown_s: int = Field(300, ge=0, description="KEDA cooldownPeriod before scaling to zero")
    files_bucket: str | None = Field(None, description="existing bucket (required on existing)")
    files_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO)")
    file_retention_days: int = Field(30, ge=1, description="files expire from S3 after this")
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"

    @model_validator(mode="after")
    def _bounds(self) -> BatchConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        if self.min_concurrency > self.concurrency:
            raise ValueError(
                f"minConcurrency ({self.min_concurrency}) must be <= concurrency "
                f"({self.concurrency})"
            )
        return self


class SecretRef(Model):
    """A Kubernetes Secret key the platform reads (it never sees the value)."""

    name: str
    key: str = "dsn"


class RegistryDatabase(Model):
    """The registry's Postgres on EKS: an RDS instance, encrypted, in the private subnets."""

    instance_class: str = "db.t4g.small"
    storage_gib: int = Field(20, ge=20, le=1000)
    multi_az: bool | None = None  # default: on in prod
    backup_retention_days: int = Field(7, ge=1, le=35)

    @field_validator("instance_class")
    @classmethod
    def _priced(cls, v: str) -> str:
        from vocabulary.costs import load_costs

        known = sorted(load_costs()["rds"]["usd_per_hour"])
        if v not in known:
            raise ValueError(
                f"{v!r} is not an instance class the cost envelope can price "
                f"(vocabulary/costs.yaml rds); allowed: {', '.join(known)}"
            )
        return v


class RegistryConfig(Model):
    """The model registry (MLflow tracking server with its Model Registry).

    On EKS Tandem creates its Postgres (RDS) and artifact bucket (S3, read and written through
    IRSA). On an existing cluster the stack names a Secret holding the database DSN
    (`dsnSecret`) and the artifact location (`artifactBucket`, s3://...).
    """

    enabled: bool = False
    replicas: int = Field(1, ge=1, le=5)
    database: RegistryDatabase = RegistryDatabase()
    dsn_secret: SecretRef | None = None
    artifact_bucket: str | None = None  # eks: the bucket's name (default: generated)
    artifacts_role_arn: str | None = None  # existing: the IAM role the server's SA assumes
    clients: list[str] = Field(
        default_factory=list, description="namespaces (beyond the controller's) that may call it"
    )


class TracingCaptureConfig(TraceCapture):
    """`tandem:tracing.capture` (camelCase keys, as every stack section)."""

    model_config = Model.model_config


class TracingAuthSecret(Model):
    """A Kubernetes Secret key in the tracing namespace (Tandem never sees the value)."""

    name: str
    key: str = "authorization"


class TracingExportConfig(Model):
    """The user's own OTLP endpoint, which the collector sends every span to as well."""

    endpoint: str
    protocol: Literal["grpc", "http"] = "grpc"
    # a Secret in the tracing namespace whose value is sent as the `authorization` header
    auth_secret: TracingAuthSecret | None = None

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError(
                f"{v!r} is not an http(s):// URL (e.g. 'https://otlp.example.com:4317')"
            )
        return v


class TracingConfig(Model):
    """`tandem:tracing`: the gateway's and Ray Serve's spans through an OpenTelemetry Collector
    to an LLM observability backend (docs/tracing.md)."""

    enabled: bool = False
    sampling: float = Field(1.0, ge=0, le=1)  # share of requests traced (parent-based)
    backend: Literal["phoenix", "none"] = "phoenix"  # none: only `export` receives the spans
    retention_days: int = Field(30, ge=1, le=3650)  # the backend deletes older traces
    storage_gib: int = Field(20, ge=1, le=4096)  # the backend's volume (SQLite)
    collector_replicas: int = Field(1, ge=1, le=20)
    export: TracingExportConfig | None = None
    capture: TracingCaptureConfig = TracingCaptureConfig()

    @model_validator(mode="after")
    def _somewhere(self) -> TracingConfig:
        if self.enabled and self.backend == "none" and self.export is None:
            raise ValueError(
                "backend: 'none' sends spans only to export.endpoint, which is not set; "
                "allowed: backend 'phoenix', or set export"
            )
        return self


class PolicyConfig(Model):
    """How the policy pack treats this stack (see docs/policies.md)."""

    enforcement: Literal["advisory", "mandatory", "disabled"] | None = None
    overrides: dict[str, Literal["advisory", "mandatory", "disabled"]] = Field(default_factory=dict)
    allowed_instance_families: list[str] = Field(default_factory=list)
    waivers: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("allowed_instance_families")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        known = load_catalog().families()
        for i, fam in enumerate(v):
            if fam not in known:
                raise ValueError(
                    f"allowedInstanceFamilies[{i}]: {fam!r} is not a GPU family in the catalog; "
                    f"allowed: {', '.join(known)}"
                )
        return v


# --- the platform --------------------------------------------------------------------------

# docs/policies.md: the production-only rules a prod stack may waive per resource, never lower
PROD_GUARD_RAILS = ("ray-gcs-fault-tolerance", "serving-pdb", "gpu-pool-spot-fallback")


def _check_fallback(i: int, pool: GpuPoolConfig, fallback: GpuPoolConfig) -> None:
    """A fallback pool must be able to run what the primary runs, on capacity that does not
    disappear with it: the same GPU model and count per node, at least the node's CPU and memory
    (the worker pods are sized from the primary), and not spot-only when the primary is spot."""
    catalog = load_catalog()
    ours, theirs = catalog.get(pool.primary_instance), catalog.get(fallback.primary_instance)
    where = f"gpuPools[{i}].fallbackPool"
    if (ours.gpu.name, ours.gpus) != (theirs.gpu.name, theirs.gpus):
        raise ValueError(
            f"{where}: {fallback.name!r} runs {theirs.gpus} x {theirs.gpu.name} per node, "
            f"{pool.name!r} {ours.gpus} x {ours.gpu.name}: workers sized for one cannot move "
            "to the other; pick a pool with the same GPU model and GPUs per node"
        )
    small = min(fallback.instance_types, key=lambda t: catalog.get(t).memory_gib)
    if catalog.get(small).vcpu < ours.vcpu or catalog.get(small).memory_gib < ours.memory_gib:
        raise ValueError(
            f"{where}: {fallback.name!r} may launch {small} ({catalog.get(small).vcpu} vCPU, "
            f"{catalog.get(small).memory_gib:g} GiB), smaller than {pool.name!r}'s "
            f"{ours.name} that the workers are sized for; list only instance types at least "
            f"that large in {fallback.name!r}"
        )
    if fallback.root_volume_gib < pool.root_volume_gib:
        raise ValueError(
            f"{where}: {fallback.name!r} has rootVolumeGib {fallback.root_volume_gib}, less "
            f"than {pool.name!r}'s {pool.root_volume_gib}: workers that download their weights "
            "there may not fit; give the fallback at least the same volume"
        )
    if pool.capacity_type == "spot" and fallback.capacity_type == "spot":
        raise ValueError(
            f"{where}: {fallback.name!r} is spot too, so it loses capacity when {pool.name!r} "
            "does; allowed: an on-demand or reserved pool"
        )
    if fallback.workload != pool.workload:
        raise ValueError(
            f"{where}: {fallback.name!r} is a {fallback.workload} pool and {pool.name!r} a "
            f"{pool.workload} pool; a fallback serves the same workload"
        )


class PlatformConfig(Model):
    environment: Literal["dev", "staging", "prod"]
    region: str = "us-east-1"
    tags: dict[str, str] = Field(default_factory=dict)
    cluster: ClusterConfig = ClusterConfig()
    network: NetworkConfig = NetworkConfig()
    gpu_pools: list[GpuPoolConfig] = Field(default_factory=list)
    gpu_software: GpuSoftwareConfig = GpuSoftwareConfig()
    budget: BudgetConfig | None = None
    observability: ObservabilityConfig = ObservabilityConfig()
    tracing: TracingConfig = TracingConfig()
    alerting: AlertingConfig = AlertingConfig()
    gateway: GatewayConfig = GatewayConfig()
    feature_store: FeatureStoreConfig | None = None  # Feast (docs/feature-store.md)
    images: ImagesConfig = ImagesConfig()
    batch: BatchConfig = BatchConfig()
    policies: PolicyConfig = PolicyConfig()
    registry: RegistryConfig = RegistryConfig()
    use_cases: list[str] = Field(default_factory=list)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", v):
            raise ValueError(f"{v!r} is not an AWS region name (e.g. 'us-east-1')")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> PlatformConfig:
        names = [p.name for p in self.gpu_pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gpuPools: duplicate pool names {', '.join(dupes)}")
        for i, pool in enumerate(self.gpu_pools):
            if pool.fallback_pool and pool.fallback_pool not in names:
                raise ValueError(
                    f"gpuPools[{i}].fallbackPool: {pool.fallback_pool!r} is not a pool in this "
                    f"stack; allowed: {', '.join(n for n in names if n != pool.name)}"
                )
            if pool.fallback_pool == pool.name:
                raise ValueError(f"gpuPools[{i}].fallbackPool: a pool cannot fall back to itself")
            if pool.fallback_pool:
                _check_fallback(i, pool, self.pool(pool.fallback_pool))
            if self.cluster.mode == "existing" and pool.mechanism != "existing":
                raise ValueError(
                    f"gpuPools[{i}].mechanism: {pool.mechanism!r} needs cluster.mode 'eks' (Tandem "
                    "creates the node role, OIDC provider and subnets it uses); with an existing "
                    "cluster use 'existing' (nodes already labelled and tainted)"
                )
            if self.cluster.mode == "eks" and pool.mechanism == "existing":
                raise ValueError(
                    f"gpuPools[{i}].mechanism: 'existing' needs cluster.mode 'existing'; "
                    "allowed with eks: 'managed', 'karpenter'"
                )
        if (
            self.environment == "prod"
            and self.cluster.mode == "eks"
            and self.cluster.endpoint_public_access
            and not self.cluster.public_access_cidrs
        ):
            raise ValueError(
                "cluster.publicAccessCidrs: a prod cluster with a public API endpoint must "
                "restrict it to CIDRs (or set endpointPublicAccess: false)"
            )
        if self.cluster.mode == "existing" and "network" in self.model_fields_set:
            raise ValueError(
                "network: Tandem builds a VPC only when cluster.mode is 'eks'; an existing "
                "cluster brings its own network (remove tandem:network)"
            )
        if self.feature_store is not None and self.cluster.mode != "eks":
            raise ValueError(
                "featureStore: Feast keeps its registry and offline store on S3 through IRSA, "
                "which Tandem sets up in cluster.mode 'eks' only; remove tandem:featureStore on "
                "an existing cluster"
            )
        self._check_gpu_software()
        self._check_alerting()
        self._check_batch()
        self._check_production()
        self._check_registry()
        return self

    def _check_registry(self) -> None:
        reg = self.registry
        if not reg.enabled:
            return
        if self.cluster.mode == "existing":
            missing = [k for k in ("dsn_secret", "artifact_bucket") if getattr(reg, k) is None]
            if missing:
                raise ValueError(
                    "registry: on an existing cluster Tandem creates no database or bucket; set "
                    + " and ".join(f"registry.{to_camel(k)}" for k in missing)
                    + " (a Secret with the Postgres DSN, and an s3:// artifact location)"
                )
            if "database" in reg.model_fields_set:
                raise ValueError("registry.database: applies to cluster.mode eks (RDS); remove it")
            if not str(reg.artifact_bucket).startswith("s3://"):
                raise ValueError("registry.artifactBucket: on an existing cluster, an s3:// URI")
        else:
            for key in ("dsn_secret", "artifacts_role_arn"):
                if getattr(reg, key) is not None:
                    raise ValueError(
                        f"registry.{to_camel(key)}: applies to an existing cluster; on EKS Tandem "
                        "creates the database and the artifact bucket's role"
                    )

    def _check_gpu_software(self) -> None:
        if self.gpu_software.mig_strategy == "none":
            return
        catalog = load_catalog()
        no_mig = sorted(
            f"{p.name} ({catalog.get(p.primary_instance).gpu.name})"
            for p in self.gpu_pools
            if not catalog.get(p.primary_instance).gpu.mig
        )
        if no_mig:
            raise ValueError(
                f"gpuSoftware.migStrategy: {self.gpu_software.mig_strategy!r} partitions GPUs "
                f"that support MIG, but pools {', '.join(no_mig)} run GPUs without MIG (it would "
                "do nothing there); allowed: 'none', or MIG-capable GPUs only: "
                + ", ".join(sorted(n for n, g in catalog.gpus.items() if g.mig))
            )

    def _check_batch(self) -> None:
        b = self.batch
        if not b.enabled:
            return
        if not self.gateway.enabled or self.gateway.redis == "none":
            raise ValueError(
                "batch.enabled: the Batch API runs on the gateway and queues its work in the "
                "gateway's Redis; set gateway.enabled: true and gateway.redis to 'in-cluster' or "
                "'elasticache'"
            )
        if self.cluster.mode == "existing" and not b.files_bucket:
            raise ValueError(
                "batch.filesBucket: on an existing cluster Tandem creates no S3 bucket; name the "
                "bucket the batch files go to (its access is granted to the pods by the cluster)"
            )

    def _check_alerting(self) -> None:
        receivers = [r.name for r in self.alerting.receivers]
        for i, name in enumerate(self.budget.notify if self.budget else []):
            if name not in receivers:
                raise ValueError(
                    f"budget.notify[{i}]: {name!r} is not a receiver in tandem:alerting; "
                    f"allowed: {', '.join(receivers) or 'none (define alerting.receivers)'}"
                )

    def _check_production(self) -> None:
        """The guard rails docs/policies.md calls mandatory in production, as config errors."""
        if self.environment != "prod":
            return
        if self.gpu_pools and self.budget is None:
            raise ValueError(
                "budget: a prod stack with GPU pools needs tandem:budget.monthlyUsd (without it "
                "the stack-gpu-budget policy has nothing to check and no budget alert fires)"
            )
        if not self.alerting.receivers:
            raise ValueError(
                "alerting.receivers: a prod stack must send its alerts somewhere (email, "
                "slack, webhook or pagerduty); without receivers every alert goes nowhere"
            )
        if self.policies.enforcement not in (None, "mandatory"):
            raise ValueError(
                f"policies.enforcement: {self.policies.enforcement!r} turns every guard rail "
                "off in prod; allowed: 'mandatory' (exempt single findings with "
                "tandem:policies.waivers, each with a reason)"
            )
        lowered = sorted(
            rule
            for rule, level in self.policies.overrides.items()
            if rule in PROD_GUARD_RAILS and level != "mandatory"
        )
        if lowered:
            raise ValueError(
                f"policies.overrides: {', '.join(lowered)} are production guard rails and stay "
                "mandatory in prod; exempt a resource with a waiver and a reason instead"
            )

    def pool(self, name: str) -> GpuPoolConfig:
        for p in self.gpu_pools:
            if p.name == name:
                return p
        raise KeyError(
            f"no GPU pool {name!r}; pools: {', '.join(p.name for p in self.gpu_pools) or 'none'}"
        )

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or f"tandem-{self.environment}"

    def base_tags(self) -> dict[str, str]:
        """AWS tags every taggable resource carries (user tags win over defaults)."""
        return {
            "environment": self.environment,
            "use-case": "platform",
            "managed-by": "tandem",
            **self.tags,
        }


# --- what the stack runs ----------------------------------------------------------------------


def image_services(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> list[str]:
    """Which of Tandem's own images (pins.TANDEM_IMAGES) this stack runs: the gateway when it
    routes to a use case, the serving image (every RayService runs it) when there is one."""
    services = []
    if config.gateway.enabled and any(uc.gateway is not None for uc in use_cases):
        services.append("gateway")
    if use_cases:
        services.append("serving")
    return services


def image_errors(config: PlatformConfig, use_cases: list[UseCaseSpec]) -> list[str]:
    """On an existing cluster there is no ECR to build into: every image the stack runs must be
    named in tandem:images."""
    if config.cluster.mode != "existing":
        return []
    return [
        f"images.{service}: required on an existing cluster (Tandem builds into ECR only in eks "
        f"mode); build {service}/Dockerfile, push it to a registry the cluster can pull from and "
        f"set tandem:images.{service} to its registry/name:tag"
        for service in image_services(config, use_cases)
        if not config.images.override(service)
    ]


# --- parsing ---------------------------------------------------------------------------------


def parse_config(raw: dict[str, Any], source: str = "stack config") -> PlatformConfig:
    """Validate a raw config mapping (camelCase keys, without the `tandem:` prefix)."""
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, PlatformConfig), source) from None


def namespace_config(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"tandem:gpuPools": [...], "aws:region": ...}` -> `{"gpuPools": [...], "region": ...}`.

    Keys of other namespaces are ignored except `aws:region`, which seeds `region` so the
    provider and the platform cannot disagree about where things are. Secret values (gateway
    keys) are read by the program as Pulumi secrets, not through the schema.
    """
    raw: dict[str, Any] = {}
    for key, value in flat.items():
        ns, _, name = key.partition(":")
        if ns == CONFIG_NAMESPACE and (
            name.startswith(SECRET_PREFIXES) or name in NAMED_SECRET_KEYS
        ):
            continue
        if ns == CONFIG_NAMESPACE:
            raw[name] = value
        elif key == "aws:region":
            raw.setdefault("region", value)
    return raw


def pulumi_config_values(flat: dict[str, Any]) -> dict[str, str]:
    """Stack-file values in the form the Pulumi runtime stores config: strings, JSON for objects."""
    out = {}
    for key, value in flat.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = "<secret>"  # offline runs cannot decrypt; the value never matters to a plan
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out
