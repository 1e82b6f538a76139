"""A tiny randomly initialised Llama with a chat template: the model local mode's LLM example,
the LLM test tier and the GPU benchmark serve (no hub access: everything is generated here).

    .venv-llm/bin/python -m serving.tiny_llm .tandem/models/tiny-llama

Its answers are noise (random weights); what it exercises is real: vLLM's engine, Ray Serve LLM,
the OpenAI endpoints, the metrics. Needs torch, transformers and tokenizers, which the LLM
environment (.venv-llm, `make llm-env`) and a GPU machine's Python have and the main .venv has
not; nothing else in Tandem imports this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    path: str | Path, shape: dict | None = None, vocab_size: int = 1000, dtype: str = "float32"
) -> Path:
    """A randomly initialised Llama + a BPE tokenizer with a chat template, saved to `path`.

    No hub access: the tokenizer is trained on a few hundred generated sentences. Needs torch,
    transformers and tokenizers (the LLM tier's and the GPU benchmark's environments).
    """
    import random

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.tiny_llm",
        description="Write a tiny random Llama + tokenizer (about 1 MB) for local LLM serving.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=".tandem/models/tiny-llama",
        help="folder to write (default .tandem/models/tiny-llama, where "
        "stacks/local/tiny-llm.yaml looks for it)",
    )
    args = parser.parse_args(argv)
    path = Path(args.path)
    if (path / "config.json").exists():
        print(f"{path}: already built")
        return
    build_random_llama(path)
    print(
        f"{path}: tiny Llama written; serve it with: tandem serve --local stacks/local/tiny-llm.yaml"
    )


if __name__ == "__main__":
    main()
