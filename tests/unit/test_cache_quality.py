"""Quality floors of the default hit decision (`evidence`, no `decision:` set), each on a small
fixed slice of data training never saw (benchmarks/semcache_data.py has the splits), so that a
broken feature, a mis-walked tree, a wrong cut or a broken index fails here in seconds; the
benchmarks (semantic_cache.py, cache_savings.py) measure the full sets.

- QQP-style pairs: the first 600 held-out pairs, each the lone entry of its scope (the pair
  verifier decides a lone entry). Measured on this slice: precision 0.98, recall 0.29.
- Reworded statements: the first 150 held-out GPTCache mock queries through the real cache.
- Support traffic: Banking77 utterances of ten intents: the training part stored, the held-out
  part asked; one answer per intent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from embedding.minilm import Embedder
from gateway.cache import build_cache
from gateway.cache.policy import Policy
from gateway.cache.verifier import Candidate, Probe, Verifier
from tests.support.cache_requests import answer, chat

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data" / "semcache"


def semcache_data() -> ModuleType:
    if not DATA.exists():
        pytest.fail(
            f"{DATA} is missing: the cache quality tests read the shared semantic-cache data "
            "(../shared/data/semcache/ next to the repo, or set TANDEM_SHARED_DIR)"
        )
    spec = importlib.util.spec_from_file_location(
        "semcache_data", ROOT / "benchmarks" / "semcache_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("semcache_data", module)
    spec.loader.exec_module(module)
    return module


def test_default_decision_keeps_its_precision_on_lone_pairs_and_beats_a_static_threshold() -> None:
    data = semcache_data()
    pairs = data.split(data.load_pairs())[2][:600]
    verifier = Verifier.load()
    texts = sorted({p[k] for p in pairs for k in ("text_a", "text_b")})
    vecs, toks = Embedder().encode_full(texts)
    probes = {t: Probe(t, v, tk) for t, v, tk in zip(texts, vecs, toks, strict=True)}
    y = np.array([p["label"] for p in pairs], dtype=bool)
    floor = Policy().min_similarity
    hits = np.zeros(len(pairs), dtype=bool)
    cosine = np.zeros(len(pairs))
    for i, p in enumerate(pairs):
        cached, query = probes[p["text_a"]], probes[p["text_b"]]
        cosine[i] = float(cached.vector @ query.vector)
        pick, _ = verifier.decide(query, [Candidate(cached, cosine[i], "a")], floor)
        hits[i] = pick is not None
    precision, recall = y[hits].mean(), y[hits].sum() / y.sum()
    assert precision >= 0.90 and recall >= 0.20, f"precision {precision:.3f} recall {recall:.3f}"
    static = cosine >= 0.98  # the static threshold the README needs for ~95 % precision
    assert hits.sum() > static.sum(), "the default should find more duplicates than cosine >= 0.98"


async def test_default_decision_serves_rewordings_and_rarely_the_neighbour() -> None:
    """The first 150 held-out GPTCache mock queries, their origins cached. Measured 102 correct /
    0 wrong; floors leave room for numeric noise, not for a broken model."""
    data = semcache_data()
    rows = data.load_mock()
    held_out = data.mock_split(rows)[1][:150]
    cache = build_cache({"mode": "semantic"})
    try:
        origins = list(dict.fromkeys(r["origin"] for r in held_out))
        await asyncio.gather(*(cache.store(chat(o), answer(o)) for o in origins))
        hits = await asyncio.gather(*(cache.lookup(chat(r["similar"])) for r in held_out))
    finally:
        await cache.close()
    served = [
        (h.response["choices"][0]["message"]["content"], r["origin"])
        for h, r in zip(hits, held_out, strict=True)
        if h is not None
    ]
    correct = sum(1 for got, want in served if got == want)
    wrong = len(served) - correct
    assert correct >= 90 and wrong <= 3, f"{correct} correct / {wrong} wrong of {len(held_out)}"


INTENTS = (
    "card_arrival",
    "card_delivery_estimate",  # card_arrival's neighbour: the pair a cache must not confuse
    "exchange_rate",
    "card_payment_wrong_exchange_rate",
    "lost_or_stolen_card",
    "pin_blocked",
    "top_up_failed",
    "top_up_reverted",
    "transfer_timing",
    "balance_not_updated_after_bank_transfer",
)


async def test_default_decision_answers_support_traffic_by_intent() -> None:
    """Support traffic: one answer per intent, the cache holding the training utterances of ten
    intents (neighbouring ones among them), asked the held-out ones. Measured 81 % served with
    8 wrong of 399 (a full cache of each intent's wordings; the benchmark's trace starts empty)."""
    data = semcache_data()
    train, _, held = data.banking_split(data.load_banking())
    stored = [r for r in train if r["intent"] in INTENTS]
    asked = [r for r in held if r["intent"] in INTENTS]
    cache = build_cache({"mode": "semantic"})
    try:
        system = data.SYSTEM_PROMPT
        await asyncio.gather(
            *(cache.store(chat(r["text"], system=system), answer(r["intent"])) for r in stored)
        )
        hits = await asyncio.gather(*(cache.lookup(chat(r["text"], system=system)) for r in asked))
    finally:
        await cache.close()
    served = [
        h.response["choices"][0]["message"]["content"] == r["intent"]
        for h, r in zip(hits, asked, strict=True)
        if h is not None
    ]
    share, wrong = len(served) / len(asked), served.count(False)
    assert share >= 0.65 and wrong <= 0.04 * len(asked), (
        f"{share:.0%} served, {wrong} wrong of {len(asked)}"
    )
