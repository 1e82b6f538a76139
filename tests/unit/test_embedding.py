"""The numpy MiniLM: the few-rows (column-block) path and the batch (whole-matrix) path of every
product give the same vectors, so a lone query and the same query inside a batch embed alike."""

from __future__ import annotations

import numpy as np

from embedding import minilm as embedding
from embedding.minilm import Embedder

TEXTS = [
    "How do I reset my password on the website?",
    "How can I reset my password on the site?",
    "What is the capital of France?",
]


def test_lone_query_and_batched_query_embed_the_same() -> None:
    model = Embedder()
    alone = np.stack([model.encode([t])[0] for t in TEXTS])  # ~12 rows: column blocks
    long = " ".join(["and then some more words about passwords"] * 6)  # > 32 rows: whole matrices
    batched = model.encode([long, *TEXTS])[1:]
    assert alone.shape == (3, 384)
    np.testing.assert_allclose(alone, batched, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    sims = alone @ alone.T
    assert sims[0, 1] > 0.85 > 0.2 > sims[0, 2]  # a paraphrase is close, another topic is not


def test_block_product_matches_the_whole_product() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((384, 1152)).astype(np.float32)
    layer = {"w": w, "w_blocks": embedding._column_blocks(w)}
    for rows in (1, 14, embedding._SMALL_ROWS, embedding._SMALL_ROWS + 1):
        x = rng.standard_normal((rows, 384)).astype(np.float32)
        np.testing.assert_allclose(embedding._matmul(x, layer, "w"), x @ w, rtol=1e-4, atol=1e-4)
