"""Stage 3, admit: rate limits and team budgets, enforced against their counters (and charged
after the answer, in the account stage).

Limits: requests and tokens per minute per API key (`rpm`, `tpm`), refused with 429 and a
`Retry-After` until the next minute. Budgets: dollars per period per team; a spent budget is
refused (429 `insufficient_quota`), and past its `soft_fraction` a route with `degrade_to` is
served by that cheaper route instead. A team's `developer_budget` holds each of its developers
(assistant traffic) to their own dollars per period, refused the same way
(`developer_budget_exceeded`).

Counters live in Redis when configured, so they survive restarts and are shared by every replica;
in process memory otherwise. Token and dollar counters are charged after the answer (usage is only
known then), so a burst can overshoot a limit by the requests already in flight; the next request
is refused.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from gateway.config import CompiledKey, CompiledRoute, Redis
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.call import Call
from vocabulary.gateway import PERIOD_SECONDS, Budget

log = logging.getLogger("tandem.gateway")


class Admission:
    """The limits and budgets, with the counters they are checked against."""

    def __init__(self, metrics: Metrics, budgets: dict[str, Budget]) -> None:
        self.metrics = metrics
        self.usage: UsageStore = MemoryUsage()
        for team, budget in budgets.items():
            metrics.budget_remaining.labels(team).set(budget.usd)

    def share(self, redis: Redis) -> None:
        """Keep the counters in Redis: shared by every replica, kept across restarts."""
        self.usage = RedisUsage(redis.url, redis.prefix)

    async def close(self) -> None:
        await self.usage.close()

    async def admit(self, call: Call) -> CompiledRoute:
        """The route to serve the call on (its degrade_to past the soft budget); GatewayError 429
        when a limit or the budget is reached."""
        key, route = call.key, call.route
        assert key is not None and route is not None
        budget = call.budget = call.compiled.budgets.get(key.team)
        dev = None
        if call.developer is not None:
            call.developer_budget = call.compiled.developer_budgets.get(key.team)
            if call.developer_budget is not None:
                dev = (call.developer, call.developer_budget)
        if not (key.rpm or key.tpm or budget or dev):
            return route
        requests, tokens, spent, dev_spent = await self.usage.admit(key, budget, dev)
        if key.rpm and requests > key.rpm:
            raise GatewayError(
                429,
                f"Rate limit reached: {key.rpm} requests per minute.",
                "rate_limit_exceeded",
                retry_after=60 - time.time() % 60,
            )
        if key.tpm and tokens >= key.tpm:
            raise GatewayError(
                429,
                f"Rate limit reached: {key.tpm} tokens per minute.",
                "tokens_per_minute_exceeded",
                retry_after=60 - time.time() % 60,
            )
        if budget is not None and spent >= budget.usd:
            raise GatewayError(
                429,
                f"Team '{key.team}' has spent its budget of ${budget.usd:g} for this {budget.period}.",
                "insufficient_quota",
                err_type="insufficient_quota",
            )
        if dev is not None and dev_spent >= dev[1].usd:
            raise GatewayError(
                429,
                f"Developer '{dev[0]}' has spent their budget of ${dev[1].usd:g} for this "
                f"{dev[1].period}.",
                "developer_budget_exceeded",
                err_type="insufficient_quota",
            )
        degrade = budget is not None and spent >= budget.soft_fraction * budget.usd
        return route.degrade_to if degrade and route.degrade_to is not None else route

    async def charge(self, call: Call, tokens: int, usd: float) -> None:
        """Count an answer's tokens against the key's minute and its cost against the team's
        and the developer's budgets (only where a limit or budget reads them), and publish what
        the team has left."""
        key, budget = call.key, call.budget
        assert key is not None
        dev = (
            (call.developer, call.developer_budget)
            if call.developer is not None and call.developer_budget is not None
            else None
        )
        if not key.tpm and budget is None and dev is None:
            return
        await self.usage.charge(key, budget, tokens, usd, dev)
        if budget is not None:
            spent = await self.usage.spend(key.team, budget)
            self.metrics.budget_remaining.labels(key.team).set(max(0.0, budget.usd - spent))


def period_id(budget: Budget, now: float) -> int:
    return int(now // PERIOD_SECONDS[budget.period])


def spend_key(prefix: str, team: str, budget: Budget, now: float) -> str:
    """The Redis key of a team's spend this period (the asynchronous pipelines charge it too)."""
    return f"{prefix}:spend:{team}:{period_id(budget, now)}"


DevBudget = tuple[str, Budget]  # (developer, the team's per-developer budget)


def dev_slot(team: str, dev: DevBudget, now: float) -> str:
    return f"{team}:{dev[0]}:{period_id(dev[1], now)}"


