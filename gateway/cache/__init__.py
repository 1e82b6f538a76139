"""The gateway's response cache: exact and semantic layers, shared across replicas through Redis.

`build_cache(config)` takes the routes file's top-level `cache:` section (docs/semantic-cache.md
lists every key) and returns an object implementing `gateway.cache.api.ResponseCache`.
"""

from __future__ import annotations

from typing import Any

from gateway.cache.api import CacheHit, CacheRequest, ResponseCache


def build_cache(config: dict[str, Any] | None) -> ResponseCache:
    """Validate the section (ValueError naming the key on a bad one) and build the cache.

    Loads the embedding model and verifier weights now (about a second) when semantic caching or
    re-checks are configured, so a broken install fails at start-up, not on the first request.
    """
    from gateway.cache.core import SemanticCache, Settings

    return SemanticCache(Settings.from_config(config))


__all__ = ["CacheHit", "CacheRequest", "ResponseCache", "build_cache"]
