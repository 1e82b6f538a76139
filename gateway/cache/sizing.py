"""What a `cache:` section costs a gateway pod: memory for its entries and models, and the disk
volume its re-check's labelled pairs need.

Pure (no orjson, no numpy): the Gateway component sizes the pod from it at plan time, where the
gateway's runtime packages need not be installed. The cache reads the same defaults.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import TypeGuard

from vocabulary.cache import CacheSection

DEFAULT_MODE = "semantic"  # gateway.cache.policy.Policy.mode
DEFAULT_MAX_BYTES = 512 * 2**20  # one replica's entries (gateway.cache.store.entry_bytes)
# the embedder and verifier loaded in the gateway process: a `tandem gateway serve` with a cache
# measured 274 MiB RSS here before any entry, plus room for the clients, the index's graph and a
# batch of requests in flight
MODEL_RUNTIME_BYTES = 384 * 2**20
PAIRS_LOG_MAX_MB = 256.0  # `recheck.pairs_log` rotates to `<path>.1` at this size


def cache_enabled(section: CacheSection | None) -> TypeGuard[CacheSection]:
    return section is not None and section.enabled is not False and section.mode != "off"


def cache_embeds(section: CacheSection | None) -> bool:
    """Whether this `cache:` section loads the embedding model (semantic mode, or re-checks)."""
    if not cache_enabled(section):
        return False
    rechecks = section.recheck is not None and (section.recheck.fraction or 0.0) > 0
    return (section.mode or DEFAULT_MODE) == "semantic" or rechecks


def pairs_log_volume(section: CacheSection | None) -> tuple[str, int] | None:
    """(folder, MiB) of the writable volume `recheck.pairs_log` needs in the pod: room for the
    file and its one rotated copy, plus slack for the line being written when it rotates."""
    recheck = section.recheck if cache_enabled(section) else None
    if recheck is None or not recheck.pairs_log:
        return None
    max_mb = recheck.pairs_log_max_mb or PAIRS_LOG_MAX_MB
    return str(PurePosixPath(recheck.pairs_log).parent), math.ceil(2 * max_mb) + 16


def cache_memory_bytes(section: CacheSection | None) -> int:
    """Memory one gateway replica needs for this `cache:` section: its entries' bound, plus the
    models when it embeds. Deployments add it to their limit: a pod sized without it is
    OOM-killed hours after a clean deploy, as the cache fills."""
    if not cache_enabled(section):
        return 0
    models = MODEL_RUNTIME_BYTES if cache_embeds(section) else 0
    return (section.max_bytes or DEFAULT_MAX_BYTES) + models
