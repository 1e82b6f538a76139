"""The wire formats of OpenAI's Files and Batch APIs, and of Tandem's async jobs. Pure.

Input: a JSONL file, one request per line, `{"custom_id", "method": "POST", "url", "body"}`,
every `url` the batch's endpoint and every `custom_id` unique. A file that breaks a rule fails
the batch while it is `validating`, with one `errors.data[]` entry per problem (code, message,
1-based line, param), as OpenAI reports them.

Output: every line ends in exactly one record, `{"id", "custom_id", "response", "error"}`. A 200
goes to the output file (`response.body` is the answer); any other status goes to the error file
with its `response` (status and OpenAI-style error body); a line that never got a response (the
batch expired or was cancelled first, or the line failed `max_attempts` times) goes to the error
file with `response: null` and `error: {code, message}`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

# the Batch API's endpoint paths -> the gateway's endpoint names (gateway/stages/parse.py)
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
# OpenAI's batch lifecycle: validating -> in_progress -> finalizing -> completed, or failed
# (validation), expired (the completion window passed), cancelling -> cancelled.
STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
TERMINAL = frozenset(("failed", "completed", "expired", "cancelled"))
MAX_REPORTED_ERRORS = 100  # a broken file's first problems, as `errors.data`
CUSTOM_ID_MAX = 512


def new_id(kind: str) -> str:
    """`file-<hex>`, `batch_<hex>`, `job_<hex>`: OpenAI's shapes, so ids look familiar."""
    sep = "-" if kind == "file" else "_"
    return f"{kind}{sep}{uuid.uuid4().hex}"


@dataclass(frozen=True)
class InputLine:
    index: int  # 0-based line number
    custom_id: str
    body: bytes  # the request body, as sent upstream


def problem(code: str, message: str, line: int | None = None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "line": line, "param": param}


def parse_input(data: bytes, endpoint: str, max_lines: int) -> tuple[list[InputLine], list[dict]]:
    """The lines of a batch input file, or the problems that fail it (at most
    MAX_REPORTED_ERRORS of them; the last one says how many more there were)."""
    lines: list[InputLine] = []
    problems: list[dict] = []
    seen: set[str] = set()
    raw_lines = data.split(b"\n")
    if raw_lines and not raw_lines[-1].strip():
        raw_lines.pop()  # the newline that ends the last line
    if not raw_lines:
        return [], [problem("empty_file", "The input file has no lines.")]
    if len(raw_lines) > max_lines:
        return [], [
            problem(
                "too_many_lines",
                f"The input file has {len(raw_lines)} lines; a batch takes at most {max_lines}. "
                "Split it, or run it as a Ray Data job (`tandem batch submit --via rayjob`).",
            )
        ]
    for i, raw in enumerate(raw_lines):
        n = i + 1
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            problems.append(problem("invalid_json_line", "This line is not valid JSON.", n))
            continue
        if not isinstance(obj, dict):
            problems.append(problem("invalid_json_line", "This line is not a JSON object.", n))
            continue
        found = _line_problem(obj, endpoint, n, seen)
        if found is not None:
            problems.append(found)
            continue
        seen.add(obj["custom_id"])
        lines.append(InputLine(i, obj["custom_id"], orjson.dumps(obj["body"])))
    if len(problems) > MAX_REPORTED_ERRORS:
        more = len(problems) - MAX_REPORTED_ERRORS
        problems = problems[:MAX_REPORTED_ERRORS]
        problems.append(problem("too_many_errors", f"... and {more} more problems."))
    return lines, problems


