"""OpenTelemetry GenAI spans for the request path (off unless the routes file's `tracing:` says).

One span per request, named like the GenAI conventions (`chat <alias>`), with the team, the
backend that answered and the token counts; never prompt or completion text.
"""

from __future__ import annotations

from typing import Any

from gateway.config import CompiledBackend, Tracing

# the GenAI operation name of each endpoint
_OPERATIONS = {
    "chat.completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "messages": "chat",
    "messages.count_tokens": "chat",
    "responses": "chat",
}


def build_tracer(cfg: Tracing, exporter: Any = None) -> Any:
    """A tracer for `cfg` (None when tracing is off); `exporter` replaces the configured one."""
    if exporter is None and cfg.exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif cfg.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.endpoint)))
    return provider.get_tracer("tandem.gateway")


def start_span(tracer: Any, endpoint: str, alias: str, team: str) -> Any:
    op = _OPERATIONS[endpoint]
    span = tracer.start_span(f"{op} {alias}")
    span.set_attribute("gen_ai.operation.name", op)
    span.set_attribute("gen_ai.system", "openai")
    span.set_attribute("gen_ai.request.model", alias)
    span.set_attribute("tandem.team", team)
    return span


def set_prompt(span: Any, name: str, version: str) -> None:
    """The prompt a request named (gateway/stages/prompt.py): its name and the version served."""
    span.set_attributes({"tandem.prompt.name": name, "tandem.prompt.version": version})


def end_answered(span: Any, backend: CompiledBackend, tokens_in: int, tokens_out: int) -> None:
    span.set_attribute("gen_ai.response.model", backend.model or backend.label_values[1])
    span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
    span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
    span.set_attribute("server.address", backend.spec.url)
    span.set_attribute("tandem.backend", backend.name)
    span.end()


def end_failed(span: Any, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.end()
