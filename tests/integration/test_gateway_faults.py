"""Fault run: 5,000 requests while the primary backend fails in every way the upstream can.

Every request must end in a success (through the fallback) or a well-formed OpenAI error, and
none may hang past its deadline.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from tests.support.gateway_harness import RunningGateway, chat
from tests.support.upstream import Behaviour, ServerThread, Upstream

pytestmark = pytest.mark.integration

DEADLINE_S = 1.5
FAULTS = [
    Behaviour(status=500),
    Behaviour(status=503),
    Behaviour(status=502),
    Behaviour(reset=True),
    Behaviour(status=429, retry_after="0.05"),
    Behaviour(first_token_s=0.5),  # slower than first_token_s on streams
    Behaviour(latency_s=0.5),  # slower than first_token_s before headers
    Behaviour(reset_mid_stream=True),
    Behaviour(context_limit=10),
    Behaviour(garbage=True),
    Behaviour(),
]


def well_formed(status: int, body: bytes, stream: bool) -> bool:
    if status == 200 and stream:
        events = [e for e in body.split(b"\n\n") if e]
        if not events or events[-1] != b"data: [DONE]":
            return False
        for e in events[:-1]:
            obj = orjson.loads(e[6:])
            if "error" in obj:
                return bool(obj["error"]["message"])
            if "choices" not in obj:
                return False
        return True
    obj = orjson.loads(body)
    if status == 200:
        return bool(obj["choices"])
    return (
        status in (400, 429, 502, 503, 504)
        and bool(obj["error"]["message"])
        and bool(obj["error"]["type"])
    )


async def test_5000_requests_through_a_failing_primary() -> None:
    primary, spare = Upstream("primary", faults=FAULTS), Upstream("spare")
    with ServerThread(primary.app) as p, ServerThread(spare.app) as s:
        cfg = {
            "backends": {
                "primary": {
                    "url": p.url + "/v1",
                    "timeouts": {"connect_s": 0.5, "first_token_s": 0.1, "total_s": 1.0},
                    "breaker": {"consecutive_failures": 5, "open_s": 0.05, "half_open_probes": 2},
                },
                "spare": {"url": s.url + "/v1"},
            },
            "routes": {
                "chat": {
                    "backends": [{"backend": "primary"}],
                    "fallbacks": ["spare"],
                    "context_fallback": "spare",
                    "deadline_s": DEADLINE_S,
                    "retries": {"attempts": 1, "backoff_s": 0.01},
                },
                "spare": {"backends": [{"backend": "spare"}]},
            },
        }
        with RunningGateway(cfg) as gw:
            bodies = [chat("chat", "y" * (5 + i % 20), stream=i % 2 == 0) for i in range(5000)]
            sem = asyncio.Semaphore(96)
            outcomes: list[tuple[int, bytes, float, bool]] = []
            t_start = time.monotonic()
            timeout = aiohttp.ClientTimeout(total=DEADLINE_S + 3)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def one(body: dict) -> None:
                    async with sem:
                        t0 = time.monotonic()
                        async with session.post(gw.url + "/v1/chat/completions", json=body) as r:
                            data = await r.read()
                        outcomes.append((r.status, data, time.monotonic() - t0, body["stream"]))

                await asyncio.gather(*(one(b) for b in bodies))
            took = time.monotonic() - t_start
            retries = gw.metric("tandem_gateway_retries_total")
            fallbacks = gw.metric("tandem_gateway_fallbacks_total")
    assert len(outcomes) == 5000
    bad = [
        (st, body[:200]) for st, body, _, stream in outcomes if not well_formed(st, body, stream)
    ]
    assert not bad, bad[:5]
    slowest = max(o[2] for o in outcomes)
    assert slowest < DEADLINE_S + 1.0, slowest
    ok = sum(1 for st, body, _, _ in outcomes if st == 200 and b'"error"' not in body)
    assert ok >= 4500, ok  # failures only where a stream broke after its first byte
    assert primary.requests > 200 and retries > 0 and fallbacks > 0  # the breaker shields it
    assert took < 60
