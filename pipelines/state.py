"""The records (files, batches, async jobs) in Redis, and the batch state machine.

Keys, under the batch section's prefix P:

    P:file:<id>         hash   a file's metadata (the bytes are on S3: pipelines/files.py)
    P:files:<team>      zset   the team's files by creation time
    P:batch:<id>        hash   a batch: status, timestamps, request counts, usage, cost
    P:batches:<team>    zset   the team's batches by creation time
    P:results:<batch>   hash   line index -> its one record (deleted once the files are written)
    P:reruns:<batch>    hash   line index -> runs after the first (a redelivered line)
    P:job:<id>          hash   an async job; P:jobs:expiry (zset) says when it is dropped
    P:online            hash   gateway replica -> its online p95 per route (the yield rule)

Every change that must happen together is one Lua script, so a worker killed at any instant
leaves either all of it or none: a batch line's result is written only if the line has none yet
(HSETNX), and in the same script the batch's counts, usage and cost move and the budgets are
charged (the gateway's own spend keys: the team's and, for a key that names a developer with a
per-developer budget, the developer's); the script that records the last line also queues the
batch's finalization. A line that runs twice therefore ends in one record and one charge.

The state machine: validating -> in_progress -> finalizing -> completed | expired; validating ->
failed (the file breaks a rule); validating | in_progress -> cancelling -> cancelled. Each step is
a compare-and-set on the status, so a redelivered control message cannot move a batch backwards.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from pipelines.formats import TERMINAL
from vocabulary.pipelines import BatchSection

_COMMIT_LINE = """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'finalizing' or status == 'completed' or status == 'failed'
   or status == 'expired' or status == 'cancelled' then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'expired', '1') end
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', ARGV[4])
  for i = 4, #KEYS do redis.call('INCRBYFLOAT', KEYS[i], ARGV[4]) end
end
redis.call('HINCRBY', KEYS[1], 'input_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'output_tokens', ARGV[6])
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '-1')
local done = tonumber(redis.call('HGET', KEYS[1], 'completed') or '0')
  + tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')
if done == total then redis.call('XADD', KEYS[3], '*', 't', 'finalize', 'id', ARGV[7]) end
return 1
"""

# Enqueue one chunk of lines if the batch's `enqueued` counter is where this chunk starts: a
# prepare message redelivered to a second worker resumes where the first stopped, never twice.
_ENQUEUE = """
if tonumber(redis.call('HGET', KEYS[1], 'enqueued') or '0') ~= tonumber(ARGV[1]) then return 0 end
local n = 0
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[2], 'i', ARGV[i], 'c', ARGV[i + 1], 'd', ARGV[i + 2])
  n = n + 1
end
redis.call('HSET', KEYS[1], 'enqueued', tonumber(ARGV[1]) + n)
return 1
"""

# validating -> in_progress with the line count (cancelling stays cancelling); returns the status
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'validating' and status ~= 'in_progress' and status ~= 'cancelling' then
  return status or '' end
redis.call('HSETNX', KEYS[1], 'total', ARGV[1])
if status == 'validating' then
  redis.call('HSET', KEYS[1], 'status', 'in_progress', 'in_progress_at', ARGV[2])
  return 'in_progress'
end
return status
"""

_FAIL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'validating' and status ~= 'cancelling' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'failed_at', ARGV[1], 'errors', ARGV[2])
return 1
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'validating' or status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[1])
  return 'cancelling'
end
return status or ''
"""

# in_progress -> finalizing (cancelling stays cancelling: it ends in cancelled); returns the
# status the batch will end in, or '' when there is nothing to finalize
_FINALIZE_START = """
local status = redis.call('HGET', KEYS[1], 'status')
local final = redis.call('HGET', KEYS[1], 'final_status')
if final and (status == 'finalizing' or status == 'cancelling') then return final end
if status == 'in_progress' then
  final = (redis.call('HGET', KEYS[1], 'expired') == '1') and 'expired' or 'completed'
  redis.call('HSET', KEYS[1], 'status', 'finalizing', 'finalizing_at', ARGV[1],
             'final_status', final)
  return final
end
if status == 'cancelling' then
  redis.call('HSET', KEYS[1], 'final_status', 'cancelled')
  return 'cancelled'
end
return ''
"""

_FINALIZE_END = """
local final = redis.call('HGET', KEYS[1], 'final_status')
if not final then return 0 end
redis.call('HSET', KEYS[1], 'status', final, final .. '_at', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'output_file_id', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error_file_id', ARGV[3]) end
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""

_COMMIT_JOB = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'response', ARGV[2], 'completed_at', ARGV[3],
           'cost_usd', ARGV[4])
