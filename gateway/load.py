"""How online traffic is doing right now: each route's p95 over a short sliding window.

Background work (the batch workers of pipelines/) reads it to use only the capacity online
traffic leaves free. The sample is what a caller waits for: the time to the first byte of a
stream (TTFT), or to the whole answer otherwise. Only answered online calls are counted; the
pipelines' own calls are not (they are what yields). Recording is one deque append; the window is
trimmed when read.
"""

from __future__ import annotations

import time
from collections import deque


class OnlineLatency:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, route: str, seconds: float) -> None:
        q = self._samples.get(route)
        if q is None:
            q = self._samples[route] = deque(maxlen=100_000)
        q.append((time.monotonic(), seconds))

    def p95(self) -> dict[str, tuple[float, int]]:
        """route -> (p95 seconds, samples) over the window, for routes with samples in it."""
        cutoff = time.monotonic() - self.window_s
        out: dict[str, tuple[float, int]] = {}
        for route, q in self._samples.items():
            while q and q[0][0] < cutoff:
                q.popleft()
            if q:
                values = sorted(s for _, s in q)
                out[route] = (values[min(len(values) - 1, int(0.95 * len(values)))], len(values))
        return out
