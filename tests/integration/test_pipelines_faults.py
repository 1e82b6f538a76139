"""Fault runs on real processes: `tandem gateway serve`, two `tandem batch worker`s, redis-server
with AOF, moto's S3 and an upstream on loopback. A 1,000-line batch is hit mid-way by one fault
(workers SIGKILLed, Redis SIGKILLed and restarted on its data, the gateway SIGKILLed and
restarted) and must still complete with every line exactly once in output ∪ errors and the team
charged exactly once per answered line. benchmarks/batch_throughput.py runs the same faults on
10,000 lines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pipelines import BatchStack

pytestmark = pytest.mark.integration
LINES = 1_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[BatchStack]:
    with BatchStack(tmp_path_factory.mktemp("faults"), workers=2) as s:
        yield s


@pytest.mark.parametrize("fault", ["kill_workers", "restart_redis", "restart_gateway"])
def test_a_batch_survives(stack: BatchStack, fault: str) -> None:
    run = stack.fault_run(fault, LINES, timeout_s=180)
    assert run["status"] == "completed", run
    assert (run["lost"], run["duplicated"], run["double_charged"]) == (0, 0, 0), run
    assert run["charged_usd"] == pytest.approx(run["expected_usd"], rel=1e-9), run
    assert run["errors"] == 0, run
