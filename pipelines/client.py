"""What `tandem batch submit` sends on the queue path: the Files and Batch APIs over HTTP, with the
standard library only (the same calls the `openai` SDK makes: files.create, batches.create,
batches.retrieve, files.content)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from pipelines.formats import TERMINAL


class ApiError(Exception):
    """The gateway answered an error (status and its OpenAI-style message), or could not be
    reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BatchClient:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _request(
        self, method: str, path: str, data: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = orjson.loads(body)["error"]["message"]
            except Exception:
                message = body[:300].decode(errors="replace")
            raise ApiError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach the gateway at {self.base}: {reason}") from None

    def _json(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        return orjson.loads(self._request(method, path, data, "application/json" if data else None))

    def upload(self, path: Path) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        data = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return orjson.loads(
            self._request("POST", "/files", data, f"multipart/form-data; boundary={boundary}")
        )

    def create(self, file_id: str, endpoint: str, metadata: dict[str, str] | None) -> dict:
        body: dict[str, Any] = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
        }
        if metadata:
            body["metadata"] = metadata
        return self._json("POST", "/batches", body)

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"/batches/{batch_id}")

    def wait(self, batch_id: str, poll_s: float = 2.0, timeout_s: float | None = None) -> dict:
        """Poll until the batch ends; a gateway that is briefly unreachable (a restart) is
        polled again."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                b = self.batch(batch_id)
                if b["status"] in TERMINAL:
                    return b
            except ApiError as exc:
                if exc.status not in (0, 502, 503, 504):
                    raise
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(0, f"batch {batch_id} did not finish in {timeout_s:g} s")
            time.sleep(poll_s)

    def content(self, file_id: str) -> bytes:
        return self._request("GET", f"/files/{file_id}/content")
