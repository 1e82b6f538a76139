"""Routing, fallbacks, retries, hedging and circuit breakers against real upstream servers."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.support.gateway_harness import (
    RunningGateway,
    blast,
    chat,
    fresh_upstreams,
    upstream_servers,
)
from tests.support.upstream import Behaviour, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ups():
    with upstream_servers("a", "b", "c") as servers:
        yield servers


@pytest.fixture
def upstreams(ups):
    return fresh_upstreams(ups)


def backend(ups, name: str, **extra) -> dict:
    return {"url": ups[name][1].url + "/v1", **extra}


def post(gw: RunningGateway, body: dict) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)


def served_by(resp: httpx.Response) -> str:
    return resp.json()["choices"][0]["message"]["content"].split(":")[0]


async def test_weighted_split_over_2000_requests(ups, upstreams) -> None:
    cfg = {
        "backends": {"a": backend(ups, "a"), "b": backend(ups, "b")},
        "routes": {
            "chat": {"backends": [{"backend": "a", "weight": 80}, {"backend": "b", "weight": 20}]}
        },
    }
    with RunningGateway(cfg) as gw:
        results = await blast(gw.url, [chat("chat")] * 2000, concurrency=48)
    assert all(s == 200 for s, _, _ in results)
    # 80/20 over 2,000: sigma is about 18 requests; allow 4.5 sigma.
    assert abs(upstreams["a"].requests - 1600) <= 80, upstreams["a"].requests
    assert upstreams["a"].requests + upstreams["b"].requests == 2000


def test_fallback_chain_is_tried_in_order(ups, upstreams) -> None:
    upstreams["a"].set(status=500)
    upstreams["b"].set(status=503)
    cfg = {
        "backends": {n: backend(ups, n) for n in "abc"},
        "routes": {
            "chat": {
                "backends": [{"backend": "a"}],
                "fallbacks": ["second", "third"],
                "retries": {"attempts": 1, "backoff_s": 0.01},
            },
            "second": {"backends": [{"backend": "b"}], "retries": {"attempts": 0}},
            "third": {"backends": [{"backend": "c"}]},
        },
    }
    with RunningGateway(cfg) as gw:
        r = post(gw, chat("chat"))
        assert r.status_code == 200 and served_by(r) == "c"
        assert (upstreams["a"].requests, upstreams["b"].requests, upstreams["c"].requests) == (
            2,
            1,
            1,
        )
        # the fallback route's own backend receives its own model name
        assert upstreams["c"].bodies[0]["model"] == "third"
        assert gw.metric("tandem_gateway_fallbacks_total", route="chat", to="third") == 1
        assert gw.metric("tandem_gateway_retries_total", backend="a") == 1


def test_retry_reaches_the_healthy_backend_and_respects_the_deadline(ups, upstreams) -> None:
    upstreams["a"].set(status=502)
    cfg = {
        "backends": {"a": backend(ups, "a"), "b": backend(ups, "b")},
        "routes": {
            "chat": {"backends": [{"backend": "a", "weight": 1000}, {"backend": "b", "weight": 1}]},
            "slow": {
                "backends": [{"backend": "a"}],
                "deadline_s": 0.5,
                "retries": {"attempts": 8, "backoff_s": 0.1, "max_backoff_s": 1.0, "jitter": 0},
            },
        },
    }
    with RunningGateway(cfg) as gw:
        r = post(gw, chat("chat"))
        assert r.status_code == 200 and served_by(r) == "b"
        upstreams["a"].reset_counts()
        t0 = time.monotonic()
        r = post(gw, chat("slow"))
        took = time.monotonic() - t0
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert took < 1.0  # the 0.5 s deadline, plus scheduling slack on a busy machine
    assert 2 <= upstreams["a"].requests <= 4  # backoff 0.1, 0.2, 0.4 cannot all fit in 0.5 s


def test_an_answer_that_is_not_json_is_a_backend_failure(ups, upstreams) -> None:
    upstreams["a"].set(garbage=True)
    with RunningGateway(breaker_cfg(ups)) as gw:
        assert served_by(post(gw, chat("chat"))) == "b"
        assert (
            gw.metric(
                "tandem_gateway_upstream_errors_total", backend="a", **{"class": "bad_response"}
            )
            == 1
        )


def test_timeouts_give_504_and_fall_back(ups, upstreams) -> None:
    upstreams["a"].set(latency_s=1.0)
    cfg = {
        "backends": {
            "a": backend(ups, "a", timeouts={"first_token_s": 0.15, "total_s": 5}),
            "b": backend(ups, "b"),
        },
        "routes": {
            "chat": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}},
            "safe": {
                "backends": [{"backend": "a"}],
                "fallbacks": ["chat_b"],
                "retries": {"attempts": 0},
            },
            "chat_b": {"backends": [{"backend": "b"}]},
        },
    }
    with RunningGateway(cfg) as gw:
        t0 = time.monotonic()
        r = post(gw, chat("chat"))
        assert r.status_code == 504 and time.monotonic() - t0 < 0.9  # not the 1 s upstream
        r = post(gw, chat("safe"))
        assert r.status_code == 200 and served_by(r) == "b"


def breaker_cfg(ups, **policy) -> dict:
    return {
        "backends": {
            "a": backend(
                ups,
                "a",
                breaker={"consecutive_failures": 3, "open_s": 0.3, "half_open_probes": 1, **policy},
            ),
            "b": backend(ups, "b"),
        },
        "routes": {
            "chat": {
                "backends": [{"backend": "a"}],
                "fallbacks": ["spare"],
                "retries": {"attempts": 0},
            },
            "spare": {"backends": [{"backend": "b"}]},
        },
    }


def test_breaker_closed_open_half_open_closed_and_reopen(ups, upstreams) -> None:
    # probes by the clock only (probe_share 0; probes that follow the traffic are pinned in
    # test_gateway_resilience), and an open_s that a few requests on a busy machine cannot span
    with RunningGateway(breaker_cfg(ups, open_s=1.0, probe_share=0)) as gw:
        state = lambda: gw.metric("tandem_gateway_breaker_state", backend="a")  # noqa: E731
        upstreams["a"].set(status=500)
        for _ in range(3):
            assert served_by(post(gw, chat("chat"))) == "b"
        assert state() == 1  # open
        for _ in range(3):
            assert served_by(post(gw, chat("chat"))) == "b"
        assert upstreams["a"].requests == 3  # open: no traffic
        time.sleep(1.05)
        # half-open probe fails -> open again
        assert served_by(post(gw, chat("chat"))) == "b"
        assert upstreams["a"].requests == 4 and state() == 1
        time.sleep(1.05)
        upstreams["a"].set()
        assert served_by(post(gw, chat("chat"))) == "a"  # the probe
        assert state() == 0
        assert served_by(post(gw, chat("chat"))) == "a"


def test_half_open_admits_a_bounded_number_of_probes(ups, upstreams) -> None:
    import asyncio

    with RunningGateway(breaker_cfg(ups, half_open_probes=2)) as gw:
        upstreams["a"].set(status=500)
        for _ in range(3):
            post(gw, chat("chat"))
        time.sleep(0.35)
        upstreams["a"].set(latency_s=0.3)
        upstreams["a"].reset_counts()
        upstreams["b"].reset_counts()
        results = asyncio.run(blast(gw.url, [chat("chat")] * 10, concurrency=10))
    assert all(s == 200 for s, _, _ in results)
    assert upstreams["a"].requests == 2  # the probes; the rest went to the fallback
    assert upstreams["b"].requests == 8


def test_error_rate_trips_over_minimum_requests(ups, upstreams) -> None:
    import asyncio

    # two failures in three: the share crosses 0.5 soon after the 20th request. No probes by
    # share: one that met the upstream's success in three would close it again before the end
    cfg = breaker_cfg(
        ups, consecutive_failures=1000, min_requests=20, error_rate=0.5, open_s=30, probe_share=0
    )
    upstreams["a"].set(faults=[Behaviour(status=500), Behaviour(status=500), Behaviour()])
    with RunningGateway(cfg) as gw:
        asyncio.run(blast(gw.url, [chat("chat")] * 200, concurrency=4))
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 1
    assert upstreams["a"].requests < 200


def test_slow_first_tokens_trip_the_breaker(ups, upstreams) -> None:
    cfg = breaker_cfg(ups, slow_first_token_s=0.05, open_s=30)
    upstreams["a"].set(first_token_s=0.1)
    with RunningGateway(cfg) as gw:
        for _ in range(3):
            r = post(gw, chat("chat", stream=True))
            assert r.status_code == 200 and b"tok0" in r.content  # the callers still got answers
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 1
        assert b"b" in post(gw, chat("chat", stream=True)).content.split(b'"id":"chatcmpl-')[1][:1]


def test_client_errors_pass_through_and_never_count(ups, upstreams) -> None:
    upstreams["a"].set(status=400)
    with RunningGateway(breaker_cfg(ups)) as gw:
        for _ in range(10):
            r = post(gw, chat("chat"))
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "http_400"  # the upstream's own body
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 0
        assert upstreams["a"].requests == 10 and upstreams["b"].requests == 0
        upstreams["a"].set(status=404)
        assert post(gw, chat("chat")).status_code == 404


def test_context_length_error_goes_to_the_longer_context_model(ups, upstreams) -> None:
    upstreams["a"].set(context_limit=20)
    cfg = breaker_cfg(ups)
    cfg["routes"]["chat"]["context_fallback"] = "spare"
    cfg["routes"]["chat"]["fallbacks"] = []
    with RunningGateway(cfg) as gw:
        assert served_by(post(gw, chat("chat", "short"))) == "a"
        for _ in range(4):
            assert served_by(post(gw, chat("chat", "x" * 100))) == "b"
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 0
        cfg_no = breaker_cfg(ups)
        cfg_no["routes"]["chat"]["fallbacks"] = []
    with RunningGateway(cfg_no) as gw:
        r = post(gw, chat("chat", "x" * 100))
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_hedging_answers_from_the_fast_copy(ups, upstreams) -> None:
    upstreams["a"].set(latency_s=0.5)
    cfg = {
        "backends": {"a": backend(ups, "a"), "b": backend(ups, "b")},
        "routes": {
            "chat": {
                "backends": [{"backend": "a", "weight": 1e6}, {"backend": "b", "weight": 1}],
                "hedge_after_s": 0.05,
            }
        },
    }
    with RunningGateway(cfg) as gw:
        t0 = time.monotonic()
        r = post(gw, chat("chat"))
        assert served_by(r) == "b" and time.monotonic() - t0 < 0.5  # before the slow copy


def test_hot_reload_swaps_routes_and_keeps_the_old_config_when_invalid(
    ups, upstreams, tmp_path
) -> None:
    import yaml

    path = tmp_path / "routes.yaml"
    cfg = {
        "server": {"reload_interval_s": 0.05},
        "backends": {"a": backend(ups, "a"), "b": backend(ups, "b")},
        "routes": {"chat": {"backends": [{"backend": "a"}]}},
    }
    path.write_text(yaml.safe_dump(cfg))
    with RunningGateway(cfg, config_path=path) as gw:
        assert served_by(post(gw, chat("chat"))) == "a"
        cfg["routes"]["chat"]["backends"] = [{"backend": "b"}]
        path.write_text(yaml.safe_dump(cfg))
        assert wait_until(lambda: served_by(post(gw, chat("chat"))) == "b", timeout=3)
        path.write_text("routes: {chat: {backends: [{backend: nowhere}]}}\n")
        time.sleep(0.3)
        assert served_by(post(gw, chat("chat"))) == "b"


def test_error_bodies_are_openai_shaped(ups, upstreams) -> None:
    cfg = breaker_cfg(ups)
    cfg["server"] = {"max_body_bytes": 2048}
    with RunningGateway(cfg) as gw:
        cases = [
            (httpx.post(gw.url + "/v1/chat/completions", content=b"{not json"), 400),
            (httpx.post(gw.url + "/v1/chat/completions", json=[1, 2]), 400),
            (httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat"}), 400),
            (httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", stream="yes")), 400),
            (
                httpx.post(
                    gw.url + "/v1/embeddings", json={"model": "chat", "input": "x", "stream": True}
                ),
                400,
            ),
            (httpx.post(gw.url + "/v1/chat/completions", json=chat("chat", "x" * 5000)), 413),
            (httpx.post(gw.url + "/v1/chat/completions", json=chat("gpt-9")), 404),
            (httpx.get(gw.url + "/v1/chat/completions"), 405),
            (httpx.get(gw.url + "/nope"), 404),
        ]
        for resp, status in cases:
            assert resp.status_code == status, (resp.status_code, resp.text)
            err = orjson.loads(resp.content)["error"]
            assert err["message"] and err["type"] and "Traceback" not in resp.text
        assert httpx.get(gw.url + "/healthz").status_code == 200
        assert httpx.get(gw.url + "/readyz").status_code == 200
        assert "tandem_gateway_breaker_state" in httpx.get(gw.url + "/metrics").text
