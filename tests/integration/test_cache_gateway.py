"""The cache inside the real gateway: streamed replay of a cached answer, and two gateway processes
sharing entries through a real redis-server (including a restarted one warming from it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from gateway.sse import replay_as_sse
from tests.support.gateway_harness import RunningGateway
from tests.support.redis_server import redis_server
from tests.support.upstream import ServerThread, Upstream
from vocabulary.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Q = "How do I reset my password on the website?"
PARA = "How can I reset my password on the website?"


@pytest.fixture(scope="module")
def up() -> Iterator[tuple[Upstream, ServerThread]]:
    upstream = Upstream("a")
    server = ServerThread(upstream.app).start()
    yield upstream, server
    server.stop()


@pytest.fixture
def upstream(up: tuple[Upstream, ServerThread]) -> Upstream:
    up[0].set(chunks=5)
    up[0].reset_counts()
    return up[0]


def config(server: ServerThread, cache: dict) -> dict:
    return {
        "backends": {"a": {"url": server.url + "/v1"}},
        "routes": {"chat": {"backends": [{"backend": "a"}], "retries": {"attempts": 0}}},
        "cache": cache,
    }


def ask(url: str, question: str, **extra: object) -> httpx.Response:
    body = {
        "model": "chat",
        "temperature": 0,
        "messages": [{"role": "user", "content": question}],
        **extra,
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=20)


def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_cached_answer_streams_back_like_the_upstream_would(up, upstream: Upstream) -> None:
    cfg = config(up[1], {"mode": "semantic", "decision": "threshold", "threshold": 0.9})
    with RunningGateway(cfg) as gw:
        first = ask(gw.url, Q)
        assert first.status_code == 200 and first.headers["X-Tandem-Cache"] == "miss"
        assert until(lambda: len(gw.gateway.cache.local) == 1), "the answer was not stored"
        body = {
            "model": "chat",
            "temperature": 0,
            "stream": True,
            "messages": [{"role": "user", "content": PARA}],
        }
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=20) as r:
            assert r.status_code == 200 and r.headers["X-Tandem-Cache"] == "hit"
            data = b"".join(r.iter_bytes())
        assert data == replay_as_sse(first.json(), "chat.completions", False)
        text = "".join(
            orjson.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in data.split(b"\n\n")
            if e.startswith(b"data: {")
        )
        assert text == first.json()["choices"][0]["message"]["content"]
        assert upstream.requests == 1
        assert gw.metric("tandem_gateway_cache_hits_total", layer="semantic") == 1
        # sampled requests (no temperature: the API default of 1) always go upstream
        unset = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": Q}]},
            timeout=20,
        )
        assert unset.status_code == 200
        assert unset.headers["X-Tandem-Cache"] == "bypass; reason=sampled"
        assert upstream.requests == 2
        assert gw.metric("tandem_gateway_cache_status_total", status="miss") == 1
        assert gw.metric("tandem_gateway_cache_status_total", status="hit", reason="semantic") == 1
        sampled = gw.metric("tandem_gateway_cache_status_total", status="bypass", reason="sampled")
        assert sampled == 1


def stream(url: str, question: str) -> tuple[httpx.Response, bytes]:
    body = {
        "model": "chat",
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=20) as r:
        return r, b"".join(r.iter_bytes())


def test_a_streamed_answer_is_stored_for_later_callers(up, upstream: Upstream) -> None:
    """Chat clients mostly stream: a streamed answer fills the cache like a plain one."""
    cfg = config(up[1], {"mode": "semantic", "decision": "threshold", "threshold": 0.9})
    with RunningGateway(cfg) as gw:
        r, data = stream(gw.url, Q)
        assert r.status_code == 200 and r.headers["X-Tandem-Cache"] == "miss"
        assert data.endswith(b"data: [DONE]\n\n")  # relayed as the upstream sent it
        assert until(lambda: len(gw.gateway.cache.local) == 1), "the streamed answer was not stored"
        plain = ask(gw.url, Q)
        assert plain.headers["X-Tandem-Cache"] == "hit"
        answer = plain.json()["choices"][0]
        assert answer["message"] == {"role": "assistant", "content": "tok0 tok1 tok2 tok3 tok4 "}
        assert answer["finish_reason"] == "stop"
        r, again = stream(gw.url, PARA)  # and streams back to the next streaming caller
        assert r.headers["X-Tandem-Cache"] == "hit" and b"tok4" in again
        assert upstream.requests == 1


def test_hits_count_the_dollars_they_saved_at_the_routes_price(up, upstream: Upstream) -> None:
    cfg = config(up[1], {"mode": "exact"})
    cfg["prices"] = {"a": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}
    with RunningGateway(cfg) as gw:
        usage = ask(gw.url, Q).json()["usage"]
        assert until(lambda: len(gw.gateway.cache.local) == 1)
        assert ask(gw.url, Q).headers["X-Tandem-Cache"] == "hit"
        expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
        saved = gw.metric("tandem_gateway_cache_saved_usd_total", layer="exact")
        assert saved == pytest.approx(expected) and saved > 0
        spent = gw.metric("tandem_gateway_cost_usd_total")
        assert spent == pytest.approx(expected)  # the hit itself cost nothing


def test_a_broken_stream_is_not_stored(up, upstream: Upstream) -> None:
    upstream.set(chunks=5, reset_mid_stream=True)
    cfg = config(up[1], {"mode": "semantic", "decision": "threshold", "threshold": 0.9})
    with RunningGateway(cfg) as gw:
        r, data = stream(gw.url, Q)
        assert r.status_code == 200 and b"stream_broken" in data  # the caller is told
        time.sleep(0.5)
        assert len(gw.gateway.cache.local) == 0
        assert ask(gw.url, Q).headers["X-Tandem-Cache"] == "miss"


def test_gateway_wires_the_recheck_and_exposes_cache_metrics(up, upstream: Upstream) -> None:
    """Every semantic hit re-asked through the gateway's own backends (fraction 1.0); the
    result and the cache's own series appear on the gateway's /metrics."""
    cache = {
        "mode": "semantic",
        "decision": "threshold",
        "threshold": 0.9,
        "recheck": {"fraction": 1.0, "min_samples": 1},
    }
    with RunningGateway(config(up[1], cache)) as gw:
        assert ask(gw.url, Q).status_code == 200
        assert until(lambda: len(gw.gateway.cache.local) == 1), "the answer was not stored"
        hit = ask(gw.url, PARA)
        assert hit.status_code == 200 and hit.headers["X-Tandem-Cache"] == "hit"
        assert until(lambda: upstream.requests == 2), "the re-check did not reach the backend"
        assert until(lambda: gw.metric("tandem_cache_rechecks_total") == 1)
        exposed = httpx.get(gw.url + "/metrics", timeout=10).text
        assert "tandem_cache_rechecks_total" in exposed
        assert "tandem_cache_estimated_wrong_hit_rate" in exposed


class GatewayProcess:
    """`tandem gateway serve` in its own process, as a replica runs in production."""

    def __init__(self, config_path: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tandem.cli import main; sys.exit(main())",
                "gateway",
                "serve",
                "--config",
                str(config_path),
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if not until(self._ready, 60):
            self.stop()
            pytest.fail(
                f"gateway process did not become ready: {self.proc.stderr.read().decode()[-2000:]}"
            )

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server("the cache sharing tests") as url:
        yield url


def test_two_gateway_processes_share_the_cache_through_redis(
    up, upstream: Upstream, tmp_path: Path, redis_url: str
) -> None:
    url = redis_url
    path = tmp_path / "routes.yaml"
    path.write_text(
        yaml.safe_dump(
            config(
                up[1],
                {"mode": "semantic", "redis_url": url, "decision": "threshold", "threshold": 0.9},
            )
        )
    )
    replicas: list[GatewayProcess] = []
    try:
        replicas = [GatewayProcess(path), GatewayProcess(path)]
        one, two = replicas
        first = ask(one.url, Q)
        assert first.status_code == 200 and upstream.requests == 1
        # the other replica answers the same question, then a paraphrase, from the shared entry
        assert until(lambda: ask(two.url, Q).headers.get("X-Tandem-Cache") == "hit")
        para = ask(two.url, PARA)
        if para.headers.get("X-Tandem-Cache") != "hit":
            assert until(lambda: ask(two.url, PARA).headers.get("X-Tandem-Cache") == "hit")
        assert ask(two.url, PARA).json() == first.json()
        assert upstream.requests == 1
        # a replica that restarts warms its index from Redis
        two.stop()
        replicas[1] = three = GatewayProcess(path)
        assert until(
            lambda: (
                ask(three.url, "How can I reset my password on the website, please?").headers.get(
                    "X-Tandem-Cache"
                )
                == "hit"
            )
        )
        assert upstream.requests == 1
    finally:
        for r in replicas:
            r.stop()