def _line_problem(obj: dict, endpoint: str, n: int, seen: set[str]) -> dict | None:
    for field in ("custom_id", "method", "url", "body"):
        if field not in obj:
            return problem(
                "missing_required_parameter", f"Missing required parameter: '{field}'.", n, field
            )
    cid = obj["custom_id"]
    if not isinstance(cid, str) or not cid or len(cid) > CUSTOM_ID_MAX:
        return problem(
            "invalid_request",
            f"'custom_id' must be a non-empty string of at most {CUSTOM_ID_MAX} characters.",
            n,
            "custom_id",
        )
    if cid in seen:
        return problem(
            "duplicate_custom_id",
            f"The custom_id '{cid}' is used by an earlier line; each line needs its own.",
            n,
            "custom_id",
        )
    if obj["method"] != "POST":
        return problem("invalid_method", "'method' must be 'POST'.", n, "method")
    if obj["url"] != endpoint:
        return problem(
            "mismatched_endpoint",
            f"The line's url {obj['url']!r} is not the batch's endpoint {endpoint!r}.",
            n,
            "url",
        )
    if not isinstance(obj["body"], dict) or not isinstance(obj["body"].get("model"), str):
        return problem(
            "invalid_request", "'body' must be an object with a 'model'.", n, "body.model"
        )
    return None


# -- results --------------------------------------------------------------------------------


def record_id(batch_id: str, index: int) -> str:
    """A line's record id: the same whichever worker (or how many) ran it."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{index}"


def response_record(
    batch_id: str, index: int, custom_id: str, status: int, body: dict[str, Any]
) -> dict:
    rid = record_id(batch_id, index)
    return {
        "id": rid,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": rid, "body": body},
        "error": None,
    }


def error_record(batch_id: str, index: int, custom_id: str, code: str, message: str) -> dict:
    return {
        "id": record_id(batch_id, index),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


# -- API objects ----------------------------------------------------------------------------


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _int(h: dict, field: str) -> int | None:
    v = h.get(field)
    return int(float(_s(v))) if v not in (None, b"", "") else None


def file_object(h: dict, retention_days: int | None = None) -> dict:
    """The OpenAI File object from its Redis hash (`expires_at` when files are kept
    `retention_days`)."""
    created = _int(h, "created_at")
    return {
        "id": _s(h["id"]),
        "object": "file",
        "bytes": _int(h, "bytes") or 0,
        "created_at": created,
        "filename": _s(h.get("filename", "")),
        "purpose": _s(h["purpose"]),
        "status": "processed",
        "expires_at": created + retention_days * 86400 if retention_days and created else None,
        "status_details": None,
    }


def batch_object(h: dict) -> dict:
    """The OpenAI Batch object from its Redis hash."""
    errors = orjson.loads(h["errors"]) if h.get("errors") else None
    usage: dict[str, Any] = {
        "input_tokens": _int(h, "input_tokens") or 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": _int(h, "output_tokens") or 0,
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    out: dict[str, Any] = {
        "id": _s(h["id"]),
        "object": "batch",
        "endpoint": _s(h["endpoint"]),
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": _s(h["input_file_id"]),
        "completion_window": _s(h["completion_window"]),
        "status": _s(h["status"]),
        "output_file_id": _s(h["output_file_id"]) if h.get("output_file_id") else None,
        "error_file_id": _s(h["error_file_id"]) if h.get("error_file_id") else None,
        "request_counts": {
            "total": _int(h, "total") or 0,
            "completed": _int(h, "completed") or 0,
            "failed": _int(h, "failed") or 0,
        },
        "metadata": orjson.loads(h["metadata"]) if h.get("metadata") else None,
        "usage": usage,
    }
    for status in ("created", *STATUSES[1:]):
        if status in ("validating",):
            continue
        out[f"{status}_at"] = _int(h, f"{status}_at")
    out["expires_at"] = _int(h, "expires_at")
    return out


def job_object(h: dict) -> dict:
    """An async job: `status` queued -> in_progress -> completed | failed; `response` holds the
    answer's status and body once there is one (failed: not a 200)."""
    response = orjson.loads(h["response"]) if h.get("response") else None
    return {
        "id": _s(h["id"]),
        "object": "async.job",
        "endpoint": _s(h["endpoint"]),
        "model": _s(h.get("model", "")),
        "status": _s(h["status"]),
        "created_at": _int(h, "created_at"),
        "completed_at": _int(h, "completed_at"),
        "attempts": _int(h, "attempts") or 0,
        "response": response,
        "webhook": {
            "url": _s(h["webhook_url"]),
            "delivered": h.get("webhook_delivered") in (b"1", "1"),
            "error": _s(h["webhook_error"]) if h.get("webhook_error") else None,
        }
        if h.get("webhook_url")
        else None,
    }
