"""Stage 3b, features: the request's entity's features from the feature store, into the request.

Runs after admit (a refused request costs no feature read) and before the cache (a cached
answer was produced with some customer's features; the cache must key on the enriched request,
so one customer's answer never serves another). A request that names a prompt gets the values
as the prompt's variables instead of a system message (gateway/stages/prompt.py). Only routes whose use case declares `features:`
pay for it: one HMGET on Feast's Redis online store (features/online.py), bounded by the routes
file's `feature_store.timeout_ms`.

What a route does when it cannot have the features is its use case's `on_missing`:

| outcome | `fail` | `skip` |
|---|---|---|
| the request carries no entity key (header or body field absent, or not a number for an INT64 key) | 400 `feature_entity_missing` | forwarded without features |
| the online store has no row for the entity | 404 `feature_entity_not_found` | forwarded without features |
| the online store cannot be read in time | 503 `feature_store_unavailable` | forwarded without features |

Every outcome is counted (`tandem_gateway_feature_lookups_total{use_case, service, outcome,
action}`); none is a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from features.context import enrich, render_value
from features.online import CompiledRead, OnlineReader
from gateway.config import FeatureStoreSection
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.call import Call

log = logging.getLogger("tandem.gateway")


class FeatureStage:
    def __init__(self, section: FeatureStoreSection, metrics: Metrics) -> None:
        self.reader = OnlineReader(section.redis_url)
        self.timeout_s = section.timeout_ms / 1000
        self.metrics = metrics

    async def close(self) -> None:
        await self.reader.close()

    async def enrich(self, request: web.Request, call: Call) -> None:
        """Put the features of the request's entity into `call.body` / `call.raw`, or decide
        what the route's `on_missing` says; GatewayError when it says fail."""
        # the route the caller named: a degraded route (admit) still serves this use case
        route = call.compiled.routes.get(call.body["model"])
        compiled = route.features if route is not None else None
        if compiled is None:
            return
        read = compiled.read
        src = read.entity
        value = (
            request.headers.get(src.field) if src.from_ == "header" else call.body.get(src.field)
        )
        if value is not None and not isinstance(value, str):
            value = str(value) if isinstance(value, int) and not isinstance(value, bool) else None
        key = None
        if value:
            try:
                key = compiled.key(value)
            except ValueError:
                key = None
        use_case = route.spec.use_case if route is not None else ""
        if key is None:
            where = (
                f"the {src.field!r} header"
                if src.from_ == "header"
                else f"body field {src.field!r}"
            )
            return self._missing(
                compiled,
                use_case,
                "missing_entity",
                GatewayError(
                    400,
                    f"This model reads features of the request's {src.name}: send it in {where}"
                    + (" (a whole number)" if read.key_type == "int64" else "")
                    + ".",
                    "feature_entity_missing",
                    param=src.field,
                ),
            )
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.reader.fetch(compiled, key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("feature store read failed for %s: %r", read.service, exc)
            return self._missing(
                compiled,
                use_case,
                "unavailable",
                GatewayError(
                    503,
                    "The feature store could not be read; retry shortly.",
                    "feature_store_unavailable",
                    retry_after=1.0,
                ),
            )
        m = self.metrics
        m.child(m.feature_latency, read.service).observe(time.perf_counter() - t0)
        row = compiled.row(raw)
        if row is None:
            return self._missing(
                compiled,
                use_case,
                "unknown_entity",
                GatewayError(
                    404,
                    f"The feature store has no features for {src.name} {value!r}.",
                    "feature_entity_not_found",
                    param=src.field,
                ),
            )
        m.child(m.feature_lookups, use_case, read.service, "found", "enriched").inc()
        if call.prompt is not None:  # the prompt's variables (gateway/stages/prompt.py)
            call.feature_values = {k: render_value(v) for k, v in row.values.items()}
        else:
            call.body = enrich(call.endpoint, call.body, read, row.values)
            call.raw = orjson.dumps(call.body)
        if call.span is not None:
            call.span.set_attribute("tandem.features", read.service)

    def _missing(
        self, compiled: CompiledRead, use_case: str, outcome: str, error: GatewayError
    ) -> None:
        """Count a lookup that found nothing to add; raise `error` when the route says fail."""
        m = self.metrics
        fail = compiled.read.on_missing == "fail"
        action = "refused" if fail else "skipped"
        m.child(m.feature_lookups, use_case, compiled.read.service, outcome, action).inc()
        if fail:
            raise error
