"""The exchange stage: how a Messages or Responses request meets each backend, and how the answer
comes back in the caller's API.

Between parse and forward for `/v1/messages` and `/v1/responses` (chat completions, completions
and embeddings have none: they go upstream as sent). The forward stage asks `upstream(call,
route, backend)` for each attempt, because one route can mix backends: an Anthropic-compatible one
gets a Messages request as sent (passed through: the caller's `anthropic-version` and
`anthropic-beta` go with it, the provider's key replaces the caller's), an OpenAI-compatible one
the chat-completions translation (gateway/translate/), built once per request. The relay stage
then asks for the caller's answer (`answer`), the stream tap (`tap`: byte for byte with its usage
read, or translated event by event), a refused request's body (`client_error`) and, for the
gateway's own refusals, the error in the caller's shape (`error`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.config import CompiledBackend, CompiledRoute
from gateway.errors import GatewayError
from gateway.proxy import Attempt
from gateway.response_store import ResponseStore
from gateway.stages.call import Call
from gateway.translate import messages as m
from gateway.translate import responses as r

log = logging.getLogger("tandem.gateway")
Upstream = tuple[str, bytes, dict[str, str] | None]  # (upstream endpoint, payload, headers)
VERTEX_VERSION = "vertex-2023-10-16"
_PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


def _chat_payload(call: Call, route: CompiledRoute, backend: CompiledBackend) -> bytes:
    assert call.translated is not None
    return orjson.dumps({**call.translated, "model": backend.model or route.alias})


class MessagesExchange:
    """Anthropic's Messages API: passed through to Anthropic-compatible backends, translated for
    OpenAI-compatible ones."""

    api_key_header = "x-api-key"  # Claude Code's; a bearer token works too

    async def begin(self, call: Call, headers: Mapping[str, str]) -> None:
        """The caller's API version and betas go upstream with a passed-through request."""
        passed = {h: headers[h] for h in _PASSED_HEADERS if h in headers}
        call.headers = passed or None

    def upstream(self, call: Call, route: CompiledRoute, backend: CompiledBackend) -> Upstream:
        if backend.protocol == "openai":
            if call.translated is None:
                call.translated = m.to_chat(call.body)
            return "chat.completions", _chat_payload(call, route, backend), None
        model = backend.model or route.alias
        if backend.spec.vertex:  # the model goes in the URL, the version in the body
            body = {k: v for k, v in call.body.items() if k != "model"}
            body["anthropic_version"] = VERTEX_VERSION
            payload = orjson.dumps(body)
        elif call.body["model"] == model:
            payload = call.raw
        else:
            payload = orjson.dumps({**call.body, "model": model})
        headers = {**backend.headers, **call.headers} if call.headers else None
        if headers is not None and backend.spec.vertex:
            headers.pop("anthropic-version", None)
        return ("messages.stream" if call.stream else "messages"), payload, headers

    stores = False  # nothing kept after the answer

    async def answer(self, call: Call, a: Attempt) -> tuple[bytes, dict | None]:
        assert a.obj is not None
        if a.backend.protocol == "anthropic":
            return a.body, m.usage_of(a.obj.get("usage"))
        return orjson.dumps(m.from_chat(a.obj, call.body["model"])), m.chat_usage(
            a.obj.get("usage")
        )

    def tap(self, call: Call, a: Attempt) -> Any:
        if a.backend.protocol == "anthropic":
            return m.MessagesUsageTap()
        return m.ChatToMessagesStream(call.body["model"])

    def client_error(self, call: Call, a: Attempt) -> bytes:
        if a.backend.protocol == "anthropic":
            return a.body
        return m.from_openai_error(a.status, a.body)

    def error(self, exc: GatewayError) -> web.Response:
        headers = {"request-id": m.new_id("req_")}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return web.Response(
            status=exc.status,
            body=m.error_body(exc.status, exc.message, exc.code),
            content_type="application/json",
            headers=headers,
        )


class CountTokensExchange(MessagesExchange):
    """`/v1/messages/count_tokens`: passed to an Anthropic-compatible backend; never charged."""

    def upstream(self, call: Call, route: CompiledRoute, backend: CompiledBackend) -> Upstream:
        model = backend.model or route.alias
        body = (
            call.raw if call.body["model"] == model else orjson.dumps({**call.body, "model": model})
        )
        headers = {**backend.headers, **call.headers} if call.headers else None
        return "messages.count_tokens", body, headers

    async def answer(self, call: Call, a: Attempt) -> tuple[bytes, dict | None]:
        return a.body, None


class ResponsesExchange:
    """OpenAI's Responses API, translated to chat completions; answers with `store` kept."""

    api_key_header = None  # OpenAI clients send Authorization: Bearer
    stores = True  # answers with `store` (the default) are kept: see keep()

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def begin(self, call: Call, headers: Mapping[str, str]) -> None:
        """The whole conversation: the one `previous_response_id` names (this key's team's
        only), then this request's input; and the chat request for it."""
        prev = call.body.get("previous_response_id")
        items: list[dict[str, Any]] = []
        if prev is not None:
            stored = await self.store.get(str(prev)) if isinstance(prev, str) else None
            assert call.key is not None
            if stored is None or stored.get("team") != call.key.team:
                raise GatewayError(
                    400,
                    f"Previous response with id '{prev}' not found.",
                    "previous_response_not_found",
                    param="previous_response_id",
                )
            items = list(stored["items"])
        call.items = items + r.input_items(call.body)
        call.translated = r.to_chat(call.body, call.items)
        call.response_id = m.new_id("resp_")

    def upstream(self, call: Call, route: CompiledRoute, backend: CompiledBackend) -> Upstream:
        return "chat.completions", _chat_payload(call, route, backend), None

    async def answer(self, call: Call, a: Attempt) -> tuple[bytes, dict | None]:
        assert a.obj is not None
        resp = r.from_chat(a.obj, call.body, call.response_id)
        await self.keep(call, resp)
        return orjson.dumps(resp), m.chat_usage(a.obj.get("usage"))

    def tap(self, call: Call, a: Attempt) -> Any:
        return r.ChatToResponsesStream(call.body, call.response_id)

    def client_error(self, call: Call, a: Attempt) -> bytes:
        return a.body

    def error(self, exc: GatewayError) -> web.Response:
        return exc.response()

    async def keep(self, call: Call, resp: dict[str, Any]) -> None:
        """Store the answer (unless the request said `store: false`) before the caller has
        it all: its next request may name it. A store that fails costs only the lookup."""
        if call.body.get("store") is False:
            return
        assert call.key is not None and call.items is not None
        record = {
            "team": call.key.team,
            "key": call.key.id,
            "response": resp,
            "input": r.input_items(call.body),
            "items": call.items + resp["output"],
        }
        try:
            await self.store.put(resp["id"], record)
        except Exception:  # the caller gets its answer; only GET / previous_response_id miss it
            log.warning("storing response %s failed", resp["id"], exc_info=True)
