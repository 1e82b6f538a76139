"""The contract between the gateway's request path and its response cache.

The gateway builds a `CacheRequest` once per request (it already parsed the body), asks `lookup`
before routing upstream and calls `store` after a successful, cacheable answer. Everything the
cache needs for scoping is in the request, so the cache never re-parses JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class CacheRequest:
    tenant: str  # team / key id: entries never cross tenants
    model: str  # the alias the caller asked for
    endpoint: str  # "chat.completions" | "completions" | "embeddings"
    body: dict[str, Any]  # the parsed request body
    stream: bool = False
    route_policy: dict[str, Any] = field(default_factory=dict)  # the route's `cache:` section


@dataclass(slots=True)
class CacheHit:
    layer: str  # "exact" | "semantic"
    response: dict[str, Any]  # the OpenAI response object as the upstream returned it
    similarity: float | None = None
    question: str | None = None  # a semantic hit: the cached question whose answer is served


class ResponseCache(Protocol):
    async def lookup(self, request: CacheRequest) -> CacheHit | None: ...

    async def store(self, request: CacheRequest, response: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...
