"""Partial failure through the whole gateway, against real upstream servers: a throttled backend
keeps its traffic (a 429 is retried after its Retry-After, the backend's concurrency limit
adapts), a provider-wide limit still moves traffic to the fallback and back, and after an outage
or a burst of slow first tokens traffic returns long before `open_s`.

The numbers per fault kind and rate at 10 and 100 requests/s are benchmarks/gateway_resilience.py;
these tests pin the behaviour."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.gateway_harness import (
    RunningGateway,
    blast,
    chat,
    fresh_upstreams,
    upstream_servers,
)
from tests.support.upstream import Behaviour

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ups():
    with upstream_servers("primary", "spare") as servers:
        yield servers


@pytest.fixture
def upstreams(ups):
    return fresh_upstreams(ups)


def config(ups, retries: dict | None = None, **primary: object) -> dict:
    return {
        "backends": {
            "primary": {"url": ups["primary"][1].url + "/v1", **primary},
            "spare": {"url": ups["spare"][1].url + "/v1"},
        },
        "routes": {
            "chat": {
                "backends": [{"backend": "primary"}],
                "fallbacks": ["spare"],
                "retries": retries or {"attempts": 2, "backoff_s": 0.01},
            },
            "spare": {"backends": [{"backend": "spare"}]},
        },
    }


def post(gw: RunningGateway, body: dict) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)


def served_by(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        return resp.text.split('"id":"chatcmpl-', 1)[1].split('"', 1)[0]
    return resp.json()["choices"][0]["message"]["content"].split(":")[0]


def shares(results: list[tuple[int, bytes, float]]) -> tuple[int, int, int]:
    """(served by primary, served by spare, errors)"""
    primary = sum(1 for st, body, _ in results if st == 200 and b"primary:" in body)
    spare = sum(1 for st, body, _ in results if st == 200 and b"spare:" in body)
    return primary, spare, len(results) - primary - spare


# -- a 429 slows the backend down; it does not switch it off ----------------------------------


def test_a_429_is_retried_after_its_retry_after_on_the_same_backend(ups, upstreams) -> None:
    upstreams["primary"].then(Behaviour(status=429, retry_after="0.3"))
    with RunningGateway(config(ups)) as gw:
        t0 = time.monotonic()
        assert served_by(post(gw, chat("chat"))) == "primary"
        assert time.monotonic() - t0 >= 0.3  # it waited what the backend asked for
        assert (upstreams["primary"].requests, upstreams["spare"].requests) == (2, 0)
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 0
        errors = gw.metric(
            "tandem_gateway_upstream_errors_total", backend="primary", **{"class": "rate_limited"}
        )
        assert errors == 1


def test_a_429_without_retry_after_is_retried_after_the_backoff(ups, upstreams) -> None:
    upstreams["primary"].then(Behaviour(status=429), Behaviour(status=429))
    with RunningGateway(config(ups)) as gw:
        assert served_by(post(gw, chat("chat"))) == "primary"
        assert upstreams["primary"].requests == 3


def test_a_wait_longer_than_max_backoff_goes_to_the_fallback_for_that_request(
    ups, upstreams
) -> None:
    upstreams["primary"].then(Behaviour(status=429, retry_after="30"))
    retries = {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 2}
    with RunningGateway(config(ups, retries)) as gw:
        t0 = time.monotonic()
        assert served_by(post(gw, chat("chat"))) == "spare"
        assert time.monotonic() - t0 < 2  # did not wait 30 s
        assert served_by(post(gw, chat("chat"))) == "primary"  # the backend was not cooled


async def test_a_fifth_of_answers_throttled_keeps_the_traffic_on_the_primary(
    ups, upstreams
) -> None:
    """The issue's case: at 20 % 429s the old breaker sent 96 % of requests to the fallback."""
    ok, throttled = Behaviour(), Behaviour(status=429, retry_after="0.02")
    upstreams["primary"].set(faults=[throttled, ok, ok, ok, ok])
    with RunningGateway(config(ups)) as gw:
        results = await blast(gw.url, [chat("chat")] * 300, concurrency=16)
        limit = gw.metric("tandem_gateway_concurrency_limit", backend="primary")
    primary, spare, errors = shares(results)
    assert errors == 0
    assert primary >= 0.9 * 300, (primary, spare)  # three tries: 0.2^3 = 0.8 % expected to spill
    assert 4 <= limit < 256  # the limit came down with the 429s, not below its floor


