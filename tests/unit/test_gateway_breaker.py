"""The circuit breaker (gateway/breaker.py) on a fake clock: when it opens, what a 429 does, and
how soon traffic comes back after the backend recovers."""

from __future__ import annotations

import pytest

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.config import BreakerPolicy


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_transitions_with_bounded_probes() -> None:
    clock = Clock()
    changes: list[int] = []
    br = CircuitBreaker(
        BreakerPolicy(consecutive_failures=3, open_s=10, half_open_probes=2), clock, changes.append
    )
    for _ in range(3):
        assert br.allow()
        br.record_failure()
    assert br.state == OPEN and not br.allow()
    clock.t += 10
    assert br.allow() and br.state == HALF_OPEN
    assert br.allow()
    assert not br.allow()  # only two probes at once
    br.record_success()
    br.record_success()
    assert br.state == CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_error_rate_needs_min_requests_and_a_failed_probe_reopens() -> None:
    clock = Clock()
    br = CircuitBreaker(
        BreakerPolicy(min_requests=10, error_rate=0.5, consecutive_failures=100, open_s=5), clock
    )
    for i in range(9):
        br.record_failure() if i % 2 else br.record_success()
    assert br.state == CLOSED  # 4/9 failures, under the minimum count
    br.record_failure()
    assert br.state == OPEN  # 5/10
    clock.t += 5
    assert br.allow()
    br.record_failure()
    assert br.state == OPEN


def test_slow_first_tokens_count_as_failures() -> None:
    br = CircuitBreaker(BreakerPolicy(consecutive_failures=2, slow_first_token_s=1.0), Clock())
    br.record_success(ttft_s=0.5)
    br.record_success(ttft_s=2.0)
    assert br.state == CLOSED
    br.record_success(ttft_s=2.0)
    assert br.state == OPEN


# -- throttling -------------------------------------------------------------------------------


def test_a_429_is_one_request_refused_not_a_failure() -> None:
    """A fifth of the answers are 429s, spread out: the breaker never opens, and the 429s do not
    add to a run of failures either."""
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(consecutive_failures=3, min_requests=5), clock)
    for i in range(500):
        clock.t += 0.01
        assert br.allow()
        if i % 5 == 0:
            assert br.record_throttle(provider_wide=False, cool_s=1.0) is False
        else:
            br.record_success()
    assert br.state == CLOSED
    br.record_failure()
    br.record_failure()
    br.record_throttle(provider_wide=False, cool_s=1.0)
    assert br.state == CLOSED  # two failures, a 429: not three failures in a row
    br.record_failure()
    assert br.state == OPEN


def test_a_provider_wide_limit_cools_the_backend_until_it_resets() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(open_s=30, probe_share=0.5), clock)
    assert br.record_throttle(provider_wide=True, cool_s=7) is True
    assert br.state == OPEN and br.retry_after() == pytest.approx(7)
    for _ in range(100):  # however much traffic: no probe before the reset
        assert not br.available() and not br.allow()
    clock.t += 7
    assert br.allow() and br.state == HALF_OPEN  # the first request after it probes
    br.record_success()
    assert br.state == CLOSED


def test_a_storm_of_429s_cools_the_backend_and_only_recent_ones_count() -> None:
    clock = Clock()
    policy = BreakerPolicy(throttle_window=10, throttle_share=0.8, window_s=30)
    br = CircuitBreaker(policy, clock)
    for _ in range(3):
        br.record_success()
    for _ in range(7):
        assert br.record_throttle(provider_wide=False, cool_s=2) is False  # 7 of the last 10
    assert br.record_throttle(provider_wide=False, cool_s=2) is True  # 8 of 10
    assert br.state == OPEN and br.retry_after() == pytest.approx(2)
    old = CircuitBreaker(policy, clock)
    for _ in range(7):
        old.record_throttle(provider_wide=False, cool_s=2)
    clock.t += 31  # those seven are out of the window now
    assert old.record_throttle(provider_wide=False, cool_s=2) is False
    assert old.state == CLOSED


def test_a_probe_that_meets_a_single_429_frees_its_slot() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_s=5), clock)
    br.record_failure()
    clock.t += 5
    assert br.allow() and br.state == HALF_OPEN
    assert not br.allow()
    br.record_throttle(provider_wide=False, cool_s=1)  # alive, just busy: no verdict
    assert br.state == HALF_OPEN and br.allow()


# -- recovery ---------------------------------------------------------------------------------


def test_an_open_backend_is_probed_in_proportion_to_its_traffic() -> None:
    """`open_s` 30 s, 100 requests/s: the probes do not wait 30 s; one request in 50 probes."""
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_s=30, probe_share=0.02), clock)
    br.record_failure()
    probes = []
    for i in range(500):  # five seconds at 100 requests/s, the backend still down
        clock.t += 0.01
        if br.available():
            assert br.allow()
            probes.append(i)
            br.record_failure()
    assert len(probes) == 10 and br.state == OPEN
    # thin traffic: one request a minute still probes once open_s has passed
    thin = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_s=30), clock)
    thin.record_failure()
    clock.t += 29
    assert not thin.available()
    clock.t += 1
    assert thin.available()


def test_probes_by_share_can_be_turned_off() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_s=30, probe_share=0), clock)
    br.record_failure()
    assert not any(br.available() for _ in range(10_000))
    clock.t += 30
    assert br.allow()


@pytest.mark.parametrize("rate", [10, 100, 1000])
def test_after_an_outage_traffic_returns_within_the_stated_bound(rate: int) -> None:
    """The bound in docs/gateway.md: the first probe after the backend recovers comes within
    min(open_s, 1 / (probe_share x rate)) seconds, and its success closes the breaker."""
    clock = Clock()
    policy = BreakerPolicy(consecutive_failures=5, open_s=30, probe_share=0.02)
    br = CircuitBreaker(policy, clock)
    healthy_from = 1000.0 + 10  # a ten-second outage
    closed_at = None
    for _ in range(int(40 * rate)):
        clock.t += 1 / rate
        if not br.allow():
            continue
        if clock.t < healthy_from:
            br.record_failure()
        else:
            br.record_success()
            if br.state == CLOSED:
                closed_at = clock.t
                break
    bound = min(policy.open_s, 1 / (policy.probe_share * rate))
    assert closed_at is not None and closed_at - healthy_from <= bound + 1 / rate
