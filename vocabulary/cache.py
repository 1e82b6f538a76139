"""The response cache's `cache:` section: every key, its type and the values it allows.

One schema, read in one place by everyone who accepts the section: the stack config
(`gateway.cache`, vocabulary/config.py), a use case's route override (`gateway.cache` in a use-case
file, vocabulary/gateway.py) and the gateway's routes file (top-level `cache:` and each route's
`cache:`, gateway/config.py). The cache builds its `Settings` and `Policy` from these models
(gateway/cache/core.py, policy.py). Pure pydantic on floor 1: a config file is checked without
loading the cache (numpy, the embedding model).

Every key defaults to None, meaning "not set here": a route's block then overrides only the keys
it names, and an unset key takes the cache's own default (the `Policy` and `Settings` dataclasses
say what it is; docs/semantic-cache.md lists them). Writing `null` asks for that default too.
Values are strict (a number is not a string), as the routes file has always been.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vocabulary.errors import ConfigError, format_validation_error

CacheMode = Literal["off", "exact", "semantic"]
CacheDecision = Literal["evidence", "verifier", "neighbourhood", "threshold"]


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_M = TypeVar("_M", bound=_Keys)


class CachePolicy(_Keys):
    """The per-request policy: the top-level section's keys that a route may override too."""

    enabled: bool | None = Field(None, description="false is the same as mode: off")
    mode: CacheMode | None = None
    ttl_s: float | None = Field(None, gt=0)
    max_temperature: float | None = Field(None, description="above this a request is not cached")
    allow_sampled: bool | None = Field(None, description="cache sampled requests anyway")
    decision: CacheDecision | None = None
    threshold: float | None = Field(None, gt=0, le=1, description="cosine cut-off (threshold)")
    min_probability: float | None = Field(None, ge=0, le=1, description="verifier operating point")
    candidates: int | None = Field(None, ge=1, description="neighbours the verifier re-ranks")
    min_similarity: float | None = Field(None, description="never verify below this cosine")
    ambiguity_ratio: float | None = Field(None, gt=0, le=1, description="neighbourhood decision")


class CacheRecheck(_Keys):
    """`cache.recheck`: a sampled share of semantic hits is also asked upstream and compared."""

    fraction: float | None = Field(None, ge=0, le=1)
    answer_similarity: float | None = None
    window: int | None = Field(None, ge=1)
    min_samples: int | None = Field(None, ge=0)
    alert_wrong_rate: float | None = Field(None, ge=0, le=1)
    pairs_log: str | None = Field(None, min_length=1, description="JSONL file of labelled pairs")
    pairs_log_max_mb: float | None = Field(None, gt=0)


class CacheSection(CachePolicy):
    """The top-level `cache:` section: the policy, the replica's own settings and the re-check."""

    redis_url: str | None = Field(None, description="share entries between replicas")
    namespace: str | None = None
    max_entries: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1)
    exact_search_max: int | None = Field(None, ge=0)
    model_path: str | None = None
    verifier_path: str | None = None
    embed_batch: int | None = Field(None, ge=1)
    recheck: CacheRecheck | None = None


def parse_cache_section(data: Any, where: str = "cache") -> CacheSection:
    """A `cache:` mapping as the typed section; ConfigError naming each bad key's path."""
    return _parse(CacheSection, data, where)


def parse_cache_policy(data: Any, where: str) -> CachePolicy:
    """A route's `cache:` mapping as its typed policy; ConfigError naming each bad key's path."""
    return _parse(CachePolicy, data, where)


def _parse(model: type[_M], data: Any, where: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, model, prefix=where), f"{where} section"
        ) from None
