"""`tracing.capture` in the gateway: what each key changes on a span (routes, redact, patterns,
max_chars), and the prompt's shape for each API the gateway serves."""

from __future__ import annotations

import json
import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.config import Tracing, compile_config, parse_config
from gateway.stages.call import Call
from gateway.tracing import build_tracer, input_texts, output_texts

COMPILED = compile_config(
    parse_config(
        {
            "backends": {"a": {"url": "http://127.0.0.1:1/v1"}},
            "routes": {"chat": {"backends": [{"backend": "a"}]}},
        }
    )
)
TEXT = "jane@example.com called 415-555-0132 about customer C-123456 " + "x" * 200


def traced(capture: dict, text: str = TEXT) -> dict:
    exporter = InMemorySpanExporter()
    tracer = build_tracer(Tracing(capture=capture), exporter)
    assert tracer is not None
    call = Call("chat.completions", time.monotonic(), COMPILED)
    call.body = {"model": "chat", "messages": [{"role": "user", "content": text}]}
    call.route = COMPILED.routes["chat"]
    tracing.begin(call, tracer, "chat.completions", "chat", "t")
    call.answer = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
    tracing.end_answered(call, COMPILED.backends["a"], 10, 2)
    (span,) = exporter.get_finished_spans()
    return dict(span.attributes)


def prompt(attrs: dict) -> str:
    return json.loads(attrs["gen_ai.input.messages"])[0]["parts"][0]["content"]


def test_routes_opt_in() -> None:
    assert "gen_ai.input.messages" not in traced({"routes": []})
    assert prompt(traced({"routes": ["chat"]})).startswith("[EMAIL] called [PHONE] about")


def test_redact_kinds_patterns_and_max_chars() -> None:
    only_email = prompt(traced({"routes": ["chat"], "redact": ["email"]}))
    assert only_email.startswith("[EMAIL] called 415-555-0132 about customer C-123456")
    custom = prompt(traced({"routes": ["chat"], "patterns": [r"C-\d{6}"]}))
    assert "customer [REDACTED]" in custom
    cut = prompt(traced({"routes": ["chat"], "max_chars": 64}))
    assert len(cut) <= 64 and cut.startswith("[EMAIL]")


def test_each_api_prompt_and_answer() -> None:
    anthropic = {
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert input_texts("messages", anthropic) == [("system", "be brief"), ("user", "hi")]
    responses = {"instructions": "be brief", "input": [{"role": "user", "content": "hi"}]}
    assert input_texts("responses", responses) == [("system", "be brief"), ("user", "hi")]
    assert input_texts("responses", {"input": "hi"}) == [("user", "hi")]
    assert input_texts("completions", {"prompt": ["a", "b"]}) == [("user", "a"), ("user", "b")]
    assert input_texts("embeddings", {"input": "vec"}) == [("user", "vec")]
    assert output_texts("completions", {"choices": [{"text": "t", "finish_reason": "length"}]}) == [
        ("t", "length")
    ]
    assert output_texts(
        "messages", {"content": [{"type": "text", "text": "m"}], "stop_reason": "end_turn"}
    ) == [("m", "end_turn")]
    answer = {
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "r"}]}],
    }
    assert output_texts("responses", answer) == [("r", "completed")]
    assert output_texts("embeddings", {"data": []}) == []


def test_the_stack_and_the_routes_file_share_one_capture_declaration() -> None:
    """`tandem:tracing.capture` and the routes file's `tracing.capture` are one model: the same
    defaults and bounds (an over-long cut is refused in both, naming the field)."""
    import pytest
    from pydantic import ValidationError

    from gateway.config import Capture
    from vocabulary.config import TracingCaptureConfig

    assert Capture().model_dump() == TracingCaptureConfig().model_dump()
    for model, key in ((Capture, "max_chars"), (TracingCaptureConfig, "maxChars")):
        with pytest.raises(ValidationError, match="max_chars|maxChars"):
            model.model_validate({key: 100_000})
    with pytest.raises(ValidationError, match="not a regular expression"):
        Capture(patterns=["("])
