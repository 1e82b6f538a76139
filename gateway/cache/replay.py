"""`tandem cache replay`: what a cache configuration would have done to a logged stream of requests.

Each log line is a request and the answer the backend gave it:
    {"tenant": "team-a", "model": "llama", "endpoint": "chat.completions",
     "body": {...request...}, "response": {...answer...}, "cost_usd": 0.0021}
(`endpoint` defaults to chat.completions, `tenant` to "default"; without `cost_usd` the cost is
the response's usage priced with --price-in / --price-out per million tokens.) For every variant
the log is replayed in order into an empty cache: a hit saves that request's cost; a miss stores
the logged answer. A semantic hit is counted as wrong when the cached answer disagrees with the
answer the backend actually gave (the same comparison as the online re-check), so the estimate
needs no labels: the log is the ground truth.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cache.api import CacheRequest
from gateway.cache.core import SemanticCache, Settings
from vocabulary.cache import CachePolicy, parse_cache_policy


@dataclass
class Outcome:
    variant: str
    requests: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    wrong_hits: int = 0
    dollars_total: float = 0.0
    dollars_saved: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        hits = self.exact_hits + self.semantic_hits
        return {
            "variant": self.variant,
            "requests": self.requests,
            "hit_rate": round(hits / self.requests, 4) if self.requests else 0.0,
            "exact_hits": self.exact_hits,
            "semantic_hits": self.semantic_hits,
            "estimated_wrong_hits": self.wrong_hits,
            "wrong_hit_rate": round(self.wrong_hits / hits, 4) if hits else 0.0,
            "dollars_total": round(self.dollars_total, 6),
            "dollars_saved": round(self.dollars_saved - self._wrong_cost, 6),
        }

    _wrong_cost: float = 0.0  # a wrong hit saved nothing: the caller has to ask again


def read_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("body"), dict) or not isinstance(row.get("response"), dict):
            raise ValueError(f"{path}:{n}: each line needs a `body` and a `response` object")
        rows.append(row)
    return rows


def cost(row: dict[str, Any], price_in: float, price_out: float) -> float:
    if isinstance(row.get("cost_usd"), int | float):
        return float(row["cost_usd"])
    usage = row["response"].get("usage") or {}
    return (
        usage.get("prompt_tokens", 0) * price_in + usage.get("completion_tokens", 0) * price_out
    ) / 1e6


def variants(base: dict[str, Any], thresholds: list[float]) -> dict[str, dict[str, Any]]:
    out = {
        "exact": {**base, "mode": "exact"},
        "verifier": {**base, "mode": "semantic", "decision": "verifier"},
        "neighbourhood": {**base, "mode": "semantic", "decision": "neighbourhood"},
    }
    for t in thresholds:
        out[f"threshold={t:g}"] = {
            **base,
            "mode": "semantic",
            "decision": "threshold",
            "threshold": t,
        }
    return out


async def replay(
    rows: list[dict[str, Any]],
    base: dict[str, Any],
    thresholds: list[float],
    price_in: float = 0.0,
    price_out: float = 0.0,
) -> list[dict[str, Any]]:
    base = {k: v for k, v in base.items() if k not in ("redis_url", "recheck")}
    results = []
    for name, config in variants(base, thresholds).items():
        cache = SemanticCache(Settings.from_config(config))
        out = Outcome(name)
        try:
            for row in rows:
                req = CacheRequest(
                    tenant=str(row.get("tenant", "default")),
                    model=str(row.get("model") or row["body"].get("model", "")),
                    endpoint=str(row.get("endpoint", "chat.completions")),
                    body=row["body"],
                    route_policy=_route_policy(row.get("route_policy")),
                )
                dollars = cost(row, price_in, price_out)
                out.requests += 1
                out.dollars_total += dollars
                hit = await cache.lookup(req)
                if hit is None:
                    await cache.store(req, row["response"])
                    continue
                out.dollars_saved += dollars
                if hit.layer == "exact":
                    out.exact_hits += 1
                    continue
                out.semantic_hits += 1
                if not await cache._answers_agree(hit.response, row["response"]):
                    out.wrong_hits += 1
                    out._wrong_cost += dollars
        finally:
            await cache.close()
        results.append(out.as_dict())
    return results


def run(
    log: Path, config: dict[str, Any], thresholds: list[float], price_in: float, price_out: float
) -> list[dict]:
    return asyncio.run(replay(read_log(log), config, thresholds, price_in, price_out))


def _route_policy(block: dict[str, Any] | None) -> CachePolicy | None:
    """A logged request's route `cache:` block, typed (ConfigError naming a bad key)."""
    return parse_cache_policy(block, "route_policy") if block else None
