"""The gateway's shared types: a use case's `gateway:` section, and the money and time types the
routes file uses too.

One definition each (floor 1, pydantic only): the use-case file, the routes file the gateway loads
(`gateway/config.py`) and the Gateway component that turns one into the other read the same
`Budget`, `Price` and `Timeouts`, so a field added to one cannot be silently dropped by the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vocabulary.cache import CachePolicy
from vocabulary.prompts import ContextPolicy

# The APIs the gateway speaks: OpenAI's chat completions, completions, embeddings and Responses,
# and Anthropic's Messages (coding assistants: Claude Code speaks Messages, Codex Responses).
Endpoint = Literal["chat.completions", "completions", "embeddings", "messages", "responses"]
ENDPOINTS: tuple[Endpoint, ...] = (
    "chat.completions",
    "completions",
    "embeddings",
    "messages",
    "responses",
)
# What an upstream speaks: an OpenAI-compatible server (vLLM, Ray Serve LLM, OpenAI...) or an
# Anthropic-compatible Messages API (Anthropic, Bedrock's Anthropic endpoint, Vertex AI).
Protocol = Literal["openai", "anthropic"]
# The endpoints each kind of upstream can serve: an OpenAI-compatible one serves Messages and
# Responses through translation to chat completions; an Anthropic one serves Messages only.
PROTOCOL_ENDPOINTS: dict[str, tuple[Endpoint, ...]] = {
    "openai": ENDPOINTS,
    "anthropic": ("messages",),
}
Period = Literal["hour", "day", "month"]
PERIOD_SECONDS = {"hour": 3600, "day": 86400, "month": 30 * 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect_s: float = Field(2.0, gt=0)
    first_token_s: float = Field(30.0, gt=0)
    total_s: float = Field(120.0, gt=0)


class Budget(_Strict):
    usd: float = Field(gt=0, description="dollars per period for the team")
    period: Period = "month"
    soft_fraction: float = Field(0.8, gt=0, le=1)


class Price(_Strict):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    # input tokens the provider served from its prompt cache (Anthropic `cache_read_input_tokens`,
    # OpenAI `prompt_tokens_details.cached_tokens`); unset: charged as input, nothing saved
    cached_input_per_mtok: float | None = Field(None, ge=0)


class UseCaseGateway(_Strict):
    """How callers reach a use case through the gateway (a use-case file's `gateway:`)."""

    alias: str | None = Field(None, description="model name callers send (default: use case name)")
    fallbacks: list[str] = Field(default_factory=list, description="aliases tried in order")
    context_fallback: str | None = None
    degrade_to: str | None = Field(None, description="cheaper alias used past the soft budget")
    endpoints: list[Endpoint] = Field(default_factory=lambda: list(ENDPOINTS[:2]))
    deadline_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    hedge_after_s: float | None = Field(None, gt=0)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    budget: Budget | None = None
    price: Price | None = None
    cache: CachePolicy | None = Field(None, description="this route's cache policy keys")
    context_window: int | None = Field(None, ge=1)
    context: ContextPolicy | None = Field(
        None, description="overflow strategy and tokenizer of the context budget (docs/prompts.md)"
    )
    batch_discount: float = Field(
        0.0, ge=0, lt=1, description="share of the price batch lines are not charged (tandem:batch)"
    )
