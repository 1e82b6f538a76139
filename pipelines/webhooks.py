"""Webhook signatures, Standard Webhooks style: the scheme OpenAI's own webhooks use, so a
receiver verifies Tandem's with the `openai` SDK (`client.webhooks.verify_signature`), the
`standardwebhooks` library, or the five lines in docs/async.md.

Headers: `webhook-id` (the event id, the same on every retry: receivers deduplicate on it),
`webhook-timestamp` (Unix seconds, checked against a tolerance to refuse replays) and
`webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`. The secret is
`whsec_<base64 key>`, held by the gateway in the environment variable the `batch:` section's
`webhook_secret_env` names (a Kubernetes Secret in the cluster).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (any other string is used as its bytes)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, event_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign `body` as event `event_id`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret_key(secret), f"{event_id}.{ts}.".encode() + body, hashlib.sha256)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


def verify(secret: str, body: bytes, headers: dict[str, str], tolerance_s: int = 300) -> bool:
    """True when `headers` sign `body` with `secret` and the timestamp is within tolerance."""
    try:
        event_id = headers["webhook-id"]
        ts = int(headers["webhook-timestamp"])
        given = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, event_id, body, ts)["webhook-signature"]
    return any(hmac.compare_digest(expected, g) for g in given)
