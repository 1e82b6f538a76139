"""`ModelDeployment`: what a product team declares about one model, validated before anything runs.

Pure (pydantic only): the builder, the plan-time checks, the Pulumi components and the CLI all read
the same object, so an error surfaces once, at load time, naming the field path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vocabulary.labels import dns_label
from vocabulary.rollout import RegistryRef

# The engine fields the `batch` kind reads: the memory fit of its model on the GPU.
BATCH_ENGINE_FIELDS = frozenset({"gpu_memory_utilization", "dtype"})
# vLLM's supported LoRA ranks (vllm.config.LoRAConfig.possible_max_ranks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class _Strict(BaseModel):
    """Unknown keys are errors: a typo such as `max_num_seq` must not silently fall back."""

    model_config = ConfigDict(extra="forbid")


class EngineArgs(_Strict):
    """The vLLM engine arguments a platform team tunes; passed to vLLM unchanged."""

    tensor_parallel_size: int = Field(1, ge=1, le=64)
    pipeline_parallel_size: int = Field(1, ge=1, le=64)
    max_model_len: int = Field(8192, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=0.99)
    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=16)
    enable_prefix_caching: bool = True
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes"] | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class LoraAdapter(_Strict):
    name: str
    source: str
    rank: int | None = Field(None, ge=1)


class Lora(_Strict):
    """LoRA adapters served on top of the base model, multiplexed per replica."""

    adapters: list[LoraAdapter] = Field(default_factory=list)
    dynamic_loading_path: str | None = None  # s3://bucket/prefix holding one folder per adapter
    max_loras: int = Field(4, ge=1)  # adapters resident on the GPU at once (vLLM max_loras)
    max_cpu_loras: int | None = Field(None, ge=1)
    max_lora_rank: int = 16
    max_adapters_per_replica: int = Field(16, ge=1)

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: int) -> int:
        if value not in LORA_RANKS:
            raise ValueError(f"max_lora_rank {value} is not one vLLM supports: {LORA_RANKS}")
        return value

    @field_validator("dynamic_loading_path")
    @classmethod
    def _remote(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("s3://", "gs://", "abfss://", "azure://")):
            raise ValueError("dynamic_loading_path must be an s3:// (or gs://, abfss://) URI")
        return value.rstrip("/") if value else value


class Autoscaling(_Strict):
    """Serve replica autoscaling; `min_replicas: 0` scales to zero when idle."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float | None = Field(None, gt=0)  # default: from the engine
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class Admission(_Strict):
    """What each replica accepts before Serve queues (or rejects with 503) further requests."""

    max_ongoing_requests: int | None = Field(None, ge=1)  # default: from the engine / batch size
    max_queued_requests: int = Field(-1, ge=-1)  # -1: unbounded


