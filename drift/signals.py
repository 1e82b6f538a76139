"""The gateway's side of drift: which answers to sample, what a sample holds, where it waits.

A sample is a small dict with no prompt or answer text: the use case, the model version and arm
that answered, lengths in tokens, the finish reason, whether the answer was empty or a refusal,
the latency, the prompt's embedding when the semantic cache computed one for this request (it is
never computed again for drift), and the route's monitored tabular features. Samples wait in a
bounded ring (`SignalLog`), each with a sequence number; the drift service reads them with
`GET /drift/signals?after=SEQ` and keeps its own cursor per gateway replica, so a reader that
falls more than `max_events` behind loses the oldest (counted), never blocks the gateway.

Per request the cost is one comparison for an unmonitored route and, for a monitored one, one
random draw; only a sampled answer builds its dict (see benchmarks/gateway_overhead.py).

Standard library only: imported on the gateway's request path.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# answers that open like this count as refusals (a quality proxy, not a classifier)
REFUSAL_PREFIXES = (
    "i'm sorry",
    "i am sorry",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "as an ai",
    "sorry, i",
)
DEFAULT_MAX_EVENTS = 20_000
EMBEDDING_DECIMALS = 4  # a unit vector's components, rounded: about 3 KB a sample in JSON


@dataclass(frozen=True, slots=True)
class RouteMonitor:
    """What the gateway samples on one route (the route's `monitoring:` block, compiled)."""

    use_case: str
    sample_rate: float = 0.1
    signals: frozenset[str] = frozenset()
    features: tuple[str, ...] = ()


@dataclass(slots=True)
class SignalLog:
    """A bounded ring of samples with sequence numbers; thread-safe (the service may read it
    from another thread in tests)."""

    max_events: int = DEFAULT_MAX_EVENTS
    _ring: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: int = 0  # overwritten before any reader asked past them

    def append(self, event: dict[str, Any]) -> int:
        with self._lock:
            self._seq += 1
            self._ring.append((self._seq, event))
            if len(self._ring) > self.max_events:
                self._ring.popleft()
                self.dropped += 1
            return self._seq

    def after(self, seq: int, limit: int = 5000) -> tuple[list[dict[str, Any]], int]:
        """Samples with a sequence number above `seq` (at most `limit`), and the last number."""
        with self._lock:
            out = [dict(e, seq=s) for s, e in self._ring if s > seq][:limit]
            last = out[-1]["seq"] if out else max(seq, self._ring[0][0] - 1 if self._ring else 0)
            return out, last

    @property
    def last_seq(self) -> int:
        return self._seq


class Sampler:
    """The sampling decision and the sample's content; `observe` is called once per answer."""

    def __init__(self, log: SignalLog, rng: random.Random | None = None) -> None:
        self.log = log
        self._random = (rng or random.Random()).random
        self.sampled = 0

    def wants(self, monitor: RouteMonitor) -> bool:
        return self._random() < monitor.sample_rate

    def observe(
        self,
        monitor: RouteMonitor,
        *,
        model_version: str,
        arm: str,
        endpoint: str,
        latency_s: float,
        tokens_in: int,
        tokens_out: int,
        answer: Mapping[str, Any] | None,
        embedding: Iterable[float] | None = None,
        body: Mapping[str, Any] | None = None,
        response_id: str | None = None,
    ) -> None:
        """Record one sampled answer (the caller has already drawn `wants`)."""
        s = monitor.signals
        event: dict[str, Any] = {
            "t": round(time.time(), 3),
            "kind": "answer",
            "use_case": monitor.use_case,
            "model_version": model_version or "unknown",
            "arm": arm or "stable",
            "endpoint": endpoint,
        }
        if "latency" in s:
            event["latency_s"] = round(latency_s, 4)
        if "prompt_length" in s:
            event["prompt_tokens"] = tokens_in
        if "response_length" in s:
            event["completion_tokens"] = tokens_out
        if answer is not None and ("finish_reason" in s or "refusal" in s):
            reason, text = _first_choice(answer)
            if "finish_reason" in s and reason is not None:
                event["finish_reason"] = reason
            if "refusal" in s and text is not None:
                event["outcome"] = outcome(text)
        if "embedding" in s and embedding is not None:
            event["embedding"] = [round(float(x), EMBEDDING_DECIMALS) for x in embedding]
        if monitor.features and body is not None:
            feats = body.get("features")
            if isinstance(feats, Mapping):
                event["features"] = {k: feats[k] for k in monitor.features if k in feats}
        if response_id:
            event["response_id"] = response_id
        self.sampled += 1
        self.log.append(event)


def outcome(text: str) -> str:
    """`empty`, `refusal` or `answer`: the categorical quality proxy of one answer's text."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    head = stripped[:40].lower().replace("\u2019", "'")
    return "refusal" if head.startswith(REFUSAL_PREFIXES) else "answer"


def _first_choice(answer: Mapping[str, Any]) -> tuple[str | None, str | None]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None, None
    c = choices[0]
    reason = c.get("finish_reason")
    message = c.get("message")
    text = message.get("content") if isinstance(message, Mapping) else c.get("text")
    return (
        str(reason) if reason is not None else None,
        text if isinstance(text, str) else ("" if text is None else None),
    )


class Feedback:
    """Which use case and version gave each recent answer (bounded), so `/v1/feedback` keyed by
    the answer's id is attributed without the caller knowing either."""

    def __init__(self, max_ids: int = 100_000) -> None:
        self.max_ids = max_ids
        self._ids: OrderedDict[str, tuple[str, str, str]] = OrderedDict()

    def remember(self, response_id: str, use_case: str, model_version: str, arm: str) -> None:
        ids = self._ids
        ids[response_id] = (use_case, model_version or "unknown", arm or "stable")
        if len(ids) > self.max_ids:
            ids.popitem(last=False)

    def lookup(self, response_id: str) -> tuple[str, str, str] | None:
        return self._ids.get(response_id)


RATINGS = ("up", "down")


def parse_feedback(body: Any) -> tuple[str, str]:
    """(response_id, rating) of a `/v1/feedback` body; ValueError naming the field. Free-text
    comments are not taken: the log carries no user text."""
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object: {response_id, rating: up|down}")
    rid = body.get("response_id")
    if not isinstance(rid, str) or not rid or len(rid) > 200:
        raise ValueError("response_id: the `id` of a gateway answer (a non-empty string)")
    rating = body.get("rating")
    if isinstance(rating, bool) or rating not in (*RATINGS, 1, -1):
        raise ValueError(f"rating: {rating!r} is not allowed; allowed: up, down (or 1, -1)")
    return rid, "up" if rating in ("up", 1) else "down"
