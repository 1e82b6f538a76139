"""Stage 7, account: a request's cost lands in the metrics, the usage counters and its span."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.config import Tracing, compile_config, hash_key, parse_config
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.account import Accounting, usage_tokens
from gateway.stages.admit import Admission
from gateway.stages.call import Call
from gateway.tracing import build_tracer

COMPILED = compile_config(
    parse_config(
        {
            "backends": {"a": {"url": "http://127.0.0.1:1/v1", "labels": {"use_case": "uc"}}},
            "routes": {"chat": {"backends": [{"backend": "a"}]}},
            "prices": {"a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "teams": {"t": {"budget": {"usd": 10.0}}},
            "keys": [{"id": "k", "team": "t", "sha256": hash_key("sk"), "tpm": 1000}],
        }
    )
)
KEY = next(iter(COMPILED.keys.values()))
BACKEND = COMPILED.backends["a"]


def setup() -> tuple[Accounting, Metrics, Call]:
    metrics = Metrics()
    accounting = Accounting(metrics, Admission(metrics, COMPILED.budgets))
    c = Call("chat.completions", time.monotonic(), COMPILED)
    c.key, c.route, c.budget = KEY, COMPILED.routes["chat"], COMPILED.budgets["t"]
    return accounting, metrics, c


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_an_answer_is_counted_priced_and_charged() -> None:
    accounting, metrics, c = setup()
    exporter = InMemorySpanExporter()
    c.body = {"model": "chat"}
    tracer = build_tracer(Tracing(), exporter)
    assert tracer is not None
    tracing.begin(c, tracer, "chat.completions", "chat", "t")
    await accounting.answered(c, BACKEND, {"prompt_tokens": 1000, "completion_tokens": 500})
    labels = {"team": "t", "use_case": "uc", "model": "chat", "model_version": ""}
    labels |= {"rollout": "stable", "pool": "", "prompt": "", "prompt_version": ""}
    assert (
        sample(
            metrics,
            "tandem_gateway_requests_total",
            **labels,
            endpoint="chat.completions",
            code="200",
        )
        == 1
    )
    assert sample(metrics, "tandem_gateway_tokens_total", **labels, direction="out") == 500
    assert sample(metrics, "tandem_gateway_cost_usd_total", **labels) == pytest.approx(0.002)
    assert sample(metrics, "tandem_gateway_budget_remaining_usd", team="t") == pytest.approx(9.998)
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat chat" and span.attributes["gen_ai.usage.input_tokens"] == 1000
    assert span.attributes["tandem.backend"] == "a"


async def test_refusals_count_by_reason_and_failures_by_backend() -> None:
    accounting, metrics, c = setup()
    accounting.rejected(c, GatewayError(429, "slow down", "rate_limit_exceeded"))
    assert sample(metrics, "tandem_gateway_rejected_total", team="t", reason="rate_limit_exceeded")
    accounting.rejected(c, GatewayError(502, "down", "upstream_error"))
    accounting.refused_upstream(c, BACKEND, 422)
    codes = {
        s.labels["code"]: s.value
        for s in metrics.requests.collect()[0].samples
        if s.name == "tandem_gateway_requests_total"
    }
    assert codes == {"502": 1.0, "422": 1.0}
    before_route = Call("completions", time.monotonic(), COMPILED)
    accounting.rejected(before_route, GatewayError(401, "who?", "missing_api_key"))
    assert sample(
        metrics, "tandem_gateway_rejected_total", team="unknown", reason="missing_api_key"
    )


def test_usage_tokens_reads_openai_usage() -> None:
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": None}) == (3, 0)
    assert usage_tokens(None) == (0, 0)
