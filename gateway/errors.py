"""OpenAI-shaped errors: the SDKs map the status and `error.type` onto their exception classes."""

from __future__ import annotations

import orjson
from aiohttp import web

# status -> OpenAI `type`
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


class GatewayError(Exception):
    """Raised anywhere on the request path; the handler turns it into a JSON answer."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        err_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.err_type = err_type or _TYPES.get(status, "api_error")

    def body(self) -> bytes:
        return error_body(self.message, self.err_type, self.code, self.param)

    def response(self) -> web.Response:
        headers = None
        if self.retry_after is not None:
            headers = {"Retry-After": str(max(1, round(self.retry_after)))}
        return web.Response(
            status=self.status, body=self.body(), content_type="application/json", headers=headers
        )


def error_body(message: str, err_type: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    )


def sse_error_event(message: str, code: str) -> bytes:
    """What a stream carries when the upstream dies after the first byte was sent."""
    return b"data: " + error_body(message, "api_error", code) + b"\n\ndata: [DONE]\n\n"