if tonumber(ARGV[4]) > 0 then
  for i = 2, #KEYS do redis.call('INCRBYFLOAT', KEYS[i], ARGV[4]) end
end
return 1
"""


_JOB_RUN = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'in_progress', 'started_at', ARGV[1])
end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


def now_s() -> int:
    return int(time.time())


class Records:
    def __init__(self, r: Redis, section: BatchSection) -> None:
        # redis-py's async stubs type every reply as `bytes | str` whatever `decode_responses`
        # says (these clients decode): replies are read as the strings they are
        self.r: Any = r
        self.s = section
        self._commit_line = r.register_script(_COMMIT_LINE)
        self._enqueue = r.register_script(_ENQUEUE)
        self._start = r.register_script(_START)
        self._fail = r.register_script(_FAIL)
        self._cancel = r.register_script(_CANCEL)
        self._finalize_start = r.register_script(_FINALIZE_START)
        self._finalize_end = r.register_script(_FINALIZE_END)
        self._commit_job = r.register_script(_COMMIT_JOB)
        self._job_run = r.register_script(_JOB_RUN)

    def key(self, *parts: str) -> str:
        return self.s.key(*parts)

    # -- files ------------------------------------------------------------------------------
    async def add_file(self, fields: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("file", fields["id"]), mapping=fields)
        pipe.zadd(self.key("files", fields["team"]), {fields["id"]: float(fields["created_at"])})
        await pipe.execute()

    async def file(self, file_id: str) -> dict[str, str] | None:
        h = await self.r.hgetall(self.key("file", file_id))
        return h or None

    async def remove_file(self, file_id: str, team: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.key("file", file_id))
        pipe.zrem(self.key("files", team), file_id)
        await pipe.execute()

    async def page(
        self, kind: str, team: str, after: str | None, limit: int, newest_first: bool = True
    ) -> tuple[list[dict[str, str]], bool]:
        """One page of the team's files or batches (`kind`), after the id `after`."""
        index = self.key({"file": "files", "batch": "batches"}[kind], team)
        ids: list[str] = (
            await self.r.zrevrange(index, 0, -1)
            if newest_first
            else await self.r.zrange(index, 0, -1)
        )
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        chosen = ids[: limit + 1]
        pipe = self.r.pipeline(transaction=False)
        for i in chosen[:limit]:
            pipe.hgetall(self.key(kind, i))
        return [h for h in await pipe.execute() if h], len(chosen) > limit

    # -- batches ----------------------------------------------------------------------------
    async def add_batch(self, fields: dict[str, Any], prepare_stream: str) -> None:
        """The batch record, the team's index and its prepare message, together."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("batch", fields["id"]), mapping=fields)
        pipe.zadd(self.key("batches", fields["team"]), {fields["id"]: float(fields["created_at"])})
        pipe.xadd(prepare_stream, {"t": "prepare", "id": fields["id"]})
        await pipe.execute()

    async def batch(self, batch_id: str) -> dict[str, str] | None:
        h = await self.r.hgetall(self.key("batch", batch_id))
        return h or None

    async def start(self, batch_id: str, total: int) -> str:
        return await self._start(keys=[self.key("batch", batch_id)], args=[total, now_s()])

    async def fail(self, batch_id: str, errors: list[dict]) -> bool:
        done = await self._fail(
            keys=[self.key("batch", batch_id)], args=[now_s(), orjson.dumps(errors)]
        )
        return bool(done)

    async def cancel(self, batch_id: str) -> str:
        return await self._cancel(keys=[self.key("batch", batch_id)], args=[now_s()])

    async def enqueue(
        self, batch_id: str, lines_stream: str, start: int, chunk: list[tuple[int, str, bytes]]
    ) -> bool:
        args: list[Any] = [start, batch_id]
        for index, custom_id, body in chunk:
            args += [index, custom_id, body]
        done = await self._enqueue(keys=[self.key("batch", batch_id), lines_stream], args=args)
        return bool(done)

    async def commit_line(
        self,
        batch_id: str,
        index: int,
        record: bytes,
        completed: bool,
        *,
        cost: float,
        usage: tuple[int, int],
        spend_keys: list[str],
        jobs_stream: str,
        expired: bool = False,
    ) -> int:
        """Record a line's one result (1), or nothing when it has one already (0) or the batch
        is finalized (-1). `record` starts with b"o" (output file) or b"e" (error file).
        `spend_keys`: the budgets' spend keys the cost is charged to (the gateway's own)."""
        return await self._commit_line(
            keys=[
                self.key("batch", batch_id),
                self.key("results", batch_id),
                jobs_stream,
                *spend_keys,
            ],
            args=[
                index,
                record,
                "completed" if completed else "failed",
                repr(cost),
                usage[0],
                usage[1],
                batch_id,
                "1" if expired else "",
            ],
        )

    async def has_result(self, batch_id: str, index: int) -> bool:
        return bool(await self.r.hexists(self.key("results", batch_id), str(index)))

    async def rerun(self, batch_id: str, index: int) -> int:
        """Count one more run of a redelivered line; how many runs it has had, this one
        included. Deliveries alone would overcount: an entry can be taken over from a live worker
        that lost Redis for a while, without the line running again."""
        return 1 + int(await self.r.hincrby(self.key("reruns", batch_id), str(index), 1))

    async def results(self, batch_id: str) -> dict[str, str]:
        return await self.r.hgetall(self.key("results", batch_id))

    async def finalize_start(self, batch_id: str) -> str:
        return await self._finalize_start(keys=[self.key("batch", batch_id)], args=[now_s()])

    async def finalize_end(
        self, batch_id: str, output_id: str | None, error_id: str | None
    ) -> None:
        await self._finalize_end(
            keys=[
                self.key("batch", batch_id),
                self.key("results", batch_id),
                self.key("reruns", batch_id),
            ],
            args=[now_s(), output_id or "", error_id or ""],
        )

    # -- async jobs --------------------------------------------------------------------------
    async def add_job(self, fields: dict[str, Any], jobs_stream: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("job", fields["id"]), mapping=fields)
        pipe.zadd(self.key("jobs", "expiry"), {fields["id"]: now_s() + self.s.job_ttl_s})
        pipe.xadd(jobs_stream, {"t": "job", "id": fields["id"]})
        await pipe.execute()

    async def job(self, job_id: str) -> dict[str, str] | None:
        h = await self.r.hgetall(self.key("job", job_id))
        return h or None

    async def job_run(self, job_id: str) -> int:
        """queued -> in_progress (never back from an end), and count this run of the job."""
        return int(await self._job_run(keys=[self.key("job", job_id)], args=[now_s()]))

    async def commit_job(
        self, job_id: str, ok: bool, response: bytes, cost: float, spend_keys: list[str]
    ) -> bool:
        done = await self._commit_job(
            keys=[self.key("job", job_id), *spend_keys],
            args=[
                "completed" if ok else "failed",
                response,
                now_s(),
                repr(cost),
            ],
        )
        return bool(done)

    async def set_job(self, job_id: str, **fields: Any) -> None:
        await self.r.hset(self.key("job", job_id), mapping=fields)

    async def drop_expired_jobs(self) -> int:
        index = self.key("jobs", "expiry")
        ids = await self.r.zrangebyscore(index, "-inf", now_s())
        if not ids:
            return 0
        pipe = self.r.pipeline(transaction=True)
        for i in ids:
            pipe.delete(self.key("job", i))
        pipe.zrem(index, *ids)
        await pipe.execute()
        return len(ids)

    async def drop_expired_files(self, retention_days: int) -> int:
        """Forget the records of files the bucket's lifecycle rule has removed."""
        cutoff = now_s() - retention_days * 86400
        dropped = 0
        async for index in self.r.scan_iter(match=self.key("files", "*"), count=100):
            ids = await self.r.zrangebyscore(index, "-inf", cutoff)
            if ids:
                pipe = self.r.pipeline(transaction=True)
                pipe.delete(*(self.key("file", i) for i in ids))
                pipe.zrem(index, *ids)
                await pipe.execute()
                dropped += len(ids)
        return dropped

    # -- the online signal ------------------------------------------------------------------
    async def publish_online(self, replica: str, p95_ms: dict[str, float]) -> None:
        await self.r.hset(
            self.key("online"), replica, orjson.dumps({"t": time.time(), "p95_ms": p95_ms})
        )

    async def online(self, fresh_s: float) -> dict[str, float]:
        """Each route's worst p95 (ms) over the gateway replicas that reported in `fresh_s`;
        replicas silent for a minute are forgotten."""
        out: dict[str, float] = {}
        now = time.time()
        stale = []
        for replica, raw in (await self.r.hgetall(self.key("online"))).items():
            entry = orjson.loads(raw)
            age = now - entry["t"]
            if age > 60:
                stale.append(replica)
            if age > fresh_s:
                continue
            for route, ms in entry["p95_ms"].items():
                out[route] = max(ms, out.get(route, 0.0))
        if stale:
            await self.r.hdel(self.key("online"), *stale)
        return out


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL
