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
from typing import Annotated, Any, Literal

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
from vocabulary.labels import dns_label

CONFIG_NAMESPACE = "tandem"
SECRET_KEY_PREFIX = "gatewayKey-"  # tandem:gatewayKey-<id>: one team's raw API key (secret)
GPU_AMI_TYPES = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
K8S_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34")


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


class ClusterConfig(Model):
    mode: Literal["eks", "existing"] = "eks"
    name: str | None = None
    kubernetes_version: str = "1.33"
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
        if self.mode == "eks" and self.kubeconfig:
            raise ValueError("kubeconfig is only allowed when mode is 'existing'")
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
    capacity_reservation_ids: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        return dns_label(v, "pool name")

    @field_validator("expire_after", "consolidate_after")
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
        if self.mechanism != "karpenter" and self.expire_after != "720h":
            raise ValueError("expireAfter applies only to mechanism 'karpenter'")
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
    monthly_usd: float = Field(..., gt=0)
    alert_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    notify: list[str] = Field(default_factory=list)


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
    """One team's API key. The key itself is the Pulumi secret `tandem:gatewayKey-<id>`
    (`pulumi config set --secret tandem:gatewayKey-<id> ...`); only its hash reaches the cluster."""

    id: str
    team: str
    models: list[str] = Field(default_factory=lambda: ["*"])
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)

    @field_validator("id", "team")
    @classmethod
    def _dns(cls, v: str, info: ValidationInfo) -> str:
        return dns_label(v, f"key {info.field_name}")

    @property
    def secret_config_key(self) -> str:
        return f"{SECRET_KEY_PREFIX}{self.id}"


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
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
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
    gateway: GatewayConfig = GatewayConfig()
    policies: PolicyConfig = PolicyConfig()
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
        return self

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
        if ns == CONFIG_NAMESPACE and name.startswith(SECRET_KEY_PREFIX):
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
