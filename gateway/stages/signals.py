"""Stage 8, signals: drift samples and user feedback (drift/signals.py holds the format).

After an answer is accounted, a route with `monitoring:` draws one random number; a sampled
answer becomes one signal-log entry (lengths, finish reason, empty / refusal, latency, the
prompt's embedding when the semantic cache computed it, the monitored tabular features; never
text). Routes without `monitoring:` cost one attribute read. `POST /v1/feedback` rates an answer
by its `id` (the gateway remembers which use case and version gave each recent id of a route that
monitors `feedback`), counts it in `tandem_gateway_feedback_total` and logs it for the drift
service. `GET /drift/signals?after=SEQ` is what the drift service polls.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from drift.signals import Feedback, Sampler, SignalLog, parse_feedback
from gateway.config import CompiledBackend
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.call import Call


class Signals:
    def __init__(self, metrics: Metrics, max_events: int) -> None:
        self.metrics = metrics
        self.cache: Any = None  # the semantic cache, when the gateway has one (nearest questions)
        self.routes: Any = None  # () -> {alias: CompiledRoute}, the live config's routes
        self.log = SignalLog(max_events)
        self.sampler = Sampler(self.log)
        self.feedback = Feedback()
        self.replica = uuid.uuid4().hex[:12]

    def answered(self, call: Call, backend: CompiledBackend, obj: dict[str, Any] | None) -> None:
        """One answer from `backend` (obj: the JSON answer; None for a stream)."""
        route = call.route
        monitor = route.monitor if route is not None else None
        if monitor is None or call.deferred:
            return
        version, arm = backend.label_values[2], backend.label_values[3]
        rid = obj.get("id") if obj is not None else None
        if isinstance(rid, str) and "feedback" in monitor.signals:
            self.feedback.remember(rid, monitor.use_case, version, arm)
        if not self.sampler.wants(monitor):
            return
        creq = call.cache_request
        self.sampler.observe(
            monitor,
            model_version=version,
            arm=arm,
            endpoint=call.endpoint,
            latency_s=time.monotonic() - call.t0,
            tokens_in=call.usage[0],
            tokens_out=call.usage[1],
            answer=obj,
            embedding=creq.embedding if creq is not None else None,
            body=call.body,
            response_id=rid if isinstance(rid, str) else None,
        )
        self.metrics.child(self.metrics.drift_samples, monitor.use_case).inc()

    async def rate(self, request: web.Request) -> web.Response:
        """POST /v1/feedback {response_id, rating: up|down} (the caller is authenticated first)."""
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError:
            body = None
        try:
            rid, rating = parse_feedback(body)
        except ValueError as exc:
            raise GatewayError(400, str(exc), "invalid_request_error") from None
        found = self.feedback.lookup(rid)
        if found is None:
            raise GatewayError(
                404,
                f"No recent answer with id '{rid}' on a route that monitors feedback.",
                "not_found",
                param="response_id",
            )
        use_case, version, arm = found
        self.metrics.child(self.metrics.feedback, use_case, version, rating).inc()
        self.log.append(
            {
                "t": round(time.time(), 3),
                "kind": "feedback",
                "use_case": use_case,
                "model_version": version,
                "arm": arm,
                "rating": rating,
                "response_id": rid,
            }
        )
        return web.json_response({"response_id": rid, "rating": rating, "recorded": True})

    async def nearest(self, request: web.Request) -> web.Response:
        """POST /drift/nearest {use_case, vectors, k}: per vector, the nearest cached questions
        of the use case's routes (the drift alert's evidence; internal, like /drift/signals)."""
        try:
            body = orjson.loads(await request.read() or b"{}")
            use_case, vectors = str(body["use_case"]), body["vectors"]
            k = min(10, int(body.get("k", 3)))
            import numpy as np

            arr = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return GatewayError(
                400, "body: {use_case, vectors: [[float, ...]], k}", "invalid_request_error"
            ).response()
        out: list[list[dict[str, Any]]] = [[] for _ in range(len(arr))]
        cache = self.cache
        if cache is not None and hasattr(cache, "nearest_questions") and self.routes is not None:
            aliases = [a for a, r in self.routes().items() if r.spec.use_case == use_case]
            for i, v in enumerate(arr):
                found = [q for a in aliases for q in cache.nearest_questions(a, v, k)]
                found.sort(key=lambda x: -x[1])
                out[i] = [{"question": t, "similarity": round(s, 4)} for t, s in found[:k]]
        return web.Response(body=orjson.dumps({"nearest": out}), content_type="application/json")

    async def export(self, request: web.Request) -> web.Response:
        """GET /drift/signals?after=SEQ&limit=N: the samples after SEQ, for the drift service."""
        try:
            after = int(request.query.get("after", "0"))
            limit = min(20_000, max(1, int(request.query.get("limit", "5000"))))
        except ValueError:
            return GatewayError(
                400, "after and limit are integers", "invalid_request_error"
            ).response()
        events, last = self.log.after(after, limit)
        payload = {
            "replica": self.replica,
            "events": events,
            "last": last,
            "newest": self.log.last_seq,
            "dropped": self.log.dropped,
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")
