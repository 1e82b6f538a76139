"""What may be cached, under which scope, and how a request's cache keys are derived.

An entry is only ever served to a request with the same *scope*: tenant, model alias, endpoint,
system prompt, tools / tool choice / response format, every sampling parameter, and the whole
conversation before the last user turn. Only the last user turn is compared semantically; the rest
must match exactly. That is what makes "same question, different tenant / system prompt / model"
a miss by construction rather than by threshold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from typing import Any

import orjson

from gateway.cache.api import CacheRequest
from gateway.cache.sizing import DEFAULT_MODE
from vocabulary.cache import CachePolicy

# Fields that change how an answer is delivered, not what it says.
_DELIVERY_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier"}
)
# Fields that shape the answer besides the messages; all of them are part of the scope.
_SHAPING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "reasoning_effort",
    "suffix",
    "echo",
    "best_of",
    "encoding_format",
    "dimensions",
)
# OpenAI's default when a request does not say: an unset temperature samples.
_DEFAULT_TEMPERATURE = 1.0
_DEFAULT_MODE = DEFAULT_MODE  # one default, shared with the pod sizing (sizing.py)


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective cache policy of one request: these defaults, then the `cache:` section's
    policy keys, then the route's (the keys and their allowed values: vocabulary/cache.py)."""

    mode: str = _DEFAULT_MODE  # off | exact | semantic
    ttl_s: float = 3600.0
    max_temperature: float = 0.3  # above this a request is not cached ...
    allow_sampled: bool = False  # ... unless the route opts in
    decision: str = "evidence"  # evidence | verifier | neighbourhood | threshold
    threshold: float = 0.92  # the cosine cut-off when decision == "threshold"
    # the cut of the evidence model and the verifier (None: the shipped operating points)
    min_probability: float | None = None
    candidates: int = 4  # nearest neighbours re-ranked by the verifier
    min_similarity: float = 0.6  # candidates below this cosine are never verified
    # neighbourhood decision: serve the nearest entry only if its cosine distance is at most this
    # share of the runner-up's (gateway/cache/decision.py)
    ambiguity_ratio: float = 0.8

    def merged(self, overrides: CachePolicy | None) -> Policy:
        """This policy with the keys `overrides` sets applied (a route's block over the section's).

        The section was validated when its file loaded (vocabulary/cache.py); a key set to null
        takes this dataclass's default, and `enabled: false` turns the cache off.
        """
        if overrides is None or not overrides.model_fields_set:
            return self
        changes: dict[str, Any] = {}
        # a whole `CacheSection` may be given: its replica keys are not policy
        for key in overrides.model_fields_set & _POLICY_KEYS:
            value = getattr(overrides, key)
            changes[key] = _DEFAULTS[key] if value is None else value
        if overrides.enabled is False:
            changes["mode"] = "off"
        return replace(self, **changes)


_DEFAULTS = {f.name: f.default for f in fields(Policy)}
_POLICY_KEYS = frozenset(CachePolicy.model_fields) - {"enabled"}


def canonical(obj: Any) -> bytes:
    """Order-independent JSON bytes: two bodies that differ only in key order hash the same."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def digest(*parts: Any) -> str:
    return hashlib.blake2b(canonical(parts), digest_size=20).hexdigest()


@dataclass(frozen=True, slots=True)
class Keys:
    """What the cache derives from one request."""

    exact: str  # hash of everything that shapes the answer
    scope: str  # hash of everything except the last user turn
    text: str | None  # the last user turn, when it can be compared semantically


def message_text(content: Any) -> str | None:
    """Text of a message's content; None when it carries anything but text (images, audio)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    return None


def derive_keys(request: CacheRequest) -> Keys:
    body = request.body
    shaping = {k: body[k] for k in _SHAPING_FIELDS if k in body}
    answer_fields = {k: v for k, v in body.items() if k not in _DELIVERY_FIELDS and k != "model"}
    exact = digest(request.tenant, request.model, request.endpoint, answer_fields)
    text: str | None = None
    prefix: Any = None
    if request.endpoint == "chat.completions":
        messages = body.get("messages") or []
        last = len(messages) - 1
        if last >= 0 and messages[last].get("role") == "user":
            text = message_text(messages[last].get("content"))
            # Everything before the last user turn (system prompt included) must match exactly.
            prefix = messages[:last]
            extra = {k: v for k, v in messages[last].items() if k not in ("role", "content")}
            if extra:
                prefix = [prefix, extra]
    elif request.endpoint == "completions" and isinstance(body.get("prompt"), str):
        text = body["prompt"]
    if text is not None and not text.strip():
        text = None
    scope = digest(request.tenant, request.model, request.endpoint, shaping, prefix)
    return Keys(exact=exact, scope=scope, text=text)


def request_exclusion(request: CacheRequest, policy: Policy) -> str | None:
    """Why this request must not be answered from or stored in the cache (None: it may)."""
    if policy.mode == "off":
        return "disabled"
    body = request.body
    temperature = body.get("temperature", _DEFAULT_TEMPERATURE)
    if not isinstance(temperature, int | float):
        temperature = _DEFAULT_TEMPERATURE
    if temperature > policy.max_temperature and not policy.allow_sampled:
        return "sampled"
    if isinstance(body.get("n"), int) and body["n"] > 1 and not policy.allow_sampled:
        return "sampled"
    return None


def response_exclusion(endpoint: str, response: dict[str, Any]) -> str | None:
    """Why this upstream answer must not be stored (None: it may)."""
    if not isinstance(response, dict) or response.get("error"):
        return "error"
    if endpoint == "embeddings":
        return None if response.get("data") else "error"
    choices = response.get("choices")
    if not choices:
        return "error"
    for choice in choices:
        reason = choice.get("finish_reason")
        if reason == "length":
            return "truncated"
        if reason in ("content_filter", None):
            return "incomplete"
        message = choice.get("message") or {}
        if (
            reason in ("tool_calls", "function_call")
            or message.get("tool_calls")
            or message.get("function_call")
        ):
            return "tool_calls"
    return None
