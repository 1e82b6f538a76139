"""Stage 2, parse: the request body, checked, and the route its `model` names.

The body is parsed once (orjson) and kept with its raw bytes: when the backend's model name is
the alias, the raw bytes go upstream unchanged. Every refusal is an OpenAI-style 4xx naming the
parameter at fault.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.config import Compiled, CompiledKey, CompiledRoute
from gateway.errors import GatewayError
from gateway.sse import wants_usage
from gateway.stages.call import Call
from gateway.stages.prompt import check_prompt_body
from gateway.stages.prompt import resolve as resolve_prompt

# the field each endpoint cannot do without
_REQUIRED = {
    "chat.completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "messages": "messages",
    "messages.count_tokens": "messages",
    "responses": "input",
}
# the endpoint a route must serve for a request to this one
_ROUTE_ENDPOINT = {"messages.count_tokens": "messages"}
# APIs whose streams the exchange stage shapes (it asks for usage in a translated request)
_EXCHANGED = frozenset(("messages", "messages.count_tokens", "responses"))


async def parse(request: web.Request, call: Call, max_body_bytes: int) -> None:
    """Fill in the call's body, route and streaming flags."""
    assert call.key is not None
    call.raw = await read_raw(request, max_body_bytes)
    call.body = check_body(call.raw, call.endpoint)
    if "prompt" in call.body and call.endpoint == "chat.completions":
        resolve_prompt(call)  # fills in `model` when the caller left it to the prompt
    endpoint = _ROUTE_ENDPOINT.get(call.endpoint, call.endpoint)
    call.route = resolve_route(call.compiled, call.key, call.body["model"], endpoint)
    call.stream = call.body.get("stream") is True
    # usage is what budgets are charged from: a stream asks for it unless the caller already did
    call.inject_usage = (
        call.stream
        and call.endpoint != "embeddings"
        and call.endpoint not in _EXCHANGED
        and not wants_usage(call.body)
    )


def resolve_route(compiled: Compiled, key: CompiledKey, alias: str, endpoint: str) -> CompiledRoute:
    """The route for `alias`, if it serves this endpoint and the key may use it."""
    route = compiled.routes.get(alias)
    if route is None or endpoint not in route.endpoints:
        raise GatewayError(
            404,
            f"The model '{alias}' does not exist or does not serve {endpoint}.",
            "model_not_found",
            param="model",
        )
    if not key.all_models and alias not in key.models:
        raise GatewayError(
            403,
            f"This API key may not use the model '{alias}'.",
            "model_not_allowed",
            param="model",
        )
    return route


async def read_raw(request: web.Request, limit: int) -> bytes:
    """The body's bytes, refused past `limit` (413) before or while reading."""
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(413, f"Request body larger than {limit} bytes.", "request_too_large")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise GatewayError(
            413, f"Request body larger than {limit} bytes.", "request_too_large"
        ) from None


def check_body(raw: bytes, endpoint: str) -> dict[str, Any]:
    """The parsed body of a completion or embedding request, checked for what it needs."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", "invalid_request")
    if endpoint == "chat.completions" and "prompt" in body:  # names a prompt (stages/prompt.py)
        check_prompt_body(body)
        _check_stream(body, endpoint)
        return body
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise GatewayError(
            400, "'model' is required and must be a string.", "invalid_request", param="model"
        )
    field = _REQUIRED[endpoint]
    value = body.get(field)
    if field == "messages":
        if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
            raise GatewayError(
                400,
                "'messages' must be a non-empty array of message objects.",
                "invalid_request",
                param="messages",
            )
        if endpoint == "messages":
            n = body.get("max_tokens")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise GatewayError(
                    400,
                    "'max_tokens' is required and must be a positive integer.",
                    "invalid_request",
                    param="max_tokens",
                )
    elif endpoint == "responses":
        if not isinstance(value, (str, list)) or (
            not value and not body.get("previous_response_id")
        ):
            raise GatewayError(
                400,
                "'input' is required and must be a string or an array of items.",
                "invalid_request",
                param="input",
            )
    elif not isinstance(value, (str, list)) or not value:
        raise GatewayError(
            400,
            f"'{field}' is required and must be a string or an array.",
            "invalid_request",
            param=field,
        )
    _check_stream(body, endpoint)
    return body


def _check_stream(body: dict[str, Any], endpoint: str) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, "'stream' must be a boolean.", "invalid_request", param="stream")
    if stream and endpoint == "embeddings":
        raise GatewayError(400, "Embeddings cannot be streamed.", "invalid_request", param="stream")
