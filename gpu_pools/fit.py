"""Fit math: does a model's weights plus its KV cache fit the GPUs a replica gets?

Pure arithmetic on an architecture (from `model_sizes.yaml` or a model's config.json), so the plan
refuses a deployment that vLLM would reject at start-up and crash-loop on, with the numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from vocabulary.errors import InputError
from vocabulary.yamlfile import read_text

GIB = 1024**3
# Memory each GPU needs outside weights and KV cache: the CUDA context, plus the activations of the
# largest prefill step. Measured on an H200 by tests/gpu (torch 2.11, CUDA 13): the context took
# 0.68 GiB, and a prefill step's activation peak was T x (3 x intermediate x experts per token +
# 4 x hidden) x 2 bytes within 1 % for every dense model (Mixtral within 18 %). The margin covers
# what an engine adds to that (CUDA graphs, the sampler) and MoE implementations.
CUDA_CONTEXT_GIB = 0.75
ACTIVATION_MARGIN = 1.25

_WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "auto": 2.0}
# Quantized checkpoints: int4 with group scales (~4.5 bits), fp8 one byte.
_QUANT_BYTES = {"awq": 0.5625, "gptq": 0.5625, "bitsandbytes": 0.5625, "fp8": 1.0}
_KV_BYTES = {"auto": None, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0}


@dataclass(frozen=True)
class ModelSize:
    """The architecture numbers the fit math needs."""

    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int = 0  # MLP width (per expert); 0: 4 x hidden
    experts_per_token: int = 1  # MoE routing top-k (1 for dense models)
    context: int = 0  # max_position_embeddings: the longest max_model_len vLLM accepts; 0 unknown

    def weights_gib(self, dtype: str = "auto", quantization: str | None = None) -> float:
        return self.params * weight_bytes_per_param(dtype, quantization) / GIB

    def kv_bytes_per_token(self, kv_dtype_bytes: float) -> float:
        """K and V, every layer, every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_dtype_bytes

    def activation_bytes_per_token(self, dtype_bytes: float, tensor_parallel: int = 1) -> float:
        """Peak activations of one prefill step per token and GPU: the MLP's three
        intermediate-wide tensors (split by tensor parallelism, one set per routed expert) and a
        few hidden-wide copies of the residual stream."""
        mlp = 3 * (self.intermediate or 4 * self.hidden) * self.experts_per_token
        return (mlp / tensor_parallel + 4 * self.hidden * self.experts_per_token) * dtype_bytes


@cache
def _table() -> dict[str, dict]:
    return yaml.safe_load((Path(__file__).with_name("model_sizes.yaml")).read_text())


def known_sizes() -> list[str]:
    return sorted(_table())


class UnknownModelSize(ValueError):
    """A `size:` that names no architecture in model_sizes.yaml."""


def size_by_name(name: str) -> ModelSize:
    if name not in _table():
        raise UnknownModelSize(
            f"size {name!r} is not an architecture in gpu_pools/model_sizes.yaml; allowed: "
            f"{', '.join(known_sizes())} (or set config_json: to the model's config.json)"
        )
    row = _table()[name]
    return ModelSize(
        name,
        float(row["params"]),
        layers=int(row["layers"]),
        hidden=int(row["hidden"]),
        heads=int(row["heads"]),
        kv_heads=int(row["kv_heads"]),
        head_dim=int(row["head_dim"]),
        intermediate=int(row.get("intermediate", 0)),
        experts_per_token=int(row.get("experts_per_token", 1)),
        context=int(row.get("context", 0)),
    )


def lookup(*ids: str) -> ModelSize | None:
    """Match ids (model id, source, or its last path segment) against names and aliases."""
    wanted: set[str] = set()
    for raw in ids:
        if raw:
            wanted |= {raw.lower().rstrip("/"), raw.lower().rstrip("/").rsplit("/", 1)[-1]}
    for name, row in _table().items():
        keys = {name} | {a.lower() for a in row.get("aliases", [])}
        keys |= {a.rsplit("/", 1)[-1] for a in keys}
        if keys & wanted:
            return size_by_name(name)
    return None


def size_from_config(config: dict | str | Path, name: str = "config.json") -> ModelSize:
    """Architecture and an estimated parameter count from a Hugging Face config.json."""
    if not isinstance(config, dict):
        text = read_text(config, "model config (config_json)")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{config}: not JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise InputError(f"{config}: a model's config.json is a JSON object")
        return size_from_config(data, str(config))
    missing = [
        k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads") if k not in config
    ]
    if missing:
        raise InputError(
            f"{name}: no {', '.join(missing)}: not a transformer config.json; give `size:` instead"
        )
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    vocab = int(config.get("vocab_size") or 32000)
    experts = int(config.get("num_local_experts") or 1)
    top_k = int(config.get("num_experts_per_tok") or 1) if experts > 1 else 1
    attn = hidden * head_dim * (heads * 2 + kv_heads * 2)
    mlp = 3 * hidden * inter * experts
    embed = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    params = float(layers * (attn + mlp + 2 * hidden) + embed)
    context = int(config.get("max_position_embeddings") or 0)
    return ModelSize(name, params, layers, hidden, heads, kv_heads, head_dim, inter, top_k, context)


