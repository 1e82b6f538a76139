"""Live traffic splits of routes under a rollout: read from Redis, applied without a restart.

The rollout controller (lifecycle/) moves a route's traffic between its stable and canary
backends by writing a `vocabulary.rollout.TrafficSplit` to `<redis.prefix>:split:<alias>`. Every
gateway replica reads those keys every `server.split_poll_s` (one MGET for all routes) and, when
one changed, compiles the routes file with the splits laid over it and swaps the compiled config
in: requests already running keep the config they started with, the next ones see the new
weights. Nothing restarts and no connection is dropped (the backends' sessions and breakers are
kept: gateway/proxy.py `Upstreams.update`).

Why Redis and not the routes file: in a cluster the file is a ConfigMap, and the kubelet takes up
to a minute or more to refresh a mounted ConfigMap, so a rollback through it would take longer
than the analysis interval that detected the problem. The gateway already shares a Redis across
replicas; one key read a second is nothing next to its request traffic. When Redis is
unreachable the last applied split stays; when the key is absent the route serves as the file
says (the stable backend only), which is also the safe state.

An experiment's split (`sticky_by`) keeps each caller on one arm: the arm is drawn from a hash of the
caller's attribute (OpenAI's `user`, or `metadata.<key>`) and the split's salt, so the same
caller lands on the same arm for the whole experiment and a new experiment reshuffles callers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.config import Backend, MetricLabels, RoutesConfig, WeightedBackend
from prompts.registry import SPLIT_PREFIX
from vocabulary.rollout import CANARY, STABLE, TrafficSplit, split_key, sticky_point

log = logging.getLogger("tandem.gateway")


def split_keys(cfg: RoutesConfig) -> dict[str, str]:
    """alias -> the Redis key of its live split, for every route that has a `split:`, and
    `prompt:<name>` -> its key for every prompt (a prompt version's canary: prompts/registry.py)."""
    if cfg.redis is None:
        return {}
    keys = {
        alias: split_key(cfg.redis.prefix, alias)
        for alias, r in cfg.routes.items()
        if r.split is not None
    }
    for name in cfg.prompts:
        keys[SPLIT_PREFIX + name] = split_key(cfg.redis.prefix, SPLIT_PREFIX + name)
    return keys


def parse_split(raw: bytes | str | None) -> TrafficSplit | None:
    if raw is None:
        return None
    try:
        return TrafficSplit.model_validate(orjson.loads(raw))
    except ValueError as exc:  # a bad record must not take the route down: keep the file's
        log.error("ignoring an unreadable traffic split %r: %s", raw[:200], exc)
        return None


def overlay(cfg: RoutesConfig, splits: dict[str, TrafficSplit]) -> RoutesConfig:
    """The routes file with each route's live split applied: its stable backend (the route's
    first) at 100 - w, its canary at w (a backend at 0 % is left out), both labelled with the
    arm and the version they serve."""
    if not splits:
        return cfg
    routes = dict(cfg.routes)
    backends = dict(cfg.backends)
    for alias, split in splits.items():
        route = cfg.routes.get(alias)
        if route is None or route.split is None:
            continue
        stable = route.backends[0].backend
        canary = route.split.canary
        weights = [(stable, 100.0 - split.canary_weight), (canary, split.canary_weight)]
        chosen = [WeightedBackend(backend=b, weight=w) for b, w in weights if w > 0]
        routes[alias] = route.model_copy(update={"backends": chosen + list(route.backends[1:])})
        backends[stable] = _labelled(backends[stable], STABLE, split.stable_version)
        backends[canary] = _labelled(backends[canary], CANARY, split.canary_version)
    return cfg.model_copy(update={"routes": routes, "backends": backends})


def _labelled(backend: Backend, arm: str, version: str) -> Backend:
    update: dict[str, Any] = {"rollout": arm}
    if version:
        update["model_version"] = version
    labels: MetricLabels = backend.labels.model_copy(update=update)
    return backend.model_copy(update={"labels": labels})


def sticky_bucket(route: Any, body: dict[str, Any]) -> float | None:
    """A point in [0, 1) fixed for this caller and this split (a CompiledRoute's `sticky`), or
    None (no experiment, or the request does not carry the attribute: routed by weight)."""
    return None if route.sticky is None else sticky_point(route.sticky, body)


def compile_splits(compiled: Any, splits: dict[str, TrafficSplit]) -> Any:
    """Mark the compiled routes of live experiments sticky (attribute and salt), and lay the
    prompts' splits over their compiled prompts."""
    compiled.prompts.apply_splits(splits)
    for alias, split in splits.items():
        route = compiled.routes.get(alias)
        if route is not None and route.split is not None and split.sticky_by:
            route.sticky = (split.sticky_by, split.salt)
    return compiled


class SplitWatcher:
    """Polls the split keys and calls `apply(splits)` when they change (an asyncio task)."""

    def __init__(
        self,
        redis_url: str,
        keys: dict[str, str],
        interval_s: float,
        apply: Callable[[dict[str, TrafficSplit]], None],
    ) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.keys = keys
        self.interval_s = interval_s
        self.apply = apply
        self.current: dict[str, bytes | str] = {}
        self._failing = False

    def watch(self, keys: dict[str, str]) -> None:
        """A reloaded routes file may add or drop routes under a split."""
        self.keys = keys

    async def poll_once(self) -> bool:
        """Read every key; apply when anything changed. True if it applied."""
        if not self.keys:
            return False
        aliases = list(self.keys)
        try:
            raw = await self.client.mget([self.keys[a] for a in aliases])
        except Exception as exc:  # Redis down: keep serving the last applied split
            if not self._failing:
                log.warning("traffic splits unreadable, keeping the last ones: %s", exc)
            self._failing = True
            return False
        self._failing = False
        seen = {a: r for a, r in zip(aliases, raw, strict=True) if r is not None}
        if seen == self.current:
            return False
        self.current = seen
        splits = {a: s for a, r in seen.items() if (s := parse_split(r)) is not None}
        self.apply(splits)
        return True

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        await self.client.aclose()
