"""The walk over a chat-completions stream that both stream translations share.

`ChatToMessagesStream` (Anthropic's Messages) and `ChatToResponsesStream` (OpenAI's Responses)
read the same thing — SSE events split as chunks arrive, `[DONE]`, a backend's error event, the
usage chunk, and the first choice's deltas (reasoning, text, tool calls, finish reason) — and
differ only in what they write for each. This class reads; a subclass writes, through the hooks
below. One reader keeps a fix to the reading (a new reasoning field, a malformed chunk) in one
place for both APIs.
"""

from __future__ import annotations

from typing import Any

from gateway.sse import EventSplitter, loads_dict


def chat_usage(u: Any) -> dict | None:
    """A chat-completions `usage` in the normalized form (cached prompt tokens picked out)."""
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "prompt_tokens": int(u.get("prompt_tokens") or 0),
        "completion_tokens": int(u.get("completion_tokens") or 0),
        "cached_tokens": int(cached or 0),
    }


class ChatStreamTranslator:
    """Reads a chat-completions stream and calls the hooks; used as the relay stage's tap."""

    __slots__ = ("_split", "_started", "_chat_usage", "_done", "events")

    def __init__(self) -> None:
        self._split = EventSplitter()
        self._started = False
        self._chat_usage: dict | None = None
        self._done = False
        self.events = 0

    @property
    def usage(self) -> dict | None:
        return chat_usage(self._chat_usage)

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for data in self._split.feed(chunk):
            self._event(data, out)
        return b"".join(out)

    def rest(self) -> bytes:
        out: list[bytes] = []
        for data in self._split.rest():
            self._event(data, out)
        if not self._done:
            self._finish(out)
        return b"".join(out)

    def _event(self, data: bytes, out: list[bytes]) -> None:
        if self._done:
            return
        if data == b"[DONE]":
            self._finish(out)
            return
        obj = loads_dict(data)
        if obj is None:
            return
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            out.append(self.fail(str(err.get("message", "backend error")), "upstream_error"))
            return
        self._start(out)
        if isinstance(obj.get("usage"), dict):
            self._chat_usage = obj["usage"]
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._reasoning(reasoning, out)
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text(delta["content"], out)
            for tc in delta.get("tool_calls") or ():
                if isinstance(tc, dict):
                    self._tool_call(tc, out)
            if choice.get("finish_reason"):
                self._finish_reason(choice["finish_reason"])

    # -- the hooks a translation writes its events from -----------------------------------------
    def fail(self, message: str, code: str) -> bytes:
        """The stream's error event; nothing is written after it."""
        raise NotImplementedError

    def _start(self, out: list[bytes]) -> None:
        """Before the first delta (called on every chunk: once is up to the subclass)."""
        raise NotImplementedError

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def _text(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def _tool_call(self, tc: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _finish_reason(self, reason: str) -> None:
        raise NotImplementedError

    def _finish(self, out: list[bytes]) -> None:
        """At `[DONE]` or the stream's end: close what is open and say how it ended."""
        raise NotImplementedError
