"""Per-backend circuit breaker: closed -> open -> half-open -> closed (or back to open).

Closed: every request passes; outcomes land in a sliding window of one-second buckets. The breaker
opens when, over at least `min_requests`, the failure share reaches `error_rate`, or after
`consecutive_failures` failures in a row. A first token slower than `slow_first_token_s` counts as
a failure for this purpose although the caller still gets its answer.
Open: nothing passes until `open_s` has elapsed (or the upstream's `Retry-After` for a 429).
Half-open: at most `half_open_probes` requests are in flight at once; `half_open_probes`
successes close the breaker, any failure opens it again.
Only the caller can make a client error (400, 401, 404, context length): those are never recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import BreakerPolicy

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}


class CircuitBreaker:
    __slots__ = (
        "policy",
        "state",
        "clock",
        "on_change",
        "_buckets",
        "_nbuckets",
        "_bucket_s",
        "_consecutive",
        "_open_until",
        "_probes_in_flight",
        "_probe_successes",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self._nbuckets = max(1, min(60, int(policy.window_s)))
        self._bucket_s = policy.window_s / self._nbuckets
        # [bucket index, requests, failures] per slot
        self._buckets = [[-1, 0, 0] for _ in range(self._nbuckets)]
        self._consecutive = 0
        self._open_until = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    # -- admission ------------------------------------------------------------------------
    def allow(self) -> bool:
        """Whether a request may go to this backend now; a True in half-open takes a probe slot."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if self.clock() < self._open_until:
                return False
            self._set(HALF_OPEN)
            self._probes_in_flight = 0
            self._probe_successes = 0
        if self._probes_in_flight >= self.policy.half_open_probes:
            return False
        self._probes_in_flight += 1
        return True

    def available(self) -> bool:
        """Like `allow` but without taking a probe slot (used to pick among backends)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self.clock() >= self._open_until
        return self._probes_in_flight < self.policy.half_open_probes

    def retry_after(self) -> float:
        return max(0.0, self._open_until - self.clock())

    # -- outcomes -------------------------------------------------------------------------
    def record_success(self, ttft_s: float | None = None) -> None:
        slow = self.policy.slow_first_token_s
        if slow is not None and ttft_s is not None and ttft_s > slow:
            self.record_failure()
            return
        if self.state == HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._reset_window()
                self._set(CLOSED)
            return
        self._consecutive = 0
        self._count(failed=False)

    def record_failure(self) -> None:
        if self.state == HALF_OPEN:
            self._trip(self.policy.open_s)
            return
        if self.state == OPEN:
            return
        self._consecutive += 1
        requests, failures = self._count(failed=True)
        p = self.policy
        if self._consecutive >= p.consecutive_failures or (
            requests >= p.min_requests and failures >= p.error_rate * requests
        ):
            self._trip(p.open_s)

    def release(self) -> None:
        """A request that ended without a verdict on the backend (client error, cancelled)."""
        if self.state == HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def cool(self, seconds: float) -> None:
        """The upstream said 429: keep traffic away for its Retry-After."""
        until = self.clock() + seconds
        if self.state != OPEN or until > self._open_until:
            self._open_until = until
            self._probes_in_flight = 0
            self._set(OPEN)

    # -- internals ------------------------------------------------------------------------
    def _trip(self, seconds: float) -> None:
        self._open_until = self.clock() + seconds
        self._probes_in_flight = 0
        self._consecutive = 0
        self._reset_window()
        self._set(OPEN)

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def _reset_window(self) -> None:
        for b in self._buckets:
            b[0] = -1
            b[1] = b[2] = 0

    def _count(self, failed: bool) -> tuple[int, int]:
        idx = int(self.clock() / self._bucket_s)
        slot = self._buckets[idx % self._nbuckets]
        if slot[0] != idx:
            slot[0], slot[1], slot[2] = idx, 0, 0
        slot[1] += 1
        if failed:
            slot[2] += 1
        oldest = idx - self._nbuckets
        requests = failures = 0
        for b in self._buckets:
            if b[0] > oldest:
                requests += b[1]
                failures += b[2]
        return requests, failures
