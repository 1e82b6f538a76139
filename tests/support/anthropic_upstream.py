"""A scripted Anthropic-compatible upstream on loopback: real Messages API answers and streams.

`AnthropicUpstream` answers `POST /v1/messages` (JSON, or SSE with every event type: message_start,
ping, content_block_start / delta / stop with text, thinking + signature and input_json deltas,
message_delta, message_stop) and `/v1/messages/count_tokens`. It is the same scripted coding model
as tests/support/upstream.py (`tool_call_for`): "create FILE containing TEXT" calls Claude Code's
`Write` tool, "call NAME {json}" any tool on offer; once the tool's result comes back it answers in
text. Extended thinking in the request gets a thinking block first. Usage reports prompt-cache
reads (`cache_read_input_tokens`) so the gateway's cached-token pricing can be checked.

It records every request's headers and body, and can be told to fail (`status`: the Anthropic
error shape, e.g. 529 overloaded_error).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from aiohttp import web

from tests.support.upstream import tool_call_for

CACHE_READ = 7  # prompt tokens every answer reports as read from the prompt cache
ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}


class AnthropicUpstream:
    def __init__(self, name: str = "claude") -> None:
        self.name = name
        self.status = 200
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body"}
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.status = 200

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        with self._lock:
            self.requests.append(
                {"path": request.path, "headers": dict(request.headers), "body": body}
            )
        return body

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"input_tokens": len(orjson.dumps(body["messages"])) // 4})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.status != 200:
            err = {
                "type": ERROR_TYPES.get(self.status, "api_error"),
                "message": f"{self.name} says no",
            }
            return web.json_response(
                {"type": "error", "error": err, "request_id": "req_up"}, status=self.status
            )
        blocks = self._script(body)
        usage = {
            "input_tokens": len(orjson.dumps(body["messages"])) // 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": CACHE_READ,
            "output_tokens": 5,
        }
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {
            "id": f"msg_{self.name}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(message)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in stream_events(message):
            await resp.write(
                b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
            )
        await resp.write_eof()
        return resp

    def _script(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer's content blocks."""
        blocks: list[dict[str, Any]] = []
        thinking = body.get("thinking") or {}
        if thinking.get("type") in ("enabled", "adaptive"):
            blocks.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"})
        users = [m for m in body["messages"] if m.get("role") == "user"]
        content = users[-1]["content"] if users else ""
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if any(p.get("type") == "tool_result" for p in parts):
            blocks.append({"type": "text", "text": f"{self.name}: done"})
            return blocks
        text = "\n".join(p.get("text", "") for p in parts if p.get("type") == "text")
        tools = {t.get("name") for t in body.get("tools") or ()}
        call = tool_call_for(text, tools)
        if call:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": call[0],
                    "input": orjson.loads(call[1]),
                }
            )
        else:
            blocks.append({"type": "text", "text": f"{self.name}: hello there"})
        return blocks


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Message as the Messages API streams it, every event type included."""
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    out: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            first = {"type": "text", "text": ""}
            half = len(block["text"]) // 2
            deltas = [
                {"type": "text_delta", "text": t}
                for t in (block["text"][:half], block["text"][half:])
            ]
        elif kind == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            first = {**block, "input": {}}
            raw = orjson.dumps(block["input"]).decode()
            half = len(raw) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in (raw[:half], raw[half:])
            ]
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": first},
            )
        )
        out += [
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        ]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    out.append(("message_stop", {"type": "message_stop"}))
    return out
