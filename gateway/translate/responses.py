"""OpenAI's Responses API, translated to and from chat completions.

Codex and the newer OpenAI SDKs send `POST /v1/responses`; the platform's models (vLLM, Ray Serve
LLM) serve chat completions. `to_chat` turns the request's items (messages, function calls and
their outputs, after the conversation a `previous_response_id` names) into chat messages;
`from_chat` builds the Response object; `ChatToResponsesStream` emits the Responses stream's
semantic events (response.created / in_progress, output_item.added / done, content_part.added /
done, output_text.delta / done, function_call_arguments.delta / done, reasoning_text.delta / done,
response.completed / incomplete / failed), each with its `sequence_number`.

Dropped rather than refused, so an agent keeps working on a self-hosted model: reasoning items
(encrypted for another provider), hosted tools (web search, file search...) and tool namespaces,
`include`, `reasoning` and `prompt_cache_key`.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import error_body as openai_error_body
from gateway.sse import named_event
from gateway.translate.chat_stream import ChatStreamTranslator, chat_usage
from gateway.translate.messages import new_id

# request fields echoed into the Response object as they were sent
_ECHO = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "temperature",
    "tool_choice",
    "tools",
    "top_p",
    "user",
)
_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "temperature": None,
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "user": None,
}


# -- request: Responses -> chat completions -------------------------------------------------------


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []


def to_chat(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request (without `model`) for a Responses request whose whole
    conversation is `items` (a stored conversation first, then this request's input)."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(item.get("content")),
                }
            )
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last["content"], str)
            ):
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else _text(output),
                }
            )
        # reasoning, hosted-tool calls, item references: nothing a chat model can take
    out: dict[str, Any] = {"messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for k in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(k) is not None:
            out[k] = body[k]
    tools = [_tool(t) for t in body.get("tools") or () if _function_tool(t)]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if choice in ("auto", "none", "required"):
            out["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _content(content: Any) -> Any:
    """A message's content for chat: a string, or parts when there is an image."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for p in content if isinstance(content, list) else ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(p.get("text"), str):
            parts.append({"type": "text", "text": p["text"]})
        elif kind == "refusal" and isinstance(p.get("refusal"), str):
            parts.append({"type": "text", "text": p["refusal"]})
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": p["image_url"]}})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _text(content: Any) -> str:
    if not isinstance(content, list):
        return "" if content is None else str(content)
    return "\n".join(
        p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _function_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "function" and bool(tool.get("name"))


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        fn["description"] = tool["description"]
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


# -- answer: chat completion -> Response ---------------------------------------------------------


def response_object(
    body: dict[str, Any],
    resp_id: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict | None,
) -> dict[str, Any]:
    """A Response object; request parameters are echoed as the API does."""
    obj: dict[str, Any] = {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete" else None),
        "model": body.get("model"),
        "output": output,
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store") is not False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": response_usage(usage) if usage is not None else None,
    }
    for k in _ECHO:
        obj[k] = body.get(k, _DEFAULTS[k])
    return obj


def response_usage(n: dict) -> dict[str, Any]:
    """The normalized usage as the Responses API reports it."""
    return {
        "input_tokens": n["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": n.get("cached_tokens", 0)},
        "output_tokens": n["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n["prompt_tokens"] + n["completion_tokens"],
    }


def from_chat(obj: dict[str, Any], body: dict[str, Any], resp_id: str) -> dict[str, Any]:
    """The Response for a chat completion."""
    choices = obj.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(new_id("rs_"), reasoning))
    if isinstance(msg.get("content"), str) and msg["content"]:
        output.append(_message_item(new_id("msg_"), msg["content"], "completed"))
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        output.append(
            _call_item(
                new_id("fc_"),
                tc.get("id") or new_id("call_"),
                fn.get("name", ""),
                fn.get("arguments") or "",
                "completed",
            )
        )
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    created = int(obj.get("created") or time.time())
    return response_object(body, resp_id, created, status, output, chat_usage(obj.get("usage")))


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(item_id: str, call_id: str, name: str, args: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": args,
    }


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def failed_event(resp: dict[str, Any], seq: int, message: str, code: str) -> bytes:
    """`response.failed`: how a Responses stream ends when it breaks off."""
    failed = {**resp, "status": "failed", "error": {"code": code, "message": message}}
    return named_event(
        b"response.failed",
        {"type": "response.failed", "sequence_number": seq, "response": failed},
    )


def error_body(status: int, message: str, code: str | None) -> bytes:
    return openai_error_body(
        message, "invalid_request_error" if status < 500 else "api_error", code
    )


# -- stream: chat chunks -> Responses events -----------------------------------------------------


class ChatToResponsesStream(ChatStreamTranslator):
    """Turns a chat-completions stream into the Responses API's semantic events as chunks
    arrive. Output items open and close in order (reasoning, message, one function_call per tool
    call); `response.completed` carries the whole Response, which `response` holds afterwards
    for the store. Used as the relay stage's tap."""

    __slots__ = (
        "_body",
        "_id",
        "_created",
        "_seq",
        "_open",
        "_output",
        "_parts",
        "_calls",
        "_length",
        "response",
    )

    def __init__(self, body: dict[str, Any], resp_id: str) -> None:
        super().__init__()
        self._body = body
        self._id = resp_id
        self._created = int(time.time())
        self._seq = 0
        self._open: dict[str, Any] | None = None  # the output item being streamed
        self._output: list[dict[str, Any]] = []
        self._parts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its item
        self._length = False
        self.response: dict[str, Any] | None = None  # the completed Response

    def fail(self, message: str, code: str) -> bytes:
        self._done = True
        resp = response_object(self._body, self._id, self._created, "failed", self._output, None)
        return failed_event(resp, self._next(), message, code)

    def _next(self) -> int:
        n = self._seq
        self._seq += 1
        return n

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(
            named_event(kind.encode(), {"type": kind, "sequence_number": self._next(), **fields})
        )

    def _finish_reason(self, reason: str) -> None:
        if reason == "length":
            self._length = True

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        resp = response_object(self._body, self._id, self._created, "in_progress", [], None)
        self._emit(out, "response.created", response=resp)
        self._emit(out, "response.in_progress", response=resp)

    def _begin(self, item: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._open = item
        self._parts = []
        self._emit(out, "response.output_item.added", output_index=len(self._output), item=item)

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open["type"] != "reasoning":
            self._begin({"id": new_id("rs_"), "type": "reasoning", "summary": []}, out)
        self.events += 1
        self._parts.append(text)
        assert self._open is not None
        self._emit(
            out,
            "response.reasoning_text.delta",
            item_id=self._open["id"],
            output_index=len(self._output),
            content_index=0,
            delta=text,
        )

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open["type"] != "message":
            item = {
                "id": new_id("msg_"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._begin(item, out)
            self._emit(
                out,
                "response.content_part.added",
                item_id=item["id"],
                output_index=len(self._output),
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        self.events += 1
        self._parts.append(text)
        assert self._open is not None
        self._emit(
            out,
            "response.output_text.delta",
            item_id=self._open["id"],
            output_index=len(self._output),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _tool_call(self, tc: dict[str, Any], out: list[bytes]) -> None:
        n = int(tc.get("index", 0))
        fn = tc.get("function") or {}
        if n not in self._calls:
            item = _call_item(
                new_id("fc_"),
                tc.get("id") or new_id("call_"),
                fn.get("name") or "",
                "",
                "in_progress",
            )
            self._begin(item, out)
            self._calls[n] = item
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self.events += 1
            item = self._calls[n]
            if item is self._open:
                self._parts.append(args)
            self._emit(
                out,
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=len(self._output),
                delta=args,
            )

    def _close(self, out: list[bytes]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        text = "".join(self._parts)
        index = len(self._output)
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            self._emit(
                out,
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            self._emit(
                out,
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            done = _message_item(item["id"], text, "completed")
        elif item["type"] == "function_call":
            self._emit(
                out,
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=text,
            )
            done = {**item, "status": "completed", "arguments": text}
        else:
            self._emit(
                out,
                "response.reasoning_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
            )
            done = _reasoning_item(item["id"], text)
        self._output.append(done)
        self._emit(out, "response.output_item.done", output_index=index, item=done)

    def _finish(self, out: list[bytes]) -> None:
        self._done = True
        self._start(out)
        self._close(out)
        status = "incomplete" if self._length else "completed"
        self.response = response_object(
            self._body, self._id, self._created, status, self._output, self.usage
        )
        self._emit(out, f"response.{status}", response=self.response)
