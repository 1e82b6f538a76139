"""One request through the stages without an HTTP caller: how the asynchronous pipelines (batch
lines, async jobs; pipelines/) call the routes.

The same stages as `GatewayService._serve` (gateway/app.py), in the same order: the body is
checked and its route resolved for the key that submitted the work, limits and the budgets (the
team's and, for a developer's own key, the developer's) admit it, the response cache may answer, the forward stage walks the route with its retries,
fallbacks and circuit breakers, and the account stage records the metrics. Two differences:
the call is never streamed (a batch line or job wants the whole answer), and its cost is not
charged here. The pipeline charges it when it records the result, once per line however often
the line ran (a worker killed after the answer but before the record re-runs it), to the same
budgets, with the same cost as online (cached prompt tokens at the cached-input price), times the
route's batch discount for batch lines (`Call.price_factor`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway import tracing
from gateway.config import CompiledKey
from gateway.errors import GatewayError
from gateway.proxy import OK
from gateway.stages.account import usage_tokens
from gateway.stages.cache import answer_cost
from gateway.stages.call import Call
from gateway.stages.parse import check_body, resolve_route
from gateway.stages.prompt import resolve as resolve_prompt

if TYPE_CHECKING:
    from gateway.app import GatewayService

log = logging.getLogger("tandem.gateway")


@dataclass(frozen=True)
class Answer:
    """What the route answered: an HTTP status and its JSON body (an OpenAI error body when not
    200), what it costs the team (0 for a cache hit or an error) and its tokens."""

    status: int
    body: dict[str, Any]
    cost: float = 0.0
    usage: tuple[int, int] = (0, 0)
    retry_after: float | None = None
    cached: bool = False

    @property
    def retryable(self) -> bool:
        """Worth trying again later: the backends failed or were busy (5xx, or a 429 that is
        not a spent budget); a client error or a spent budget will answer the same."""
        code = (self.body.get("error") or {}).get("code") if self.status != 200 else None
        return self.status >= 500 or (self.status == 429 and code != "insufficient_quota")


def batch_key(key: CompiledKey) -> CompiledKey:
    """The key as the pipelines use it: same id, team and models, without its per-minute limits
    (background work is paced by the workers' concurrency, as OpenAI paces batches apart from
    the key's rate limits). The team's budget still applies."""
    clone = CompiledKey.__new__(CompiledKey)
    for slot in CompiledKey.__slots__:
        setattr(clone, slot, getattr(key, slot))
    clone.rpm = clone.tpm = None
    return clone


async def call_route(
    svc: GatewayService,
    key: CompiledKey,
    endpoint: str,
    body: dict[str, Any],
    *,
    batch: bool,
) -> Answer:
    """Run `body` on `endpoint` for `key`; `batch`: a batch line, priced at the route's batch
    discount (an async job pays the full price)."""
    call = Call(endpoint, time.monotonic(), svc.compiled, deferred=True)
    call.key = key
    call.developer = key.developer or None  # a developer's own key: their budget applies too
    try:
        if body.get("stream"):
            raise GatewayError(
                400,
                "Batch lines and async jobs cannot be streamed; remove 'stream'.",
                "invalid_request",
                param="stream",
            )
        call.raw = orjson.dumps(body)
        call.body = check_body(call.raw, endpoint)
        if "prompt" in call.body and endpoint == "chat.completions":
            resolve_prompt(call)  # a line may name a prompt (gateway/stages/prompt.py)
        call.route = resolve_route(call.compiled, key, call.body["model"], endpoint)
        call.route = await svc.admission.admit(call)
        if batch:
            call.price_factor = call.route.batch_price_factor
        if svc.tracer is not None:
            tracing.begin(call, svc.tracer, endpoint, call.body["model"], key.team)
        if call.prompt is not None:
            svc.prompt_stage.render(call)
        svc.prompt_stage.budget(call)
        if svc.cache_stage is not None:
            hit = await svc.cache_stage.lookup(call)
            if hit is not None:
                svc.cache_stage.counted(call, hit)
                saved = answer_cost(hit.response, call.route) * call.price_factor
                svc.accounting.cache_hit(call, saved)  # a developer's metrics, the audit record
                return Answer(200, hit.response, cached=True)
        assert svc.forwarder is not None
        a = await svc.forwarder.forward(
            call.route,
            endpoint,
            call.body,
            call.raw,
            False,
            False,
            None,
            call.tried,
            call.traceparent,
            need=call.need,
        )
        call.attempt = a
        if a.kind != OK:  # the backend's own client error, passed on
            svc.accounting.refused_upstream(call, a.backend, a.status)
            return Answer(a.status, _json_or_error(a.body, a.status))
        assert a.obj is not None
        call.answer = a.obj
        usage = a.obj.get("usage")
        await svc.accounting.answered(call, a.backend, usage if isinstance(usage, dict) else None)
        if svc.cache_stage is not None and call.cache_request is not None:
            svc.cache_stage.store(call.cache_request, a.obj)
        return Answer(200, a.obj, call.cost, usage_tokens(usage))
    except GatewayError as exc:
        svc.accounting.rejected(call, exc)
        return Answer(exc.status, orjson.loads(exc.body()), retry_after=exc.retry_after)
    except Exception:
        log.exception("internal error on a pipeline call to %s", endpoint)
        err = GatewayError(500, "The gateway failed to process the request.", "internal_error")
        svc.accounting.rejected(call, err)
        return Answer(500, orjson.loads(err.body()))


def _json_or_error(raw: bytes, status: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        return obj
    return {
        "error": {
            "message": raw[:500].decode(errors="replace"),
            "type": "api_error",
            "param": None,
            "code": f"http_{status}",
        }
    }