def dev_spend_key(prefix: str, team: str, dev: DevBudget, now: float) -> str:
    """The Redis key of a developer's spend this period (the asynchronous pipelines charge it
    too)."""
    return f"{prefix}:devspend:{dev_slot(team, dev, now)}"


class UsageStore(Protocol):
    async def admit(
        self, key: CompiledKey, team_budget: Budget | None, dev: DevBudget | None = None
    ) -> tuple[int, int, float, float]:
        """Count one request; return (requests this minute, tokens this minute, team spend,
        developer spend)."""
        ...

    async def charge(
        self,
        key: CompiledKey,
        team_budget: Budget | None,
        tokens: int,
        usd: float,
        dev: DevBudget | None = None,
    ) -> None: ...

    async def spend(self, team: str, team_budget: Budget) -> float: ...

    async def close(self) -> None: ...


class MemoryUsage:
    """Per-process counters: correct for one replica, lost on restart."""

    def __init__(self) -> None:
        self._minute: dict[str, tuple[int, int, int]] = {}  # key id -> (minute, requests, tokens)
        self._spend: dict[tuple[str, int], float] = {}
        self._dev_spend: dict[str, float] = {}

    def _this_minute(self, key_id: str, now: float) -> tuple[int, int, int]:
        """(minute, requests, tokens) of the key's current minute: last minute's counts lapse."""
        minute = int(now // 60)
        m, req, tok = self._minute.get(key_id, (minute, 0, 0))
        return (minute, req, tok) if m == minute else (minute, 0, 0)

    async def admit(
        self, key: CompiledKey, team_budget: Budget | None, dev: DevBudget | None = None
    ) -> tuple[int, int, float, float]:
        now = time.time()
        minute, req, tok = self._this_minute(key.id, now)
        req += 1
        self._minute[key.id] = (minute, req, tok)
        spent = (
            self._spend.get((key.team, period_id(team_budget, now)), 0.0) if team_budget else 0.0
        )
        dev_spent = self._dev_spend.get(dev_slot(key.team, dev, now), 0.0) if dev else 0.0
        return req, tok, spent, dev_spent

    async def charge(
        self,
        key: CompiledKey,
        team_budget: Budget | None,
        tokens: int,
        usd: float,
        dev: DevBudget | None = None,
    ) -> None:
        now = time.time()
        minute, req, tok = self._this_minute(key.id, now)
        self._minute[key.id] = (minute, req, tok + tokens)
        if team_budget is not None and usd:
            slot = (key.team, period_id(team_budget, now))
            self._spend[slot] = self._spend.get(slot, 0.0) + usd
        if dev is not None and usd:
            d = dev_slot(key.team, dev, now)
            self._dev_spend[d] = self._dev_spend.get(d, 0.0) + usd

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
        sk = spend_key(self._p, key.team, team_budget, now) if team_budget else None
        return rk, tk, sk

    async def admit(
        self, key: CompiledKey, team_budget: Budget | None, dev: DevBudget | None = None
    ) -> tuple[int, int, float, float]:
        now = time.time()
        rk, tk, sk = self._keys(key, team_budget, now)
        pipe = self._r.pipeline(transaction=False)
        pipe.incr(rk)
        pipe.expire(rk, 120)
        pipe.get(tk)
        if sk:
            pipe.get(sk)
        if dev:
            pipe.get(dev_spend_key(self._p, key.team, dev, now))
        try:
            res = await pipe.execute()
        except self._errors as exc:
            self._failed(exc)
            return 0, 0, 0.0, 0.0
        spent = float(res[3] or 0.0) if sk else 0.0
        dev_spent = float(res[-1] or 0.0) if dev else 0.0
        return int(res[0]), int(res[2] or 0), spent, dev_spent

    async def charge(
        self,
        key: CompiledKey,
        team_budget: Budget | None,
        tokens: int,
        usd: float,
        dev: DevBudget | None = None,
    ) -> None:
        now = time.time()
        _, tk, sk = self._keys(key, team_budget, now)
        pipe = self._r.pipeline(transaction=False)
        pipe.incrby(tk, tokens)
        pipe.expire(tk, 120)
        if sk and usd:
            # no TTL on purpose: Redis under memory pressure evicts only keys that expire
            # (components/redis.py), and a forgotten spend key is a budget reset. One key per
            # team per period (~100 bytes) is what that costs.
            pipe.incrbyfloat(sk, usd)
        if dev and usd:  # no TTL either: the developer's spend for one period
            pipe.incrbyfloat(dev_spend_key(self._p, key.team, dev, now), usd)
        try:
            await pipe.execute()
        except self._errors as exc:
            self._failed(exc)

    async def spend(self, team: str, team_budget: Budget) -> float:
        try:
            val = await self._r.get(spend_key(self._p, team, team_budget, time.time()))
        except self._errors as exc:
            self._failed(exc)
            return 0.0
        return float(val or 0.0)

    async def close(self) -> None:
        await self._r.aclose()
