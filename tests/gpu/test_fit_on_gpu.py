"""The plan's fit math against what a real GPU holds.

`tandem plan` refuses a ModelDeployment whose weights + KV cache + overhead exceed its GPUs'
memory (gpu_pools/fit.py), so that vLLM does not crash-loop at start-up in the cluster. That
arithmetic is only as good as its numbers. Here every architecture the plan knows by name is
materialised on the GPU this runs on (random weights, bfloat16, Hugging Face transformers with
SDPA attention) and what it really takes is compared with what the plan assumes:

- the catalog's memory for this GPU model against what CUDA reports (vLLM budgets from that);
- the weights, from `model_sizes.yaml` and from `size_from_config` on the model's config.json;
- the KV cache per token, from a real prefill's cache;
- the overhead outside weights and KV (activations of one prefill chunk of vLLM's default
  `max_num_batched_tokens` plus the CUDA context), against `fit.overhead_gib_per_gpu`.

Models are random-initialised because no weights can be downloaded where this runs; memory does
not depend on the values.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass

import pytest

from gpu_pools import fit
from vocabulary.catalog import load_catalog

pytestmark = pytest.mark.gpu

GIB = fit.GIB
# vLLM's default prefill step on H100/H200-class GPUs (fit.default_batched_tokens).
PREFILL_CHUNK = 8192
KV_BATCH, KV_TOKENS = 4, 1024

# Published config.json values of the models model_sizes.yaml names (Llama-style decoders; Qwen2's
# q/k/v biases are approximated by LlamaConfig's attention_bias, within 0.01 %).
COLUMNS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
)
ROWS = {
    "llama-3.2-1b": (128256, 2048, 8192, 16, 32, 8, 64, True),
    "llama-3.2-3b": (128256, 3072, 8192, 28, 24, 8, 128, True),
    "mistral-7b": (32768, 4096, 14336, 32, 32, 8, 128, False),
    "qwen2.5-7b": (152064, 3584, 18944, 28, 28, 4, 128, False),
    "llama-3.1-8b": (128256, 4096, 14336, 32, 32, 8, 128, False),
    "llama-2-13b": (32000, 5120, 13824, 40, 40, 40, 128, False),
    "mixtral-8x7b": (32000, 4096, 14336, 32, 32, 8, 128, False),
    "llama-3.1-70b": (128256, 8192, 28672, 80, 64, 8, 128, False),
}
EXTRA: dict[str, dict] = {
    "qwen2.5-7b": {"attention_bias": True},
    "mixtral-8x7b": {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2},
}
CONFIGS = {
    name: {**dict(zip(COLUMNS, row, strict=True)), **EXTRA.get(name, {})}
    for name, row in ROWS.items()
}
# An encoder of 22.7M parameters: no KV cache, and its bytes are not worth GPU time.
NOT_DECODERS = {"all-minilm-l6-v2"}
# Build at most this share of the GPU; bigger models are built at two depths and extrapolated
# (weights and KV cache are linear in the layer count; a prefill's activations are per layer).
BUILD_SHARE = 0.6


@dataclass
class Measured:
    """What one architecture takes on the GPU, in bytes, at its full depth."""

    params: int
    weights: int
    kv_per_token: float
    activation_peak: int
    non_torch: int
    built_layers: tuple[int, ...]


def test_every_named_architecture_is_measured():
    """A size added to model_sizes.yaml gets a config here, or it is never checked on a GPU."""
    assert sorted(CONFIGS) == sorted(set(fit.known_sizes()) - NOT_DECODERS)


def _gpu_entry(torch):
    """The catalog's GPU model for the device: name match, then the closest memory."""
    name = torch.cuda.get_device_name(0).replace(" ", "").lower()
    total = torch.cuda.mem_get_info()[1] / GIB
    gpus = load_catalog().gpus.values()
    matches = [g for g in gpus if g.aws_name.replace(" ", "").lower() in name]
    assert matches, f"{torch.cuda.get_device_name(0)!r} is not in vocabulary/catalog.yaml"
    return min(matches, key=lambda g: abs(g.memory_gib - total)), total


def test_catalog_memory_is_what_cuda_reports(torch_cuda, report):
    """vLLM's budget is utilization x CUDA's total: a catalog figure above it passes deployments
    that crash-loop; one far below wastes GPUs."""
    entry, total = _gpu_entry(torch_cuda)
    report["device"] = {
        "name": torch_cuda.cuda.get_device_name(0),
        "cuda_total_gib": round(total, 3),
        "catalog_gpu": entry.name,
        "catalog_memory_gib": entry.memory_gib,
        "catalog_usable_memory_gib": entry.usable_memory_gib,
        "torch": torch_cuda.__version__,
    }
    assert entry.usable_memory_gib <= total + 0.01, (
        f"fit checks assume {entry.name} has {entry.usable_memory_gib} GiB; CUDA reports "
        f"{total:.3f} GiB: set cuda_memory_gib: {total:.2f} in vocabulary/catalog.yaml"
    )
    assert entry.usable_memory_gib >= 0.98 * total


