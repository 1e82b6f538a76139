"""Entries in this replica's memory (TTL, entry and byte bounds, LRU eviction) and their sharing
with other replicas through Redis.

Redis 7 has no vector search, so Redis holds the entries (vector, question, answer, scope) and a
stream announcing each new one; every replica keeps its own nearest-neighbour index, fills it from
Redis when it starts and follows the stream afterwards. Exact-key lookups also go to Redis
directly, so an exact repeat is served by any replica the moment another one stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson

from embedding.minilm import TokenEmbeddings
from gateway.cache.index import ScopeIndex
from gateway.cache.metrics import CacheMetrics
from gateway.cache.sizing import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.typing import EncodableT, FieldT

log = logging.getLogger("tandem.gateway.cache")

# redis-py types replies as bytes | str; this client never decodes, so they are bytes
RedisHash = dict[bytes, bytes]
StreamBatches = list[tuple[bytes, list[tuple[bytes, RedisHash]]]] | None


@dataclass(slots=True)
class Entry:
    id: str
    scope: str
    exact: str
    text: str | None
    vector: np.ndarray | None
    response: dict[str, Any]
    created: float
    expires: float
    size: int = 0
    label: int = 0  # the integer key of this entry in its scope's index
    tokens: TokenEmbeddings | None = field(default=None, repr=False)  # computed when first verified

    def to_redis(self) -> dict[str, bytes]:
        meta = {
            "id": self.id,
            "scope": self.scope,
            "exact": self.exact,
            "text": self.text,
            "created": self.created,
            "expires": self.expires,
        }
        data = {"meta": orjson.dumps(meta), "resp": orjson.dumps(self.response)}
        if self.vector is not None:
            data["vec"] = np.asarray(self.vector, dtype=np.float32).tobytes()
        return data

    @classmethod
    def from_redis(cls, data: dict[bytes, bytes]) -> Entry:
        meta = orjson.loads(data[b"meta"])
        vec = np.frombuffer(data[b"vec"], dtype=np.float32).copy() if b"vec" in data else None
        resp = orjson.loads(data[b"resp"])
        return cls(
            meta["id"],
            meta["scope"],
            meta["exact"],
            meta["text"],
            vec,
            resp,
            meta["created"],
            meta["expires"],
            size=len(data[b"resp"]) + len(data.get(b"vec", b"")) + len(data[b"meta"]),
        )


# word pieces per character of a question that has not been tokenised yet (entries from Redis):
# MiniLM's tokenizer averages one piece per ~4.5 characters of English, so this over-counts
_PIECES_PER_CHAR = 1 / 3
_MAX_PIECES = 256  # the embedder truncates there
STORED = np.float16  # the dtype of entries' token arrays (gateway.cache.core.compact)
# the Python objects around a semantic entry's arrays (the answer as dicts and strings rather than
# its JSON, the word-piece strings, index and LRU slots): 8,000 Quora questions with a
# 200-character answer held 16.1 KB each (tracemalloc) against 13.6 KB counted without this
_SEMANTIC_OVERHEAD = 2560


def entry_bytes(entry: Entry, dimension: int) -> int:
    """What one entry costs this replica, counted against `max_bytes`.

    Besides the answer and the question, a semantic entry holds its vector twice (the entry and
    the index) and, for the verifier, its token vectors: a float16 array of (word pieces x
    dimension). That array is most of an entry: 11 KB for a 14-piece question against a few
    hundred bytes of answer; counting only the answer let a replica grow to ten times
    `max_bytes`. The objects around them add a measured constant. Entries from Redis get their
    token vectors on first verification, so their share is reserved now, estimated from the text.
    """
    size = len(orjson.dumps(entry.response)) + len(entry.text or "")
    if entry.vector is None:
        return size
    if entry.tokens is not None:
        pieces = len(entry.tokens.vectors)
    else:
        pieces = min(int(len(entry.text or "") * _PIECES_PER_CHAR), _MAX_PIECES)
    arrays = 2 * entry.vector.nbytes + np.dtype(STORED).itemsize * dimension * pieces
    return size + arrays + _SEMANTIC_OVERHEAD


class LocalStore:
    """Bounded by `max_entries` and `max_bytes` (least recently used goes first) and by TTL."""

    def __init__(
        self,
        dimension: int,
        metrics: CacheMetrics,
        max_entries: int = 100_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        exact_max: int = 20_000,
    ) -> None:
        self.dimension = dimension
        self.metrics = metrics
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.exact_max = exact_max
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.by_exact: dict[str, str] = {}
        self.scopes: dict[str, ScopeIndex] = {}
        self.by_label: dict[int, str] = {}
        self.bytes = 0
        self._expiry: list[tuple[float, str]] = []
        self._next_label = 1

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self.entries

    def add(self, entry: Entry, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if entry.expires <= now or entry.id in self.entries:
            return
        old = self.by_exact.get(entry.exact)
        if old is not None:
            self._drop(old, "replaced")
        entry.label = self._next_label
        self._next_label += 1
        if not entry.size:
            entry.size = entry_bytes(entry, self.dimension)
        self.entries[entry.id] = entry
        self.by_exact[entry.exact] = entry.id
        self.by_label[entry.label] = entry.id
        if entry.vector is not None:
            index = self.scopes.get(entry.scope)
            if index is None:
                index = self.scopes[entry.scope] = ScopeIndex(self.dimension, self.exact_max)
            index.add(entry.label, entry.vector)
        self.bytes += entry.size
        heapq.heappush(self._expiry, (entry.expires, entry.id))
        self.expire(now)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)), "capacity")
        self.metrics.entries.set(len(self.entries))

    def get_exact(self, exact: str, now: float) -> Entry | None:
        entry_id = self.by_exact.get(exact)
        entry = self.entries.get(entry_id) if entry_id else None
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(entry.id, "ttl")
            return None
        self.entries.move_to_end(entry.id)
        return entry

    def nearest(
        self, scope: str, vector: np.ndarray, k: int, now: float
    ) -> list[tuple[Entry, float]]:
        index = self.scopes.get(scope)
        if index is None:
            return []
        found = []
        for label, sim in index.search(vector, k):
            entry = self.entries.get(self.by_label.get(label, ""))
            if entry is None:
                continue
            if entry.expires <= now:
                self._drop(entry.id, "ttl")
                continue
            found.append((entry, sim))
        return found

    def touch(self, entry: Entry) -> None:
        if entry.id in self.entries:
            self.entries.move_to_end(entry.id)

    def expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiry)
            entry = self.entries.get(entry_id)
            if entry is not None and entry.expires <= now:
                self._drop(entry_id, "ttl")

    def _drop(self, entry_id: str, reason: str) -> None:
        entry = self.entries.pop(entry_id, None)
        if entry is None:
            return
        if self.by_exact.get(entry.exact) == entry_id:
            del self.by_exact[entry.exact]
        self.by_label.pop(entry.label, None)
        index = self.scopes.get(entry.scope)
        if index is not None and entry.vector is not None:
            index.remove(entry.label)
            if len(index) == 0:
                del self.scopes[entry.scope]
        self.bytes -= entry.size
        self.metrics.evictions.labels(reason).inc()
        self.metrics.entries.set(len(self.entries))


class RedisShare:
    """Entries in Redis (`<ns>:e:<id>` hashes, `<ns>:x:<exact>` pointers, both with the entry's TTL)
    and a capped stream `<ns>:new` announcing them to the other replicas."""

    def __init__(self, url: str, namespace: str, replica: str, stream_max: int = 100_000) -> None:
        import redis.asyncio as redis

        self.client = redis.from_url(url)
        self.ns = namespace
        self.replica = replica
        self.stream = f"{namespace}:new"
        self.stream_max = stream_max
        self._task: asyncio.Task | None = None

    async def start(self, on_entry: Callable[[Entry, str], None]) -> None:
        """Warm from every live entry, then follow the stream from where the warm-up began."""
        last = await self.client.xrevrange(self.stream, count=1)
        cursor = cast(bytes, last[0][0]) if last else b"0-0"
        await self._warm(on_entry)
        self._task = asyncio.get_running_loop().create_task(self._follow(cursor, on_entry))

    async def _warm(self, on_entry: Callable[[Entry, str], None]) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.ns}:e:*", count=1000)]
        for start in range(0, len(keys), 500):
            pipe = self.client.pipeline(transaction=False)
            for k in keys[start : start + 500]:
                pipe.hgetall(k)
            for data in await pipe.execute():
                if data:
                    on_entry(Entry.from_redis(cast(RedisHash, data)), "warm")

    async def _follow(self, cursor: bytes, on_entry: Callable[[Entry, str], None]) -> None:
        while True:
            try:
                batches = cast(
                    StreamBatches,
                    await self.client.xread({self.stream: cursor}, block=1000, count=500),
                )
                for _stream, messages in batches or []:
                    ids = []
                    for msg_id, fields in messages:
                        cursor = msg_id
                        if fields.get(b"replica", b"").decode() != self.replica:
                            ids.append(fields[b"id"].decode())
                    if ids:
                        pipe = self.client.pipeline(transaction=False)
                        for entry_id in ids:
                            pipe.hgetall(f"{self.ns}:e:{entry_id}")
                        for data in await pipe.execute():
                            if data:
                                on_entry(Entry.from_redis(cast(RedisHash, data)), "peer")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cache: following the Redis stream failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def publish(self, entry: Entry) -> None:
        ttl_ms = max(1, int((entry.expires - time.time()) * 1000))
        key = f"{self.ns}:e:{entry.id}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=cast("Mapping[FieldT, EncodableT]", entry.to_redis()))
        pipe.pexpire(key, ttl_ms)
        pipe.set(f"{self.ns}:x:{entry.exact}", entry.id, px=ttl_ms)
        pipe.xadd(
            self.stream,
            {"id": entry.id, "replica": self.replica},
            maxlen=self.stream_max,
            approximate=True,
        )
        await pipe.execute()

    async def get_exact(self, exact: str) -> Entry | None:
        entry_id = cast(bytes | None, await self.client.get(f"{self.ns}:x:{exact}"))
        if entry_id is None:
            return None
        data = cast(RedisHash, await self.client.hgetall(f"{self.ns}:e:{entry_id.decode()}"))
        return Entry.from_redis(data) if data else None

    async def close(self) -> None:
        """Bounded: a connection stuck in a blocking XREAD must not hold up the gateway's shutdown."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._task, 2.0)
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(self.client.aclose(), 2.0)
