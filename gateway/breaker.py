"""Per-backend circuit breaker: closed -> open -> half-open -> closed (or back to open).

Closed: every request passes; outcomes land in a sliding window of one-second buckets. The breaker
opens when, over at least `min_requests`, the failure share reaches `error_rate`, or after
`consecutive_failures` failures in a row. A first token slower than `slow_first_token_s` counts as
a failure for this purpose although the caller still gets its answer.

Open: requests skip the backend, except probes. Recovery must not wait on the clock alone: at
100 requests/s, "one probe per `open_s`" keeps a recovered backend idle for up to `open_s` while
thousands of requests go to the fallback. So a probe goes through when `probe_share` of the
requests that skipped the backend have done so since the last probe (one in 50 by default: every
half second at 100 requests/s), or when `open_s` has passed (thin traffic). A cool-down (below)
is a hard wait: no probe before it ends.
Half-open: at most `half_open_probes` requests are in flight at once; `half_open_probes`
successes close the breaker, any failure opens it again.

Throttling is not failure. A 429 is recorded apart from failures (`record_throttle`) and cools
the whole backend (open, for the provider's reset time) only when it is provider-wide: the
answer's rate-limit headers say the key or account is exhausted, or at least `throttle_share` of
the last `throttle_window` answers (within `window_s`) were 429s. Any other 429 is one request
refused; the forward stage retries it after its Retry-After and the backend's adaptive
concurrency limit (gateway/concurrency.py) sends it less at once.
Only the caller can make a client error (400, 401, 404, context length): those are never recorded.
"""

from __future__ import annotations

import math
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
        "_hard_until",
        "_next_probe",
        "_skipped",
        "_probe_every",
        "_probes_in_flight",
        "_probe_successes",
        "_recent_t",
        "_recent_429",
        "_recent_i",
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
        self._hard_until = 0.0  # a cool-down: no probe before this
        self._next_probe = 0.0  # a probe goes through from this time on, whatever the traffic
        self._skipped = 0  # requests that skipped the open backend since the last probe
        # 0: probes by time only (probe_share 0)
        self._probe_every = math.ceil(1 / policy.probe_share) if policy.probe_share else 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        # the last `throttle_window` answers: when, and whether each was a 429
        self._recent_t = [-math.inf] * policy.throttle_window
        self._recent_429 = [False] * policy.throttle_window
        self._recent_i = 0

    # -- admission ------------------------------------------------------------------------
    def allow(self) -> bool:
        """Whether a request may go to this backend now; a True while not closed takes a probe
        slot."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if not self._probe_due():
                self._skipped += 1
                return False
            self._set(HALF_OPEN)
            self._probe_successes = 0
        elif self._probes_in_flight >= self.policy.half_open_probes:
            self._skipped += 1
            return False
        self._probes_in_flight += 1
        self._skipped = 0
        self._next_probe = self.clock() + self.policy.open_s
        return True

    def available(self) -> bool:
        """Like `allow` but without taking a probe slot (used to pick among backends)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._probe_due():
                return True
            self._skipped += 1
            return False
        return self._probes_in_flight < self.policy.half_open_probes

    def retry_after(self) -> float:
        """Seconds until a probe goes through whatever the traffic (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, max(self._hard_until, self._next_probe) - self.clock())

    def _probe_due(self) -> bool:
        now = self.clock()
        if now < self._hard_until:
            return False
        every = self._probe_every
        return now >= self._next_probe or (every > 0 and self._skipped + 1 >= every)

    # -- outcomes -------------------------------------------------------------------------
    def record_success(self, ttft_s: float | None = None) -> None:
        slow = self.policy.slow_first_token_s
        if slow is not None and ttft_s is not None and ttft_s > slow:
            self.record_failure()
            return
        self._note(False)
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
        self._note(False)
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

    def record_throttle(self, provider_wide: bool, cool_s: float) -> bool:
        """A 429. Cools the backend for `cool_s` (and returns True) when the limit is
        provider-wide or most recent answers were 429s; otherwise it is one request refused."""
        self._note(True)
        if provider_wide or self._storm():
            self.cool(cool_s)
            return True
        self.release()
        return False

    def release(self) -> None:
        """A request that ended without a verdict on the backend (client error, cancelled)."""
        if self.state == HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def cool(self, seconds: float) -> None:
        """The provider is out of capacity for `seconds`: no traffic, not even probes, until then."""
        until = self.clock() + seconds
        if self.state != OPEN or until > self._hard_until:
            self._hard_until = self._next_probe = max(self._hard_until, until)
            self._probes_in_flight = 0
            self._skipped = 0
            self._set(OPEN)

    # -- internals ------------------------------------------------------------------------
    def _trip(self, seconds: float) -> None:
        self._next_probe = self.clock() + seconds
        self._skipped = 0
        self._probes_in_flight = 0
        self._consecutive = 0
        self._reset_window()
        self._set(OPEN)

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def _note(self, throttled: bool) -> None:
        i = self._recent_i
        self._recent_t[i] = self.clock()
        self._recent_429[i] = throttled
        self._recent_i = (i + 1) % len(self._recent_t)

    def _storm(self) -> bool:
        """At least `throttle_share` of the last `throttle_window` answers, all within
        `window_s`, were 429s."""
        horizon = self.clock() - self.policy.window_s
        n = sum(
            1 for t, x in zip(self._recent_t, self._recent_429, strict=True) if x and t > horizon
        )
        return n >= self.policy.throttle_share * len(self._recent_t)

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
