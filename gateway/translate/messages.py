"""Anthropic's Messages API: its errors, its usage, and its translation to OpenAI chat completions.

Claude Code (and the `anthropic` SDKs) send `POST /v1/messages`. To an Anthropic-compatible
upstream (Anthropic, Bedrock's Anthropic endpoint, Vertex AI) the request goes through unchanged
and only its usage is read (`usage_of`, `MessagesUsageTap`). To an OpenAI-compatible upstream (the
platform's vLLM / Ray Serve models) it is translated: `to_chat` for the request, `from_chat` for
an answer, `ChatToMessagesStream` for a stream, which emits every Messages event type
(message_start, ping, content_block_start / delta / stop with text, thinking, signature and
input_json deltas, message_delta, message_stop, error).

What a chat-completions model cannot take is dropped rather than refused, so an assistant keeps
working on a self-hosted model: thinking blocks in the history, server tools (web search, code
execution), tools deferred for tool search, cache_control marks and documents that are not text.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from gateway.sse import event_data, loads_dict, named_event
from gateway.translate.chat_stream import ChatStreamTranslator, chat_usage

# chat `finish_reason` -> Messages `stop_reason`
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# HTTP status -> Messages `error.type` (docs: Anthropic API errors)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}
_SAMPLING = ("temperature", "top_p", "top_k")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


# -- errors -------------------------------------------------------------------------------------


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    """An Anthropic-shaped error; the gateway's own code rides in `error.details.error_code`."""
    err: dict[str, Any] = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
    if code:
        err["details"] = {"error_code": code}
    return orjson.dumps({"type": "error", "error": err, "request_id": new_id("req_")})


def error_event(message: str, code: str) -> bytes:
    """What a Messages stream carries when it breaks off after its first byte."""
    err = {"type": "api_error", "message": message, "details": {"error_code": code}}
    return named_event(b"error", {"type": "error", "error": err})


def from_openai_error(status: int, body: bytes) -> bytes:
    """An OpenAI-shaped error from a translated backend, reshaped for a Messages caller."""
    message = f"The backend refused the request ({status})."
    try:
        obj = orjson.loads(body)
        inner = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
        elif isinstance(obj, dict) and isinstance(obj.get("message"), str):
            message = obj["message"]  # vLLM's older error shape
    except orjson.JSONDecodeError:
        pass
    return error_body(status, message)


# -- usage --------------------------------------------------------------------------------------


def usage_of(u: Any) -> dict | None:
    """A Messages `usage` in the gateway's normalized form (OpenAI's names: what is charged).

    Anthropic counts cache reads and writes apart from `input_tokens`; every one of them is an
    input token the caller sent, so all count as prompt tokens and the reads as cached."""
    if not isinstance(u, dict):
        return None
    read = int(u.get("cache_read_input_tokens") or 0)
    written = int(u.get("cache_creation_input_tokens") or 0)
    return {
        "prompt_tokens": int(u.get("input_tokens") or 0) + read + written,
        "completion_tokens": int(u.get("output_tokens") or 0),
        "cached_tokens": read,
    }


