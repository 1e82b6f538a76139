"""Prometheus metrics with the platform label set (`vocabulary.labels.METRIC_LABELS`).

`team` is the caller's team (from its key); the other five come from the backend that answered,
so FinOps can join gateway cost with GPU cost on the same labels. Label children are cached per
(team, backend) so a request does one dictionary lookup instead of prometheus_client's locking
`labels()` call. Prompt and completion text never reach a metric.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from vocabulary.labels import METRIC_LABELS

LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # halves the /metrics payload; nothing reads `_created`
        self.registry = r = CollectorRegistry()
        base = list(METRIC_LABELS)
        self.requests = Counter(
            "tandem_gateway_requests", "Requests answered", base + ["endpoint", "code"], registry=r
        )
        self.latency = Histogram(
            "tandem_gateway_request_duration_seconds",
            "Time to the full answer",
            base + ["endpoint"],
            buckets=LAT_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tandem_gateway_time_to_first_token_seconds",
            "Time to the first streamed byte",
            base,
            buckets=LAT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tandem_gateway_tokens", "Tokens in and out", base + ["direction"], registry=r
        )
        self.cost = Counter("tandem_gateway_cost_usd", "Dollars spent", base, registry=r)
        self.upstream_errors = Counter(
            "tandem_gateway_upstream_errors",
            "Upstream failures by class",
            ["backend", "class"],
            registry=r,
        )
        self.retries = Counter(
            "tandem_gateway_retries", "Retried attempts", ["backend"], registry=r
        )
        self.fallbacks = Counter(
            "tandem_gateway_fallbacks",
            "Requests served by a later route",
            ["route", "to"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "tandem_gateway_breaker_state",
            "Circuit breaker state (0 closed, 1 open, 2 half-open)",
            ["backend"],
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "tandem_gateway_concurrency_limit",
            "Adaptive concurrency limit: requests the backend is sent at once (AIMD on its 429s)",
            ["backend"],
            registry=r,
        )
        self.shed = Counter(
            "tandem_gateway_concurrency_shed",
            "Requests that found the backend's concurrency limit full past queue_s",
            ["backend"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "tandem_gateway_budget_remaining_usd",
            "Team budget left this period",
            ["team"],
            registry=r,
        )
        self.rejected = Counter(
            "tandem_gateway_rejected",
            "Requests refused by the gateway",
            ["team", "reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "tandem_gateway_cache_hits",
            "Answers served from the response cache",
            ["team", "layer"],
            registry=r,
        )
        self.cache_saved = Counter(
            "tandem_gateway_cache_saved_usd",
            "Dollars the cache saved: the cached answer's usage at the route's expected price",
            ["team", "layer"],
            registry=r,
        )
        self.cache_status = Counter(
            "tandem_gateway_cache_status",
            "Completion requests by what the response cache did (X-Tandem-Cache): hit, miss, "
            "bypass; reason: the hit's layer or why the cache was bypassed",
            ["team", "status", "reason"],
            registry=r,
        )
        # Coding-assistant traffic (keys that name a developer): per developer and tool, what
        # adoption and cost per developer are measured from. `developer` is one label value per
        # developer with a key: thousands for a large organisation, which Prometheus holds.
        dev = ["team", "developer", "tool"]
        self.dev_requests = Counter(
            "tandem_gateway_assistant_requests",
            "Assistant requests by developer, tool, model alias and status",
            dev + ["model", "code"],
            registry=r,
        )
        self.dev_tokens = Counter(
            "tandem_gateway_assistant_tokens",
            "Assistant tokens (in, out; cached: input served from the provider's prompt cache)",
            dev + ["direction"],
            registry=r,
        )
        self.dev_cost = Counter(
            "tandem_gateway_assistant_cost_usd", "Assistant dollars spent", dev, registry=r
        )
        self.dev_cache_saved = Counter(
            "tandem_gateway_assistant_cache_saved_usd",
            "Assistant dollars saved by the provider's prompt cache and the response cache",
            dev,
            registry=r,
        )
        self.dev_sessions = Counter(
            "tandem_gateway_assistant_sessions",
            "Assistant sessions started (the tool's session id, or 30 idle minutes)",
            dev,
            registry=r,
        )
        self.developers_with_keys = Gauge(
            "tandem_gateway_developers_with_keys",
            "Developers who can use assistants: own keys plus the team's roster",
            ["team"],
            registry=r,
        )
        self.feature_lookups = Counter(
            "tandem_gateway_feature_lookups",
            "Feature store reads by outcome (found, missing_entity, unknown_entity, unavailable) "
            "and what the route did about it (enriched, skipped, refused)",
            ["use_case", "service", "outcome", "action"],
            registry=r,
        )
        self.feature_latency = Histogram(
            "tandem_gateway_feature_lookup_seconds",
            "Time to read a request's features from the online store",
            ["service"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self._children: dict[tuple, Any] = {}

    def forget_gauges(self, backend: str) -> None:
        """Stop exporting a removed backend's breaker state and concurrency limit."""
        for gauge in (self.breaker_state, self.concurrency_limit):
            with contextlib.suppress(KeyError):  # never exported: nothing to stop
                gauge.remove(backend)

    def child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*values)
        return c
