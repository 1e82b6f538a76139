"""The cache end to end in one process with the real embedding model: scoping, layers, TTL,
eviction, exclusions and batching. (Redis sharing and the gateway are in tests/integration.)"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.cache import build_cache
from gateway.cache.core import SemanticCache
from tests.support.cache_requests import answer, chat
from vocabulary.cache import CachePolicy
from vocabulary.errors import ConfigError


@pytest.fixture
async def cache() -> SemanticCache:
    c = build_cache({"mode": "semantic"})
    yield c
    await c.close()


Q = "How do I reset my password on the website?"
PARAPHRASE = "How can I reset my password on the website?"


async def test_exact_then_semantic_hit(cache: SemanticCache) -> None:
    assert await cache.lookup(chat(Q)) is None
    await cache.store(chat(Q), answer("Click 'Forgot password'."))
    hit = await cache.lookup(chat(Q))
    assert (
        hit is not None
        and hit.layer == "exact"
        and hit.response["choices"][0]["message"]["content"].startswith("Click")
    )
    hit = await cache.lookup(chat(PARAPHRASE))
    assert hit is not None and hit.layer == "semantic" and hit.similarity > 0.9
    assert await cache.lookup(chat("What is the capital of France?")) is None
    assert cache.metrics.value("tandem_cache_lookups_total", layer="semantic", result="hit") == 1
    assert cache.metrics.value("tandem_cache_lookups_total", layer="exact", result="hit") == 1


async def test_never_crosses_tenant_system_prompt_or_model(cache: SemanticCache) -> None:
    await cache.store(chat(Q), answer("secret answer of team a"))
    for other in (
        chat(Q, tenant="team-b"),
        chat(Q, system="Answer in French."),
        chat(Q, model="gpt-4o"),
        chat(PARAPHRASE, tenant="team-b"),
    ):
        assert await cache.lookup(other) is None


async def test_excluded_requests_and_answers_are_not_cached(cache: SemanticCache) -> None:
    await cache.store(chat("q1", temperature=0.9), answer("a"))
    await cache.store(chat("q2"), answer("half an ans", finish="length"))
    await cache.store(chat("q3"), {"error": {"message": "upstream down"}})
    tool = answer("")
    tool["choices"][0]["message"]["tool_calls"] = [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    tool["choices"][0]["finish_reason"] = "tool_calls"
    await cache.store(chat("q4"), tool)
    assert len(cache.local) == 0
    for reason in ("sampled", "truncated", "error", "tool_calls"):
        assert cache.metrics.value("tandem_cache_stores_total", outcome=reason) == 1
    assert await cache.lookup(chat("q1", temperature=0.9)) is None


async def test_route_policy_exact_only_and_off() -> None:
    cache = build_cache({"mode": "semantic"})
    try:
        exact_only = chat(Q)
        exact_only.route_policy = CachePolicy(mode="exact")
        await cache.store(exact_only, answer("A"))
        para = chat(PARAPHRASE)
        para.route_policy = CachePolicy(mode="exact")
        assert await cache.lookup(para) is None
        same = chat(Q)
        same.route_policy = CachePolicy(mode="exact")
        assert (await cache.lookup(same)).layer == "exact"
        off = chat(Q)
        off.route_policy = CachePolicy(enabled=False)
        assert await cache.lookup(off) is None
    finally:
        await cache.close()


async def test_ttl_expires_entries() -> None:
    cache = build_cache({"mode": "exact", "ttl_s": 0.2})
    try:
        await cache.store(chat(Q), answer("A"))
        assert await cache.lookup(chat(Q)) is not None
        await asyncio.sleep(0.3)
        assert await cache.lookup(chat(Q)) is None
        assert cache.metrics.value("tandem_cache_evictions_total", reason="ttl") == 1
    finally:
        await cache.close()


async def test_entry_bound_evicts_least_recently_used() -> None:
    cache = build_cache({"mode": "exact", "max_entries": 3})
    try:
        for i in range(3):
            await cache.store(chat(f"question {i}"), answer(str(i)))
        assert await cache.lookup(chat("question 0")) is not None  # now most recently used
        await cache.store(chat("question 3"), answer("3"))
        assert await cache.lookup(chat("question 1")) is None
        assert all([await cache.lookup(chat(f"question {i}")) for i in (0, 2, 3)])
        assert len(cache.local) == 3
    finally:
        await cache.close()


async def test_byte_bound_evicts() -> None:
    cache = build_cache({"mode": "exact", "max_bytes": 20_000})
    try:
        for i in range(10):
            await cache.store(chat(f"question {i}"), answer("x" * 3000))
        assert cache.local.bytes <= 20_000 and 0 < len(cache.local) < 10
    finally:
        await cache.close()


async def test_byte_bound_counts_the_verifiers_token_arrays(cache: SemanticCache) -> None:
    """A semantic entry's token arrays (for the verifier) are most of its memory: they count."""
    await cache.store(chat(Q), answer("Click 'Forgot password'."))
    (entry,) = cache.local.entries.values()
    arrays = entry.vector.nbytes + entry.tokens.vectors.nbytes
    assert entry.size >= len(Q) + arrays and cache.local.bytes == entry.size
    await cache.lookup(chat(PARAPHRASE))  # a verification adds nothing to the entry
    held = entry.vector.nbytes + entry.tokens.vectors.nbytes
    assert held <= entry.size, "a verified entry outgrew what was counted for it"