class MessagesUsageTap:
    """Relays a Messages stream byte for byte (pass-through), reading its usage on the way:
    `message_start` carries the input side, `message_delta` the final output count. Only events
    that mention `"usage"` are parsed; the rest pass with a byte search."""

    __slots__ = ("_buf", "_usage", "events")

    def __init__(self) -> None:
        self._buf = b""  # the unfinished event at the end of the last chunk
        self._usage: dict[str, Any] = {}
        self.events = 0

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        self.events += chunk.count(b"\n\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return chunk
        self._buf = buf[end + 2 :]
        if b'"usage"' in buf[:end]:
            for event in buf[:end].split(b"\n\n"):
                if b'"usage"' in event:
                    self._read(event_data(event))
        return chunk

    def rest(self) -> bytes:
        if b'"usage"' in self._buf:
            self._read(event_data(self._buf))
        self._buf = b""
        return b""

    def _read(self, data: bytes | None) -> None:
        obj = loads_dict(data) if data else None
        if obj is None:
            return
        u = obj.get("usage") or (obj.get("message") or {}).get("usage")
        if isinstance(u, dict):
            self._usage.update({k: v for k, v in u.items() if v is not None})

    @property
    def usage(self) -> dict | None:
        return usage_of(self._usage) if self._usage else None

    def fail(self, message: str, code: str) -> bytes:
        return error_event(message, code)


# -- request: Messages -> chat completions --------------------------------------------------------


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request for a Messages request (without `model`: set per backend)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for m in body["messages"]:
        role, content = m.get("role"), m.get("content")
        if role == "assistant":
            messages.append(_assistant(content))
        elif role == "system":  # Claude Code sends mid-conversation system messages
            messages.append({"role": "system", "content": _text(content)})
        else:
            messages.extend(_user(content))
    out: dict[str, Any] = {"messages": messages, "max_tokens": body["max_tokens"]}
    for k in _SAMPLING:
        if body.get(k) is not None:
            out[k] = body[k]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    tools = [_tool(t) for t in body.get("tools") or () if _function_tool(t)]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "any":
                out["tool_choice"] = "required"
            elif kind == "tool" and choice.get("name"):
                out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            elif kind in ("auto", "none"):
                out["tool_choice"] = kind
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _text(content: Any) -> str:
    """The text of a string or of a list of content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
    )


def _user(content: Any) -> list[dict[str, Any]]:
    """A user turn: its tool results become `tool` messages (first: chat wants them right after
    the assistant's calls), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            text = _tool_result_text(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            url = _image_url(block.get("source"))
            if url:
                parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            src = block.get("source") or {}
            if src.get("type") == "text" and isinstance(src.get("data"), str):
                parts.append({"type": "text", "text": src["data"]})
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for b in content:
        if isinstance(b, dict):
            texts.append(b.get("text", "") if b.get("type") == "text" else f"[{b.get('type')}]")
    return "\n".join(texts)


def _image_url(source: Any) -> str | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return source.get("url")
    return None


def _assistant(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        # thinking / redacted_thinking / server tool blocks: nothing a chat model can take
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""
    return msg


def _function_tool(tool: Any) -> bool:
    """A client tool the model calls by name (server and computer-use tools carry a versioned
    `type`; tools deferred for tool search are loaded later, by name)."""
    return (
        isinstance(tool, dict)
        and tool.get("type") in (None, "custom")
        and isinstance(tool.get("name"), str)
        and not tool.get("defer_loading")
    )


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


# -- answer: chat completion -> Message ----------------------------------------------------------


def from_chat(obj: dict[str, Any], model: str) -> dict[str, Any]:
    """The Message for a chat completion (`model`: the alias the caller asked for)."""
    choices = obj.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    calls = msg.get("tool_calls") or []
    for tc in calls:
        fn = tc.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or new_id("toolu_"),
                "name": fn.get("name", ""),
                "input": _arguments(fn.get("arguments")),
            }
        )
    stop = STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    if calls and stop == "end_turn":  # some servers finish a tool call with "stop"
        stop = "tool_use"
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": message_usage(obj.get("usage")),
    }


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def message_usage(u: Any) -> dict[str, int]:
    """A chat-completions `usage` as a Messages `usage`."""
    n = chat_usage(u) or {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    return {
        "input_tokens": n["prompt_tokens"] - n["cached_tokens"],
        "output_tokens": n["completion_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": n["cached_tokens"],
    }


# -- stream: chat chunks -> Messages events ------------------------------------------------------


class ChatToMessagesStream(ChatStreamTranslator):
    """Turns a chat-completions stream into a Messages stream, event by event, as chunks arrive.

    The Message's blocks open and close in order: a thinking block (the backend's reasoning),
    a text block, one tool_use block per tool call; `message_delta` (stop reason, usage) and
    `message_stop` follow the backend's `[DONE]`. Used as the relay stage's tap."""

    __slots__ = ("_model", "_block", "_index", "_tools", "_stop")

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._block: str | None = None  # "thinking" | "text" | "tool:<n>"
        self._index = -1  # content block index of the open block
        self._tools: dict[int, int] = {}  # chat tool-call index -> content block index
        self._stop: str | None = None

    def fail(self, message: str, code: str) -> bytes:
        self._done = True
        return error_event(message, code)

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        self._delta({"type": "thinking_delta", "thinking": text}, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        self._open("text", {"type": "text", "text": ""}, out)
        self._delta({"type": "text_delta", "text": text}, out)

    def _finish_reason(self, reason: str) -> None:
        self._stop = STOP_REASONS.get(reason, "end_turn")

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(named_event(b"message_start", {"type": "message_start", "message": message}))
        out.append(named_event(b"ping", {"type": "ping"}))

    def _open(self, block: str, start: dict[str, Any], out: list[bytes]) -> None:
        if self._block == block:
            return
        self._close(out)
        self._block = block
        self._index += 1
        out.append(
            named_event(
                b"content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": start},
            )
        )

    def _delta(self, delta: dict[str, Any], out: list[bytes], index: int | None = None) -> None:
        self.events += 1
        out.append(
            named_event(
                b"content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._index if index is None else index,
                    "delta": delta,
                },
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if self._block is None:
            return
        if self._block == "thinking":  # a translated thought has no signature to verify
            self._delta({"type": "signature_delta", "signature": ""}, out)
        out.append(
            named_event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})
        )
        self._block = None

    def _tool_call(self, tc: dict[str, Any], out: list[bytes]) -> None:
        n = int(tc.get("index", 0))
        fn = tc.get("function") or {}
        if n not in self._tools:
            start: dict[str, Any] = {
                "type": "tool_use",
                "id": tc.get("id") or new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            self._open(f"tool:{n}", start, out)
            self._tools[n] = self._index
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self._delta({"type": "input_json_delta", "partial_json": args}, out, self._tools[n])

    def _finish(self, out: list[bytes]) -> None:
        self._done = True
        self._start(out)
        self._close(out)
        stop = self._stop or "end_turn"
        if self._tools and stop == "end_turn":
            stop = "tool_use"
        out.append(
            named_event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": message_usage(self._chat_usage),
                },
            )
        )
        out.append(named_event(b"message_stop", {"type": "message_stop"}))


def count_tokens_estimate(raw: bytes) -> dict[str, int]:
    """`/v1/messages/count_tokens` on a chat-completions backend, which has no such endpoint: an
    estimate from the request's size (about four bytes a token)."""
    return {"input_tokens": max(1, len(raw) // 4)}
