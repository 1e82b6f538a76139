"""One small JSON-over-HTTP helper (stdlib) for the registry, Prometheus, Ray and controller
clients: the controller and `tandem deploy` need no HTTP library beyond the standard one."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class HttpError(RuntimeError):
    """A call that failed: `status` is the HTTP status (0: no answer), `body` what came back."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 30.0,
    content_type: str = "application/json",
) -> Any:
    """JSON in, JSON out (None for an empty answer). Raises HttpError naming the URL."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    payload = (
        data if data is not None else (json.dumps(body).encode() if body is not None else None)
    )
    req = urllib.request.Request(url, data=payload, method=method)
    if payload is not None:
        req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        raise HttpError(f"{method} {url}: HTTP {exc.code}: {raw[:500]}", exc.code, parsed) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpError(f"{method} {url}: cannot connect ({reason})") from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise HttpError(f"{method} {url}: the answer is not JSON: {text[:200]}") from None
