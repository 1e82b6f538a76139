"""One request as it passes the stages: what each stage learned, for the stages after it (and for
the error path, which reports whatever was known when the request failed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.cache.api import CacheRequest
from gateway.config import Compiled, CompiledKey, CompiledRoute
from vocabulary.gateway import Budget


@dataclass(slots=True, eq=False)
class Call:
    # "chat.completions" | "completions" | "embeddings" | "messages" | "responses"
    # (| "messages.count_tokens")
    endpoint: str
    t0: float  # time.monotonic() on arrival
    compiled: Compiled  # the config this request runs under (a reload does not change it)
    key: CompiledKey | None = None  # authenticate
    developer: str | None = None  # authenticate: the developer behind the key, if it names one
    tool: str = ""  # ... and the coding tool, from the user agent (developer traffic only)
    tool_version: str = ""
    session: str | None = None  # the tool's session id, when it sends one
    body: dict[str, Any] = field(default_factory=dict)  # parse: the request, parsed ...
    raw: bytes = b""  # ... and as sent
    route: CompiledRoute | None = None  # parse; admit may swap in the route's degrade_to
    stream: bool = False
    inject_usage: bool = False  # a stream whose usage event the gateway asks for
    budget: Budget | None = None  # admit: the team's budget, if it has one
    developer_budget: Budget | None = None  # admit: the developer's, if the team sets one
    span: Any = None  # the trace span, when tracing is on and this request is sampled
    trace: Any = None  # ... and the gateway's tracer (gateway/tracing.py)
    traceparent: str = ""  # ... the span's W3C traceparent, sent upstream
    tried: list[str] | None = None  # forward: the backends called, in order (traced calls)
    attempt: Any = None  # relay: the attempt that answered (its route, backend)
    answer: dict | None = None  # relay: the answer, for a route that captures text
    cache_request: CacheRequest | None = None  # cache: set when the cache was asked
    # cache: what it did, sent as X-Tandem-Cache (None until the request gets that far)
    cache_status: str | None = None
    exchange: Any = None  # exchange: how a Messages / Responses request meets each backend
    headers: dict[str, str] | None = None  # exchange: caller headers passed upstream
    translated: dict[str, Any] | None = None  # exchange: the chat-completions request, built once
    items: list[dict[str, Any]] | None = None  # exchange: a Responses conversation, in full
    response_id: str = ""  # exchange: the Responses id the gateway gives the answer
    ttft: float = 0.0  # relay: seconds to a stream's first byte
    # prompt (gateway/stages/prompt.py): the version a `prompt` reference resolved to, its arm
    # under a live split, the feature values it may use as variables, and the metric labels
    prompt: Any = None  # prompts.template.CompiledVersion
    prompt_arm: str = ""
    feature_values: dict[str, str] | None = None  # features: values for the prompt's variables
    prompt_labels: tuple[str, str] = ("", "")  # (prompt, prompt_version) on every metric
    need: int | None = None  # context: the request's counted tokens (None: not counted)
    context_note: str | None = None  # context: X-Tandem-Context (what the budget did)
    # A call the asynchronous pipelines make (gateway/internal.py), not a caller's: its cost is
    # computed (at the route's batch discount for a batch line) but charged by the pipeline when
    # it records the result, exactly once however often the line ran; it is not online traffic.
    deferred: bool = False
    price_factor: float = 1.0
    cost: float = 0.0  # account: what the answer cost (a deferred call's charge)
    usage: tuple[int, int] = (0, 0)  # account: (prompt, completion) tokens
