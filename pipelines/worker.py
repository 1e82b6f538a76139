"""The worker: a gateway process without the HTTP API, running the queue's work through the
gateway's own stages.

Each worker builds the same `GatewayService` the API replicas build, from the same routes file,
and calls the routes with `GatewayService.call_route` (gateway/internal.py): keys, routes,
budgets, the response cache, retries, fallbacks and circuit breakers all apply to a batch line as
they do to an online request, and the same `tandem_gateway_*` metrics count it. Then it records
the result (pipelines/state.py) and only then acknowledges the queue entry (pipelines/queue.py):
at least once, with results written once.

Messages:
    jobs stream   `prepare` (read the input file from S3, validate it, enqueue its lines),
                  `finalize` (write the output and error files, end the batch), `job` (an async
                  single request, then its webhook)
    lines stream  one batch line

A line that fails is retried in place with exponential backoff (the Retry-After of a 429/503
when there is one), up to `max_attempts` counting earlier runs: a line that keeps failing
ends in the error file with its last answer, and a line whose worker died `max_attempts` times
(it may be what kills them) ends there too. Either way the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.app import GatewayService
from gateway.config import Compiled, CompiledKey
from gateway.internal import Answer, batch_key
from gateway.stages.admit import dev_spend_key, spend_key
from pipelines.files import S3Files
from pipelines.formats import (
    ENDPOINTS,
    TERMINAL,
    error_record,
    parse_input,
    response_record,
)
from pipelines.limiter import YieldLimiter
from pipelines.queue import Message, Queue
from pipelines.state import Records, now_s
from pipelines.webhooks import sign
from vocabulary.pipelines import BatchSection

log = logging.getLogger("tandem.pipelines")

ENQUEUE_CHUNK = 500
BATCH_STATUS_TTL_S = 0.5  # how stale a worker's view of a batch's status may be (cancel latency)
MAX_BACKOFF_S = 30.0
_T = TypeVar("_T")


class WorkerMetrics:
    def __init__(self, registry: Any) -> None:
        self.lines = Counter(
            "tandem_batch_lines", "Batch lines recorded", ["team", "outcome"], registry=registry
        )
        self.jobs = Counter(
            "tandem_batch_jobs", "Async jobs recorded", ["team", "outcome"], registry=registry
        )
        self.redelivered = Counter(
            "tandem_batch_redelivered",
            "Entries taken over from a worker that stopped",
            ["stream"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tandem_batch_duplicates",
            "Line runs whose result was already recorded (not charged again)",
            registry=registry,
        )
        self.webhooks = Counter(
            "tandem_batch_webhooks", "Webhook deliveries", ["outcome"], registry=registry
        )
        self.cap = Gauge(
            "tandem_batch_concurrency_cap",
            "Batch lines this worker may run at once",
            registry=registry,
        )
        self.inflight = Gauge(
            "tandem_batch_inflight", "Entries this worker is running", ["stream"], registry=registry
        )
        self.pressure = Gauge(
            "tandem_batch_online_pressure",
            "Highest online p95 / SLO over the routes (the yield rule's input)",
            registry=registry,
        )


class Worker:
    def __init__(self, service: GatewayService, *, name: str | None = None) -> None:
        cfg = service.cfg
        if cfg.batch is None or cfg.redis is None:
            raise ValueError("a batch worker needs the routes file's `batch:` and `redis:`")
        self.svc = service
        self.s: BatchSection = cfg.batch
        self.redis_prefix = cfg.redis.prefix
        self.r: Redis = Redis.from_url(
            cfg.redis.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self.queue = Queue(self.r, self.s)
        self.records = Records(self.r, self.s)
        self.files = S3Files(self.s.files)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.limiter = YieldLimiter(self.s.workers)
        self.metrics = WorkerMetrics(service.metrics.registry)
        self.metrics.cap.set(self.limiter.cap)
        self.inflight: dict[str, set[str]] = {self.queue.lines: set(), self.queue.jobs: set()}
        self.webhook_secret = (
            os.environ.get(self.s.webhook_secret_env) if self.s.webhook_secret_env else None
        )
        self._slot = asyncio.Event()
        self._batches: dict[str, tuple[float, dict[str, str]]] = {}
        self._keys: tuple[Compiled | None, dict[str, CompiledKey]] = (None, {})
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._last_warning = 0.0
        self._http: aiohttp.ClientSession | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, grace_s: float = 25.0) -> None:
        """Work until `stop` is set, then finish what is in flight (up to `grace_s`); what is
        left stays pending and another worker takes it over."""
        await self._redis_retry(self.queue.ensure_groups)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        loops = [
            asyncio.create_task(self._read_loop(self.queue.jobs)),
            asyncio.create_task(self._read_loop(self.queue.lines)),
            asyncio.create_task(self._claim_loop()),
            asyncio.create_task(self._keep_loop()),
            asyncio.create_task(self._yield_loop()),
            asyncio.create_task(self._sweep_loop()),
        ]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=grace_s)
            for t in list(self._tasks):
                t.cancel()
            await self._http.close()
            await self.r.aclose()

    def _warn(self, message: str, *args: Any) -> None:
        """A warning at most every 10 s: an outage must not flood the log, one line per task."""
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning(message, *args)

    async def _redis_retry(self, op: Callable[[], Awaitable[_T]], limit_s: float = 60.0) -> _T:
        """`op`, retried while Redis is unreachable (a restart) for up to `limit_s`."""
        deadline = time.monotonic() + limit_s
        delay = 0.1
        while True:
            try:
                return await op()
            except (RedisError, OSError) as exc:
                if time.monotonic() + delay > deadline or self._stopping:
                    raise
                self._warn("redis unavailable (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    # -- reading ----------------------------------------------------------------------------
    def _room(self, stream: str) -> int:
        limit = self.limiter.cap if stream == self.queue.lines else self.s.workers.jobs_concurrency
        return limit - len(self.inflight[stream])

    async def _read_loop(self, stream: str) -> None:
        while True:
            room = self._room(stream)
            if room <= 0:
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), 0.5)
                continue
            try:
                msgs = await self.queue.read(stream, self.name, room, block_ms=500)
            except (RedisError, OSError) as exc:
                self._warn("reading %s failed (%s); retrying", stream, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self._spawn(stream, msg)

    async def _claim_loop(self) -> None:
        """Take over what stopped workers held."""
        every = max(0.2, self.s.workers.claim_idle_s / 4)
        while True:
            await asyncio.sleep(every)
            for stream in (self.queue.jobs, self.queue.lines):
                room = self._room(stream)
                if room <= 0:
                    continue
                try:
                    msgs = await self.queue.claim(
                        stream, self.name, self.s.workers.claim_idle_s, room
                    )
                except (RedisError, OSError) as exc:
                    self._warn("claiming from %s failed (%s)", stream, exc)
                    continue
                for msg in msgs:
                    if msg[0] in self.inflight[stream]:
                        continue  # ours, still running (Redis came back from a restart)
                    self.metrics.redelivered.labels(stream.rsplit(":", 1)[-1]).inc()
                    self._spawn(stream, msg)

    async def _keep_loop(self) -> None:
        """Tell the group this worker is alive: the entries it runs are not idle."""
        every = max(0.1, self.s.workers.claim_idle_s / 3)
        while True:
            await asyncio.sleep(every)
            for stream, ids in self.inflight.items():
                with contextlib.suppress(RedisError, OSError):
                    await self.queue.keep(stream, self.name, list(ids))

    async def _yield_loop(self) -> None:
        rule = self.s.workers.yield_to_online
        if not rule.slo_p95_ms:
            return
        fresh = max(2 * rule.interval_s, 2.0)
        while True:
            await asyncio.sleep(rule.interval_s)
            try:
                p95_ms = await self.records.online(fresh)
            except (RedisError, OSError):
                continue
            before = self.limiter.cap
            cap = self.limiter.update({k: v / 1000 for k, v in p95_ms.items()})
            self.metrics.cap.set(cap)
            self.metrics.pressure.set(self.limiter.pressure)
            if cap > before:
                self._slot.set()

    async def _sweep_loop(self) -> None:
        """Housekeeping: async jobs past their retention, consumers long gone, stale views."""
        while True:
            await asyncio.sleep(30)
            with contextlib.suppress(RedisError, OSError):
                await self.records.drop_expired_jobs()
                if self.s.files.retention_days:
                    await self.records.drop_expired_files(self.s.files.retention_days)
                for stream in (self.queue.jobs, self.queue.lines):
                    for c in await self.r.xinfo_consumers(stream, self.queue.group):
                        if c["pending"] == 0 and c["idle"] > 600_000 and c["name"] != self.name:
                            await self.r.xgroup_delconsumer(stream, self.queue.group, c["name"])
            cutoff = time.monotonic() - 60
            self._batches = {k: v for k, v in self._batches.items() if v[0] > cutoff}

    def _spawn(self, stream: str, msg: Message) -> None:
        self.inflight[stream].add(msg[0])
        self.metrics.inflight.labels(stream.rsplit(":", 1)[-1]).set(len(self.inflight[stream]))
        task = asyncio.ensure_future(self._handle(stream, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, stream: str, msg: Message) -> None:
        mid, fields, deliveries = msg
        try:
            if stream == self.queue.lines:
                await self._line(fields, deliveries)
            elif fields.get("t") == "prepare":
                await self._prepare(fields["id"])
            elif fields.get("t") == "finalize":
                await self._finalize(fields["id"])
            elif fields.get("t") == "job":
                await self._job(fields["id"])
            else:
                log.error("unknown message on %s: %s", stream, fields)
            await self._redis_retry(lambda: self.queue.done(stream, [mid]))
        except asyncio.CancelledError:
            raise
        except Exception:  # left pending: another delivery will try again
            log.exception("handling %s %s failed; it stays pending", stream, mid)
        finally:
            self.inflight[stream].discard(mid)
            self.metrics.inflight.labels(stream.rsplit(":", 1)[-1]).set(len(self.inflight[stream]))
            self._slot.set()

    # -- batches ----------------------------------------------------------------------------
    async def _batch(self, batch_id: str) -> dict[str, str] | None:
        """The batch's record, as of at most BATCH_STATUS_TTL_S ago."""
        now = time.monotonic()
        seen = self._batches.get(batch_id)
        if seen is not None and now - seen[0] < BATCH_STATUS_TTL_S:
            return seen[1]
        h = await self._redis_retry(lambda: self.records.batch(batch_id))
        if h is not None:
            self._batches[batch_id] = (now, h)
        return h

    async def _prepare(self, batch_id: str) -> None:
        h = await self.records.batch(batch_id)
        if h is None or h["status"] not in ("validating", "in_progress", "cancelling"):
            return
        try:
            data = await self.files.get(h["input_file_id"])
        except Exception as exc:  # the file is gone (deleted after the batch was created)
            if "NoSuchKey" not in str(exc):
                raise
            await self.records.fail(
                batch_id,
                [{"code": "file_not_found", "message": "The input file no longer exists.",
                  "line": None, "param": "input_file_id"}],
            )  # fmt: skip
            return
        lines, problems = parse_input(data, h["endpoint"], self.s.max_lines)
        if problems:
            await self.records.fail(batch_id, problems)
            return
        status = await self.records.start(batch_id, len(lines))
        if status not in ("in_progress", "cancelling"):
            return
        while True:
            h = await self.records.batch(batch_id)
            start = int((h or {}).get("enqueued") or 0)
            if start >= len(lines):
                return
            chunk = [
                (ln.index, ln.custom_id, ln.body) for ln in lines[start : start + ENQUEUE_CHUNK]
            ]
            await self.records.enqueue(batch_id, self.queue.lines, start, chunk)

    async def _line(self, f: dict[str, str], deliveries: int) -> None:
        batch_id, index, custom_id = f["b"], int(f["i"]), f["c"]
        h = await self._batch(batch_id)
        if h is None or h["status"] in TERMINAL or h["status"] == "finalizing":
            return
        runs = 1
        if deliveries > 1:
            if await self.records.has_result(batch_id, index):
                self.metrics.duplicates.inc()
                return
            runs = await self.records.rerun(batch_id, index)
        expired = False
        answer: Answer | None = None
        if h["status"] == "cancelling":
            record = error_record(
                batch_id, index, custom_id, "batch_cancelled",
                "The batch was cancelled before this request ran.",
            )  # fmt: skip
        elif now_s() >= int(h["expires_at"]):
            expired = True
            record = error_record(
                batch_id, index, custom_id, "batch_expired",
                "This request could not be executed before the completion window expired.",
            )  # fmt: skip
        elif runs > self.s.max_attempts:
            record = error_record(
                batch_id, index, custom_id, "max_attempts_exceeded",
                f"The workers running this request stopped {runs - 1} times; it was not "
                "run again.",
            )  # fmt: skip
        else:
            answer = await self._call(h, orjson.loads(f["d"]), runs, batch=True)
            record = response_record(batch_id, index, custom_id, answer.status, answer.body)
        ok = answer is not None and answer.status == 200
        team = h["team"]
        done = await self._redis_retry(
            lambda: self.records.commit_line(
                batch_id,
                index,
                (b"o" if ok else b"e") + orjson.dumps(record),
                ok,
                cost=answer.cost if answer else 0.0,
                usage=answer.usage if answer else (0, 0),
                spend_keys=self._spend_keys(h),
                jobs_stream=self.queue.jobs,
                expired=expired,
            )
        )
        if done == 1:
            self.metrics.lines.labels(team, "completed" if ok else "failed").inc()
        else:
            self.metrics.duplicates.inc()

    async def _finalize(self, batch_id: str) -> None:
        final = await self.records.finalize_start(batch_id)
        if not final:
            return
        h = await self.records.batch(batch_id)
        assert h is not None
        results = await self.records.results(batch_id)
        out: list[str] = []
        err: list[str] = []
        for index in sorted(results, key=int):
            value = results[index]
            (out if value[0] == "o" else err).append(value[1:])
        suffix = batch_id.removeprefix("batch_")
        ids: dict[str, str | None] = {}
        for kind, rows in (("output", out), ("error", err)):
            if not rows:
                ids[kind] = None
                continue
            file_id = ids[kind] = f"file-{suffix}-{kind}"
            data = ("\n".join(rows) + "\n").encode()
            await self.files.put(file_id, data)
            await self.records.add_file(
                {
                    "id": file_id,
                    "purpose": "batch_output",
                    "filename": f"{batch_id}_{kind}.jsonl",
                    "bytes": len(data),
                    "created_at": now_s(),
                    "team": h["team"],
                }
            )
        await self.records.finalize_end(batch_id, ids["output"], ids["error"])
        log.info("batch %s %s: %d output, %d error lines", batch_id, final, len(out), len(err))

    # -- async jobs -------------------------------------------------------------------------
    async def _job(self, job_id: str) -> None:
        h = await self.records.job(job_id)
        if h is None:
            return
        if h["status"] in ("queued", "in_progress"):
            runs = await self.records.job_run(job_id)
            if runs > self.s.max_attempts:
                answer = Answer(
                    500,
                    {"error": {"message": f"The workers running this job stopped "
                               f"{runs - 1} times; it was not run again.",
                               "type": "api_error", "param": None,
                               "code": "max_attempts_exceeded"}},
                )  # fmt: skip
            else:
                answer = await self._call(h, orjson.loads(h["body"]), runs, batch=False)
            response = orjson.dumps({"status_code": answer.status, "body": answer.body})
            ok = answer.status == 200
            if await self.records.commit_job(
                job_id, ok, response, answer.cost, self._spend_keys(h)
            ):
                self.metrics.jobs.labels(h["team"], "completed" if ok else "failed").inc()
            h = await self.records.job(job_id) or h
        await self._deliver_webhook(job_id, h)

    async def _deliver_webhook(self, job_id: str, h: dict[str, str]) -> None:
        """At least once: the event id is the same on every try (receivers deduplicate on it)."""
        url = h.get("webhook_url")
        if not url or h.get("webhook_delivered") == "1" or h.get("webhook_error"):
            return
        assert self._http is not None
        if self.webhook_secret is None:
            await self.records.set_job(job_id, webhook_error="no webhook secret configured")
            return
        event_id = "evt_" + job_id.removeprefix("job_")
        body = orjson.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": f"async_job.{h['status']}",
                "created_at": now_s(),
                "data": {"id": job_id, "status": h["status"]},
            }
        )
        last = ""
        for attempt in range(self.s.webhook_attempts):
            headers = {
                "Content-Type": "application/json",
                **sign(self.webhook_secret, event_id, body),
            }
            try:
                async with self._http.post(url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        await self.records.set_job(job_id, webhook_delivered="1")
                        self.metrics.webhooks.labels("delivered").inc()
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.5 * 2**attempt))
        await self.records.set_job(
            job_id, webhook_error=f"{self.s.webhook_attempts} attempts failed; last: {last}"
        )
        self.metrics.webhooks.labels("failed").inc()

    # -- calling the routes -----------------------------------------------------------------
    def _key(self, key_id: str) -> CompiledKey | None:
        compiled = self.svc.compiled  # follows hot reloads: a revoked key stops its batches
        if self._keys[0] is not compiled:
            self._keys = (compiled, {k.id: batch_key(k) for k in compiled.keys.values()})
        if not compiled.auth_required:
            from gateway.config import ANONYMOUS

            return ANONYMOUS
        return self._keys[1].get(key_id)

    def _spend_keys(self, h: dict[str, str]) -> list[str]:
        """The spend keys a batch line's or job's cost is charged to: the budgets an online
        request of the same key is charged to (admit stage), the team's and, for a key that names
        a developer, the developer's where the team sets a per-developer budget."""
        team, now, compiled = h["team"], time.time(), self.svc.compiled
        keys = []
        budget = compiled.budgets.get(team)
        if budget is not None:
            keys.append(spend_key(self.redis_prefix, team, budget, now))
        key = self._key(h["key_id"])
        dev_budget = compiled.developer_budgets.get(team)
        if key is not None and key.developer and dev_budget is not None:
            keys.append(dev_spend_key(self.redis_prefix, team, (key.developer, dev_budget), now))
        return keys

    async def _call(
        self, h: dict[str, str], body: dict[str, Any], runs: int, *, batch: bool
    ) -> Answer:
        """The route's answer, retrying what may pass (5xx, a busy backend) with backoff, up to
        what is left of `max_attempts` after earlier runs."""
        key = self._key(h["key_id"])
        if key is None:
            return Answer(
                401,
                {"error": {"message": "The API key that submitted this work was revoked.",
                           "type": "authentication_error", "param": None,
                           "code": "invalid_api_key"}},
            )  # fmt: skip
        endpoint = ENDPOINTS[h["endpoint"]]
        tries = max(1, self.s.max_attempts - (runs - 1))
        for attempt in range(tries):
            answer = await self.svc.call_route(key, endpoint, body, batch=batch)
            if not answer.retryable or attempt == tries - 1:
                return answer
            wait = answer.retry_after if answer.retry_after else 0.5 * 2**attempt
            await asyncio.sleep(min(MAX_BACKOFF_S, wait))
        raise AssertionError("unreachable")
