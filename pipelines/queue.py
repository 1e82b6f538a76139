"""The durable queue: two Redis Streams read by one consumer group, at least once.

`lines` holds one entry per batch line; `jobs` holds the control messages (prepare a batch,
finalize it) and async single requests, and is read first. A worker reads new entries with
XREADGROUP; an entry stays in the group's pending list (PEL) until the worker acknowledges it,
which it does only after the result is recorded, and then deletes it (XACK + XDEL) so the stream
holds only the work left. A worker that dies leaves its entries pending: after `claim_idle_s`
without a sign of life another worker takes them over with XAUTOCLAIM, and the entry's delivery
count (XPENDING) says how often that has happened, which is how a line that kills workers is
caught (`max_attempts`). A live worker refreshes the idle time of what it holds (XCLAIM ... JUSTID,
which does not count as a delivery), so a slow line is never taken from a live worker.

Why Redis Streams and not SQS (the AWS option, docs/async.md): Redis is already the gateway's
shared state (budgets, cache), so a line's result, its count and its charge can be written in
one atomic script with its acknowledgement a round trip later; Streams give consumer groups,
redelivery and a lag KEDA scales on; and the same server runs in CI and on a laptop.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vocabulary.pipelines import CONSUMER_GROUP, JOBS_STREAM, LINES_STREAM, BatchSection

Message = tuple[str, dict[str, str], int]  # (entry id, fields, times delivered)


class Queue:
    def __init__(self, r: Redis, section: BatchSection) -> None:
        # redis-py's async stubs type every reply as `bytes | str` whatever `decode_responses`
        # says (these clients decode): replies are read as the strings they are
        self.r: Any = r
        self.lines = section.key(LINES_STREAM)
        self.jobs = section.key(JOBS_STREAM)
        self.group = CONSUMER_GROUP

    async def ensure_groups(self) -> None:
        """Create the streams and the group (from the start of each stream) if missing."""
        for stream in (self.jobs, self.lines):
            try:
                await self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def add_job(self, fields: dict[str, str]) -> str:
        return await self.r.xadd(self.jobs, fields)

    async def read(self, stream: str, consumer: str, count: int, block_ms: int) -> list[Message]:
        """New entries for this consumer (delivered once so far)."""
        got = await self.r.xreadgroup(
            self.group, consumer, {stream: ">"}, count=count, block=block_ms
        )
        return [(mid, fields, 1) for _, entries in got or [] for mid, fields in entries]

    async def claim(
        self, stream: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Message]:
        """Entries another consumer held for `min_idle_s` without acknowledging them (it died),
        now this consumer's, with how often each has been delivered, this time included."""
        _, entries, _deleted = await self.r.xautoclaim(
            stream, self.group, consumer, int(min_idle_s * 1000), "0-0", count=count
        )
        entries = [(mid, fields) for mid, fields in entries if fields is not None]
        if not entries:
            return []
        ids = [mid for mid, _ in entries]
        pending = await self.r.xpending_range(
            stream, self.group, min=min(ids, key=_order), max=max(ids, key=_order),
            count=len(ids) * 2 + 10, consumername=consumer,
        )  # fmt: skip
        times = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [(mid, fields, times.get(mid, 2)) for mid, fields in entries]

    async def keep(self, stream: str, consumer: str, ids: list[str]) -> None:
        """Reset the idle time of entries this consumer is still working on."""
        if ids:
            await self.r.xclaim(stream, self.group, consumer, 0, ids, justid=True)

    async def done(self, stream: str, ids: list[str]) -> None:
        """Acknowledge and delete: the stream keeps only the work left."""
        if ids:
            pipe = self.r.pipeline(transaction=False)
            pipe.xack(stream, self.group, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()

    async def lag(self) -> dict[str, Any]:
        """Per stream: entries not yet delivered (`lag`) and delivered but unacknowledged
        (`pending`): the two numbers the ScaledObject's triggers read."""
        out: dict[str, Any] = {}
        for stream in (self.jobs, self.lines):
            for g in await self.r.xinfo_groups(stream):
                if g["name"] == self.group:
                    out[stream] = {"lag": g.get("lag"), "pending": g["pending"]}
        return out


def _order(mid: str) -> tuple[int, int]:
    ms, _, seq = mid.partition("-")
    return int(ms), int(seq or 0)
