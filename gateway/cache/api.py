"""The contract between the gateway's request path and its response cache.

The gateway builds a `CacheRequest` once per request (it already parsed the body), asks `lookup`
before routing upstream and calls `store` after a successful, cacheable answer. Everything the
cache needs for scoping is in the request, so the cache never re-parses JSON. At start-up the
gateway exposes the cache's `registry` on its /metrics, hands it a way to ask the backends
(`attach_upstream`, for the sampled re-check) and awaits `start()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vocabulary.cache import CachePolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@dataclass(slots=True)
class CacheRequest:
    tenant: str  # team / key id: entries never cross tenants
    model: str  # the alias the caller asked for
    endpoint: str  # "chat.completions" | "completions" | "embeddings"
    body: dict[str, Any]  # the parsed request body
    stream: bool = False
    route_policy: CachePolicy | None = None  # the route's `cache:` block, if it has one
    # set by the cache when it embedded the prompt (semantic lookup): the drift sample reuses it
    embedding: Any = None


@dataclass(slots=True)
class CacheHit:
    layer: str  # "exact" | "semantic"
    response: dict[str, Any]  # the OpenAI response object as the upstream returned it
    similarity: float | None = None
    question: str | None = None  # a semantic hit: the cached question whose answer is served


# A fresh answer from the route's backends for a cached request (None when none came back).
Upstream = Callable[[CacheRequest], Awaitable[dict[str, Any] | None]]


class ResponseCache(Protocol):
    @property
    def registry(self) -> CollectorRegistry | None:
        """The cache's own Prometheus metrics, served on the gateway's /metrics (None: none)."""
        ...

    def attach_upstream(self, upstream: Upstream) -> None:
        """Give the cache a way to ask the backends itself (its sampled re-check)."""
        ...

    async def start(self) -> None:
        """Connect and warm before the first request (idempotent)."""
        ...

    def bypass_reason(self, request: CacheRequest) -> str | None:
        """Why this request is neither looked up nor stored (None: it is): `disabled` (the
        route's policy turns the cache off) or `sampled` (the answer would be a sample)."""
        ...

    async def lookup(self, request: CacheRequest) -> CacheHit | None: ...

    async def store(self, request: CacheRequest, response: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...
