"""Stage 5, forward (gateway/stages/forward.py) on its own, over the proxy's real HTTP sessions and
breakers (gateway/proxy.py) against real upstream servers: what it returns, and what it raises
when no answer can be had. The same behaviour through the whole service is in
test_gateway_routing.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.config import compile_config, parse_config
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.proxy import OK, Upstreams
from gateway.stages.forward import Forwarder
from tests.support.gateway_harness import chat, fresh_upstreams, upstream_servers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ups():
    with upstream_servers("a", "b", "long") as servers:
        yield servers


@pytest.fixture
async def proxy(ups) -> AsyncIterator[tuple[Forwarder, Upstreams, Metrics, dict]]:
    upstreams = fresh_upstreams(ups)
    no_wait = {"attempts": 1, "backoff_s": 0.0}
    cfg = parse_config(
        {
            "backends": {
                n: {"url": ups[n][1].url + "/v1", "breaker": {"consecutive_failures": 2}}
                for n in ups
            },
            "routes": {
                "chat": {
                    "backends": [{"backend": "a"}],
                    "fallbacks": ["spare"],
                    "context_fallback": "long",
                    "retries": no_wait,
                },
                "spare": {"backends": [{"backend": "b"}], "retries": no_wait},
                "long": {"backends": [{"backend": "long"}]},
            },
        }
    )
    compiled = compile_config(cfg)
    metrics = Metrics()
    up = Upstreams(compiled, metrics)
    try:
        yield Forwarder(up), up, metrics, {"compiled": compiled, **upstreams}
    finally:
        await up.close()


async def forward(fw: Forwarder, compiled, body: dict, stream: bool = False):
    raw = orjson.dumps(body)
    return await fw.forward(compiled.routes["chat"], "chat.completions", body, raw, stream, False)


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_failing_backend_is_retried_then_the_fallback_answers(proxy) -> None:
    fw, _, metrics, env = proxy
    env["a"].set(status=500)
    a = await forward(fw, env["compiled"], chat("chat"))
    assert a.kind == OK and a.backend.name == "b" and a.obj is not None
    assert env["a"].requests == 2  # the first call and its one retry
    assert count(metrics, "tandem_gateway_retries_total", backend="a") == 1
    assert count(metrics, "tandem_gateway_fallbacks_total", route="chat", to="spare") == 1


async def test_a_prompt_too_long_goes_to_the_context_fallback(proxy) -> None:
    fw, _, _, env = proxy
    env["a"].set(context_limit=10)
    a = await forward(fw, env["compiled"], chat("chat", "x" * 100))
    assert a.kind == OK and a.backend.name == "long"
    env["long"].set(context_limit=10)
    with pytest.raises(GatewayError) as err:  # OpenAI's shape, not the last backend's body
        await forward(fw, env["compiled"], chat("chat", "x" * 100))
    e = err.value
    assert (e.status, e.code, e.err_type, e.param) == (
        400,
        "context_length_exceeded",
        "invalid_request_error",
        "messages",
    )


async def test_a_declared_context_window_routes_before_any_call(ups) -> None:
    """Backends that declare `context_window` are skipped for a request estimated not to fit
    (prompt characters / 4 + max_tokens): no wasted call, and the same error shape."""
    env = fresh_upstreams(ups)
    url = {n: ups[n][1].url + "/v1" for n in ups}
    cfg = parse_config(
        {
            "backends": {
                "a": {"url": url["a"], "context_window": 20},
                "long": {"url": url["long"], "context_window": 1000},
            },
            "routes": {
                "chat": {"backends": [{"backend": "a"}], "context_fallback": "long"},
                "tight": {"backends": [{"backend": "a"}]},
                "long": {"backends": [{"backend": "long"}]},
            },
        }
    )
    compiled = compile_config(cfg)
    up = Upstreams(compiled, Metrics())
    fw = Forwarder(up)

    async def go(alias: str, body: dict):
        return await fw.forward(
            compiled.routes[alias], "chat.completions", body, orjson.dumps(body), False, False
        )

    try:
        assert (await go("chat", chat("chat", "short"))).backend.name == "a"
        assert (await go("chat", chat("chat", "x" * 100))).backend.name == "long"  # ~25 tokens
        room = chat("chat", "short", max_tokens=30)  # the answer needs room too
        assert (await go("chat", room)).backend.name == "long"
        with pytest.raises(GatewayError) as err:
            await go("tight", chat("tight", "x" * 100))
        assert err.value.code == "context_length_exceeded"
        assert env["a"].requests == 1  # only the short prompt reached it
    finally:
        await up.close()


async def test_open_breakers_everywhere_is_503_with_retry_after(proxy) -> None:
    fw, up, _, env = proxy
    for name in ("a", "b"):
        env[name].set(status=503)
    with pytest.raises(GatewayError) as err:
        await forward(fw, env["compiled"], chat("chat"))
    assert (err.value.status, err.value.code) == (502, "upstream_error")
    with pytest.raises(GatewayError) as err:  # both breakers opened after two failures each
        await forward(fw, env["compiled"], chat("chat"))
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")
    assert err.value.retry_after and err.value.retry_after > 0
    assert not up.breakers["a"].available()


async def test_a_stream_that_breaks_later_is_recorded_by_the_proxy(proxy) -> None:
    """Too late to retry, still the backend's failure: the relay reports it, the proxy records
    it on the breaker and counts it."""
    _, up, metrics, env = proxy
    backend = env["compiled"].backends["a"]
    up.stream_failed(backend, "stream_broken")
    assert up.breakers["a"].available()
    up.stream_failed(backend, "timeout_total")
    assert not up.breakers["a"].available()  # consecutive_failures: 2
    assert (
        count(
            metrics,
            "tandem_gateway_upstream_errors_total",
            backend="a",
            **{"class": "stream_broken"},
        )
        == 1
    )
