"""API keys, rate limits and budgets.

Keys are stored as SHA-256 digests; the presented key is hashed and compared in constant time.
Counters (requests and tokens per minute per key, dollars per budget period per team) live in
Redis when configured, so they survive restarts and are shared by every replica; in process memory
otherwise. Token and dollar counters are charged after the answer (usage is only known then), so a
burst can overshoot a limit by the requests already in flight; the next request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Protocol

from gateway.config import ANONYMOUS, Compiled, CompiledKey
from gateway.errors import GatewayError
from vocabulary.gateway import PERIOD_SECONDS, Budget

log = logging.getLogger("tandem.gateway")


def authenticate(compiled: Compiled, authorization: str | None) -> CompiledKey:
    if not compiled.auth_required:
        return ANONYMOUS
    if not authorization:
        raise GatewayError(
            401, "Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise GatewayError(401, "Authorization header must be 'Bearer <key>'.", "invalid_api_key")
    digest = hashlib.sha256(token.strip().encode()).digest()
    key = compiled.keys.get(digest)
    if key is None or not hmac.compare_digest(key.digest, digest):
        raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")
    return key


def period_id(budget: Budget, now: float) -> int:
    return int(now // PERIOD_SECONDS[budget.period])


class UsageStore(Protocol):
    async def admit(self, key: CompiledKey, team_budget: Budget | None) -> tuple[int, int, float]:
        """Count one request; return (requests this minute, tokens this minute, team spend)."""
        ...

    async def charge(
        self, key: CompiledKey, team_budget: Budget | None, tokens: int, usd: float
    ) -> None: ...

    async def spend(self, team: str, team_budget: Budget) -> float: ...

    async def close(self) -> None: ...


class MemoryUsage:
    """Per-process counters: correct for one replica, lost on restart."""

    def __init__(self) -> None:
        self._minute: dict[str, tuple[int, int, int]] = {}  # key id -> (minute, requests, tokens)
        self._spend: dict[tuple[str, int], float] = {}

    async def admit(self, key: CompiledKey, team_budget: Budget | None) -> tuple[int, int, float]:
        now = time.time()
        minute = int(now // 60)
        m, req, tok = self._minute.get(key.id, (minute, 0, 0))
        if m != minute:
            req, tok = 0, 0
        req += 1
        self._minute[key.id] = (minute, req, tok)
        spent = (
            self._spend.get((key.team, period_id(team_budget, now)), 0.0) if team_budget else 0.0
        )
        return req, tok, spent

    async def charge(
        self, key: CompiledKey, team_budget: Budget | None, tokens: int, usd: float
    ) -> None:
        now = time.time()
        minute = int(now // 60)
        m, req, tok = self._minute.get(key.id, (minute, 0, 0))
        if m != minute:
            req, tok = 0, 0
        self._minute[key.id] = (minute, req, tok + tokens)
        if team_budget is not None and usd:
            slot = (key.team, period_id(team_budget, now))
            self._spend[slot] = self._spend.get(slot, 0.0) + usd

    async def spend(self, team: str, team_budget: Budget) -> float:
        return self._spend.get((team, period_id(team_budget, time.time())), 0.0)

    async def close(self) -> None:
        return None


class RedisUsage:
    """Shared counters: one pipelined round trip to admit, one to charge.

    Redis being down must not take the API down with it: limits fail open (logged, at most once
    every 10 s) and the request is served; the spend it misses is the price of availability.
    """

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._r = aioredis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._p = prefix
        self._errors = (RedisError, OSError)
        self._last_warning = 0.0

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("usage counters unavailable (limits fail open): %s", exc)

    def _keys(
        self, key: CompiledKey, team_budget: Budget | None, now: float
    ) -> tuple[str, str, str | None]:
        minute = int(now // 60)
        rk = f"{self._p}:rpm:{key.id}:{minute}"
        tk = f"{self._p}:tpm:{key.id}:{minute}"
        sk = f"{self._p}:spend:{key.team}:{period_id(team_budget, now)}" if team_budget else None
        return rk, tk, sk

    async def admit(self, key: CompiledKey, team_budget: Budget | None) -> tuple[int, int, float]:
        rk, tk, sk = self._keys(key, team_budget, time.time())
        pipe = self._r.pipeline(transaction=False)
        pipe.incr(rk)
        pipe.expire(rk, 120)
        pipe.get(tk)
        if sk:
            pipe.get(sk)
        try:
            res = await pipe.execute()
        except self._errors as exc:
            self._failed(exc)
            return 0, 0, 0.0
        spent = float(res[3] or 0.0) if sk else 0.0
        return int(res[0]), int(res[2] or 0), spent

    async def charge(
        self, key: CompiledKey, team_budget: Budget | None, tokens: int, usd: float
    ) -> None:
        _, tk, sk = self._keys(key, team_budget, time.time())
        pipe = self._r.pipeline(transaction=False)
        pipe.incrby(tk, tokens)
        pipe.expire(tk, 120)
        if sk and usd:
            # no TTL on purpose: Redis under memory pressure evicts only keys that expire
            # (components/redis.py), and a forgotten spend key is a budget reset. One key per
            # team per period (~100 bytes) is what that costs.
            pipe.incrbyfloat(sk, usd)
        try:
            await pipe.execute()
        except self._errors as exc:
            self._failed(exc)

    async def spend(self, team: str, team_budget: Budget) -> float:
        try:
            val = await self._r.get(f"{self._p}:spend:{team}:{period_id(team_budget, time.time())}")
        except self._errors as exc:
            self._failed(exc)
            return 0.0
        return float(val or 0.0)

    async def close(self) -> None:
        await self._r.aclose()
