"""The adaptive concurrency limit (gateway/concurrency.py): AIMD on 429s, a bounded wait for a
slot, and no slot ever lost."""

from __future__ import annotations

import asyncio

from gateway.concurrency import AdaptiveLimit
from gateway.config import ConcurrencyPolicy


def test_429s_halve_it_towards_the_floor_once_per_round_trip() -> None:
    seen: list[int] = []
    lim = AdaptiveLimit(ConcurrencyPolicy(min_limit=4, backoff=0.5), 64, seen.append)
    assert lim.limit == 64 and seen == [64]
    tokens = [lim.try_acquire() for _ in range(10)]  # ten requests in flight, all sent at once
    for t in tokens:
        assert t is not None
        lim.throttled(t)  # all ten come back 429 ...
        lim.release()
    assert lim.limit == 32  # ... one decrease: they were sent before it
    for _ in range(10):  # each later request sent after the last decrease lowers it again
        t = lim.try_acquire()
        assert t is not None
        lim.throttled(t)
        lim.release()
    assert lim.limit == 4 and seen == [64, 32, 16, 8, 4]


def test_successes_raise_it_while_it_is_in_use() -> None:
    lim = AdaptiveLimit(ConcurrencyPolicy(min_limit=2, backoff=0.5), 8)
    t = lim.try_acquire()
    assert t is not None
    lim.throttled(t)
    lim.release()
    assert lim.limit == 4
    t = lim.try_acquire()
    lim.succeeded()  # one in flight of four: the limit is not what holds traffic back
    lim.release()
    assert lim.limit == 4
    held = [lim.try_acquire() for _ in range(2)]
    lim.succeeded()  # two of four in flight: in use
    assert lim.limit == 5
    for _ in held:
        lim.release()
    for _ in range(20):
        slots = [lim.try_acquire() for _ in range(int(lim.limit))]
        lim.succeeded()
        for _ in slots:
            lim.release()
    assert lim.limit == 8  # never above the backend's max_connections


async def test_a_full_limit_queues_in_order_and_times_out_without_losing_slots() -> None:
    lim = AdaptiveLimit(ConcurrencyPolicy(min_limit=1, backoff=0.5, queue_s=1), 2)
    t = lim.try_acquire()
    assert t is not None
    lim.throttled(t)
    assert lim.limit == 1 and lim.try_acquire() is None  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, timeout: float) -> None:
        if await lim.acquire(timeout) is not None:
            order.append(name)

    first = asyncio.ensure_future(wait("first", 1.0))
    second = asyncio.ensure_future(wait("second", 1.0))
    late = asyncio.ensure_future(wait("gives up", 0.01))
    await asyncio.sleep(0.05)
    assert order == [] and late.done()  # waited its 10 ms, no slot
    lim.release()
    await asyncio.sleep(0)
    assert order == ["first"]
    lim.release()
    await second
    assert order == ["first", "second"] and lim.inflight == 1
    await first
    cancelled = asyncio.ensure_future(lim.acquire(1.0))
    await asyncio.sleep(0)
    cancelled.cancel()
    lim.release()
    await asyncio.sleep(0)
    assert lim.inflight == 0 and lim.try_acquire() is not None  # nothing leaked
