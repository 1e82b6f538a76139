"""Stage 7, account: what a request cost, in every place that reads it.

Prometheus metrics with the platform labels (requests, latency, tokens, dollars), the usage
counters that limits and budgets read (charged through the admit stage, which owns them), and the
trace span's last attributes. A refused request is counted as `rejected` with its reason; a
request that failed upstream counts under the backend that failed it.

Developer traffic (a key that names a developer: coding assistants) is also counted per
developer and tool (requests, tokens, dollars, prompt-cache savings, sessions), which adoption is
measured from, and charged to the developer's budget. With `audit:` every request leaves one
audit record (gateway/audit.py): who, which tool, model, tokens, cost, never prompt text.

Input tokens the provider served from its prompt cache are priced at the backend's
`cached_input_per_mtok` when it has one; the difference to the input price is the saving.
A call the asynchronous pipelines make (gateway/internal.py) is priced the same way, times its
`price_factor` (a batch line's route discount), and charged to the same budgets by the pipeline
when it records the result (pipelines/state.py), so a line that runs twice is charged once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import tracing
from gateway.assistants import Sessions
from gateway.audit import AuditLog
from gateway.config import CompiledBackend
from gateway.errors import GatewayError
from gateway.load import OnlineLatency
from gateway.metrics import Metrics
from gateway.stages.admit import Admission
from gateway.stages.call import Call

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Accounting:
    def __init__(
        self,
        metrics: Metrics,
        admission: Admission,
        sessions: Sessions | None = None,
        audit: AuditLog | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self.metrics = metrics
        self.admission = admission
        self.sessions = sessions or Sessions()
        self.audit = audit
        self._spawn = spawn
        # online answers' latency per route, when something reads it (the batch workers' yield
        # rule, pipelines/); None costs nothing per request
        self.online: OnlineLatency | None = None

    async def answered(self, call: Call, backend: CompiledBackend, usage: dict | None) -> None:
        """A 200 from `backend` with this `usage` (None: the backend sent none)."""
        key = call.key
        assert key is not None
        m = self.metrics
        labels = (key.team, *backend.label_values, *call.prompt_labels)
        tin, tout = usage_tokens(usage)
        cached = usage_cached(usage)
        cost = (tin - cached) * backend.price_in + cached * backend.price_cached
        cost = (cost + tout * backend.price_out) * call.price_factor
        elapsed = time.monotonic() - call.t0
        m.child(m.requests, *labels, call.endpoint, "200").inc()
        m.child(m.latency, *labels, call.endpoint).observe(elapsed)
        m.child(m.tokens, *labels, "in").inc(tin)
        m.child(m.tokens, *labels, "out").inc(tout)
        if cost:
            m.child(m.cost, *labels).inc(cost)
        call.cost, call.usage = cost, (tin, tout)
        if not call.deferred:  # a deferred call is charged by the pipeline, with its result
            if self.online is not None and call.route is not None:
                self.online.observe(call.route.alias, call.ttft if call.stream else elapsed)
            await self.admission.charge(call, tin + tout, cost)
        if call.developer is not None:
            saved = cached * (backend.price_in - backend.price_cached) * call.price_factor
            self._developer(call, "200", tin, tout, cached, cost, saved)
        if self.audit is not None:
            self._audit(call, backend.name, 200, None, tin, tout, cached, cost)
        if call.span is not None:
            tracing.end_answered(call, backend, tin, tout)

    def refused_upstream(self, call: Call, backend: CompiledBackend, status: int) -> None:
        """The backend refused the request itself (a client error, passed through)."""
        self._count(call, backend, str(status))
        if call.developer is not None:
            self._developer(call, str(status))
        if self.audit is not None:
            self._audit(call, backend.name, status, "upstream_refused")
        if call.span is not None:
            tracing.end_failed(call, str(status))

    def rejected(self, call: Call, exc: GatewayError) -> None:
        """The gateway answered `exc`: a 5xx after the route was known counts under its first
        backend; anything else is a refusal, counted by reason."""
        if call.route is not None and exc.status >= 500 and call.key is not None:
            self._count(call, call.route.backends[0], str(exc.status))
        else:
            team = call.key.team if call.key is not None else "unknown"
            self.metrics.child(self.metrics.rejected, team, exc.code or str(exc.status)).inc()
        if call.developer is not None:
            self._developer(call, str(exc.status))
        if self.audit is not None:
            self._audit(call, None, exc.status, exc.code or str(exc.status))
        if call.span is not None:
            tracing.end_failed(call, exc.code or str(exc.status))

    def cache_hit(self, call: Call, saved: float) -> None:
        """The response cache answered: a developer's request still counts, its saving too."""
        if call.developer is not None:
            self._developer(call, "200", saved=saved)
        if self.audit is not None:
            self._audit(call, "cache", 200, None)

    def _count(self, call: Call, backend: CompiledBackend, code: str) -> None:
        assert call.key is not None
        m = self.metrics
        labels = (call.key.team, *backend.label_values, *call.prompt_labels)
        m.child(m.requests, *labels, call.endpoint, code).inc()
        m.child(m.latency, *labels, call.endpoint).observe(time.monotonic() - call.t0)

    def _developer(
        self,
        call: Call,
        code: str,
        tin: int = 0,
        tout: int = 0,
        cached: int = 0,
        cost: float = 0.0,
        saved: float = 0.0,
    ) -> None:
        """Assistant traffic, per developer and tool: what adoption is measured from."""
        assert call.key is not None and call.developer is not None
        m = self.metrics
        who = (call.key.team, call.developer, call.tool)
        model = call.body.get("model") if isinstance(call.body.get("model"), str) else ""
        m.child(m.dev_requests, *who, model or "", code).inc()
        if tin:
            m.child(m.dev_tokens, *who, "in").inc(tin)
        if tout:
            m.child(m.dev_tokens, *who, "out").inc(tout)
        if cached:
            m.child(m.dev_tokens, *who, "cached").inc(cached)
        if cost:
            m.child(m.dev_cost, *who).inc(cost)
        if saved:
            m.child(m.dev_cache_saved, *who).inc(saved)
        if self._spawn is not None and call.endpoint != "messages.count_tokens":
            self._spawn(self._session(call))

    async def _session(self, call: Call) -> None:
        assert call.key is not None and call.developer is not None
        if await self.sessions.starts(call.key.team, call.developer, call.tool, call.session):
            m = self.metrics
            m.child(m.dev_sessions, call.key.team, call.developer, call.tool).inc()

    def _audit(
        self,
        call: Call,
        backend: str | None,
        status: int,
        error: str | None,
        tin: int = 0,
        tout: int = 0,
        cached: int = 0,
        cost: float = 0.0,
    ) -> None:
        assert self.audit is not None
        key = call.key
        model = call.body.get("model")
        self.audit.write(
            {
                "key": key.id if key is not None else None,
                "team": key.team if key is not None else None,
                "developer": call.developer,
                "tool": call.tool or None,
                "tool_version": call.tool_version or None,
                "session": call.session,
                "endpoint": call.endpoint,
                "model": model if isinstance(model, str) else None,
                "backend": backend,
                "status": status,
                "error": error,
                "stream": call.stream,
                "tokens_in": tin,
                "tokens_out": tout,
                "tokens_cached": cached,
                "cost_usd": round(cost, 8),
                "latency_ms": round((time.monotonic() - call.t0) * 1000, 1),
            }
        )


def usage_tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI `usage` object; (0, 0) without one."""
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def usage_cached(usage: Any) -> int:
    """Prompt tokens served from the provider's prompt cache (the normalized `cached_tokens`, or
    OpenAI's `prompt_tokens_details.cached_tokens`)."""
    if not isinstance(usage, dict):
        return 0
    n = usage.get("cached_tokens")
    if n is None:
        details = usage.get("prompt_tokens_details")
        n = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(n or 0)