class Batching(_Strict):
    """`@serve.batch` knobs for the `batch` kind (vLLM batches LLMs continuously on its own)."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)


class Slo(_Strict):
    ttft_p95_ms: float | None = Field(None, gt=0)
    itl_p95_ms: float | None = Field(None, gt=0)
    latency_p95_ms: float | None = Field(None, gt=0)  # batch kind: whole request


class ModelDeployment(_Strict):
    """One model served by one Serve application inside a use case's RayService."""

    name: str
    model: str  # the id callers use (OpenAI `model` field)
    # s3://..., a Hugging Face id (org/name), or a local path; with `registry:` the registered
    # version's source, filled in when the stack resolves the reference (vocabulary.registry)
    source: str = ""
    registry: RegistryRef | None = None
    # the model version the metrics' `model_version` label carries: the registry version when
    # resolved from the registry, else this (default: `revision`, else "main")
    version: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,63}$")
    kind: Literal["llm", "batch"] = "llm"
    gpu: str = "cpu"  # GPU class from the catalog (L4, L40S, A100, H100...) or "cpu"
    size: str | None = None  # key in gpu_pools/model_sizes.yaml when the id does not match one
    config_json: str | None = None  # path to the model's config.json (overrides `size`)
    revision: str | None = None
    engine: EngineArgs = Field(default_factory=EngineArgs)
    lora: Lora | None = None
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    admission: Admission = Field(default_factory=Admission)
    batching: Batching = Field(default_factory=Batching)
    slo: Slo = Field(default_factory=Slo)
    cpus_per_replica: float = Field(1.0, gt=0)
    memory_gib_per_replica: float | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return dns_label(value, "deployment name")

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, value: str) -> str:
        from vocabulary.catalog import load_catalog

        if value.strip().lower() == "cpu":
            return "cpu"
        known = sorted(load_catalog().gpus)
        gpu = value.strip().upper()
        # A family (`A100`) matches its memory variants (`A100-40GB`, `A100-80GB`).
        if not any(k.upper() == gpu or k.upper().startswith(gpu + "-") for k in known):
            raise ValueError(f"gpu {value!r} is not in the GPU catalog: {known} or 'cpu'")
        return gpu

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _where_from(self) -> ModelDeployment:
        if self.registry is None and not self.source:
            raise ValueError(
                "source must be an s3:// URI, a Hugging Face id or a local path (or take the "
                "model from the registry: registry: {name: ..., alias: champion})"
            )
        if self.registry is not None and (self.source or self.version):
            which = "source" if self.source else "version"
            raise ValueError(
                f"{which}: a deployment with registry: takes its source and version from the "
                f"registered version ({self.registry.pointer}); remove {which}"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeployment:
        if self.kind == "batch" and self.lora is not None:
            raise ValueError("lora applies to kind 'llm' only")
        if self.kind == "llm" and self.gpu == "cpu" and self.engine.gpus_per_replica > 1:
            raise ValueError("tensor/pipeline parallelism needs a GPU class, not 'cpu'")
        # Settings that would be accepted and do nothing for this kind or hardware:
        if self.kind == "llm" and "batching" in self.model_fields_set:
            raise ValueError(
                "batching applies to kind 'batch' (@serve.batch); vLLM batches an LLM "
                "continuously: tune engine.max_num_seqs and engine.max_num_batched_tokens"
            )
        if self.kind == "batch":
            ignored = sorted(self.engine.model_fields_set - BATCH_ENGINE_FIELDS)
            if ignored:
                raise ValueError(
                    f"engine.{', engine.'.join(ignored)}: vLLM settings do nothing for kind "
                    "'batch' (it runs Tandem's @serve.batch app); allowed for batch: "
                    + ", ".join(f"engine.{f}" for f in sorted(BATCH_ENGINE_FIELDS))
                )
        if self.gpu == "cpu" and "gpu_memory_utilization" in self.engine.model_fields_set:
            raise ValueError(
                "engine.gpu_memory_utilization does nothing on 'cpu' (vLLM sizes its CPU KV "
                "cache from the spec); set gpu to a GPU class or remove it"
            )
        return self

    @property
    def model_version(self) -> str:
        """The `model_version` label value: the registry version, `version`, `revision`, main."""
        return self.version or self.revision or "main"

    @property
    def source_kind(self) -> Literal["s3", "hf", "local"]:
        if self.source.startswith("s3://"):
            return "s3"
        if self.source.startswith(("/", "./", "../", "~")) or self.source.count("/") != 1:
            return "local"
        return "hf"

    @property
    def uses_gpu(self) -> bool:
        return self.gpu != "cpu"

    @property
    def gpus_per_replica(self) -> int:
        if not self.uses_gpu:
            return 0
        return self.engine.gpus_per_replica if self.kind == "llm" else 1

    @property
    def max_ongoing_requests(self) -> int:
        """Serve's per-replica admission; never below what the engine can run at once."""
        if self.admission.max_ongoing_requests is not None:
            return self.admission.max_ongoing_requests
        if self.kind == "llm":
            return max(self.engine.max_num_seqs, 1) * 2
        return self.batching.max_batch_size * 2

    @property
    def target_ongoing_requests(self) -> float:
        """Scale out when a replica holds this many requests: the engine's batch, kept full."""
        if self.autoscaling.target_ongoing_requests is not None:
            return self.autoscaling.target_ongoing_requests
        if self.kind == "llm":
            return float(max(1, int(self.engine.max_num_seqs * 0.8)))
        return float(self.batching.max_batch_size)
