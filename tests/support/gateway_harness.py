"""Start the gateway from a config dict in a server thread (shared by the gateway and cache tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.app import GatewayService
from gateway.config import parse_config
from tests.support.upstream import ServerThread, Upstream


class RunningGateway:
    def __init__(self, config: dict, config_path: Path | None = None, **kwargs: Any) -> None:
        self.gateway = GatewayService(parse_config(config), config_path, **kwargs)
        self.server = ServerThread(self.gateway.app)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> RunningGateway:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> RunningGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        total = 0.0
        for family in self.gateway.metrics.registry.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


def chat(model: str, content: str = "hi", **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def blast(
    url: str,
    bodies: list[dict],
    *,
    headers: dict | None = None,
    concurrency: int = 32,
    path: str = "/v1/chat/completions",
) -> list[tuple[int, bytes, float]]:
    """Send every body with bounded concurrency; (status, body, seconds) per request, in order."""
    import asyncio
    import time

    import aiohttp

    results: list[tuple[int, bytes, float]] = [(0, b"", 0.0)] * len(bodies)
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(i: int, body: dict) -> None:
            async with sem:
                t0 = time.monotonic()
                async with session.post(url + path, json=body) as resp:
                    results[i] = (resp.status, await resp.read(), time.monotonic() - t0)

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return results


@contextmanager
def upstream_servers(*names: str) -> Iterator[dict[str, tuple[Upstream, ServerThread]]]:
    """One controllable upstream per name, each on its own port (for module-scoped fixtures)."""
    servers: dict[str, tuple[Upstream, ServerThread]] = {}
    try:
        for name in names:
            up = Upstream(name)
            servers[name] = (up, ServerThread(up.app).start())
        yield servers
    finally:
        for _, server in servers.values():
            server.stop()


def fresh_upstreams(servers: dict[str, tuple[Upstream, ServerThread]]) -> dict[str, Upstream]:
    """Back to healthy behaviour and zero counts (per test)."""
    for up, _ in servers.values():
        up.set()
        up.reset_counts()
    return {name: up for name, (up, _) in servers.items()}