def test_a_provider_wide_limit_cools_the_backend_until_its_reset(ups, upstreams) -> None:
    exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}
    upstreams["primary"].set(status=429, retry_after="1", headers=exhausted)
    with RunningGateway(config(ups)) as gw:
        for _ in range(5):
            assert served_by(post(gw, chat("chat"))) == "spare"
        assert upstreams["primary"].requests == 1  # cooled by the first answer, no retry
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 1
        provider = gw.metric(
            "tandem_gateway_upstream_errors_total",
            backend="primary",
            **{"class": "provider_limited"},
        )
        assert provider == 1
        upstreams["primary"].set()
        time.sleep(0.55)  # the reset the provider named (not its 1 s Retry-After)
        assert served_by(post(gw, chat("chat"))) == "primary"
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 0


def test_429s_on_most_recent_answers_cool_the_backend_as_a_whole(ups, upstreams) -> None:
    """No rate-limit headers, but every answer is a 429: that is a provider-wide limit too."""
    upstreams["primary"].set(status=429, retry_after="1")
    cfg = config(ups, {"attempts": 0}, breaker={"throttle_window": 4, "throttle_share": 0.75})
    with RunningGateway(cfg) as gw:
        for _ in range(10):
            assert served_by(post(gw, chat("chat"))) == "spare"
        assert upstreams["primary"].requests == 3  # the third of three recent 429s cooled it
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 1


async def test_the_concurrency_limit_falls_with_429s_and_rises_with_successes(
    ups, upstreams
) -> None:
    cfg = config(
        ups,
        {"attempts": 0},
        max_connections=16,
        concurrency={"min_limit": 2, "backoff": 0.5},
    )
    upstreams["primary"].set(status=429, retry_after="0")
    with RunningGateway(cfg) as gw:
        limit = lambda: gw.metric("tandem_gateway_concurrency_limit", backend="primary")  # noqa: E731
        assert limit() == 16
        for _ in range(4):
            post(gw, chat("chat"))  # one after the other: each 429 halves it
        assert limit() == 2
        upstreams["primary"].set(latency_s=0.02)
        results = await blast(gw.url, [chat("chat")] * 200, concurrency=8)
        assert shares(results) == (200, 0, 0)  # waited for slots, none given away
        assert limit() >= 8  # raised while in use


async def test_a_backend_at_its_limit_sheds_to_the_fallback_after_queue_s(ups, upstreams) -> None:
    cfg = config(ups, max_connections=1, concurrency={"min_limit": 1, "queue_s": 0.05})
    upstreams["primary"].set(latency_s=0.5)
    with RunningGateway(cfg) as gw:
        results = await blast(gw.url, [chat("chat")] * 4, concurrency=4)
        shed = gw.metric("tandem_gateway_concurrency_shed_total", backend="primary")
    assert shares(results) == (1, 3, 0)
    assert upstreams["primary"].requests == 1 and shed == 3


# -- recovery ---------------------------------------------------------------------------------


async def _until_primary(gw: RunningGateway, stream: bool = False) -> int:
    """Requests at about 50/s until the primary answers one; how many that took."""
    for n in range(1, 400):
        resp = await asyncio.to_thread(post, gw, chat("chat", stream=stream))
        if served_by(resp) == "primary":
            return n
        await asyncio.sleep(0.02)
    raise AssertionError("traffic never came back to the primary")


async def test_after_an_outage_traffic_returns_long_before_open_s(ups, upstreams) -> None:
    cfg = config(
        ups,
        {"attempts": 0},
        breaker={"consecutive_failures": 3, "open_s": 30, "probe_share": 0.05},
    )
    upstreams["primary"].set(status=500)
    with RunningGateway(cfg) as gw:
        results = await blast(gw.url, [chat("chat")] * 40, concurrency=1)
        assert shares(results) == (0, 40, 0)
        assert upstreams["primary"].requests < 10  # open: a probe now and then
        upstreams["primary"].set()
        t0 = time.monotonic()
        took = await _until_primary(gw)
        assert took <= 21 and time.monotonic() - t0 < 15  # one in 20 probes; open_s is 30
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 0
        assert served_by(post(gw, chat("chat"))) == "primary"


async def test_after_a_burst_of_slow_first_tokens_traffic_returns(ups, upstreams) -> None:
    cfg = config(
        ups,
        {"attempts": 0},
        breaker={
            "consecutive_failures": 3,
            "slow_first_token_s": 0.05,
            "open_s": 30,
            "probe_share": 0.05,
        },
    )
    upstreams["primary"].set(first_token_s=0.1)
    with RunningGateway(cfg) as gw:
        for _ in range(3):  # slow, still answered
            assert served_by(post(gw, chat("chat", stream=True))) == "primary"
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 1
        assert served_by(post(gw, chat("chat", stream=True))) == "spare"
        upstreams["primary"].set()
        assert await _until_primary(gw, stream=True) <= 21
        assert gw.metric("tandem_gateway_breaker_state", backend="primary") == 0
