"""Stage 6, relay (gateway/stages/relay.py): what the caller receives once a backend answered, and
what happens when a stream cannot finish. Pass-through byte for byte, the hidden usage event and a
reset mid-stream are in test_gateway_streaming.py."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support.gateway_harness import RunningGateway, chat
from tests.support.upstream import ServerThread, Upstream, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def up():
    upstream = Upstream("a")
    server = ServerThread(upstream.app).start()
    yield upstream, server
    server.stop()


def cfg(server: ServerThread) -> dict:
    return {
        "backends": {"a": {"url": server.url + "/v1", "breaker": {"consecutive_failures": 1}}},
        "routes": {"chat": {"backends": [{"backend": "a"}], "deadline_s": 0.5}},
    }


def test_a_stream_past_the_deadline_ends_with_an_error_and_opens_the_breaker(up) -> None:
    upstream, server = up
    upstream.set(chunks=20, chunk_delay_s=0.1)  # two seconds of stream, half a second allowed
    with RunningGateway(cfg(server)) as gw:
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=chat("chat", stream=True), timeout=10
        ) as r:
            assert r.status_code == 200  # sent before the stream broke off: it cannot change
            events = [e for e in b"".join(r.iter_bytes()).split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        assert orjson.loads(events[-2][6:])["error"]["code"] == "timeout_total"
        assert 2 < len(events) < 20
        assert gw.metric("tandem_gateway_upstream_errors_total", backend="a") == 1
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 1  # open
        # the caller got an answer, accounted once it ended (after the caller's EOF)
        assert wait_until(lambda: gw.metric("tandem_gateway_requests_total", code="200") == 1)


def test_a_backends_client_error_is_relayed_as_it_is(up) -> None:
    upstream, server = up
    upstream.set(status=422)
    with RunningGateway(cfg(server)) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat("chat"), timeout=10)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "http_422"
        assert gw.metric("tandem_gateway_requests_total", code="422") == 1
        assert gw.metric("tandem_gateway_breaker_state", backend="a") == 0  # never counted
