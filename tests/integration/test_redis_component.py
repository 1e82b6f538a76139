"""The in-cluster Redis the gateway (and Ray's GCS) share: under memory pressure it evicts what
expires anyway (cache entries, minute counters) and keeps the rest (budget spend, Ray state),
checked on a real redis-server with the component's policy."""

from __future__ import annotations

import asyncio
import time

import pulumi
import pytest
import redis

from components.redis import REDIS_LIMIT_MIB, REDIS_MAXMEMORY_MIB, in_cluster_redis
from gateway.config import ApiKey, Budget, CompiledKey
from gateway.stages.admit import RedisUsage
from tandem.engine import run_under_mocks
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.integration


def rendered_args() -> list[str]:
    def program() -> None:
        in_cluster_redis(
            "redis",
            namespace="ns",
            component="gateway",
            object_labels={},
            clients=[],
            opts=pulumi.ResourceOptions(),
        )

    deployment = run_under_mocks(program).one("kubernetes:apps/v1:Deployment", "redis")
    (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == f"{REDIS_LIMIT_MIB}Mi"
    return container["args"]


def test_redis_stays_under_its_limit_and_evicts_only_expiring_keys() -> None:
    args = rendered_args()
    assert args[args.index("--maxmemory") + 1] == f"{REDIS_MAXMEMORY_MIB}mb"
    assert REDIS_MAXMEMORY_MIB < REDIS_LIMIT_MIB  # room for Redis' own overhead
    policy = args[args.index("--maxmemory-policy") + 1]
    # the component's policy on a 4 MB budget (its real one would need 400 MB of writes)
    with redis_server(
        "the eviction test", ["--maxmemory", "4mb", "--maxmemory-policy", policy]
    ) as url:
        r = redis.Redis.from_url(url)
        quiet = CompiledKey(ApiKey(id="k", team="quiet", sha256="0" * 64))
        budget = Budget(usd=100, period="month")

        async def spend(charge: float) -> float:
            usage = RedisUsage(url, "gw")
            try:
                await usage.charge(quiet, budget, 10, charge)
                return await usage.spend("quiet", budget)
            finally:
                await usage.close()

        assert asyncio.run(spend(42.0)) == 42.0  # a team that then goes quiet for hours
        for i in range(50):  # no TTL: Ray GCS state, the cache's capped stream
            r.set(f"state:{i}", b"s" * 1000)
        pipe = r.pipeline(transaction=False)
        for i in range(12_000):  # ~12 MB of cache entries (TTL'd) into a 4 MB Redis
            pipe.set(f"cache:{i}", b"c" * 1000, ex=3600)
            if i % 200 == 0:
                pipe.execute()
        pipe.execute()
        # Redis' LRU clock ticks once a second: keys touched within one second tie, and eviction
        # among them is arbitrary. After a tick, a counter in use and the newest entries are
        # more recent than the flood, and the evictions the next writes force must take the flood.
        time.sleep(1.2)
        r.incr("limit:team-a")  # a rate-limit counter in use
        r.expire("limit:team-a", 60)
        for i in range(200):
            r.set(f"late:{i}", b"c" * 1000, ex=3600)
        info = r.info()
        assert info["evicted_keys"] > 0 and info["used_memory"] <= 5 * 2**20
        assert all(r.exists(f"state:{i}") for i in range(50)), "a key without a TTL was evicted"
        assert r.exists("limit:team-a") and r.exists("late:199")  # hot and newest kept
        assert asyncio.run(spend(0.0)) == 42.0, "eviction forgot a team's spend (a budget reset)"