def weight_bytes_per_param(dtype: str, quantization: str | None) -> float:
    if quantization:
        return _QUANT_BYTES[quantization]
    return _WEIGHT_BYTES[dtype]


def kv_dtype_bytes(kv_cache_dtype: str, dtype: str) -> float:
    return _KV_BYTES.get(kv_cache_dtype) or _WEIGHT_BYTES[dtype]


@dataclass(frozen=True)
class FitResult:
    """All in GiB across the replica's GPUs; `fits` when weights + KV + overhead <= budget."""

    model: str
    gpus: int
    gpu_memory_gib: float
    utilization: float
    weights_gib: float
    kv_gib: float
    overhead_gib: float
    budget_gib: float
    kv_tokens_needed: int
    kv_tokens_fit: int

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.budget_gib

    def message(self, max_model_len: int, max_num_seqs: int) -> str:
        verdict = "fits" if self.fits else "does not fit"
        text = (
            f"{self.model} {verdict}: weights {self.weights_gib:.1f} GiB + KV cache "
            f"{self.kv_gib:.1f} GiB ({max_model_len} tokens x {max_num_seqs} seqs) + overhead "
            f"{self.overhead_gib:.1f} GiB = {self.needed_gib:.1f} GiB vs {self.gpus} x "
            f"{self.gpu_memory_gib:g} GiB x {self.utilization:g} = {self.budget_gib:.1f} GiB"
        )
        if not self.fits:
            seqs = self.kv_tokens_fit // max_model_len
            if seqs >= 1:
                text += f"; KV room for {self.kv_tokens_fit} tokens: max_num_seqs <= {seqs}"
            elif self.kv_tokens_fit > 0:
                text += (
                    f"; KV room for {self.kv_tokens_fit} tokens: not one sequence of "
                    f"{max_model_len} fits (max_model_len <= {self.kv_tokens_fit})"
                )
            else:
                text += "; the weights alone exceed the budget"
            text += "; or use more GPUs, quantization or kv_cache_dtype fp8"
        return text


def default_batched_tokens(gpu_memory_gib: float, gpu_model: str = "") -> int:
    """vLLM's default `max_num_batched_tokens` (its largest prefill step) in the OpenAI-server
    context Ray Serve LLM starts it in: it grows with the GPU (vllm/engine/arg_utils.py)."""
    if gpu_memory_gib >= 160:
        return 16384
    if gpu_memory_gib >= 70 and "a100" not in gpu_model.lower():
        return 8192
    return 2048


def overhead_gib_per_gpu(
    size: ModelSize, batched_tokens: int, dtype: str = "auto", tensor_parallel: int = 1
) -> float:
    """CUDA context plus the activations of a prefill step of `batched_tokens` tokens (with margin).

    Quantized weights still compute in 16-bit, so activations use the compute dtype's bytes."""
    per_token = size.activation_bytes_per_token(_WEIGHT_BYTES[dtype], tensor_parallel)
    return CUDA_CONTEXT_GIB + ACTIVATION_MARGIN * batched_tokens * per_token / GIB


def fit(
    size: ModelSize,
    *,
    gpus: int,
    gpu_memory_gib: float,
    gpu_memory_utilization: float,
    max_model_len: int,
    max_num_seqs: int,
    dtype: str = "auto",
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    extra_weights_gib: float = 0.0,
    max_num_batched_tokens: int | None = None,
    tensor_parallel: int = 1,
    gpu_model: str = "",
) -> FitResult:
    weights = size.params * weight_bytes_per_param(dtype, quantization) / GIB + extra_weights_gib
    per_token = size.kv_bytes_per_token(kv_dtype_bytes(kv_cache_dtype, dtype))
    tokens = max_model_len * max_num_seqs
    budget = gpus * gpu_memory_gib * gpu_memory_utilization
    # A prefill step holds at most max_num_batched_tokens, and never more than all sequences' tokens.
    step = min(max_num_batched_tokens or default_batched_tokens(gpu_memory_gib, gpu_model), tokens)
    overhead = overhead_gib_per_gpu(size, step, dtype, tensor_parallel) * gpus
    room = int((budget - weights - overhead) * GIB / per_token)
    return FitResult(
        model=size.name,
        gpus=gpus,
        gpu_memory_gib=gpu_memory_gib,
        utilization=gpu_memory_utilization,
        weights_gib=weights,
        kv_gib=tokens * per_token / GIB,
        overhead_gib=overhead,
        budget_gib=budget,
        kv_tokens_needed=tokens,
        kv_tokens_fit=room,
    )


def lora_gib(size: ModelSize, max_loras: int, max_lora_rank: int, dtype: str = "auto") -> float:
    """GPU memory vLLM reserves for resident adapters (A and B on q, k, v, o of every layer)."""
    per_layer = 4 * 2 * size.hidden * max_lora_rank
    return max_loras * size.layers * per_layer * _WEIGHT_BYTES[dtype] / GIB
