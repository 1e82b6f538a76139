"""Stage 6, relay: the backend's answer back to the caller, then accounted (stage 7).

A complete answer is returned byte for byte. A stream is passed through as its chunks arrive
(minus the usage event the gateway asked for on the caller's behalf, gateway/sse.py), until the
route's deadline; once the first byte is sent the status cannot change, so a stream that breaks
off ends with an SSE error event and its backend's breaker records the failure. With a cache, a
stream is also kept (up to STREAM_KEEP_MAX bytes) and, if it ended normally, rebuilt into the
complete answer and stored: chat clients mostly stream, and a cache that only learns from
non-streamed calls stays empty in front of them.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from gateway.errors import sse_error_event
from gateway.proxy import CLIENT, Attempt, Upstreams
from gateway.sse import SSE_HEADERS, KeepTail, StripUsage, assemble_stream
from gateway.stages.account import Accounting
from gateway.stages.cache import BYPASS_OFF, CACHE_HEADER, CacheStage
from gateway.stages.call import Call
from gateway.stages.prompt import prompt_headers
from gateway.stages.signals import Signals

STREAM_KEEP_MAX = 1 << 20  # a streamed answer larger than this is relayed but not cached


class Relay:
    def __init__(
        self,
        upstreams: Upstreams,
        accounting: Accounting,
        cache: CacheStage | None,
        signals: Signals | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.accounting = accounting
        self.cache = cache
        self.signals = signals

    async def respond(self, request: web.Request, call: Call, a: Attempt) -> web.StreamResponse:
        """The caller's answer for this attempt (OK, or a client error the backend gave), in
        the caller's API (`call.exchange`, for Messages and Responses)."""
        ex = call.exchange
        call.attempt = a
        headers = {CACHE_HEADER: call.cache_status or BYPASS_OFF}
        # under a rollout the caller learns which arm and version answered (A/B analytics)
        arm = a.route.arm_headers.get(a.backend.name)
        if call.prompt is not None or call.context_note is not None:
            arm = {**(arm or {}), **prompt_headers(call)}
        if arm:
            headers.update(arm)
        if a.kind == CLIENT:
            self.accounting.refused_upstream(call, a.backend, a.status)
            body = a.body if ex is None else ex.client_error(call, a)
            return web.Response(
                status=a.status, body=body, content_type="application/json", headers=headers
            )
        if a.resp is not None:
            try:
                return await self._stream(request, call, a, arm)
            finally:
                self.upstreams.finished(a)
        if ex is not None:
            body, normalized = await ex.answer(call, a)
            if _captures(call):
                call.answer = orjson.loads(body)
            await self.accounting.answered(call, a.backend, normalized)
            return web.Response(body=body, content_type="application/json", headers=headers)
        usage = a.obj.get("usage") if a.obj is not None else None
        call.answer = a.obj
        await self.accounting.answered(call, a.backend, usage if isinstance(usage, dict) else None)
        if self.signals is not None:
            self.signals.answered(call, a.backend, a.obj)
        if self.cache is not None and call.cache_request is not None and a.obj is not None:
            self.cache.store(call.cache_request, a.obj)
        return web.Response(body=a.body, content_type="application/json", headers=headers)

    async def _stream(
        self, request: web.Request, call: Call, a: Attempt, arm: dict[str, str] | None
    ) -> web.StreamResponse:
        up = a.resp
        assert up is not None and call.key is not None
        out = web.StreamResponse(
            status=200,
            headers={**SSE_HEADERS, CACHE_HEADER: call.cache_status or BYPASS_OFF, **(arm or {})},
        )
        ex = call.exchange
        if ex is not None:  # passed through with its usage read, or translated
            tap = ex.tap(call, a)
        else:
            tap = StripUsage() if call.inject_usage else KeepTail()
        capture = ex is None and _captures(call)
        kept: list[bytes] | None = [] if call.cache_request is not None or capture else None
        kept_bytes = 0
        complete = False
        # a Responses stream is stored before its last event goes out: the caller's next request
        # may name it (previous_response_id) as soon as it has seen it
        storing = ex is not None and ex.stores
        try:
            await out.prepare(request)
            m = self.accounting.metrics
            call.ttft = time.monotonic() - call.t0
            labels = (call.key.team, *a.backend.label_values, *call.prompt_labels)
            m.child(m.ttft, *labels).observe(call.ttft)
            t = a.backend.spec.timeouts
            deadline = call.t0 + min(t.total_s, a.route.spec.deadline_s)
            chunk = a.first
            try:
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
                ):
                    while chunk:
                        if kept is not None:
                            kept.append(chunk)
                            kept_bytes += len(chunk)
                            if kept_bytes > STREAM_KEEP_MAX:
                                kept = None
                        data = tap.feed(chunk)
                        if data:
                            if storing and tap.response is not None:
                                storing = False
                                await ex.keep(call, tap.response)
                            await out.write(data)
                        chunk = await up.content.readany()
                    rest = tap.rest()
                    if rest:
                        if storing and tap.response is not None:
                            await ex.keep(call, tap.response)
                        await out.write(rest)
                complete = True
            except ConnectionResetError:
                raise
            except Exception as exc:  # the upstream broke off or ran out of time mid-stream
                err = "timeout_total" if isinstance(exc, TimeoutError) else "stream_broken"
                self.upstreams.stream_failed(a.backend, err)
                message = "The backend stream ended early."
                await out.write(
                    sse_error_event(message, err) if ex is None else tap.fail(message, err)
                )
            try:
                await out.write_eof()
            except ConnectionResetError:
                if not complete:
                    raise
                # the caller had the whole stream, [DONE] included, and hung up before the
                # chunked encoding's last bytes (the openai SDK does): an answer, charged as one
        except (ConnectionResetError, asyncio.CancelledError):
            up.close()
            raise
        finally:
            up.release()
        usage = tap.usage
        if usage is None:  # the upstream ignores stream_options: estimate
            usage = {
                "prompt_tokens": len(call.raw) // 4,
                "completion_tokens": max(0, tap.events - 1),
            }
        answer = assemble_stream(b"".join(kept), call.endpoint) if complete and kept else None
        if capture:
            call.answer = answer
        await self.accounting.answered(call, a.backend, usage)
        if self.signals is not None:
            self.signals.answered(call, a.backend, None)
        if answer is not None and self.cache is not None and call.cache_request is not None:
            self.cache.store(call.cache_request, answer)
        return out


def _captures(call: Call) -> bool:
    """Whether this call's span records prompt and response text (its route opted in)."""
    return call.span is not None and call.trace.captures(call.body.get("model"))
