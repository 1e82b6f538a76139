"""Nearest-neighbour search over one scope's entries: exact below a size, HNSW (usearch) above.

Exact search is a single matrix-vector product: about 3 ms at 20,000 entries of 384 floats on one
core, and it has perfect recall. Past `exact_max` entries it switches to usearch's HNSW index (well
under a millisecond at 100,000 entries), so lookup cost stays flat as a scope grows.
Vectors are unit length, so inner product is cosine similarity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from usearch.index import Index


class ScopeIndex:
    """Vectors keyed by int ids; `search` returns (id, cosine) best first."""

    def __init__(self, dimension: int, exact_max: int = 20_000) -> None:
        self.dimension = dimension
        self.exact_max = exact_max
        self._ids: list[int] = []
        self._rows: dict[int, int] = {}
        self._matrix = np.zeros((16, dimension), dtype=np.float32)
        self._hnsw: Index | None = None  # once the scope outgrows exact search

    def __len__(self) -> int:
        return len(self._rows) if self._hnsw is None else len(self._hnsw)

    @property
    def approximate(self) -> bool:
        return self._hnsw is not None

    def add(self, key: int, vector: np.ndarray) -> None:
        if self._hnsw is not None:
            self._hnsw.add(key, vector)
            return
        if key in self._rows:
            self._matrix[self._rows[key]] = vector
            return
        n = len(self._ids)
        if n == len(self._matrix):
            grown = np.zeros((2 * n, self.dimension), dtype=np.float32)
            grown[:n] = self._matrix
            self._matrix = grown
        self._matrix[n] = vector
        self._rows[key] = n
        self._ids.append(key)
        if n + 1 > self.exact_max:
            self._switch_to_hnsw()

    def remove(self, key: int) -> None:
        if self._hnsw is not None:
            if key in self._hnsw:
                self._hnsw.remove(key)
            return
        row = self._rows.pop(key, None)
        if row is None:
            return
        last = len(self._ids) - 1
        if row != last:  # move the last vector into the hole: O(1), no tombstones
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._hnsw is not None:
            if len(self._hnsw) == 0:
                return []
            matches = self._hnsw.search(vector, k)
            return [
                (int(key), 1.0 - float(dist))
                for key, dist in zip(matches.keys, matches.distances, strict=True)
            ]
        n = len(self._ids)
        if n == 0:
            return []
        sims = self._matrix[:n] @ vector
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(self._ids[i], float(sims[i])) for i in top]

    def _switch_to_hnsw(self) -> None:
        from usearch.index import Index

        index = Index(
            ndim=self.dimension,
            metric="ip",
            dtype="f32",
            connectivity=16,
            expansion_add=128,
            expansion_search=64,
        )
        n = len(self._ids)
        index.add(np.asarray(self._ids, dtype=np.uint64), self._matrix[:n])
        self._hnsw = index
        self._ids, self._rows = [], {}
        self._matrix = np.zeros((0, self.dimension), dtype=np.float32)
