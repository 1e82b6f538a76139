"""What may be cached, under which scope, and how a request's cache keys are derived.

An entry is only ever served to a request with the same *scope*: tenant, model alias, endpoint,
system prompt, tools / tool choice / response format, every sampling parameter, and the whole
conversation before the last user turn. Only the last user turn is compared semantically; the rest
must match exactly. That is what makes "same question, different tenant / system prompt / model"
a miss by construction rather than by threshold.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath
from typing import Any, TypeGuard

import orjson

from gateway.cache.api import CacheRequest

MODES = ("off", "exact", "semantic")
DECISIONS = ("evidence", "verifier", "neighbourhood", "threshold")
DEFAULT_MAX_BYTES = 512 * 2**20  # one replica's entries (gateway.cache.store.entry_bytes)
# the embedder and verifier loaded in the gateway process: a `tandem gateway serve` with a cache
# measured 274 MiB RSS here before any entry, plus room for the clients, the index's graph and a
# batch of requests in flight
MODEL_RUNTIME_BYTES = 384 * 2**20
PAIRS_LOG_MAX_MB = 256.0  # `recheck.pairs_log` rotates to `<path>.1` at this size

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
_DEFAULT_MODE = "semantic"


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective cache policy of one request: the `cache:` section, then the route's overrides."""

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

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "cache") -> Policy:
        return cls().merged(data, where)

    def merged(self, data: dict[str, Any] | None, where: str = "cache") -> Policy:
        """This policy with the keys of `data` applied; unknown keys and bad values raise ValueError."""
        if not data:
            return self
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "enabled":
                if not value:
                    changes["mode"] = "off"
                continue
            if key not in known:
                continue  # replica-level keys (redis_url, max_entries, ...) live beside the policy
            changes[key] = value
        policy = replace(self, **changes)
        policy.validate(where)
        return policy

    def validate(self, where: str) -> None:
        if self.mode not in MODES:
            raise ValueError(f"{where}.mode: must be one of {list(MODES)} (got {self.mode!r})")
        if self.decision not in DECISIONS:
            raise ValueError(
                f"{where}.decision: must be one of {list(DECISIONS)} (got {self.decision!r})"
            )
        if not self.ttl_s > 0:
            raise ValueError(f"{where}.ttl_s: must be > 0 (got {self.ttl_s!r})")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"{where}.threshold: must be in (0, 1] (got {self.threshold!r})")
        if self.min_probability is not None and not 0 <= self.min_probability <= 1:
            raise ValueError(
                f"{where}.min_probability: must be in [0, 1] (got {self.min_probability!r})"
            )
        if not 0 < self.ambiguity_ratio <= 1:
            raise ValueError(
                f"{where}.ambiguity_ratio: must be in (0, 1] (got {self.ambiguity_ratio!r})"
            )
        if int(self.candidates) < 1:
            raise ValueError(f"{where}.candidates: must be >= 1 (got {self.candidates!r})")


# The keys a `cache:` block may hold, by level: listed here so that config files can be checked
# without loading the cache (numpy, the model). REPLICA_KEYS and RECHECK_KEYS mirror
# gateway.cache.core.Settings / RecheckSettings (a unit test keeps them equal).
POLICY_KEYS = frozenset({f.name for f in fields(Policy)} | {"enabled"})
REPLICA_KEYS = frozenset(
    {
        "redis_url",
        "namespace",
        "max_entries",
        "max_bytes",
        "exact_search_max",
        "model_path",
        "verifier_path",
        "embed_batch",
    }
)
RECHECK_KEYS = frozenset(
    {
        "fraction",
        "answer_similarity",
        "window",
        "min_samples",
        "alert_wrong_rate",
        "pairs_log",
        "pairs_log_max_mb",
    }
)


def _unknown_keys(data: Any, allowed: frozenset[str], where: str) -> str | None:
    if not isinstance(data, dict):
        return f"{where}: must be a mapping (got {type(data).__name__})"
    unknown = sorted(set(data) - allowed)
    return f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}" if unknown else None


def cache_section_error(data: Any, where: str = "cache") -> str | None:
    """Why a top-level `cache:` section is invalid (None: it is valid): unknown keys anywhere,
    bad policy values. The replica-level values are checked when the cache is built."""
    problem = _unknown_keys(data, POLICY_KEYS | REPLICA_KEYS | {"recheck"}, where)
    if problem is None:
        problem = _unknown_keys(data.get("recheck") or {}, RECHECK_KEYS, f"{where}.recheck")
    if problem is None:
        problem = route_policy_error({k: v for k, v in data.items() if k in POLICY_KEYS}, where)
    if problem is None:
        size = (data.get("recheck") or {}).get("pairs_log_max_mb", 1)
        if isinstance(size, bool) or not isinstance(size, int | float) or size <= 0:
            problem = f"{where}.recheck.pairs_log_max_mb: must be a number above 0 (got {size!r})"
    return problem


def cache_enabled(section: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    return (
        section is not None and section.get("enabled") is not False and section.get("mode") != "off"
    )


def cache_embeds(section: dict[str, Any] | None) -> bool:
    """Whether this `cache:` section loads the embedding model (semantic mode, or re-checks)."""
    if not cache_enabled(section):
        return False
    rechecks = float((section.get("recheck") or {}).get("fraction", 0.0)) > 0
    return section.get("mode", _DEFAULT_MODE) == "semantic" or rechecks


def pairs_log_volume(section: dict[str, Any] | None) -> tuple[str, int] | None:
    """(folder, MiB) of the writable volume `recheck.pairs_log` needs in the pod: room for the
    file and its one rotated copy, plus slack for the line being written when it rotates."""
    if not cache_enabled(section):
        return None
    recheck = section.get("recheck") or {}
    log = recheck.get("pairs_log")
    if not log:
        return None
    max_mb = recheck.get("pairs_log_max_mb", PAIRS_LOG_MAX_MB)
    return str(PurePosixPath(log).parent), math.ceil(2 * max_mb) + 16


def cache_memory_bytes(section: dict[str, Any] | None) -> int:
    """Memory one gateway replica needs for this `cache:` section: its entries' bound, plus the
    models when it embeds. Deployments add it to their limit: a pod sized without it is
    OOM-killed hours after a clean deploy, as the cache fills."""
    if not cache_enabled(section):
        return 0
    models = MODEL_RUNTIME_BYTES if cache_embeds(section) else 0
    return int(section.get("max_bytes", DEFAULT_MAX_BYTES)) + models


def route_policy_error(data: dict[str, Any], where: str) -> str | None:
    """Why a route's `cache:` block is invalid (None: it is valid). Checked when the routes file
    loads, so a typo fails at start-up with its path instead of on the route's first request; a
    route may set policy keys only (redis_url, max_entries, ... belong to the top-level block)."""
    problem = _unknown_keys(data, POLICY_KEYS, where)
    if problem is not None:
        return problem
    try:
        Policy().merged(data, where)
    except ValueError as exc:
        return str(exc)
    except TypeError as exc:  # e.g. a string where a number belongs
        return f"{where}: {exc}"
    return None


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
