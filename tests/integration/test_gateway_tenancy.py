"""Keys, allowed models, rate limits, usage accounting and budgets (in memory and in real Redis)."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.config import hash_key
from tests.support.gateway_harness import (
    RunningGateway,
    chat,
    fresh_upstreams,
    upstream_servers,
)
from tests.support.redis_server import redis_server
from vocabulary.net import free_port

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer sk-alpha"}


@pytest.fixture(scope="module")
def ups():
    with upstream_servers("big", "cheap") as servers:
        yield servers


@pytest.fixture
def upstreams(ups):
    return fresh_upstreams(ups)


@pytest.fixture(scope="module")
def redis_url():
    with redis_server("the gateway tenancy tests") as url:
        yield url


def config(ups, **extra) -> dict:
    cfg = {
        "backends": {
            "big": {
                "url": ups["big"][1].url + "/v1",
                "labels": {"use_case": "support-bot", "pool": "gpu-a"},
            },
            "cheap": {"url": ups["cheap"][1].url + "/v1"},
        },
        "routes": {
            "chat": {
                "backends": [{"backend": "big"}],
                "degrade_to": "chat-lite",
                "use_case": "support-bot",
            },
            "chat-lite": {"backends": [{"backend": "cheap"}]},
            "embed": {"backends": [{"backend": "cheap"}], "endpoints": ["embeddings"]},
        },
        # $1 per output token on big, $0.50 on cheap; every answer has 4 output tokens
        "prices": {
            "big": {"input_per_mtok": 0, "output_per_mtok": 1_000_000},
            "cheap": {"input_per_mtok": 0, "output_per_mtok": 500_000},
        },
        "keys": [
            {"id": "alpha", "team": "alpha", "sha256": hash_key("sk-alpha")},
            {"id": "beta", "team": "beta", "sha256": hash_key("sk-beta"), "models": ["chat-lite"]},
            {"id": "slow", "team": "beta", "sha256": hash_key("sk-slow"), "rpm": 3},
            {"id": "tok", "team": "beta", "sha256": hash_key("sk-tok"), "tpm": 10},
        ],
    }
    cfg.update(extra)
    return cfg


def fresh_minute() -> None:
    """Per-minute counters roll over on the minute: keep a test's requests inside one."""
    if time.time() % 60 > 57:
        time.sleep(60.1 - time.time() % 60)


def post(gw, body, key="sk-alpha", path="/v1/chat/completions") -> httpx.Response:
    return httpx.post(
        gw.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_key_checks(ups, upstreams) -> None:
    with RunningGateway(config(ups)) as gw:
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat("chat")).status_code == 401
        r = post(gw, chat("chat"), key="sk-wrong")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(
            gw.url + "/v1/chat/completions", json=chat("chat"), headers={"Authorization": "Basic x"}
        )
        assert r.status_code == 401
        r = post(gw, chat("chat"), key="sk-beta")
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert post(gw, chat("chat-lite"), key="sk-beta").status_code == 200
        models = httpx.get(
            gw.url + "/v1/models", headers={"Authorization": "Bearer sk-beta"}
        ).json()
        assert [m["id"] for m in models["data"]] == ["chat-lite"]
        assert httpx.get(gw.url + "/v1/models").status_code == 401
        assert post(gw, chat("embed")).status_code == 404  # embeddings-only route
        r = post(gw, {"model": "embed", "input": ["a", "b"]}, path="/v1/embeddings")
        assert r.status_code == 200 and len(r.json()["data"]) == 2
        assert upstreams["big"].requests == 0  # nothing refused reached a backend


