"""Stored Responses: what `GET` / `DELETE /v1/responses/{id}` and `previous_response_id` read.

A Responses request with `store` true (the API's default) leaves its Response and the whole
conversation that produced it (every input item, then the output) here, under the response id and
the key that created it; only that key's team reads it back. Entries expire after
`responses.ttl_s`. With `redis:` configured they live there (every replica sees them, one GET or
SET per use); otherwise in process memory, at most `responses.max_entries`, oldest first out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson


class ResponseStore(Protocol):
    async def get(self, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def get(self, response_id: str) -> dict[str, Any] | None:
        hit = self._items.get(response_id)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[response_id]
            return None
        return hit[1]

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        self._items[response_id] = (time.monotonic() + self.ttl_s, record)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    async def close(self) -> None:
        return None


class RedisStore:
    def __init__(self, url: str, prefix: str, ttl_s: float) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        self._p = f"{prefix}:response:"
        self.ttl_s = int(ttl_s)

    async def get(self, response_id: str) -> dict[str, Any] | None:
        raw = await self._r.get(self._p + response_id)
        return orjson.loads(raw) if raw else None

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        await self._r.set(self._p + response_id, orjson.dumps(record), ex=self.ttl_s)

    async def delete(self, response_id: str) -> bool:
        return bool(await self._r.delete(self._p + response_id))

    async def close(self) -> None:
        await self._r.aclose()
