"""Serve-config builder: `ModelDeployment`s → the Ray Serve config (`applications:`).

Pure (no pulumi, no ray): the same dict is written by `tandem serve --local` for a local Ray and
embedded as `serveConfigV2` in the RayService, so what a developer ran is what the cluster runs.
LLMs go through `ray.serve.llm:build_openai_app` (vLLM batches continuously; Serve does admission,
routing and replica autoscaling); the `batch` kind through `serving.batch_app:build_app`, whose
deployment batches with `@serve.batch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from gpu_pools.contract import SchedulingContract
from vocabulary.deployment import ModelDeployment

SERVE_PORT = 8000
LLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
BATCH_IMPORT_PATH = "serving.batch_app:build_app"
BATCH_DEPLOYMENT = "BatchEmbedder"
# Ray's accelerator_type values (ray.util.accelerators) for the GPU classes a catalog names.
RAY_ACCELERATORS = ("A10G", "L4", "L40S", "A100", "H100", "H200", "B200", "T4", "V100", "A10")
# vLLM on CPU reserves its KV cache from this many GiB (VLLM_CPU_KVCACHE_SPACE) at least.
CPU_KV_SPACE_MIN_GIB = 1


def route_prefix(deployment: ModelDeployment) -> str:
    """Each deployment's OpenAI API lives under /<name>/v1, so one RayService serves several."""
    return f"/{deployment.name}"


def ray_accelerator(gpu: str) -> str | None:
    """`A100-80GB` → `A100`: Ray labels nodes with the family, the pool pins the exact model."""
    family = gpu.split("-")[0].upper()
    return family if family in RAY_ACCELERATORS else None


def autoscaling_config(d: ModelDeployment) -> dict[str, Any]:
    a = d.autoscaling
    cfg: dict[str, Any] = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": d.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
    }
    if a.initial_replicas is not None:
        cfg["initial_replicas"] = a.initial_replicas
    return cfg


def _deployment_options(d: ModelDeployment) -> dict[str, Any]:
    return {
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.admission.max_queued_requests,
        "autoscaling_config": autoscaling_config(d),
    }


def engine_kwargs(d: ModelDeployment) -> dict[str, Any]:
    """vLLM engine arguments, only the ones set (vLLM's own defaults stay authoritative)."""
    e = d.engine
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": e.tensor_parallel_size,
        "pipeline_parallel_size": e.pipeline_parallel_size,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "enable_prefix_caching": e.enable_prefix_caching,
        "dtype": e.dtype,
        "kv_cache_dtype": e.kv_cache_dtype,
    }
    if d.uses_gpu:
        kwargs["gpu_memory_utilization"] = e.gpu_memory_utilization
    else:
        kwargs["enforce_eager"] = True  # no CUDA graphs on CPU
    if e.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = e.max_num_batched_tokens
    if e.quantization:
        kwargs["quantization"] = e.quantization
    if d.revision:
        kwargs["revision"] = d.revision
    if d.lora:
        kwargs |= {
            "enable_lora": True,
            "max_loras": d.lora.max_loras,
            "max_lora_rank": d.lora.max_lora_rank,
            "max_cpu_loras": d.lora.max_cpu_loras or d.lora.max_adapters_per_replica,
        }
    return kwargs


def cpu_kv_space_gib(d: ModelDeployment) -> int:
    """KV cache GiB for vLLM on CPU, sized from the spec (only local / test runs use it)."""
    from gpu_pools import fit  # local: keeps this module's import graph small

    size = fit.lookup(d.model, d.source)
    if size is None:
        return CPU_KV_SPACE_MIN_GIB * 2
    per_token = size.kv_bytes_per_token(fit.kv_dtype_bytes(d.engine.kv_cache_dtype, "float32"))
    need = per_token * d.engine.max_model_len * d.engine.max_num_seqs / fit.GIB
    return max(CPU_KV_SPACE_MIN_GIB, math.ceil(need))