async def test_float16_token_arrays_keep_the_verifiers_probabilities(cache: SemanticCache) -> None:
    """Entries keep their token arrays in float16 (half the memory); the decision must not move."""
    from gateway.cache.core import _probe
    from gateway.cache.verifier import Probe

    await cache.store(chat(Q), answer("Click 'Forgot password'."))
    assert await cache.lookup(chat(PARAPHRASE)) is not None  # verifies (and compacts) the entry
    (entry,) = cache.local.entries.values()
    assert entry.tokens.vectors.dtype == np.float16
    verifier = cache.verifier
    vectors, tokens = cache._embedder.embedder.encode_full([Q, PARAPHRASE])
    cached, query = (
        Probe(t, v, k) for t, v, k in zip([Q, PARAPHRASE], vectors, tokens, strict=True)
    )
    exact = verifier.probability(query, cached)
    assert exact > 0.5 and abs(verifier.probability(query, _probe(entry)) - exact) < 1e-3


def test_entries_from_redis_reserve_their_token_arrays() -> None:
    """Entries loaded from Redis get their arrays on first verification: reserved up front."""
    from gateway.cache.store import Entry, entry_bytes

    vector = np.zeros(384, np.float32)
    text = "How do I reset my password on the website?"  # 11 word pieces
    shared = Entry("id", "scope", "exact", text, vector, answer("A"), 0.0, 1.0)
    exact_only = Entry("id", "scope", "exact", text, None, answer("A"), 0.0, 1.0)
    assert entry_bytes(shared, 384) >= 2 * 384 * 11  # float16 token vectors
    assert entry_bytes(exact_only, 384) < 1000


