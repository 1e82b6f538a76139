"""feature_store.yaml for one feature project, in one environment.

The definitions (stacks/features/<project>/) hold no addresses: where the registry, the online
store and the offline data are is the environment's business, so Tandem writes this file per
environment: in a cluster (components/feature_store.py) the registry is an object on the feature
store's S3 bucket and the online store its own Redis (TLS on ElastiCache); in tests and
benchmarks a local registry file, a local redis-server and parquet files.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

ENTITY_KEY_SERIALIZATION_VERSION = 3  # what features/redis_format.py reads


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (`host:port,db=N[,ssl=true]`) for a redis(s):// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a redis:// or rediss:// URL")
    out = f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.strip("/")
    if db:
        out += f",db={int(db)}"
    if parts.scheme == "rediss":
        out += ",ssl=true"
    return out


def feature_store_yaml(
    project: str,
    *,
    registry: str,
    redis_url: str,
    registry_cache_ttl_s: int = 60,
) -> str:
    """The file Feast reads (its CLI, SDK and feature server): registry path (s3:// or local),
    Redis online store, file offline store (FileSource paths: s3:// or local parquet)."""
    doc = {
        "project": project,
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": registry,
            "cache_ttl_seconds": registry_cache_ttl_s,
        },
        "online_store": {
            "type": "redis",
            "connection_string": redis_connection_string(redis_url),
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }
    return yaml.safe_dump(doc, sort_keys=False)
