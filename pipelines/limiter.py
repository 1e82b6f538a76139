"""The priority rule: batch lines use only the capacity online traffic leaves free.

Each worker caps the batch lines it has in flight. Every `interval_s` it reads each route's online
p95 (published by the gateway replicas over a `window_s` sliding window, gateway/load.py) and
compares it with the route's SLO:

- pressure = the highest p95 / SLO over the routes that have online traffic;
- pressure >= `at_fraction`: multiplicative decrease, the cap is halved (never below
  `min_concurrency`, so the batch still progresses);
- pressure < 0.9 x `at_fraction`: increase, doubling until the first sign of pressure (slow
  start), then one line at a time (additive increase), up to `concurrency`;
- in between: hold.

The p95 describes the last `window_s`, so a change of the cap shows in it only a window later:
after a decrease the cap is not cut again, and after the first pressure it is not raised again,
until a window has passed. Without that the rule reacts to its own past (cutting to the minimum
on samples from before the first cut, or stacking increases before the first shows).

AIMD is what TCP does for the same reason: several workers each run the rule on the same signal
and settle on a fair share of the spare capacity without talking to each other. A route without
an SLO never slows the batch; no online traffic at all lets it run at `concurrency`. The cap
starts at `min_concurrency`, so a batch that starts beside busy online traffic ramps up rather
than landing on it all at once.
"""

from __future__ import annotations

import time

from vocabulary.pipelines import Workers

DECREASE = 0.5
HOLD_BELOW = 0.9  # grow only while pressure is under this share of at_fraction


class YieldLimiter:
    def __init__(self, workers: Workers) -> None:
        self.max = workers.concurrency
        self.min = workers.min_concurrency
        rule = workers.yield_to_online
        self.slo_s = {route: ms / 1000 for route, ms in rule.slo_p95_ms.items()}
        self.at = rule.at_fraction
        self.window_s = rule.window_s
        self.cap = self.min if self.slo_s else self.max
        self.slow_start = True
        self.pressure = 0.0
        self._changed_at = float("-inf")  # when the cap last moved (after slow start)

    def update(self, online_p95_s: dict[str, float], now: float | None = None) -> int:
        """The new cap for these online p95s (route -> seconds) at `now` (monotonic s)."""
        if not self.slo_s:
            return self.cap
        now = time.monotonic() if now is None else now
        self.pressure = max(
            (p95 / self.slo_s[route] for route, p95 in online_p95_s.items() if route in self.slo_s),
            default=0.0,
        )
        settled = now - self._changed_at >= self.window_s  # the window shows the current cap
        if self.pressure >= self.at:
            if self.slow_start or settled:
                self.slow_start = False
                self.cap = max(self.min, int(self.cap * DECREASE))
                self._changed_at = now
        elif self.pressure < HOLD_BELOW * self.at:
            if self.slow_start:
                self.cap = min(self.max, self.cap * 2)
            elif settled and self.cap < self.max:
                self.cap += 1
                self._changed_at = now
        return self.cap