async def test_embeddings_kept_between_lookup_and_store_are_bounded_by_bytes(
    cache: SemanticCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.cache.core as core

    monkeypatch.setattr(core, "RECENT_MAX_BYTES", 200_000)
    for i in range(20):  # each miss keeps ~20 KB of arrays until its answer is stored
        assert await cache.lookup(chat(f"How do I cook dish number {i} really well?")) is None
    assert 0 < len(cache._recent) < 20 and cache._recent_bytes <= 200_000
    kept = sum(core._embedding_bytes(*v) for v in cache._recent.values())
    assert kept == cache._recent_bytes


async def test_concurrent_lookups_share_forward_passes(cache: SemanticCache) -> None:
    questions = [f"How do I cook dish number {i} well?" for i in range(24)]
    t0 = time.perf_counter()
    await asyncio.gather(*(cache.lookup(chat(q)) for q in questions))
    assert cache._embedder.batches < len(questions) / 2, "concurrent requests were not batched"
    assert time.perf_counter() - t0 < 30
    # the batch sizes are exported: the production profile of the gateway benchmark reads them
    assert cache.metrics.value("tandem_cache_embed_batch_size_sum") == len(questions)
    assert cache.metrics.value("tandem_cache_embed_batch_size_count") == cache._embedder.batches


def test_unknown_config_keys_fail_loudly() -> None:
    with pytest.raises(
        ConfigError, match=r"cache\.treshold: unknown key 'treshold'; allowed keys: "
    ):
        build_cache({"mode": "semantic", "treshold": 0.9})


async def test_neighbourhood_decision_serves_rewordings_but_not_between_twins() -> None:
    """The ratio test: a loose rewording hits an isolated entry; a query between two close
    cached questions is ambiguous and misses; a one-entry scope falls back to the verifier."""
    cache = build_cache({"mode": "semantic", "decision": "neighbourhood"})
    try:
        await cache.store(chat("How do I reset my password on the website?"), answer("reset"))
        await cache.store(chat("Which payment methods do you accept?"), answer("payments"))
        await cache.store(chat("What are your opening hours on weekends?"), answer("hours"))
        hit = await cache.lookup(chat("I forgot my password, how can I reset it on the site?"))
        assert hit is not None and hit.layer == "semantic"
        assert hit.response["choices"][0]["message"]["content"] == "reset"
        # two near-twins in the cache: a query between them must not pick one by a hair
        await cache.store(chat("Can I pay with a credit card?"), answer("cards"))
        await cache.store(chat("Can I pay using a debit card?"), answer("debit"))
        assert await cache.lookup(chat("Is paying by card possible?")) is None
        assert await cache.lookup(chat("What is the capital of France?")) is None
    finally:
        await cache.close()
    lone = build_cache({"mode": "semantic", "decision": "neighbourhood", "min_probability": 1.0})
    try:  # one entry in scope: no neighbourhood to read, the (here impossible) verifier decides
        await lone.store(chat(Q), answer("reset"))
        assert await lone.lookup(chat(PARAPHRASE)) is None
    finally:
        await lone.close()


def test_neighbourhood_ratio_test() -> None:
    from gateway.cache.decision import neighbourhood_pick, unambiguous

    assert unambiguous(0.90, 0.70, 0.8)  # distance 0.10 vs 0.30
    assert not unambiguous(0.90, 0.88, 0.8)  # 0.10 vs 0.12: a twin
    assert neighbourhood_pick([0.95, 0.5], floor=0.6, ratio=0.8) == 0
    assert neighbourhood_pick([0.55, 0.1], floor=0.6, ratio=0.8) is None  # below the floor
    assert neighbourhood_pick([0.95], floor=0.6, ratio=0.8) is None  # no runner-up: no evidence


async def test_default_decision_serves_an_answer_its_neighbours_agree_on() -> None:
    """Support traffic: several cached wordings of one canned answer around a new wording is the
    evidence the default decision serves on; the neighbouring intent's answer is not served."""
    cache = build_cache({"mode": "semantic"})
    assert cache.settings.policy.decision == "evidence"
    arrival = "Your card arrives 3-5 working days after you order it."
    pin = "Unblock your PIN in the app under Card > PIN."
    try:
        for q in (
            "When will my new card arrive?",
            "How long does it take for my card to be delivered?",
            "My card still has not arrived, when will it come?",
            "How many days until I get my card in the mail?",
        ):
            await cache.store(chat(q), answer(arrival))
        for q in ("My PIN is blocked, what do I do?", "How can I unblock my PIN?"):
            await cache.store(chat(q), answer(pin))
        hit = await cache.lookup(chat("I ordered a card last week, when will it get here?"))
        assert hit is not None and hit.response["choices"][0]["message"]["content"] == arrival
        miss = await cache.lookup(chat("What is the exchange rate for euros today?"))
        assert miss is None
    finally:
        await cache.close()


def test_context_features_group_neighbours_by_answer() -> None:
    import numpy as np

    from gateway.cache.decision import CONTEXT_NAMES, answer_unambiguous, context_features

    vectors = [np.eye(4, dtype=np.float32)[i] for i in range(3)]
    sims, answers = [0.9, 0.85, 0.5], ["a", "a", "b"]
    features = dict(zip(CONTEXT_NAMES, context_features(sims, answers, vectors, 0), strict=True))
    assert features["same_answer"] == 1 and features["same_answer_best"] == 0.85
    assert features["other_answer_best"] == 0.5 and features["neighbours"] == 3
    assert features["answers"] == 2 and abs(features["distance_ratio"] - 0.2) < 1e-9
    # answer "a" (nearest 0.9, distance 0.1) against "b" (distance 0.5): clearly nearer
    assert answer_unambiguous(sims, answers, 1, 0.9)
    assert not answer_unambiguous([0.9, 0.89], ["a", "b"], 0, 0.9)  # a twin with another answer
    assert answer_unambiguous([0.9], ["a"], 0, 0.9)  # nothing else: nothing to confuse it with


async def test_a_lone_entry_is_decided_by_the_pair_verifier(cache: SemanticCache) -> None:
    """No neighbourhood to read in a one-entry scope: the default decides like the verifier."""
    await cache.store(chat(Q), answer("reset"))
    hit = await cache.lookup(chat(PARAPHRASE))
    assert hit is not None and hit.layer == "semantic"
    strict = build_cache({"mode": "semantic", "min_probability": 1.0})
    try:  # min_probability replaces both cuts: nothing clears 1.0
        await strict.store(chat(Q), answer("reset"))
        assert await strict.lookup(chat(PARAPHRASE)) is None
    finally:
        await strict.close()
