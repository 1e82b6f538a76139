"""`tandem cache replay`: what a cache configuration would have done to a logged stream of requests.

Each log line is a request and the answer the backend gave it:
    {"tenant": "team-a", "model": "llama", "endpoint": "chat.completions",
     "body": {...request...}, "response": {...answer...}, "cost_usd": 0.0021}
(`endpoint` defaults to chat.completions, `tenant` to "default"; without `cost_usd` the cost is
the response's usage priced with --price-in / --price-out per million tokens.) For every variant
the log is replayed in order into an empty cache: a hit saves that request's cost; a miss stores
the logged answer. A semantic hit is counted as wrong when the cached answer disagrees with the
answer the backend actually gave (the same comparison as the online re-check, or, for logs whose
answers are fixed per question, exact text: benchmarks/cache_savings.py), so the estimate needs
no labels: the log is the ground truth.

Rows the cache would never look up (a sampled request: no `temperature`, whose API default 1.0
samples, or one above `max_temperature`) or never store (no `finish_reason`, truncated, tool
calls, errors) are counted by reason: a log of them replays as 0 % hits, and the report says why.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cache.api import CacheHit, CacheRequest
from gateway.cache.core import SemanticCache, Settings, answer_text
from gateway.cache.policy import Policy, request_exclusion, response_exclusion
from vocabulary.cache import CachePolicy, parse_cache_policy

COMPARISONS = ("answer_similarity", "exact")


@dataclass
class Outcome:
    variant: str
    requests: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    wrong_hits: int = 0
    dollars_total: float = 0.0
    dollars_saved: float = 0.0
    wrong_cost: float = 0.0  # a wrong hit saved nothing: the caller has to ask again
    not_looked_up: Counter[str] = field(default_factory=Counter)
    not_stored: Counter[str] = field(default_factory=Counter)

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits

    def as_dict(self) -> dict[str, Any]:
        hits = self.hits
        return {
            "variant": self.variant,
            "requests": self.requests,
            "hit_rate": round(hits / self.requests, 4) if self.requests else 0.0,
            "exact_hits": self.exact_hits,
            "semantic_hits": self.semantic_hits,
            "estimated_wrong_hits": self.wrong_hits,
            "wrong_hit_rate": round(self.wrong_hits / hits, 4) if hits else 0.0,
            "dollars_total": round(self.dollars_total, 6),
            "dollars_saved": round(self.dollars_saved - self.wrong_cost, 6),
            "not_looked_up": dict(sorted(self.not_looked_up.items())),
            "not_stored": dict(sorted(self.not_stored.items())),
        }


def read_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("body"), dict)
            or not isinstance(row.get("response"), dict)
        ):
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
        "evidence": {**base, "mode": "semantic", "decision": "evidence"},  # the default
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


def request_of(row: dict[str, Any]) -> CacheRequest:
    return CacheRequest(
        tenant=str(row.get("tenant", "default")),
        model=str(row.get("model") or row["body"].get("model", "")),
        endpoint=str(row.get("endpoint", "chat.completions")),
        body=row["body"],
        route_policy=_route_policy(row.get("route_policy")),
    )


def _route_policy(block: dict[str, Any] | None) -> CachePolicy | None:
    """A logged request's route `cache:` block, typed (ConfigError naming a bad key)."""
    return parse_cache_policy(block, "route_policy") if block else None


def why_not_looked_up(request: CacheRequest, policy: Policy) -> str | None:
    """The cache's reason to skip a request, spelled out for a person reading the report."""
    reason = request_exclusion(request, policy)
    if reason != "sampled":
        return None if reason is None else f"{reason}: the route's cache is off"
    body = request.body
    if isinstance(body.get("n"), int) and body["n"] > 1:
        return "sampled: n > 1"
    if not isinstance(body.get("temperature"), int | float):
        return "sampled: no temperature (the API default 1.0 samples)"
    return f"sampled: temperature above max_temperature {policy.max_temperature:g}"


def why_not_stored(endpoint: str, response: dict[str, Any]) -> str | None:
    reason = response_exclusion(endpoint, response)
    if reason == "incomplete":
        choices = response.get("choices") or []
        if any(c.get("finish_reason") is None for c in choices):
            return "incomplete: no finish_reason"
        return "incomplete: content_filter"
    return {
        None: None,
        "error": "error: an error or no choices",
        "truncated": "truncated: finish_reason length",
        "tool_calls": "tool_calls: tool or function calls",
    }.get(reason, reason)


async def exact_answer(_cache: SemanticCache, hit: CacheHit, logged: dict[str, Any]) -> bool:
    return answer_text(hit.response) == answer_text(logged)


async def similar_answer(cache: SemanticCache, hit: CacheHit, logged: dict[str, Any]) -> bool:
    return await cache._answers_agree(hit.response, logged)


async def replay_variant(
    rows: Iterable[dict[str, Any]],
    name: str,
    config: dict[str, Any],
    price_in: float = 0.0,
    price_out: float = 0.0,
    comparison: str = "answer_similarity",
    cache: SemanticCache | None = None,
) -> Outcome:
    """Replay the rows in order into an empty cache built from `config` (or the given one)."""
    agree = exact_answer if comparison == "exact" else similar_answer
    cache = cache or SemanticCache(Settings.from_config(config))
    out = Outcome(name)
    try:
        for row in rows:
            req = request_of(row)
            dollars = cost(row, price_in, price_out)
            out.requests += 1
            out.dollars_total += dollars
            skipped = why_not_looked_up(req, cache.policy_for(req))
            if skipped is not None:
                out.not_looked_up[skipped] += 1
                continue
            hit = await cache.lookup(req)
            if hit is None:
                unstored = why_not_stored(req.endpoint, row["response"])
                if unstored is not None:
                    out.not_stored[unstored] += 1
                await cache.store(req, row["response"])
                continue
            out.dollars_saved += dollars
            if hit.layer == "exact":
                out.exact_hits += 1
                continue
            out.semantic_hits += 1
            if not await agree(cache, hit, row["response"]):
                out.wrong_hits += 1
                out.wrong_cost += dollars
    finally:
        await cache.close()
    return out


async def replay(
    rows: list[dict[str, Any]],
    base: dict[str, Any],
    thresholds: list[float],
    price_in: float = 0.0,
    price_out: float = 0.0,
) -> list[dict[str, Any]]:
    base = {k: v for k, v in base.items() if k not in ("redis_url", "recheck")}
    return [
        (await replay_variant(rows, name, config, price_in, price_out)).as_dict()
        for name, config in variants(base, thresholds).items()
    ]


def run(
    log: Path, config: dict[str, Any], thresholds: list[float], price_in: float, price_out: float
) -> list[dict]:
    return asyncio.run(replay(read_log(log), config, thresholds, price_in, price_out))
