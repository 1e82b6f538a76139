"""Replicas sharing the cache through a real redis-server, and the sampled re-check against a real
upstream HTTP server (an oracle that knows each question's answer, so a wrong hit is visible)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway.cache import build_cache
from gateway.cache.api import CacheRequest
from gateway.cache.core import SemanticCache
from tests.support.cache_requests import answer, chat
from tests.support.redis_server import redis_server
from tests.support.upstream import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server("the cache sharing tests") as url:
        yield url


_ns = iter(range(10**6))


def replica(redis_url: str, **extra: object) -> SemanticCache:
    return build_cache(
        {"mode": "semantic", "redis_url": redis_url, "namespace": f"t{extra.pop('ns')}", **extra}
    )


async def eventually(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


Q = "How do I reset my password on the website?"
PARA = "How can I reset my password on the website?"


async def test_one_replica_answers_what_another_stored(redis_url: str) -> None:
    ns = next(_ns)
    a, b = replica(redis_url, ns=ns), replica(redis_url, ns=ns)
    try:
        await a.start()
        await b.start()
        await a.store(chat(Q), answer("Use the 'Forgot password' link."))
        exact = await b.lookup(chat(Q))  # straight from Redis, no propagation delay
        assert exact is not None and exact.layer == "exact"
        semantic = await eventually(lambda: b.lookup(chat(PARA)))
        assert semantic is not None and semantic.layer == "semantic"
        assert (
            semantic.response["choices"][0]["message"]["content"]
            == "Use the 'Forgot password' link."
        )
        assert await b.lookup(chat(PARA, tenant="team-b")) is None
        assert b.metrics.value("tandem_cache_shared_entries_total") >= 1
    finally:
        await a.close()
        await b.close()


async def test_a_restarted_replica_warms_from_redis(redis_url: str) -> None:
    ns = next(_ns)
    # a static threshold: this test is about the index being warm, not about the verifier
    a = replica(redis_url, ns=ns, decision="threshold", threshold=0.9)
    for i, q in enumerate([Q, "What is the capital of France?", "How do I bake sourdough bread?"]):
        await a.store(chat(q), answer(f"answer {i}"))
    await a.close()
    restarted = replica(redis_url, ns=ns, decision="threshold", threshold=0.9)
    try:
        await restarted.start()
        assert len(restarted.local) == 3
        hit = await restarted.lookup(chat("what is the capital of france"))
        assert (
            hit is not None
            and hit.layer == "semantic"
            and hit.response["choices"][0]["message"]["content"] == "answer 1"
        )
    finally:
        await restarted.close()


async def test_entries_expire_in_redis_too(redis_url: str) -> None:
    ns = next(_ns)
    a = replica(redis_url, ns=ns, ttl_s=0.3)
    try:
        await a.store(chat(Q), answer("A"))
        await asyncio.sleep(0.5)
        late = replica(redis_url, ns=ns)
        await late.start()
        assert len(late.local) == 0 and await late.lookup(chat(Q)) is None
        await late.close()
    finally:
        await a.close()


# -- the sampled re-check ----------------------------------------------------------------------------

WEB = "Click 'Forgot password' under the sign-in form and follow the emailed link."
APP = "In the app, open Profile, tap Security, then tap Change PIN and confirm with Face ID."
ANSWERS = {
    "How do I reset my password on the website?": WEB,
    "How can I reset my password on the website?": WEB,
    "How do I reset my password on the mobile app?": APP,
}


@pytest.fixture(scope="module")
def oracle() -> Iterator[str]:
    """An upstream whose answer depends on the question's topic: the truth a re-check compares to."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(answer(ANSWERS[body["messages"][-1]["content"]]))

    def make() -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        return app

    server = ServerThread(make).start()
    yield server.url
    server.stop()


def http_upstream(url: str):
    async def fetch(request: CacheRequest) -> dict:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url + "/v1/chat/completions", json=request.body) as r,
        ):
            return await r.json()

    return fetch


async def test_recheck_exports_the_wrong_hit_rate_and_alerts(oracle: str, tmp_path) -> None:
    # threshold decision at 0.7: loose on purpose, so the app question hits the website answer
    pairs_log = tmp_path / "labels" / "pairs.jsonl"
    cache = build_cache(
        {
            "mode": "semantic",
            "decision": "threshold",
            "threshold": 0.7,
            "recheck": {
                "fraction": 1.0,
                "min_samples": 2,
                "alert_wrong_rate": 0.3,
                "pairs_log": str(pairs_log),
            },
        }
    )
    upstream = http_upstream(oracle)
    cache.attach_upstream(upstream)
    try:
        await cache.store(chat(Q), await upstream(chat(Q)))
        assert (await cache.lookup(chat(PARA))).layer == "semantic"  # right: same topic
        await cache.drain()
        assert cache.metrics.value("tandem_cache_rechecks_total", result="agree") == 1
        assert cache.metrics.value("tandem_cache_estimated_wrong_hit_rate") == 0
        wrong = await cache.lookup(chat("How do I reset my password on the mobile app?"))
        assert wrong is not None and wrong.response["choices"][0]["message"]["content"] == WEB
        await cache.drain()
        assert cache.metrics.value("tandem_cache_rechecks_total", result="disagree") == 1
        assert cache.metrics.value("tandem_cache_estimated_wrong_hit_rate") == pytest.approx(0.5)
        assert cache.metrics.value("tandem_cache_wrong_hit_rate_alert") == 1
        # per route: the estimate and the flag name the team and model the wrong hit came from
        route = {"team": "team-a", "model": "llama"}
        assert cache.metrics.value("tandem_cache_estimated_wrong_hit_rate", **route) == 0.5
        assert cache.metrics.value("tandem_cache_wrong_hit_rate_alert", **route) == 1
        assert cache.metrics.value("tandem_cache_rechecks_total", team="team-b") == 0
        # the disagreeing question now has its own, correct answer
        fixed = await cache.lookup(chat("How do I reset my password on the mobile app?"))
        assert fixed.layer == "exact" and fixed.response["choices"][0]["message"]["content"] == APP
        # each re-check is a labelled pair in the training data's format
        rows = [json.loads(line) for line in pairs_log.read_text().splitlines()]
        assert [(r["text_a"], r["text_b"], r["label"]) for r in rows] == [
            (PARA, Q, 1),
            ("How do I reset my password on the mobile app?", Q, 0),
        ]
        assert {(r["team"], r["model"]) for r in rows} == {("team-a", "llama")}
    finally:
        await cache.close()


async def test_an_unwritable_pairs_log_never_breaks_the_recheck(oracle: str, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = build_cache(
        {
            "mode": "semantic",
            "decision": "threshold",
            "threshold": 0.7,
            "recheck": {"fraction": 1.0, "pairs_log": str(blocker / "pairs.jsonl")},
        }
    )
    upstream = http_upstream(oracle)
    cache.attach_upstream(upstream)
    try:
        await cache.store(chat(Q), await upstream(chat(Q)))
        for _ in range(2):
            assert (await cache.lookup(chat(PARA))).layer == "semantic"
            await cache.drain()
        assert cache.metrics.value("tandem_cache_rechecks_total", result="agree") == 2
        assert blocker.read_text() == ""
    finally:
        await cache.close()