def _settle(torch) -> int:
    gc.collect()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def _measure(torch, name: str, layers: int) -> Measured:
    """Build `name` with `layers` layers on the GPU, measure it, free it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(CONFIGS[name], num_hidden_layers=layers)
    config = AutoConfig.for_model(
        spec.pop("model_type", "llama"), max_position_embeddings=PREFILL_CHUNK * 2, **spec
    )
    torch.cuda.empty_cache()
    before = _settle(torch)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    model.eval()
    weights = _settle(torch) - before
    params = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        ids = torch.randint(0, config.vocab_size, (KV_BATCH, KV_TOKENS), device="cuda")
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        held = _settle(torch)
        del cache
        kv_per_token = (held - _settle(torch)) / (KV_BATCH * KV_TOKENS)

        ids = torch.randint(0, config.vocab_size, (1, PREFILL_CHUNK), device="cuda")
        start = _settle(torch)
        torch.cuda.reset_peak_memory_stats()
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        activation_peak = torch.cuda.max_memory_allocated() - start
    free, total = torch.cuda.mem_get_info()
    non_torch = (total - free) - torch.cuda.memory_reserved()
    del model
    _settle(torch)
    torch.cuda.empty_cache()
    return Measured(params, weights, kv_per_token, activation_peak, non_torch, (layers,))


def _extrapolate(small: Measured, large: Measured, layers: int) -> Measured:
    """Weights, parameters and KV cache are linear in depth; keep the larger activation peak."""
    (l1,), (l2,) = small.built_layers, large.built_layers

    def at_depth(a: float, b: float) -> float:
        """The line through (l1, a) and (l2, b), at the model's real depth."""
        return a + (b - a) * (layers - l1) / (l2 - l1)

    return Measured(
        params=round(at_depth(small.params, large.params)),
        weights=round(at_depth(small.weights, large.weights)),
        kv_per_token=at_depth(small.kv_per_token, large.kv_per_token),
        activation_peak=max(small.activation_peak, large.activation_peak),
        non_torch=max(small.non_torch, large.non_torch),
        built_layers=(l1, l2),
    )


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def measured(request, torch_cuda, report):
    """One architecture's measurements (one model resident on the GPU at a time)."""
    name = request.param
    size = fit.size_by_name(name)
    total = torch_cuda.cuda.mem_get_info()[1]
    if size.params * 2 <= BUILD_SHARE * total:
        result = _measure(torch_cuda, name, size.layers)
    else:
        small, large = _measure(torch_cuda, name, 2), _measure(torch_cuda, name, 4)
        result = _extrapolate(small, large, size.layers)
    report.setdefault("models", {})[name] = {
        **asdict(result),
        "plan_weights": size.params * 2,
        "plan_kv_per_token": size.kv_bytes_per_token(2),
        "plan_overhead": fit.overhead_gib_per_gpu(size, PREFILL_CHUNK) * GIB,
        "prefill_chunk_tokens": PREFILL_CHUNK,
    }
    return name, result


def test_weights_are_what_the_plan_assumes(measured):
    name, got = measured
    plan = fit.size_by_name(name).params * 2
    assert abs(got.weights - plan) / plan < 0.02, (
        f"{name}: {got.weights / GIB:.2f} GiB on the GPU, plan assumes {plan / GIB:.2f} GiB"
    )


def test_config_json_estimate_counts_the_parameters(measured):
    """`config_json:` deployments (models not in model_sizes.yaml) are sized by this estimate."""
    name, got = measured
    estimated = fit.size_from_config(CONFIGS[name]).params
    assert abs(estimated - got.params) / got.params < 0.01


def test_kv_cache_per_token_is_what_the_plan_assumes(measured):
    name, got = measured
    plan = fit.size_by_name(name).kv_bytes_per_token(2)
    assert abs(got.kv_per_token - plan) / plan < 0.01, (
        f"{name}: {got.kv_per_token:.0f} B/token measured, plan assumes {plan:.0f}"
    )


def test_overhead_outside_weights_and_kv_is_covered(measured):
    """Activations of one prefill chunk plus the CUDA context must fit the plan's overhead,
    or a deployment the plan passes has no room for its KV cache."""
    name, got = measured
    plan = fit.overhead_gib_per_gpu(fit.size_by_name(name), PREFILL_CHUNK)
    overhead = got.activation_peak + got.non_torch
    assert overhead <= plan * GIB, (
        f"{name}: {got.activation_peak / GIB:.2f} GiB activations ({PREFILL_CHUNK} tokens) "
        f"+ {got.non_torch / GIB:.2f} GiB CUDA context > {plan:.2f} GiB planned"
    )
    # Not wastefully above either: the margin is for engine extras, not a guess.
    assert overhead >= 0.6 * plan * GIB
