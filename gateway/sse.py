"""Server-Sent Events, the way the OpenAI API streams: reading usage out of a stream, dropping the
usage event the gateway asked for on the caller's behalf, and converting between a stream and the
complete answer (a cached answer replayed as a stream; a relayed stream rebuilt for the cache).

No I/O here: the relay stage (gateway/stages/relay.py) feeds chunks in and writes what comes out.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
TAIL_BYTES = 16384  # where a stream's usage event is looked for when it was left in


def loads_dict(body: bytes) -> dict | None:
    """A JSON object, or None for anything else (invalid JSON, a list, a number)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def wants_usage(body: dict) -> bool:
    """Whether the caller asked for the usage event (`stream_options.include_usage`)."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


# An event ends at a blank line; a line ends in CRLF, LF or CR (the SSE grammar). A lone CR at the
# end of what has arrived may be half of a CRLF: `split_events` leaves it for the next chunk.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")


def split_events(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete events in `data`, each with the blank line that ends it, byte for byte as
    they came, and the unfinished rest."""
    if b"\r" not in data:  # the common case: LF line ends
        parts = data.split(b"\n\n")
        rest = parts.pop()
        return [p + b"\n\n" for p in parts], rest
    events: list[bytes] = []
    start = 0
    for m in _EVENT_END.finditer(data):
        if m.end() == len(data) and data.endswith(b"\r"):
            break  # maybe the first half of CRLF
        events.append(data[start : m.end()])
        start = m.end()
    return events, data[start:]


def event_data(event: bytes) -> bytes | None:
    """The data of one SSE event: its `data:` fields joined by newlines (None without any)."""
    data = [ln[5:] for ln in event.splitlines() if ln.startswith(b"data:")]
    if not data:
        return None
    return b"\n".join(d[1:] if d.startswith(b" ") else d for d in data)


def event_json(event: bytes) -> dict | None:
    """The JSON object an SSE event carries (None for `[DONE]`, comments, anything else)."""
    data = event_data(event)
    return None if data is None or data == b"[DONE]" else loads_dict(data)


def event_usage(event: bytes) -> dict | None:
    """The `usage` object of one SSE event, if it carries one."""
    if b"usage" not in event:  # cheap: an event whose bytes never say it cannot carry it
        return None
    obj = event_json(event)
    usage = obj.get("usage") if obj else None
    return usage if isinstance(usage, dict) else None


class StripUsage:
    """Relays a stream whose usage event the gateway asked for: the usage is kept for accounting
    and the usage-only event (no choices, however the upstream spells or orders its JSON) is not
    sent on, so a caller's `chunk.choices[0]` never meets it. Works on whole events, so it holds
    back a partial one until its end arrives; everything else passes byte for byte."""

    __slots__ = ("_buf", "events", "usage")

    def __init__(self) -> None:
        self._buf = b""
        self.events = 0  # events sent on
        self.usage: dict | None = None

    def feed(self, chunk: bytes) -> bytes:
        """What to send on now (possibly nothing)."""
        events, self._buf = split_events(self._buf + chunk)
        keep = []
        for ev in events:
            if b"usage" in ev:  # the cheap test first: most events carry none
                obj = event_json(ev)
                if obj is not None and isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                    if not obj.get("choices"):
                        continue
            keep.append(ev)
        if not keep:
            return b""
        self.events += len(keep)
        return b"".join(keep)

    def rest(self) -> bytes:
        """The unfinished event at the end of the stream, sent as it is (unless it is the
        usage-only event, its blank line cut off)."""
        last, self._buf = self._buf, b""
        if b"usage" in last:
            obj = event_json(last)
            if obj is not None and isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                if not obj.get("choices"):
                    return b""
        return last


class KeepTail:
    """Relays a stream byte for byte (the caller asked for the usage event itself), keeping its
    last bytes to read the usage from once it ends."""

    __slots__ = ("_tail", "events")

    def __init__(self) -> None:
        self._tail = b""
        self.events = 0  # not counted: the usage event is there to read

    def feed(self, chunk: bytes) -> bytes:
        self._tail = (self._tail + chunk)[-TAIL_BYTES:]
        return chunk

    def rest(self) -> bytes:
        return b""

    @property
    def usage(self) -> dict | None:
        events, rest = split_events(self._tail)
        for ev in reversed([*events, rest]):
            usage = event_usage(ev)
            if usage is not None:
                return usage
        return None


