"""The gateway's response cache: exact and semantic layers, shared across replicas through Redis.

`build_cache(section)` takes the top-level `cache:` section (typed in vocabulary/cache.py;
docs/semantic-cache.md lists every key) and returns an object implementing
`gateway.cache.api.ResponseCache`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.cache.api import CacheHit, CacheRequest, ResponseCache
from vocabulary.cache import CacheSection, parse_cache_section


def build_cache(section: CacheSection | Mapping[str, Any] | None) -> ResponseCache:
    """Build the cache a section asks for (a raw mapping is validated first: ConfigError naming
    the key on a bad one).

    Loads the embedding model and verifier weights now (about a second) when semantic caching or
    re-checks are configured, so a broken install fails at start-up, not on the first request.
    """
    from gateway.cache.core import SemanticCache, Settings

    if not isinstance(section, CacheSection):
        section = parse_cache_section(section or {})
    return SemanticCache(Settings.from_section(section))


__all__ = ["CacheHit", "CacheRequest", "ResponseCache", "build_cache"]
