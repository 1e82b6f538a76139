"""Embedding off the event loop, batched across concurrent requests.

Requests that arrive while a batch is being encoded wait for the next batch, so under load one
forward pass serves many lookups (the model's cost per text drops with batch size up to ~8) and
at low load a lone request is encoded at once, adding no queueing delay. The model runs in a
worker thread: numpy releases the GIL in its matrix products, so the event loop stays responsive.
The hit decision (pair features, tree walks) runs on a second worker thread, so that under load
the next batch is encoded while the last one's candidates are verified: on two cores a cold
lookup's embedding and decision overlap instead of queueing behind each other.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from embedding.minilm import Embedder, TokenEmbeddings

T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def shared_embedder(model_path: str | None) -> Embedder:
    """One model per process and path: two caches (or two gateways in one test) share its 90 MB."""
    return Embedder(model_path)


class BatchingEmbedder:
    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with each batch's size (the cache's histogram)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-embed")
        self._decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-decide")
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._draining = False
        self._drain_task: asyncio.Task | None = None
        self.batches = 0  # encoded batches, for tests and the benchmark

    async def embed(self, text: str) -> tuple[np.ndarray, TokenEmbeddings]:
        """The text's unit vector and its token vectors (one forward pass, shared with a batch)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((text, fut))
        if not self._draining:
            self._draining = True
            # keep a reference: the loop holds tasks weakly, a collected drain would strand its waiters
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def embed_many(self, texts: list[str]) -> list[tuple[np.ndarray, TokenEmbeddings]]:
        return list(await asyncio.gather(*(self.embed(t) for t in texts)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the hit decision on its own worker thread (beside the encoding one)."""
        return await asyncio.get_running_loop().run_in_executor(self._decider, fn, *args)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                texts = [t for t, _ in batch]
                try:
                    vecs, toks = await loop.run_in_executor(
                        self._executor, self.embedder.encode_full, texts
                    )
                except Exception as exc:  # hand the failure to every waiter, keep draining
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                if self.on_batch is not None:
                    self.on_batch(len(batch))
                for i, (_, fut) in enumerate(batch):
                    if not fut.done():
                        fut.set_result((vecs[i], toks[i]))
        finally:
            self._draining = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._decider.shutdown(wait=False, cancel_futures=True)
