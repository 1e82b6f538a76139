"""The response cache the gateway calls: exact layer, then semantic layer, then (sampled) re-check.

`lookup` order: exclusions (policy off, sampled request) -> exact key (this replica, then Redis)
-> semantic: embed the last user turn (batched, off the loop), take the top-k neighbours in the
request's scope, let the verifier pick one or none (or, if the route asks, the neighbourhood
ratio test of gateway/cache/decision.py, or a static threshold).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from embedding.minilm import DIMENSION, TokenEmbeddings
from gateway.cache.api import CacheHit, CacheRequest, Upstream
from gateway.cache.decision import neighbourhood_pick
from gateway.cache.embedder import BatchingEmbedder, shared_embedder
from gateway.cache.metrics import CacheMetrics
from gateway.cache.pairs_log import PairsLog
from gateway.cache.policy import (
    Keys,
    Policy,
    derive_keys,
    request_exclusion,
    response_exclusion,
)
from gateway.cache.sizing import DEFAULT_MAX_BYTES, PAIRS_LOG_MAX_MB
from gateway.cache.store import STORED, Entry, LocalStore, RedisShare
from gateway.cache.verifier import Candidate, Probe, Verifier
from vocabulary.cache import CachePolicy, CacheSection, parse_cache_section

log = logging.getLogger("tandem.gateway.cache")

# embeddings of missed requests kept for their store(): at most this many, and this many bytes
RECENT_MAX = 1024
RECENT_MAX_BYTES = 64 * 2**20


def _embedding_bytes(vector: np.ndarray, tokens: TokenEmbeddings) -> int:
    return vector.nbytes + tokens.vectors.nbytes


@dataclass(frozen=True, slots=True)
class RecheckSettings:
    fraction: float = 0.0  # share of semantic hits also asked upstream in the background
    answer_similarity: float = 0.85  # fresh and cached answers closer than this cosine agree
    window: int = 500  # the wrong-hit rate is over the last `window` re-checks
    min_samples: int = 20  # the alert needs at least this many re-checks in the window
    alert_wrong_rate: float = 0.05
    # Append each re-checked hit to this JSONL file as a labelled pair (the QQP pairs' format):
    # training data from the deployment's own traffic. It holds user prompts: opt in knowingly.
    pairs_log: str | None = None
    # at this size the file becomes `<pairs_log>.1`: at most twice this on disk
    pairs_log_max_mb: float = PAIRS_LOG_MAX_MB


@dataclass(frozen=True, slots=True)
class Settings:
    """Replica-level settings: the top-level `cache:` keys that are not per-route policy."""

    policy: Policy = field(default_factory=Policy)
    redis_url: str | None = None
    namespace: str = "tandem:cache"
    max_entries: int = 100_000
    max_bytes: int = DEFAULT_MAX_BYTES
    exact_search_max: int = 20_000
    model_path: str | None = None
    verifier_path: str | None = None
    embed_batch: int = 32
    recheck: RecheckSettings = field(default_factory=RecheckSettings)

    @classmethod
    def from_section(cls, section: CacheSection | None) -> Settings:
        """The settings a validated `cache:` section asks for; unset keys keep these defaults."""
        if section is None:
            return cls()
        replica = {k: v for k, v in _set_keys(section).items() if k in _REPLICA_KEYS}
        recheck = RecheckSettings(**_set_keys(section.recheck)) if section.recheck else None
        return cls(policy=Policy().merged(section), recheck=recheck or RecheckSettings(), **replica)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Settings:
        """`from_section` for a raw `cache:` mapping (ConfigError naming a bad key's path)."""
        return cls.from_section(parse_cache_section(config or {}))


_REPLICA_KEYS = frozenset(CacheSection.model_fields) - {*CachePolicy.model_fields, "recheck"}


def _set_keys(block: BaseModel) -> dict[str, Any]:
    """The keys a section block sets, without the nulls (which ask for the default)."""
    return {k: getattr(block, k) for k in block.model_fields_set if getattr(block, k) is not None}


class SemanticCache:
    """Implements `gateway.cache.api.ResponseCache`: `registry` (its Prometheus metrics),
    `attach_upstream` (how the sampled re-check asks the backends), `start()` (connect Redis and
    warm; otherwise done on first use), `lookup`, `store`, `close`."""

    def __init__(
        self, settings: Settings, *, embedder: Any = None, verifier: Verifier | None = None
    ) -> None:
        self.settings = settings
        self.metrics = CacheMetrics()
        self.registry = self.metrics.registry
        self.metrics.wrong_rate_threshold.set(settings.recheck.alert_wrong_rate)
        self.local = LocalStore(
            DIMENSION,
            self.metrics,
            settings.max_entries,
            settings.max_bytes,
            settings.exact_search_max,
        )
        self.replica = uuid.uuid4().hex[:12]
        self._upstream: Upstream | None = None
        self._embedder_model = embedder
        self._embedder: BatchingEmbedder | None = None
        self.verifier = verifier
        self._share: RedisShare | None = None
        self._started: asyncio.Future | None = None
        self._recent: OrderedDict[str, tuple[np.ndarray, TokenEmbeddings]] = OrderedDict()
        self._recent_bytes = 0
        # one sliding window per (team, model): a route's wrong answers are not diluted by others
        self._rechecks: dict[tuple[str, str], deque[bool]] = {}
        r = settings.recheck
        self._pairs_log = (
            PairsLog(r.pairs_log, int(r.pairs_log_max_mb * 2**20)) if r.pairs_log else None
        )
        self._tasks: set[asyncio.Task] = set()
        self._route_policies: dict[int, tuple[CachePolicy, Policy]] = {}
        # which model alias each scope's entries answer (drift evidence: nearest cached questions)
        self._scope_models: dict[str, str] = {}
        if settings.policy.mode == "semantic" or settings.recheck.fraction > 0:
            self._load_models()

    # -- lifecycle --------------------------------------------------------------------------------

    def attach_upstream(self, upstream: Upstream) -> None:
        """How a re-check gets a fresh answer: the gateway's backend chain, not billed to anyone."""
        self._upstream = upstream

    def _load_models(self) -> None:
        if self.verifier is None:
            self.verifier = Verifier.load(self.settings.verifier_path)
        if self._embedder is None:
            model = self._embedder_model or shared_embedder(self.settings.model_path)
            self._embedder = BatchingEmbedder(
                model, self.settings.embed_batch, self.metrics.embed_batch.observe
            )

    async def start(self) -> None:
        """Connect to Redis and load its live entries (idempotent; the first lookup calls it)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                if self.settings.redis_url:
                    self._share = RedisShare(
                        self.settings.redis_url,
                        self.settings.namespace,
                        self.replica,
                        self.settings.max_entries,
                    )
                    await self._share.start(self._receive)
                self._started.set_result(None)
            except Exception as exc:
                self._started.set_exception(exc)
                self._started = None
                raise
        await self._started

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._share is not None:
            await self._share.close()
        if self._embedder is not None:
            self._embedder.close()
        if self._pairs_log is not None:
            self._pairs_log.close()

    def _receive(self, entry: Entry, source: str) -> None:
        if entry.id not in self.local:
            self.local.add(entry)
            self.metrics.shared.labels(source).inc()

    # -- the protocol -----------------------------------------------------------------------------

    def policy_for(self, request: CacheRequest) -> Policy:
        route = request.route_policy
        if route is None:
            return self.settings.policy
        cached = self._route_policies.get(id(route))
        if cached is None or cached[0] is not route:
            cached = (route, self.settings.policy.merged(route))
            self._route_policies[id(route)] = cached
        return cached[1]

    def bypass_reason(self, request: CacheRequest) -> str | None:
        return request_exclusion(request, self.policy_for(request))

    async def lookup(self, request: CacheRequest) -> CacheHit | None:
        t0 = time.perf_counter()
        policy = self.policy_for(request)
        reason = request_exclusion(request, policy)
        if reason is not None:
            self.metrics.skipped.labels(reason).inc()
            return None
        await self.start()
        keys = derive_keys(request)
        now = time.time()
        entry = self.local.get_exact(keys.exact, now)
        if entry is None and self._share is not None:
            entry = await self._share.get_exact(keys.exact)
            if entry is not None:
                self._receive(entry, "exact")
        if entry is not None:
            self.metrics.lookups.labels("exact", "hit").inc()
            self.metrics.latency.labels("exact").observe(time.perf_counter() - t0)
            return CacheHit("exact", entry.response, 1.0)
        self.metrics.lookups.labels("exact", "miss").inc()
        if policy.mode != "semantic" or keys.text is None or request.endpoint == "embeddings":
            return None
        hit = await self._semantic(request, keys, policy, now)
        self.metrics.lookups.labels("semantic", "hit" if hit else "miss").inc()
        self.metrics.latency.labels("semantic").observe(time.perf_counter() - t0)
        if (
            hit is not None
            and self._upstream is not None
            and random.random() < self.settings.recheck.fraction
        ):
            self._spawn(self._recheck(request, keys, hit))
        return hit

    async def store(self, request: CacheRequest, response: dict[str, Any]) -> None:
        policy = self.policy_for(request)
        reason = request_exclusion(request, policy) or response_exclusion(
            request.endpoint, response
        )
        if reason is not None:
            self.metrics.stores.labels(reason).inc()
            return
        await self.start()
        keys = derive_keys(request)
        if len(self._scope_models) < 100_000:
            self._scope_models[keys.scope] = request.model
        await self._put(keys, policy, response)
        self.metrics.stores.labels("stored").inc()

    # -- internals --------------------------------------------------------------------------------

    async def _put(self, keys: Keys, policy: Policy, response: dict[str, Any]) -> Entry:
        vector = tokens = None
        if keys.text is not None and policy.mode == "semantic" and self._embedder is not None:
            recent = self._recall(keys.exact)
            vector, tokens = recent if recent is not None else await self._embedder.embed(keys.text)
            tokens = compact(tokens)
        now = time.time()
        entry = Entry(
            uuid.uuid4().hex,
            keys.scope,
            keys.exact,
            keys.text,
            vector,
            response,
            now,
            now + policy.ttl_s,
            tokens=tokens,
        )
        self.local.add(entry, now)
        if self._share is not None:
            await self._share.publish(entry)
        return entry

    async def _semantic(
        self, request: CacheRequest, keys: Keys, policy: Policy, now: float
    ) -> CacheHit | None:
        assert self._embedder is not None and self.verifier is not None and keys.text is not None
        vector, tokens = await self._embedder.embed(keys.text)
        request.embedding = vector  # the drift sample's prompt embedding: never computed twice
        self._remember(keys.exact, vector, tokens)  # store() after a miss reuses the embedding
        # the runner-up counts even below the floor: a far one is what makes the nearest unambiguous
        neighbours = self.local.nearest(keys.scope, vector, int(policy.candidates), now)
        found = [(e, s) for e, s in neighbours if s >= policy.min_similarity and e.text is not None]
        if not found:
            return None
        if policy.decision == "threshold":
            entry, sim = found[0]
            if sim < policy.threshold:
                return None
        elif policy.decision == "neighbourhood" and len(neighbours) >= 2:
            pick = neighbourhood_pick(
                [s for _, s in neighbours], policy.min_similarity, policy.ambiguity_ratio
            )
            if pick is None:
                return None
            entry, sim = neighbours[pick]
        else:  # evidence (default), verifier; also the neighbourhood's fallback in a lone scope
            pick = await self._embedder.run(
                self._decide, keys.text, vector, tokens, neighbours, policy
            )
            if pick is None:
                return None
            entry, sim = neighbours[pick]
        self.local.touch(entry)
        return CacheHit("semantic", entry.response, sim, entry.text)

    def nearest_questions(
        self, model: str, vector: np.ndarray, k: int = 3
    ) -> list[tuple[str, float]]:
        """The cached questions of `model`'s scopes nearest to `vector` (drift evidence: what
        the drifting prompts resemble), best first."""
        now = time.time()
        found: list[tuple[str, float]] = []
        for scope, m in list(self._scope_models.items()):
            if m != model:
                continue
            found += [(e.text, s) for e, s in self.local.nearest(scope, vector, k, now) if e.text]
        return sorted(found, key=lambda x: -x[1])[:k]

    def _remember(self, key: str, vector: np.ndarray, tokens: TokenEmbeddings) -> None:
        """Keep a missed request's embedding until its answer is stored (bounded: a long prompt's
        arrays are ~0.8 MB, so a count bound alone could hold most of the pod's memory)."""
        old = self._recent.pop(key, None)
        if old is not None:
            self._recent_bytes -= _embedding_bytes(*old)
        self._recent[key] = (vector, tokens)
        self._recent_bytes += _embedding_bytes(vector, tokens)
        while len(self._recent) > RECENT_MAX or self._recent_bytes > RECENT_MAX_BYTES:
            self._recent_bytes -= _embedding_bytes(*self._recent.popitem(last=False)[1])

    def _recall(self, key: str) -> tuple[np.ndarray, TokenEmbeddings] | None:
        found = self._recent.pop(key, None)
        if found is not None:
            self._recent_bytes -= _embedding_bytes(*found)
        return found

    def _decide(
        self,
        text: str,
        vector: np.ndarray,
        tokens: TokenEmbeddings,
        neighbours: list[tuple[Entry, float]],
        policy: Policy,
    ) -> int | None:
        """Which neighbour to serve, if any (runs on the embedding thread, off the loop)."""
        assert self._embedder is not None and self.verifier is not None
        floor = policy.min_similarity
        need = [e for e, s in neighbours if e.tokens is None and s >= floor]
        if need:  # entries from Redis carry no token vectors: encoded on first verification
            _, encoded = self._embedder.embedder.encode_full([e.text or "" for e in need])
            for e, toks in zip(need, encoded, strict=True):
                e.tokens = compact(toks)
        candidates = [Candidate(_probe(e), s, answer_text(e.response)) for e, s in neighbours]
        pick, _ = self.verifier.decide(
            Probe(text, vector, tokens),
            candidates,
            floor,
            policy.min_probability,
            evidence=policy.decision == "evidence",
        )
        return pick

    async def _recheck(self, request: CacheRequest, keys: Keys, hit: CacheHit) -> None:
        """Ask upstream too and compare answers; a disagreement counts as a wrong hit."""
        who = (request.tenant, request.model)
        try:
            fresh = await self._upstream(request) if self._upstream else None
            if fresh is None or response_exclusion(request.endpoint, fresh):
                self.metrics.rechecks.labels(*who, "error").inc()
                return
            agree = await self._answers_agree(hit.response, fresh)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("cache re-check failed", exc_info=True)
            self.metrics.rechecks.labels(*who, "error").inc()
            return
        self.metrics.rechecks.labels(*who, "agree" if agree else "disagree").inc()
        if self._pairs_log is not None:
            self._log_pair(self._pairs_log, request, keys, hit, agree)
        window = self._rechecks.get(who)
        if window is None:
            window = self._rechecks[who] = deque(maxlen=self.settings.recheck.window)
        window.append(not agree)
        rate = sum(window) / len(window)
        self.metrics.wrong_rate.labels(*who).set(rate)
        alert = (
            len(window) >= self.settings.recheck.min_samples
            and rate > self.settings.recheck.alert_wrong_rate
        )
        self.metrics.wrong_rate_alert.labels(*who).set(1.0 if alert else 0.0)
        if not agree:  # the question now has its own answer; later repeats hit it exactly
            await self._put(keys, self.policy_for(request), fresh)

    @staticmethod
    def _log_pair(
        pairs: PairsLog, request: CacheRequest, keys: Keys, hit: CacheHit, agree: bool
    ) -> None:
        """One labelled pair per re-check: would the cached question's answer have been right for
        this one? `train_cache_verifier.py --extra-pairs` trains on the file as it is."""
        pairs.write(
            {
                "text_a": keys.text,
                "text_b": hit.question,
                "label": int(agree),
                "team": request.tenant,
                "model": request.model,
                "similarity": hit.similarity,
                "time": round(time.time(), 3),
            }
        )

    async def _answers_agree(self, cached: dict[str, Any], fresh: dict[str, Any]) -> bool:
        a, b = answer_text(cached), answer_text(fresh)
        if a == b:
            return True
        if not a or not b or self._embedder is None:
            return False
        (va, _), (vb, _) = await self._embedder.embed_many([a, b])
        return float(np.dot(va, vb)) >= self.settings.recheck.answer_similarity

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background re-checks (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def compact(tokens: TokenEmbeddings) -> TokenEmbeddings:
    """A stored entry's token vectors in float16: they are most of its memory (see entry_bytes),
    and the verifier's probabilities move by under 1e-3 (tested)."""
    return TokenEmbeddings(tokens.tokens, tokens.vectors.astype(STORED))


_NO_TOKENS = TokenEmbeddings([], np.zeros((0, DIMENSION), np.float32))


def _probe(entry: Entry) -> Probe:
    """A neighbour as the verifier sees it, in float32 (indexed entries have a vector; _decide has
    just given every candidate it may verify its token vectors, the others count by vector)."""
    assert entry.vector is not None
    if entry.tokens is None:
        return Probe(entry.text or "", entry.vector, _NO_TOKENS)
    tokens = TokenEmbeddings(entry.tokens.tokens, entry.tokens.vectors.astype(np.float32))
    return Probe(entry.text or "", entry.vector, tokens)


def answer_text(response: dict[str, Any]) -> str:
    parts = []
    for choice in response.get("choices") or []:
        message = choice.get("message")
        parts.append(
            str((message or {}).get("content") or "")
            if message is not None
            else str(choice.get("text", ""))
        )
    return "\n".join(parts).strip()
