"""Per-backend adaptive concurrency limit: additive increase, multiplicative decrease (AIMD).

A 429 that is not a provider-wide limit (gateway/breaker.py decides that) means "this backend has
more in flight than it accepts right now", not "this backend is down": the answer is to send it
less at once, not to switch it off. So every backend has a concurrency limit that starts at its
`max_connections` and moves with what it accepts, as Netflix's concurrency-limits AIMD does:

- a success while the limit is in use (at least half of it in flight) raises it by one;
- a 429 multiplies it by `backoff` (at least `min_limit`), once per round trip: a 429 for a
  request sent before the last decrease says nothing new (TCP's rule for one window's losses);
- a request that finds the limit full waits up to `queue_s` for a slot (first come, first
  served); past that the forward stage gives it to another backend of the route, then the
  fallbacks, without counting it against the backend.

The limit is exported as `tandem_gateway_concurrency_limit{backend}`. Everything here runs on the
event loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from gateway.config import ConcurrencyPolicy


class AdaptiveLimit:
    __slots__ = ("policy", "max_limit", "limit", "inflight", "epoch", "on_change", "_waiters")

    def __init__(
        self,
        policy: ConcurrencyPolicy,
        max_limit: int,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.policy = policy
        self.max_limit = max_limit
        self.limit = float(max_limit)
        self.inflight = 0
        self.epoch = 0  # bumped by each decrease; a slot remembers the epoch it was taken in
        self.on_change = on_change
        self._waiters: deque[asyncio.Future[None]] = deque()
        if on_change is not None:
            on_change(max_limit)

    def try_acquire(self) -> int | None:
        """A slot now (its epoch), or None when the limit is full."""
        if self.inflight < int(self.limit) and not self._waiters:
            self.inflight += 1
            return self.epoch
        return None

    async def acquire(self, timeout: float) -> int | None:
        """A slot within `timeout` seconds (its epoch), or None."""
        token = self.try_acquire()
        if token is not None or timeout <= 0:
            return token
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            if not fut.done() or fut.cancelled():
                return None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot came with the cancellation: give it back
            raise
        finally:
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
        return self.epoch

    def release(self) -> None:
        self.inflight -= 1
        self._wake()

    def succeeded(self) -> None:
        """The backend accepted a request (call before `release`)."""
        if self.inflight * 2 >= self.limit and self.limit < self.max_limit:
            self._set(min(float(self.max_limit), self.limit + 1))
            self._wake()

    def throttled(self, epoch: int) -> None:
        """The backend refused a request taken in `epoch` with a 429."""
        if epoch == self.epoch:
            self.epoch += 1
            self._set(max(float(self.policy.min_limit), self.limit * self.policy.backoff))

    # -- internals --------------------------------------------------------------------------
    def _set(self, limit: float) -> None:
        before = int(self.limit)
        self.limit = limit
        if self.on_change is not None and int(limit) != before:
            self.on_change(int(limit))

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.inflight < int(self.limit):
            fut = waiters.popleft()
            if not fut.done():
                self.inflight += 1
                fut.set_result(None)
