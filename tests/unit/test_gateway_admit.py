"""Stage 3, admit: limits and budgets against their counters (in memory here; Redis in
tests/integration/test_gateway_tenancy.py and test_redis_component.py)."""

from __future__ import annotations

import time

import pytest

from gateway.config import compile_config, hash_key, parse_config
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.admit import Admission
from gateway.stages.call import Call

COMPILED = compile_config(
    parse_config(
        {
            "backends": {"big": {"url": "http://127.0.0.1:1/v1"}, "small": {"url": "http://x/v1"}},
            "routes": {
                "chat": {"backends": [{"backend": "big"}], "degrade_to": "lite"},
                "lite": {"backends": [{"backend": "small"}]},
            },
            "prices": {"big": {"output_per_mtok": 10}, "small": {"output_per_mtok": 1}},
            "teams": {"rich": {"budget": {"usd": 1.0, "period": "day", "soft_fraction": 0.5}}},
            "keys": [
                {"id": "r", "team": "rich", "sha256": hash_key("sk-r")},
                {"id": "l", "team": "poor", "sha256": hash_key("sk-l"), "rpm": 2, "tpm": 100},
                {"id": "free", "team": "poor", "sha256": hash_key("sk-f")},
            ],
        }
    )
)
KEYS = {k.id: k for k in COMPILED.keys.values()}


def call(key_id: str) -> Call:
    c = Call("chat.completions", time.monotonic(), COMPILED)
    c.key, c.route = KEYS[key_id], COMPILED.routes["chat"]
    return c


def metric(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def test_nothing_to_enforce_costs_no_counter() -> None:
    admission = Admission(Metrics(), COMPILED.budgets)
    c = call("free")
    assert await admission.admit(c) is c.route and c.budget is None
    assert admission.usage._minute == {}  # type: ignore[attr-defined]


async def test_requests_and_tokens_per_minute() -> None:
    admission = Admission(Metrics(), COMPILED.budgets)
    await admission.admit(call("l"))
    await admission.admit(call("l"))
    with pytest.raises(GatewayError) as err:
        await admission.admit(call("l"))
    assert (err.value.status, err.value.code) == (429, "rate_limit_exceeded")
    assert 0 < err.value.retry_after <= 60
    fresh = Admission(Metrics(), COMPILED.budgets)
    await fresh.charge(call("l"), 100, 0.0)
    with pytest.raises(GatewayError) as err:
        await fresh.admit(call("l"))
    assert err.value.code == "tokens_per_minute_exceeded"


async def test_budget_degrades_past_the_soft_line_then_refuses() -> None:
    metrics = Metrics()
    admission = Admission(metrics, COMPILED.budgets)
    assert metric(metrics, "tandem_gateway_budget_remaining_usd", team="rich") == 1.0
    c = call("r")
    assert await admission.admit(c) is COMPILED.routes["chat"] and c.budget is not None
    await admission.charge(c, 1000, 0.6)
    assert metric(metrics, "tandem_gateway_budget_remaining_usd", team="rich") == pytest.approx(0.4)
    assert (await admission.admit(call("r"))).alias == "lite"  # past 50 %: the cheaper route
    await admission.charge(c, 1000, 0.4)
    with pytest.raises(GatewayError) as err:
        await admission.admit(call("r"))
    assert (err.value.status, err.value.code, err.value.err_type) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert metric(metrics, "tandem_gateway_budget_remaining_usd", team="rich") == 0.0


async def test_charges_only_what_a_limit_or_budget_reads() -> None:
    admission = Admission(Metrics(), COMPILED.budgets)
    await admission.charge(call("free"), 500, 1.0)
    assert admission.usage._minute == {}  # type: ignore[attr-defined]


DEV = compile_config(
    parse_config(
        {
            "backends": {"big": {"url": "http://127.0.0.1:1/v1"}},
            "routes": {"coder": {"backends": [{"backend": "big"}]}},
            "prices": {"big": {"output_per_mtok": 10}},
            "teams": {
                "platform": {
                    "budget": {"usd": 10.0, "period": "month"},
                    "developer_budget": {"usd": 1.0, "period": "month"},
                }
            },
            "keys": [
                {"id": "a", "team": "platform", "sha256": hash_key("a"), "developer": "alice"},
                {"id": "b", "team": "platform", "sha256": hash_key("b"), "developer": "bob"},
            ],
        }
    )
)


def dev_call(key_id: str) -> Call:
    key = next(k for k in DEV.keys.values() if k.id == key_id)
    c = Call("messages", time.monotonic(), DEV)
    c.key, c.route, c.developer = key, DEV.routes["coder"], key.developer
    return c


async def test_each_developer_has_their_own_budget_inside_the_team_s() -> None:
    admission = Admission(Metrics(), DEV.budgets)
    alice = dev_call("a")
    await admission.admit(alice)
    assert alice.developer_budget is not None and alice.developer_budget.usd == 1.0
    await admission.charge(alice, 1000, 1.0)
    with pytest.raises(GatewayError) as err:
        await admission.admit(dev_call("a"))
    assert (err.value.status, err.value.code) == (429, "developer_budget_exceeded")
    assert "alice" in err.value.message
    await admission.admit(dev_call("b"))  # bob's is untouched; the team has $9 left
    assert await admission.usage.spend("platform", DEV.budgets["platform"]) == 1.0
