"""The Batch API, the Files API and async jobs, served by the gateway (an `Extension`,
gateway/app.py), with the gateway's own keys: every object belongs to the team of the key that
created it, and another team's id answers 404.

    POST   /v1/files                      upload (multipart: file, purpose=batch), streamed to S3
    GET    /v1/files[?purpose&limit&after&order]
    GET    /v1/files/{id}                 the File object
    GET    /v1/files/{id}/content         the bytes
    DELETE /v1/files/{id}
    POST   /v1/batches                    {input_file_id, endpoint, completion_window: "24h", metadata}
    GET    /v1/batches[?limit&after]
    GET    /v1/batches/{id}
    POST   /v1/batches/{id}/cancel
    POST   /v1/async/{chat/completions,completions,embeddings}   202 + the job; header
                                          `Tandem-Webhook-Url` asks for a signed webhook
    GET    /v1/async/jobs/{id}

The work itself is done by the workers (pipelines/worker.py); the API only records it and queues
it. It also publishes, every `interval_s`, this replica's online p95 per route (the batch
workers' yield rule reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.app import GatewayService
from gateway.config import CompiledKey
from gateway.errors import GatewayError
from gateway.load import OnlineLatency
from gateway.stages.authenticate import authenticate
from gateway.stages.parse import check_body, read_raw, resolve_route
from pipelines.files import S3Files
from pipelines.formats import (
    ENDPOINTS,
    batch_object,
    file_object,
    job_object,
    new_id,
)
from pipelines.queue import Queue
from pipelines.state import Records, now_s
from vocabulary.pipelines import COMPLETION_WINDOWS, BatchSection

log = logging.getLogger("tandem.pipelines")

_JSON = "application/json"
WEBHOOK_HEADER = "Tandem-Webhook-Url"
METADATA_MAX_KEYS = 16


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON, headers=headers)


def _not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(404, f"No such {kind}: '{ident}'.", "not_found")


class BatchApi:
    """Mount with `GatewayService.extend(BatchApi(service))` (or `mount`)."""

    def __init__(self, service: GatewayService) -> None:
        assert service.cfg.batch is not None and service.cfg.redis is not None
        self.svc = service
        self.s: BatchSection = service.cfg.batch
        self.redis_url = service.cfg.redis.url
        self.replica = f"{socket.gethostname()}-{os.getpid()}"
        # the online signal the workers yield to: recorded by the account stage from now on
        self.online = OnlineLatency(self.s.workers.yield_to_online.window_s)
        service.accounting.online = self.online
        self.requests = Counter(
            "tandem_batch_api_requests",
            "Batch, Files and async-job API calls",
            ["team", "operation", "code"],
            registry=service.metrics.registry,
        )
        self.r: Redis | None = None
        self.records: Records | None = None
        self.queue: Queue | None = None
        self.files: S3Files | None = None
        self._publisher: asyncio.Task | None = None

    # -- Extension --------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        routes: list[tuple[str, list[tuple[str, Any]]]] = [
            ("/v1/files", [("POST", self.upload), ("GET", self.list_files)]),
            ("/v1/files/{id}", [("GET", self.get_file), ("DELETE", self.delete_file)]),
            ("/v1/files/{id}/content", [("GET", self.file_content)]),
            ("/v1/batches", [("POST", self.create_batch), ("GET", self.list_batches)]),
            ("/v1/batches/{id}", [("GET", self.get_batch)]),
            ("/v1/batches/{id}/cancel", [("POST", self.cancel_batch)]),
            ("/v1/async/jobs/{id}", [("GET", self.get_job)]),
        ]
        routes += [(f"/v1/async{path[3:]}", [("POST", self.submit_job)]) for path in ENDPOINTS]
        for path, methods in routes:
            resource = r.add_resource(path)
            for method, handler in methods:
                resource.add_route(method, self._guarded(handler))
            resource.add_route("*", self._method_not_allowed)

    async def start(self) -> None:
        self.r = Redis.from_url(
            self.redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        self.records = Records(self.r, self.s)
        self.queue = Queue(self.r, self.s)
        self.files = S3Files(self.s.files)
        with contextlib.suppress(RedisError, OSError):  # the workers create them too
            await self.queue.ensure_groups()
        self._publisher = asyncio.ensure_future(self._publish_online())

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        if self.r is not None:
            await self.r.aclose()

    async def _publish_online(self) -> None:
        interval = self.s.workers.yield_to_online.interval_s
        while True:
            await asyncio.sleep(interval)
            p95 = {route: v * 1000 for route, (v, _n) in self.online.p95().items()}
            try:
                assert self.records is not None
                await self.records.publish_online(self.replica, p95)
            except (RedisError, OSError) as exc:
                log.debug("publishing the online p95 failed: %s", exc)

    # -- plumbing ---------------------------------------------------------------------------
    def _guarded(self, handler: Any) -> Any:
        name = handler.__name__

        async def run(request: web.Request) -> web.StreamResponse:
            team = "unknown"
            try:
                key = authenticate(self.svc.compiled, request.headers.get("Authorization"))
                team = key.team
                resp = await handler(request, key)
            except GatewayError as exc:
                resp = exc.response()
            except (RedisError, OSError) as exc:
                log.warning("batch API %s: storage unavailable: %s", name, exc)
                resp = GatewayError(
                    503, "The batch store is unavailable; try again.", "store_unavailable",
                    retry_after=1,
                ).response()  # fmt: skip
            except Exception:
                log.exception("batch API %s failed", name)
                resp = GatewayError(
                    500, "The gateway failed to process the request.", "internal_error"
                ).response()
            self.requests.labels(team, name, str(resp.status)).inc()
            return resp

        return run

    async def _method_not_allowed(self, request: web.Request) -> web.Response:
        return GatewayError(
            405, f"Method {request.method} is not allowed on {request.path}.", "method_not_allowed"
        ).response()

    @property
    def _rec(self) -> Records:
        assert self.records is not None
        return self.records

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await read_raw(request, self.svc.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "The request body is not valid JSON.", "invalid_json") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "The request body must be a JSON object.", "invalid_request")
        return body

    @staticmethod
    def _limit(request: web.Request, default: int, most: int) -> int:
        raw = request.query.get("limit")
        if raw is None:
            return default
        if not raw.isdigit() or not 1 <= int(raw) <= most:
            raise GatewayError(
                400, f"'limit' must be an integer from 1 to {most}.", "invalid_request",
                param="limit",
            )  # fmt: skip
        return int(raw)

    # -- files ------------------------------------------------------------------------------
    async def upload(self, request: web.Request, key: CompiledKey) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise GatewayError(
                400, "Upload a file as multipart/form-data with fields 'file' and 'purpose'.",
                "invalid_request",
            )  # fmt: skip
        assert self.files is not None
        reader = await request.multipart()
        file_id = new_id("file")
        purpose: str | None = None
        filename: str | None = None
        upload = None
        try:
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)  # a form's parts are not nested
                if part.name == "purpose":
                    purpose = (await part.text()).strip()
                elif part.name == "file" and upload is None:
                    filename = part.filename or "upload.jsonl"
                    upload = self.files.upload(file_id)
                    while chunk := await part.read_chunk(2**20):
                        if upload.size + len(chunk) > self.s.max_file_bytes:
                            raise GatewayError(
                                413, f"The file is larger than {self.s.max_file_bytes} bytes; "
                                "for bigger datasets use `tandem batch submit --via rayjob`.",
                                "file_too_large", param="file",
                            )  # fmt: skip
                        await upload.write(chunk)
            if upload is None:
                raise GatewayError(
                    400, "Missing the 'file' field.", "invalid_request", param="file"
                )
            if purpose != "batch":
                raise GatewayError(
                    400, f"'purpose' {purpose!r} is not supported here; allowed: 'batch'.",
                    "invalid_request", param="purpose",
                )  # fmt: skip
            await upload.finish()
        except BaseException:
            if upload is not None:
                with contextlib.suppress(Exception):
                    await upload.abort()
            raise
        fields = {
            "id": file_id,
            "purpose": purpose,
            "filename": filename,
            "bytes": upload.size,
            "created_at": now_s(),
            "team": key.team,
        }
        await self._rec.add_file(fields)
        return _json(file_object(fields, self.s.files.retention_days))

    async def _owned_file(self, file_id: str, key: CompiledKey) -> dict[str, str]:
        h = await self._rec.file(file_id)
        if h is None or h.get("team") != key.team:
            raise _not_found("file", file_id)
        return h

    async def list_files(self, request: web.Request, key: CompiledKey) -> web.Response:
        limit = self._limit(request, 10_000, 10_000)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise GatewayError(
                400, "'order' must be 'asc' or 'desc'.", "invalid_request", param="order"
            )
        purpose = request.query.get("purpose")
        rows, more = await self._rec.page(
            "file", key.team, request.query.get("after"), limit, newest_first=order == "desc"
        )
        data = [
            file_object(h, self.s.files.retention_days)
            for h in rows
            if purpose is None or h.get("purpose") == purpose
        ]
        return _json(_page(data, more))

    async def get_file(self, request: web.Request, key: CompiledKey) -> web.Response:
        return _json(
            file_object(
                await self._owned_file(request.match_info["id"], key), self.s.files.retention_days
            )
        )

    async def file_content(self, request: web.Request, key: CompiledKey) -> web.StreamResponse:
        h = await self._owned_file(request.match_info["id"], key)
        assert self.files is not None
        chunks = self.files.chunks(h["id"])
        try:
            first = await anext(chunks, b"")
        except Exception as exc:  # the bucket's lifecycle rule removed it
            if "NoSuchKey" not in str(exc):
                raise
            await self._rec.remove_file(h["id"], key.team)
            raise GatewayError(404, f"File '{h['id']}' has expired.", "file_expired") from None
        out = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        out.content_length = int(h.get("bytes") or 0)
        await out.prepare(request)
        await out.write(first)
        async for chunk in chunks:
            await out.write(chunk)
        await out.write_eof()
        return out

    async def delete_file(self, request: web.Request, key: CompiledKey) -> web.Response:
        h = await self._owned_file(request.match_info["id"], key)
        assert self.files is not None
        await self.files.delete(h["id"])
        await self._rec.remove_file(h["id"], key.team)
        return _json({"id": h["id"], "object": "file", "deleted": True})

    # -- batches ----------------------------------------------------------------------------
    async def create_batch(self, request: web.Request, key: CompiledKey) -> web.Response:
        body = await self._body(request)
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str):
            raise GatewayError(
                400, "'input_file_id' is required.", "invalid_request", param="input_file_id"
            )
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise GatewayError(
                400, f"'endpoint' {endpoint!r} is not supported; allowed: {sorted(ENDPOINTS)}.",
                "invalid_request", param="endpoint",
            )  # fmt: skip
        window = body.get("completion_window")
        if window not in COMPLETION_WINDOWS:
            raise GatewayError(
                400, f"'completion_window' {window!r} is not supported; allowed: "
                f"{sorted(COMPLETION_WINDOWS)}.", "invalid_request", param="completion_window",
            )  # fmt: skip
        metadata = _metadata(body.get("metadata"))
        h = await self._owned_file(file_id, key)
        if h.get("purpose") != "batch":
            raise GatewayError(
                400, f"File '{file_id}' was not uploaded with purpose 'batch'.",
                "invalid_request", param="input_file_id",
            )  # fmt: skip
        created = now_s()
        fields: dict[str, Any] = {
            "id": new_id("batch"),
            "endpoint": endpoint,
            "input_file_id": file_id,
            "completion_window": window,
            "status": "validating",
            "created_at": created,
            "expires_at": created + COMPLETION_WINDOWS[window],
            "team": key.team,
            "key_id": key.id,
        }
        if metadata is not None:
            fields["metadata"] = orjson.dumps(metadata)
        assert self.queue is not None
        await self._rec.add_batch(fields, self.queue.jobs)
        return _json(batch_object(fields))

    async def _owned_batch(self, batch_id: str, key: CompiledKey) -> dict[str, str]:
        h = await self._rec.batch(batch_id)
        if h is None or h.get("team") != key.team:
            raise _not_found("batch", batch_id)
        return h

    async def get_batch(self, request: web.Request, key: CompiledKey) -> web.Response:
        return _json(batch_object(await self._owned_batch(request.match_info["id"], key)))

    async def list_batches(self, request: web.Request, key: CompiledKey) -> web.Response:
        limit = self._limit(request, 20, 100)
        rows, more = await self._rec.page("batch", key.team, request.query.get("after"), limit)
        return _json(_page([batch_object(h) for h in rows], more))

    async def cancel_batch(self, request: web.Request, key: CompiledKey) -> web.Response:
        batch_id = request.match_info["id"]
        h = await self._owned_batch(batch_id, key)
        status = await self._rec.cancel(batch_id)
        if status != "cancelling":
            raise GatewayError(
                409, f"Cannot cancel a batch with status '{h['status']}'.", "invalid_state"
            )
        return _json(batch_object(await self._owned_batch(batch_id, key)))

    # -- async jobs -------------------------------------------------------------------------
    async def submit_job(self, request: web.Request, key: CompiledKey) -> web.Response:
        path = "/v1" + request.path.removeprefix("/v1/async")
        endpoint = ENDPOINTS[path]
        raw = await read_raw(request, self.svc.max_body_bytes)
        body = check_body(raw, endpoint)
        if body.get("stream"):
            raise GatewayError(
                400, "Async jobs cannot be streamed; remove 'stream'.", "invalid_request",
                param="stream",
            )  # fmt: skip
        resolve_route(self.svc.compiled, key, body["model"], endpoint)
        webhook = request.headers.get(WEBHOOK_HEADER)
        if webhook is not None:
            if not webhook.startswith(("http://", "https://")):
                raise GatewayError(
                    400, f"{WEBHOOK_HEADER} must be an http(s) URL.", "invalid_request"
                )
            if not (self.s.webhook_secret_env and os.environ.get(self.s.webhook_secret_env)):
                raise GatewayError(
                    400, "This gateway has no webhook signing secret (batch.webhook_secret_env); "
                    "poll GET /v1/async/jobs/{id} instead.", "webhooks_unavailable",
                )  # fmt: skip
        fields: dict[str, Any] = {
            "id": new_id("job"),
            "status": "queued",
            "endpoint": path,
            "model": body["model"],
            "body": raw,
            "created_at": now_s(),
            "team": key.team,
            "key_id": key.id,
        }
        if webhook is not None:
            fields["webhook_url"] = webhook
        assert self.queue is not None
        await self._rec.add_job(fields, self.queue.jobs)
        return _json(
            job_object(fields), 202, headers={"Location": f"/v1/async/jobs/{fields['id']}"}
        )

    async def get_job(self, request: web.Request, key: CompiledKey) -> web.Response:
        job_id = request.match_info["id"]
        h = await self._rec.job(job_id)
        if h is None or h.get("team") != key.team:
            raise _not_found("job", job_id)
        return _json(job_object(h))


def _page(data: list[dict], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > METADATA_MAX_KEYS
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise GatewayError(
            400, f"'metadata' must map at most {METADATA_MAX_KEYS} keys (64 characters) to "
            "strings (512 characters).", "invalid_request", param="metadata",
        )  # fmt: skip
    return value


def mount(service: GatewayService) -> None:
    """The Batch API on this gateway (`gateway.app.serve(..., extend=mount)`)."""
    service.extend(BatchApi(service))