def llm_config(d: ModelDeployment) -> dict[str, Any]:
    """One `LLMConfig` (ray.serve.llm) as a plain dict."""
    source: Any = {"bucket_uri": d.source} if d.source_kind == "s3" else d.source
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": d.model, "model_source": source},
        "engine_kwargs": engine_kwargs(d),
        "deployment_config": _deployment_options(d),
    }
    if d.uses_gpu:
        if accel := ray_accelerator(d.gpu):
            cfg["accelerator_type"] = accel
    else:
        # The default placement asks for a GPU bundle and waits forever on a CPU-only Ray.
        cfg["placement_group_config"] = {"bundles": [{"CPU": d.cpus_per_replica}]}
        cfg["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(cpu_kv_space_gib(d))}}
    if d.lora:
        lora: dict[str, Any] = {"max_num_adapters_per_replica": d.lora.max_adapters_per_replica}
        if d.lora.dynamic_loading_path:
            lora["dynamic_lora_loading_path"] = d.lora.dynamic_loading_path
        cfg["lora_config"] = lora
    return cfg


def llm_application(d: ModelDeployment) -> dict[str, Any]:
    return {
        "name": d.name,
        "route_prefix": route_prefix(d),
        "import_path": LLM_IMPORT_PATH,
        "args": {"llm_configs": [llm_config(d)]},
    }


def batch_application(d: ModelDeployment) -> dict[str, Any]:
    """Tandem's `@serve.batch` app; batch knobs ride in user_config so they retune in place."""
    actor: dict[str, Any] = {"num_cpus": d.cpus_per_replica}
    if d.uses_gpu:
        actor["num_gpus"] = 1
    if d.memory_gib_per_replica:
        actor["memory"] = int(d.memory_gib_per_replica * 1024**3)
    return {
        "name": d.name,
        "route_prefix": route_prefix(d),
        "import_path": BATCH_IMPORT_PATH,
        "args": {"model_id": d.model, "source": d.source},
        "deployments": [
            {
                "name": BATCH_DEPLOYMENT,
                **_deployment_options(d),
                "ray_actor_options": actor,
                "user_config": {
                    "max_batch_size": d.batching.max_batch_size,
                    "batch_wait_timeout_s": d.batching.batch_wait_timeout_s,
                },
            }
        ],
    }


def application(d: ModelDeployment) -> dict[str, Any]:
    return llm_application(d) if d.kind == "llm" else batch_application(d)


def serve_config(
    deployments: list[ModelDeployment], *, host: str = "0.0.0.0", port: int = SERVE_PORT
) -> dict[str, Any]:
    """The whole Serve config for one use case (one RayService)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [application(d) for d in deployments],
    }


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def model_size(d: ModelDeployment) -> Any:
    """The architecture (`gpu_pools.fit.ModelSize`) or None: config.json beats the `size:` key
    beats matching the id / source against the table."""
    from gpu_pools import fit

    if d.config_json:
        return fit.size_from_config(d.config_json, d.model)
    if d.size:
        return fit.size_by_name(d.size)
    return fit.lookup(d.model, d.source)


# Local disk a worker needs beyond the weights it downloads: logs, Ray's spill and the vLLM
# compile cache. Weights from S3 or the Hugging Face Hub land on the node's disk before vLLM
# loads them (KubeRay's LLM samples request ephemeral storage for the same reason).
DISK_BASE_GIB = 10
DISK_UNKNOWN_MODEL_GIB = 50


def disk_gib(d: ModelDeployment) -> int:
    """Ephemeral storage a worker requests: the downloaded weights with 50 % headroom (the
    checkpoint's safetensors and vLLM's own copy while it loads) plus DISK_BASE_GIB."""
    if d.source_kind == "local" or d.kind == "batch":
        return DISK_BASE_GIB  # the model is in the image or on a mounted volume
    try:
        size = model_size(d)
    except (OSError, ValueError, KeyError):  # the plan-time memory_fit check reports these
        size = None
    if size is None:
        return DISK_UNKNOWN_MODEL_GIB
    return DISK_BASE_GIB + math.ceil(size.weights_gib(d.engine.dtype, d.engine.quantization) * 1.5)


@dataclass(frozen=True)
class WorkerShape:
    """One Ray worker pod per model replica: what it requests and where it lands."""

    gpus: int
    cpus: float
    memory_gib: float
    shm_gib: float
    on_gpu_pool: bool
    disk_gib: int = DISK_BASE_GIB


def worker_shape(d: ModelDeployment, contract: SchedulingContract | None) -> WorkerShape:
    """GPUs = TP × PP; CPU and memory a GPU's share of the node; /dev/shm for NCCL and objects.

    The plan-time checks and the RayService read this one function, so the worker group's
    `nvidia.com/gpu` limit can never disagree with the engine's parallelism.
    """
    gpus = d.gpus_per_replica
    disk = disk_gib(d)
    if not gpus or contract is None:
        memory = d.memory_gib_per_replica or 4.0
        shm = max(1.0, round(memory * 0.3, 1))
        return WorkerShape(0, d.cpus_per_replica, memory, shm, False, disk)
    share = gpus / max(contract.gpus_per_node, 1)
    # Leave ~10% of the node and two vCPUs for kubelet, daemonsets and the device plugin.
    cpus = (
        max(d.cpus_per_replica, math.floor(max(contract.vcpu - 2, 1) * share))
        if contract.vcpu
        else max(d.cpus_per_replica, 4.0 * gpus)
    )
    memory = math.floor(contract.memory_gib * 0.9 * share) if contract.memory_gib else 16.0 * gpus
    if d.memory_gib_per_replica:
        memory = d.memory_gib_per_replica
    shm = min(max(2.0, math.floor(memory * 0.3)), 64.0)
    return WorkerShape(gpus, float(cpus), float(memory), float(shm), True, disk)