def test_requests_and_tokens_per_minute(ups, upstreams) -> None:
    fresh_minute()
    with RunningGateway(config(ups)) as gw:
        codes = [post(gw, chat("chat-lite"), key="sk-slow").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = post(gw, chat("chat-lite"), key="sk-slow")
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and "Retry-After" in r.headers
        # 5 tokens per answer (1 in + 4 out), limit 10 per minute: two pass, the third is refused
        codes = [post(gw, chat("chat-lite"), key="sk-tok").status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_usage_accounting_in_metrics(ups, upstreams) -> None:
    with RunningGateway(config(ups)) as gw:
        for _ in range(3):
            assert post(gw, chat("chat", "x" * 40)).status_code == 200
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json=chat("chat", "x" * 40, stream=True),
            headers=HEADERS,
        )
        assert r.status_code == 200
        labels = {
            "team": "alpha",
            "use_case": "support-bot",
            "model": "chat",
            "pool": "gpu-a",
            "rollout": "stable",
        }
        assert gw.metric("tandem_gateway_tokens_total", direction="in", **labels) == 4 * 11
        assert gw.metric("tandem_gateway_tokens_total", direction="out", **labels) == 4 * 4
        assert gw.metric("tandem_gateway_cost_usd_total", **labels) == pytest.approx(16.0)
        assert gw.metric("tandem_gateway_requests_total", code="200", **labels) == 4
        assert gw.metric("tandem_gateway_time_to_first_token_seconds_count", **labels) == 1


def budget_run(gw, upstreams) -> list[tuple[int, str]]:
    out = []
    for _ in range(12):
        r = post(gw, chat("chat"))
        who = (
            r.json()["choices"][0]["message"]["content"].split(":")[0]
            if r.status_code == 200
            else r.json()["error"]["code"]
        )
        out.append((r.status_code, who))
    return out


def budget_config(ups, **extra) -> dict:
    return config(
        ups,
        teams={"alpha": {"budget": {"usd": 20, "period": "day", "soft_fraction": 0.5}}},
        **extra,
    )


def check_budget_sequence(seq) -> None:
    # $4 per answer on big until $10 (soft), then $2 on cheap until $20, then refused
    assert seq[:3] == [(200, "big")] * 3
    assert seq[3:7] == [(200, "cheap")] * 4
    assert seq[7:] == [(429, "insufficient_quota")] * 5


def test_budget_soft_limit_degrades_then_hard_limit_refuses(ups, upstreams) -> None:
    with RunningGateway(budget_config(ups)) as gw:
        check_budget_sequence(budget_run(gw, upstreams))
        assert gw.metric("tandem_gateway_budget_remaining_usd", team="alpha") == 0
        r = post(gw, chat("chat"))
        assert r.json()["error"]["type"] == "insufficient_quota"
        # another team is unaffected
        assert post(gw, chat("chat-lite"), key="sk-beta").status_code == 200


def test_budget_counters_in_redis_survive_a_restart_and_are_shared(
    ups, upstreams, redis_url
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    cfg = budget_config(ups, redis={"url": redis_url, "prefix": "t1"})
    with RunningGateway(cfg) as gw:
        seq = budget_run(gw, upstreams)
    check_budget_sequence(seq)
    with RunningGateway(cfg) as gw2, RunningGateway(cfg) as gw3:  # restarted, two replicas
        assert post(gw2, chat("chat")).status_code == 429
        assert post(gw3, chat("chat")).status_code == 429
    # rate limits are shared across replicas too
    cfg["redis"]["prefix"] = "t2"
    fresh_minute()
    with RunningGateway(cfg) as gw2, RunningGateway(cfg) as gw3:
        codes = [
            post(g, chat("chat-lite"), key="sk-slow").status_code for g in (gw2, gw3, gw2, gw3)
        ]
    assert codes == [200, 200, 200, 429]


def test_redis_down_fails_open(ups, upstreams) -> None:
    dead = free_port()
    cfg = budget_config(ups, redis={"url": f"redis://127.0.0.1:{dead}/0"})
    with RunningGateway(cfg) as gw:
        assert [post(gw, chat("chat")).status_code for _ in range(3)] == [200, 200, 200]


def test_keys_file_is_hot_reloaded(ups, upstreams, tmp_path) -> None:
    import yaml

    from tests.support.upstream import wait_until

    def keys(raw: str) -> str:
        return yaml.safe_dump([{"id": "k", "team": "alpha", "sha256": hash_key(raw)}])

    (tmp_path / "keys.yaml").write_text(keys("sk-old"))
    cfg = config(ups, keys=[], keys_file="keys.yaml", server={"reload_interval_s": 0.05})
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(cfg))
    from gateway.config import load_config

    with RunningGateway(
        load_config(tmp_path / "routes.yaml").model_dump(), config_path=tmp_path / "routes.yaml"
    ) as gw:
        assert post(gw, chat("chat"), key="sk-old").status_code == 200
        (tmp_path / "keys.yaml").write_text(keys("sk-new"))
        assert wait_until(
            lambda: post(gw, chat("chat"), key="sk-new").status_code == 200, timeout=3
        )
        assert post(gw, chat("chat"), key="sk-old").status_code == 401
