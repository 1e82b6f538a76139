"""Online feature reads for the gateway: one entity's features of one feature service, in one
Redis round trip, from the online store Feast writes.

Every feature view of a service that the gateway serves shares the service's entity, so all of
a request's features live in one Redis hash (features.redis_format): one HMGET of the features'
fields and each view's `_ts:` field answers the request. Everything that does not depend on the
request (the hash fields, the names, the key prefix) is computed once per route (`CompiledRead`).

An entity the online store has never seen (no `_ts:` field of any view) is `None`, so the caller
can tell "unknown customer" from "customer whose features are null".
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from features.redis_format import (
    decode_timestamp,
    decode_value,
    entity_key,
    field_key,
    timestamp_field,
)
from vocabulary.features import FeatureRead


@dataclass(frozen=True)
class FeatureRow:
    """One entity's features: name -> value, and each view's event time (epoch seconds)."""

    values: dict[str, object]
    event_times: dict[str, float | None]


class CompiledRead:
    """A FeatureRead with its Redis hash fields worked out once."""

    __slots__ = ("read", "names", "fields", "views", "n_features")

    def __init__(self, read: FeatureRead) -> None:
        self.read = read
        self.names = [f for v in read.views for f in v.features]
        self.views = [v.name for v in read.views]
        self.fields = [field_key(v.name, f) for v in read.views for f in v.features]
        self.fields += [timestamp_field(v) for v in self.views]
        self.n_features = len(self.names)

    def key(self, entity_value: str) -> bytes:
        """The entity's Redis key; ValueError when an int64 key is not a number."""
        r = self.read
        value: str | int = int(entity_value) if r.key_type == "int64" else entity_value
        return entity_key(r.project, r.entity.name, value)

    def row(self, raw: list[bytes | None]) -> FeatureRow | None:
        n = self.n_features
        times = {v: decode_timestamp(t) for v, t in zip(self.views, raw[n:], strict=True)}
        if all(t is None for t in times.values()):
            return None
        values = {name: decode_value(b) for name, b in zip(self.names, raw[:n], strict=True)}
        return FeatureRow(values, times)


POOL_SIZE = 128  # connections per process: one HMGET each, sub-millisecond on a healthy Redis


class OnlineReader:
    """Reads feature rows from Feast's Redis online store (one pooled async client).

    A blocking pool: past POOL_SIZE requests in flight a read waits for a connection (the
    gateway's `timeout_ms` bounds the wait) instead of failing, which redis-py's default pool
    does at 100 connections ("Too many connections"), turning a burst into errors."""

    def __init__(self, redis_url: str) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=POOL_SIZE, timeout=5
        )
        self.client = aioredis.Redis(connection_pool=pool)

    async def fetch(self, compiled: CompiledRead, key: bytes) -> list[bytes | None]:
        """The raw hash fields of one entity key (one HMGET)."""
        return await self.client.hmget(key, compiled.fields)  # type: ignore[return-value]

    async def read(self, compiled: CompiledRead, entity_value: str) -> FeatureRow | None:
        return compiled.row(await self.fetch(compiled, compiled.key(entity_value)))

    async def close(self) -> None:
        await self.client.aclose()
