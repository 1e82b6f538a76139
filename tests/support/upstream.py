"""A controllable OpenAI-compatible upstream for tests, and a harness to run aiohttp apps in a thread.

`Upstream` answers /v1/chat/completions (plain and SSE), /v1/completions and /v1/embeddings with
deterministic bodies (fixed ids and timestamps, so a stream can be compared byte for byte) and can
be told to misbehave: latency, slow first token, any status with an optional `Retry-After`,
connection resets before or in the middle of an answer, context-length errors above a prompt size,
or a random mix of all of those (`faults`). It counts what it receives.

Given tools, it acts as a scripted coding model (`script`): "create FILE containing TEXT" calls a
file-writing tool it recognises (Claude Code's `Write`, Codex's `exec_command` or `shell`),
"call NAME {json}" calls tool NAME with those arguments; once the tool's result is in the
conversation it answers in text. `reasoning=True` streams a vLLM-style `reasoning_content` first.

`ServerThread` runs any aiohttp application on 127.0.0.1 (free port) in its own thread and event
loop, so synchronous clients (the openai SDK, LangChain) and async tests can both talk to it.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

CREATED = 1700000000


@dataclass
class Behaviour:
    latency_s: float = 0.0  # before the answer's headers
    first_token_s: float = 0.0  # before the first stream chunk (after headers)
    status: int = 200
    retry_after: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # on an error answer (rate-limit ones)
    reset: bool = False  # drop the connection without answering
    reset_mid_stream: bool = False  # drop it after the first chunk
    context_limit: int | None = None  # 400 context_length_exceeded above this many prompt chars
    garbage: bool = False  # 200 with a body that is not JSON
    chunks: int = 4  # content chunks in a stream
    chunk_delay_s: float = 0.0
    reasoning: bool = False  # a vLLM reasoning parser's `reasoning_content` before the answer
    cached_tokens: int = 0  # prompt tokens reported as served from the prompt cache
    faults: list[Behaviour] = field(default_factory=list)  # one drawn per request when set
    poison: str | None = None  # a prompt containing this always gets a 500 (a poison line)


class Upstream:
    def __init__(self, name: str = "upstream", **behaviour: Any) -> None:
        self.name = name
        self.behaviour = Behaviour(**behaviour)
        self.script: list[Behaviour] = []  # taken in order before `behaviour` (see `then`)
        self.requests = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()

    def set(self, **changes: Any) -> None:
        """Replace the behaviour (fields not named go back to their defaults), script included."""
        self.behaviour = Behaviour(**changes)
        self.script.clear()

    def then(self, *behaviours: Behaviour) -> None:
        """The next requests behave like these, in order; the ones after them as before."""
        with self._lock:
            self.script.extend(behaviours)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.bodies.clear()
            self.headers.clear()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        return app

    # -- handlers -----------------------------------------------------------------------------
    async def _begin(self, request: web.Request) -> tuple[dict, Behaviour]:
        body = orjson.loads(await request.read())
        with self._lock:
            self.requests += 1
            if len(self.bodies) < 10_000:
                self.bodies.append(body)
                self.headers.append(dict(request.headers))
            b = self.script.pop(0) if self.script else self.behaviour
        if b.faults:
            b = random.choice(b.faults)
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        return body, b

    async def _fail(
        self, request: web.Request, b: Behaviour, body: dict
    ) -> web.StreamResponse | None:
        if b.reset:
            _drop(request)
            raise asyncio.CancelledError
        if b.context_limit is not None and _prompt_chars(body) > b.context_limit:
            return _error(
                400,
                f"This model's maximum context length is {b.context_limit} tokens.",
                "context_length_exceeded",
            )
        if b.poison is not None and b.poison in str(body.get("messages", body.get("prompt"))):
            return _error(500, f"upstream {self.name} cannot answer this", "poisoned")
        if b.garbage:
            return web.Response(body=b"<html>proxy error page</html>", content_type="text/html")
        if b.status != 200:
            headers = dict(b.headers)
            if b.retry_after is not None:
                headers["Retry-After"] = b.retry_after
            return _error(
                b.status, f"upstream {self.name} says {b.status}", f"http_{b.status}", headers
            )
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, b = await self._begin(request)
        failed = await self._fail(request, b, body)
        if failed is not None:
            return failed
        usage = _usage(body, b.chunks)
        if b.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens}
        if body.get("tools") or b.reasoning:
            return await self._agent(request, b, body, usage)
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, b, body["model"], usage if include else None)
        text = " ".join(f"tok{i}" for i in range(b.chunks))
        return _json(
            {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"{self.name}: {text}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def _agent(
        self, request: web.Request, b: Behaviour, body: dict, usage: dict
    ) -> web.StreamResponse:
        """The scripted coding model: a tool call, or the answer once its result is in."""
        call = script(body)
        text = None if call else f"{self.name}: done"
        reasoning = "Let me think about it." if b.reasoning else None
        base = {"id": f"chatcmpl-{self.name}", "created": CREATED, "model": body["model"]}
        finish = "tool_calls" if call else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = reasoning
            if call:
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": call[0], "arguments": call[1]},
                    }
                ]
            return _json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if reasoning:
            deltas += [{"reasoning_content": w} for w in ("Let me ", "think about it.")]
        if call:
            name, args = call
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        else:
            deltas += [{"content": f"{self.name}: "}, {"content": "done"}]
        events = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": d, "finish_reason": None}],
            }
            for d in deltas
        ]
        events.append(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for e in events:
            await resp.write(b"data: " + orjson.dumps(e) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream(
        self, request: web.Request, b: Behaviour, model: str, usage: dict | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if b.first_token_s:
            await asyncio.sleep(b.first_token_s)
        for event in stream_events(self.name, model, b.chunks, usage):
            await resp.write(event)
            if b.reset_mid_stream:
                _drop(request)
                raise asyncio.CancelledError
            if b.chunk_delay_s:
                await asyncio.sleep(b.chunk_delay_s)
        await resp.write_eof()
        return resp

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, b = await self._begin(request)
        failed = await self._fail(request, b, body)
        if failed is not None:
            return failed
        return _json(
            {
                "id": f"cmpl-{self.name}",
                "object": "text_completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [
                    {"index": 0, "text": f"{self.name} completion", "finish_reason": "stop"}
                ],
                "usage": _usage(body, b.chunks),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, b = await self._begin(request)
        failed = await self._fail(request, b, body)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        n = sum(len(str(x)) for x in inputs) // 4 + 1
        return _json(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}
                    for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            }
        )


def stream_events(name: str, model: str, chunks: int, usage: dict | None) -> list[bytes]:
    """The exact SSE events the upstream sends for a stream (tests compare against these)."""
    base = {
        "id": f"chatcmpl-{name}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
    }
    out = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for i in range(chunks):
        out.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            }
        )
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        out.append({**base, "choices": [], "usage": usage})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in out] + [b"data: [DONE]\n\n"]


def styled(events: list[dict], *, spaces: bool, reverse_keys: bool, line_end: bytes) -> bytes:
    """A stream as other upstreams write it: with or without spaces after `:` and `,`, keys in
    another order, LF, CRLF or CR line ends; `data: [DONE]` last."""
    out = []
    for ev in events:
        if reverse_keys:
            ev = dict(reversed(list(ev.items())))
        text = orjson.dumps(ev).decode()
        if spaces:
            text = text.replace('":', '": ').replace(',"', ', "')
        out.append(b"data: " + text.encode() + line_end + line_end)
    out.append(b"data: [DONE]" + line_end + line_end)
    return b"".join(out)


def raw_stream_app(data: Callable[[], bytes]) -> web.Application:
    """An upstream whose every chat completion is the SSE bytes `data()` returns, as they are."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(data())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