def replay_as_sse(response: dict, endpoint: str, include_usage: bool) -> bytes:
    """A complete answer as the chunks a streaming upstream would have sent."""
    chat = endpoint == "chat.completions"
    base = {
        "id": response.get("id", "cache"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": response.get("created", int(time.time())),
        "model": response.get("model", ""),
    }
    events: list[dict] = []
    for i, choice in enumerate(response.get("choices") or []):
        idx = choice.get("index", i)
        if chat:
            msg = choice.get("message") or {}
            delta = {"role": msg.get("role", "assistant"), "content": msg.get("content")}
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{"index": n, **tc} for n, tc in enumerate(msg["tool_calls"])]
            events.append(
                {**base, "choices": [{"index": idx, "delta": delta, "finish_reason": None}]}
            )
            events.append(
                {
                    **base,
                    "choices": [
                        {"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason")}
                    ],
                }
            )
        else:
            events.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": idx,
                            "text": choice.get("text", ""),
                            "finish_reason": choice.get("finish_reason"),
                        }
                    ],
                }
            )
    if include_usage and response.get("usage"):
        events.append({**base, "choices": [], "usage": response["usage"]})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def assemble_stream(data: bytes, endpoint: str) -> dict | None:
    """The complete answer an SSE stream carried, shaped like the non-streamed response (the
    inverse of replay_as_sse). None when it cannot be rebuilt faithfully: no `[DONE]`, an error
    event, tool-call or logprob deltas (never cached anyway)."""
    chat = endpoint == "chat.completions"
    head: dict | None = None
    usage: dict | None = None
    choices: dict[int, dict] = {}
    done = False
    events, rest = split_events(data)
    for event in [*events, rest]:
        payload = event_data(event)
        if payload is None:
            continue
        if payload == b"[DONE]":
            done = True
            continue
        obj = loads_dict(payload)
        if obj is None or "error" in obj:
            return None
        head = head or obj
        if isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
        for ch in obj.get("choices") or []:
            c = choices.setdefault(
                int(ch.get("index", 0)), {"role": "assistant", "parts": [], "finish": None}
            )
            if ch.get("logprobs"):
                return None
            if chat:
                delta = ch.get("delta") or {}
                if delta.get("tool_calls") or delta.get("function_call"):
                    return None
                c["role"] = delta.get("role") or c["role"]
                c["parts"].append(delta.get("content") or "")
            else:
                c["parts"].append(ch.get("text") or "")
            c["finish"] = ch.get("finish_reason") or c["finish"]
    if not done or head is None or not choices:
        return None
    answer: dict[str, Any] = {
        "id": head.get("id", ""),
        "object": "chat.completion" if chat else "text_completion",
        "created": head.get("created", 0),
        "model": head.get("model", ""),
        "choices": [
            {
                "index": i,
                **(
                    {"message": {"role": c["role"], "content": "".join(c["parts"])}}
                    if chat
                    else {"text": "".join(c["parts"]), "logprobs": None}
                ),
                "finish_reason": c["finish"],
            }
            for i, c in sorted(choices.items())
        ],
    }
    if head.get("system_fingerprint"):
        answer["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        answer["usage"] = usage
    return answer


def named_event(name: bytes, obj: dict) -> bytes:
    """One SSE event with an `event:` line, as the Anthropic and Responses APIs stream them."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class EventSplitter:
    """Whole SSE events out of arbitrary chunks: each event's `data:` payload, in order (the
    partial event at the end of a chunk is held until its end arrives)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        parts = (self._buf + chunk).split(b"\n\n")
        self._buf = parts.pop()
        return [p for p in map(event_data, parts) if p is not None]

    def rest(self) -> list[bytes]:
        """The last event, when the stream ended without its blank line."""
        buf, self._buf = self._buf, b""
        data = event_data(buf)
        return [data] if data is not None else []
