"""The OpenAPI 3.1 document served at /openapi.json (the subset of OpenAI's API the gateway speaks)."""

from __future__ import annotations

from functools import cache
from typing import Any


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request",
        401: "Missing or invalid API key",
        403: "Model not allowed for this key",
        404: "Unknown model",
        413: "Body too large",
        429: "Rate limit or budget exhausted",
        502: "Upstream failed",
        503: "No backend available",
        504: "Upstream timed out",
    }
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {str(c): {"description": text[c], **ref} for c in codes}


_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)


def _post(summary: str, request: str, response: str, streams: bool) -> dict[str, Any]:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
    }
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                },
            },
            "responses": {
                "200": {"description": "OK", "content": content},
                **_error_responses(*_ERRORS),
            },
        }
    }


def _get(summary: str, schema: dict[str, Any], secured: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}}
        },
    }
    if secured:
        op["security"] = [{"bearer": []}]
        op["responses"].update(_error_responses(401))
    return {"get": op}


def _model_get(schema: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/models/{model}`: one alias (404 when unknown or not allowed for the key)."""
    op = _get("One model this key may use", schema, secured=True)
    op["get"]["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    op["get"]["responses"].update(_error_responses(404))
    return op


@cache
def openapi_document() -> dict[str, Any]:
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]},
            "content": {"type": "string"},
        },
    }
    common = {
        "model": {"type": "string", "minLength": 1},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "user": {"type": "string"},
    }
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tandem AI gateway", "version": "1.0.0"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
                "ChatCompletionRequest": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        **common,
                        "messages": {"type": "array", "minItems": 1, "items": message},
                    },
                },
                "CompletionRequest": {
                    "type": "object",
                    "required": ["model", "prompt"],
                    "properties": {**common, "prompt": {"type": "string", "minLength": 1}},
                },
                "EmbeddingRequest": {
                    "type": "object",
                    "required": ["model", "input"],
                    "properties": {
                        "model": common["model"],
                        "input": {
                            "oneOf": [
                                {"type": "string", "minLength": 1},
                                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            ]
                        },
                    },
                },
                "ChatCompletion": obj,
                "Completion": obj,
                "EmbeddingList": obj,
            },
        },
        "paths": {
            "/v1/chat/completions": _post(
                "Chat completion", "ChatCompletionRequest", "ChatCompletion", True
            ),
            "/v1/completions": _post("Text completion", "CompletionRequest", "Completion", True),
            "/v1/embeddings": _post("Embeddings", "EmbeddingRequest", "EmbeddingList", False),
            "/v1/models": _get("Models this key may use", obj, secured=True),
            "/v1/models/{model}": _model_get(obj),
            "/healthz": _get("Liveness", obj),
            "/readyz": _get("Readiness", obj),
        },
    }