_CREATE = re.compile(r"\bcreate (\S+\.txt) containing (\w+)")
_CALL = re.compile(r"\bcall (\w+) (\{.*?\})(?:\s|$)")


def script(body: dict) -> tuple[str, str] | None:
    """The scripted model's tool call for a chat request with tools: (name, JSON arguments), or
    None when the conversation already holds a tool's result (time to answer in text)."""
    messages = body.get("messages") or []
    roles = [m.get("role") for m in messages]
    last_user = max((i for i, r in enumerate(roles) if r == "user"), default=-1)
    if any(r == "tool" for r in roles[last_user + 1 :]) or last_user < 0:
        return None
    content = messages[last_user].get("content")
    text = content if isinstance(content, str) else _parts_text(content)
    tools = {t.get("function", {}).get("name") for t in body.get("tools") or ()}
    return tool_call_for(text, tools)


def tool_call_for(text: str, tools: set) -> tuple[str, str] | None:
    """The call a request's last user text scripts, given the tool names on offer (shared with
    the scripted Anthropic upstream)."""
    m = _CREATE.search(text)
    if m:
        path, content = m.groups()
        if "Write" in tools:  # Claude Code
            return "Write", orjson.dumps({"file_path": path, "content": content}).decode()
        if "exec_command" in tools:  # Codex
            return "exec_command", orjson.dumps({"cmd": f"printf %s {content} > {path}"}).decode()
        if "shell" in tools:
            cmd = ["bash", "-lc", f"printf %s {content} > {path}"]
            return "shell", orjson.dumps({"command": cmd}).decode()
    m = _CALL.search(text)
    if m and m.group(1) in tools:
        return m.group(1), m.group(2)
    return None


def _parts_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))


def _prompt_chars(body: dict) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", ""))) for m in body["messages"])
    return len(str(body.get("prompt", body.get("input", ""))))


def _usage(body: dict, completion_tokens: int) -> dict:
    prompt = _prompt_chars(body) // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def _json(obj: dict) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _error(status: int, message: str, code: str, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


class ServerThread:
    """An aiohttp application served from its own thread and loop on 127.0.0.1."""

    def __init__(self, make_app: Callable[[], web.Application], port: int = 0) -> None:
        self._make_app = make_app
        self._port = port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("server thread did not start in 15 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            runner = web.AppRunner(self._make_app(), access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
