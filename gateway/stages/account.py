"""Stage 7, account: what a request cost, in every place that reads it.

Prometheus metrics with the platform labels (requests, latency, tokens, dollars), the usage
counters that limits and budgets read (charged through the admit stage, which owns them), and the
trace span's last attributes. A refused request is counted as `rejected` with its reason; a
request that failed upstream counts under the backend that failed it.
"""

from __future__ import annotations

import time
from typing import Any

from gateway import tracing
from gateway.config import CompiledBackend
from gateway.errors import GatewayError
from gateway.load import OnlineLatency
from gateway.metrics import Metrics
from gateway.stages.admit import Admission
from gateway.stages.call import Call


class Accounting:
    def __init__(self, metrics: Metrics, admission: Admission) -> None:
        self.metrics = metrics
        self.admission = admission
        # online answers' latency per route, when something reads it (the batch workers' yield
        # rule, pipelines/); None costs nothing per request
        self.online: OnlineLatency | None = None

    async def answered(self, call: Call, backend: CompiledBackend, usage: dict | None) -> None:
        """A 200 from `backend` with this `usage` (None: the backend sent none)."""
        key = call.key
        assert key is not None
        m = self.metrics
        labels = (key.team, *backend.label_values)
        tin, tout = usage_tokens(usage)
        cost = (tin * backend.price_in + tout * backend.price_out) * call.price_factor
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
            await self.admission.charge(key, call.budget, tin + tout, cost)
        if call.span is not None:
            tracing.end_answered(call.span, backend, tin, tout)

    def refused_upstream(self, call: Call, backend: CompiledBackend, status: int) -> None:
        """The backend refused the request itself (a client error, passed through)."""
        self._count(call, backend, str(status))
        if call.span is not None:
            tracing.end_failed(call.span, str(status))

    def rejected(self, call: Call, exc: GatewayError) -> None:
        """The gateway answered `exc`: a 5xx after the route was known counts under its first
        backend; anything else is a refusal, counted by reason."""
        if call.route is not None and exc.status >= 500 and call.key is not None:
            self._count(call, call.route.backends[0], str(exc.status))
        else:
            team = call.key.team if call.key is not None else "unknown"
            self.metrics.child(self.metrics.rejected, team, exc.code or str(exc.status)).inc()
        if call.span is not None:
            tracing.end_failed(call.span, exc.code or str(exc.status))

    def _count(self, call: Call, backend: CompiledBackend, code: str) -> None:
        assert call.key is not None
        m = self.metrics
        labels = (call.key.team, *backend.label_values)
        m.child(m.requests, *labels, call.endpoint, code).inc()
        m.child(m.latency, *labels, call.endpoint).observe(time.monotonic() - call.t0)


def usage_tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI `usage` object; (0, 0) without one."""
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
