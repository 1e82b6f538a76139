"""The audit log: one JSON line per request, for whoever must answer "who used what, for how much".

Each record says who (key id, team, developer), with which tool (from the user agent) and
session, what (endpoint, the model alias asked for, the backend that answered), the outcome
(HTTP status, error code), and its size and price (tokens in, out and served from the provider's
prompt cache; dollars; latency). It never holds prompt or completion text: the record is built
from the same fields the metrics are, after the answer.

Written to standard output (the cluster's log pipeline keeps it) or appended to a file, one
`write` per record so concurrent replicas' lines never interleave within a line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, BinaryIO

import orjson

FIELDS = (
    "ts",
    "key",
    "team",
    "developer",
    "tool",
    "tool_version",
    "session",
    "endpoint",
    "model",
    "backend",
    "status",
    "error",
    "stream",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
    "latency_ms",
)


class AuditLog:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._out: BinaryIO = open(path, "ab", buffering=0) if path else sys.stdout.buffer  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        record["ts"] = round(time.time(), 3)
        # a full disk must not fail the request; the metrics still count it
        with contextlib.suppress(OSError):
            os.write(self._out.fileno(), orjson.dumps(record) + b"\n")

    def close(self) -> None:
        if self.path:
            self._out.close()
