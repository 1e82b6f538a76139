"""The model lifecycle's pure parts: the rollout and registry sections of a use case (errors name
the field), the offline alias resolution (never "latest"), the rollout plan's four Serve configs,
the canary analysis' verdicts, the A/B significance tests and the gateway's split overlay with
sticky arms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.split import overlay, sticky_bucket
from lifecycle.analysis import FAIL, INCONCLUSIVE, PASS, Arms, analyse
from lifecycle.plan import build_plan
from lifecycle.stats import bucket_counts, mann_whitney_binned, two_proportion_z
from vocabulary.errors import ConfigError
from vocabulary.registry import Resolutions
from vocabulary.rollout import Analysis, TrafficSplit, sticky_value
from vocabulary.usecase import load_use_case, resolve_registry

REPO = Path(__file__).resolve().parents[2]
CHATBOT = REPO / "stacks" / "usecases" / "support-chatbot.yaml"


def _chatbot(tmp_path: Path, **changes: Any) -> Path:
    doc = yaml.safe_load(CHATBOT.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path = tmp_path / "uc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- the use case's sections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollout", "names"),
    [
        ({"strategy": "canary", "steps": [50, 20]}, ("rollout.canary.steps", "increasing")),
        ({"strategy": "canary", "step_duraton_s": 5}, ("step_duraton_s",)),
        ({"strategy": "blue-green"}, ("rollout", "canary", "experiment")),
        ({"strategy": "experiment", "sticky_by": "ip"}, ("sticky_by", "metadata.<key>")),
        (
            {
                "strategy": "canary",
                "analysis": {"promql": [{"name": "x", "query": "up", "max": 1}]},
            },
            ("{{rollout}}",),
        ),
        (
            {
                "strategy": "canary",
                "analysis": {
                    "promql": [{"name": "x", "query": 'up{v="{{prompt_version}}"}', "max": 1}]
                },
            },
            ("rollout.analysis.promql.x", "{{rollout}}", "prompt's rollout"),
        ),
        ({"strategy": "canary", "analysis": {"error_rate": {}}}, ("max_vs_stable",)),
        ({"strategy": "canary", "deployment": "nope"}, ("rollout.deployment", "chat")),
    ],
)
def test_a_bad_rollout_names_its_field(tmp_path, rollout, names) -> None:
    with pytest.raises(ConfigError) as err:
        load_use_case(_chatbot(tmp_path, rollout=rollout))
    for name in names:
        assert name in str(err.value)


def test_a_registry_reference_is_an_alias_or_a_version(tmp_path) -> None:
    doc = yaml.safe_load(CHATBOT.read_text())
    doc["deployments"][0]["registry"] = {"name": "support-chat", "alias": "x", "version": 3}
    path = tmp_path / "uc.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="exactly one of alias"):
        load_use_case(path)


def test_an_alias_resolves_only_from_the_recorded_file_never_latest() -> None:
    spec = load_use_case(CHATBOT)
    with pytest.raises(
        ConfigError, match=r"deployments\[0\].registry: support-chat@champion.*never 'latest'"
    ):
        resolve_registry(spec, Resolutions(), "stacks/registry/dev.yaml")
    res = Resolutions()
    res.record("support-chat", "7", "s3://bucket/7", "2026-12-01", "champion")
    resolved, found = resolve_registry(spec, res, "x")
    (chat,) = resolved.deployments
    assert (chat.version, chat.source) == ("7", "s3://bucket/7")
    assert found[0].reference == "support-chat@champion" and found[0].version == "7"


def test_the_plan_carries_four_serve_configs_and_refuses_the_stable_version() -> None:
    res = Resolutions()
    res.record("support-chat", "3", "s3://bucket/3", "t", "champion")
    spec, _ = resolve_registry(load_use_case(CHATBOT), res, "x")
    plan = build_plan(spec, "4", "s3://bucket/4")
    apps = {k: [a["name"] for a in c["applications"]] for k, c in plan.configs.items()}
    assert apps == {
        "stable": ["chat"],
        "canary": ["chat", "chat-canary"],
        "promoted": ["chat", "chat-canary"],
        "final": ["chat"],
    }
    assert (plan.stable_backend, plan.canary_backend) == (
        "support-chatbot",
        "support-chatbot-canary",
    )
    assert plan.split_key == "tandem:gw:split:support-chat" and plan.registry_alias == "champion"
    with pytest.raises(ValueError, match="already the stable version"):
        build_plan(spec, "3", "s3://bucket/3")


# --- analysis --------------------------------------------------------------------------------------


class Prom:
    """Answers by which metric and arm a query reads."""

    def __init__(self, **values: float | None) -> None:
        self.values = values

    def scalar(self, expr: str) -> float | None:
        arm = "canary" if 'rollout="canary"' in expr or 'backend="uc-canary"' in expr else "stable"
        if "breaker_state" in expr:
            return self.values.get("breaker")
        if "count_over_time" in expr:
            return self.values.get("error_samples", 5)
        if "upstream_errors" in expr and " / " in expr:
            return self.values.get(f"errors_{arm}")
        if "histogram_quantile" in expr:
            return self.values.get(f"latency_{arm}")
        if "cost" in expr:
            return self.values.get(f"cost_{arm}")
        return self.values.get(f"attempts_{arm}")


ARMS = Arms("uc", "uc", "uc-canary")
RULES = Analysis.model_validate(
    {
        "error_rate": {"max": 0.05},
        "latency_p95_ms": {"max_vs_stable": 1.5},
        "min_requests": 20,
    }
)


@pytest.mark.parametrize(
    ("values", "outcome", "reason"),
    [
        (dict(attempts_canary=100, errors_canary=0.01, latency_canary=110, latency_stable=100), PASS, "within"),
        (dict(attempts_canary=100, errors_canary=0.2, latency_canary=110, latency_stable=100), FAIL, "error_rate"),
        (dict(attempts_canary=100, errors_canary=0.0, latency_canary=300, latency_stable=100), FAIL, "latency_p95_ms"),
        (dict(attempts_canary=5, errors_canary=0.0, latency_canary=100, latency_stable=100), INCONCLUSIVE, "min_requests"),
        (dict(attempts_canary=100, errors_canary=0.0, latency_canary=100), INCONCLUSIVE, "no data"),
        # the canary's failure counters scraped once in the window: increase() sees nothing yet
        (dict(attempts_canary=100, errors_canary=0.0, latency_canary=100, latency_stable=100, error_samples=1), INCONCLUSIVE, "no data for error_rate"),
        # ... but failures it can already count still fail it
        (dict(attempts_canary=100, errors_canary=0.3, latency_canary=100, latency_stable=100, error_samples=1), FAIL, "error_rate"),
        # a breach is a breach even on little traffic: three errors in five attempts fail now
        (dict(attempts_canary=5, errors_canary=0.6, latency_canary=100, latency_stable=100), FAIL, "error_rate"),
        # the gateway's breaker shut the canary out: no attempts to judge, and a failure
        (dict(attempts_canary=0, breaker=1), FAIL, "breaker"),
    ],
)  # fmt: skip
def test_the_analysis_verdict(values, outcome, reason) -> None:
    verdict = analyse(Prom(**values), ARMS, RULES, 30)  # type: ignore[arg-type]
    assert verdict.outcome == outcome and reason in verdict.reason


# --- the A/B tests ---------------------------------------------------------------------------------


def test_two_proportion_z_matches_the_textbook() -> None:
    r = two_proportion_z(50, 1000, 80, 1000)  # 5 % vs 8 %
    assert r.p_value == pytest.approx(0.0064, abs=0.0005) and r.effect == pytest.approx(0.03)
    assert two_proportion_z(0, 100, 0, 100).p_value == 1.0


def test_mann_whitney_on_histograms() -> None:
    same = mann_whitney_binned([10, 50, 30, 10], [10, 50, 30, 10])
    assert same.p_value == pytest.approx(1.0) and same.effect == pytest.approx(0.0)
    slower = mann_whitney_binned([40, 50, 10, 0], [0, 10, 50, 40])
    assert slower.p_value < 1e-6 and slower.effect > 0  # positive: the treatment is higher
    faster = mann_whitney_binned([0, 10, 50, 40], [40, 50, 10, 0])
    assert faster.effect < 0
    assert bucket_counts([(0.5, 10), (0.1, 4), (float("inf"), 12)]) == [4, 6, 2]


# --- the gateway's split ---------------------------------------------------------------------------


def _routes():
    from gateway.spec import RouteTarget, routes_from_use_cases

    res = Resolutions()
    res.record("support-chat", "3", "s3://bucket/3", "t", "champion")
    spec, _ = resolve_registry(load_use_case(CHATBOT), res, "x")
    target = RouteTarget(
        spec.name, spec.team, spec.gateway, "http://s/chat/v1", "m",
        model_version="3", canary_url="http://s/chat-canary/v1",
    )  # fmt: skip
    cfg = routes_from_use_cases([target])
    return cfg.model_copy(update={"redis": {"url": "redis://x", "prefix": "p"}})


def test_the_overlay_moves_weights_and_labels_the_arms() -> None:
    cfg = _routes()
    (alias,) = cfg.routes
    assert [b.backend for b in cfg.routes[alias].backends] == ["support-chatbot"]  # no split yet
    split = TrafficSplit(canary_weight=20, stable_version="3", canary_version="4")
    live = overlay(cfg, {alias: split})
    weights = {b.backend: b.weight for b in live.routes[alias].backends}
    assert weights == {"support-chatbot": 80.0, "support-chatbot-canary": 20.0}
    canary = live.backends["support-chatbot-canary"].labels
    assert (canary.rollout, canary.model_version) == ("canary", "4")
    rolled_back = overlay(cfg, {alias: TrafficSplit(canary_weight=0)})
    assert [b.backend for b in rolled_back.routes[alias].backends] == ["support-chatbot"]


def test_sticky_assignment_is_fixed_per_caller_and_reshuffled_per_experiment() -> None:
    class Route:
        sticky: tuple[str, str] | None = ("user", "salt-1")

    route = Route()
    first = [sticky_bucket(route, {"user": f"u{i}"}) for i in range(200)]
    assert first == [sticky_bucket(route, {"user": f"u{i}"}) for i in range(200)]
    assert 0.35 < sum(b < 0.5 for b in first if b is not None) / 200 < 0.65
    route.sticky = ("user", "salt-2")
    assert first != [sticky_bucket(route, {"user": f"u{i}"}) for i in range(200)]
    assert sticky_value({"metadata": {"session_id": "s"}}, "metadata.session_id") == "s"
    assert sticky_bucket(route, {}) is None  # no attribute: routed by weight


def test_a_new_version_behind_the_canary_backend_starts_with_a_closed_breaker() -> None:
    """A rolled-back bad canary leaves its backend's breaker open; the next candidate behind the
    same backend must still get its share (else its analysis sees no traffic)."""
    import asyncio

    from gateway.config import compile_config
    from gateway.metrics import Metrics
    from gateway.proxy import Upstreams

    async def run() -> None:
        cfg = _routes()
        (alias,) = cfg.routes
        bad = TrafficSplit(canary_weight=20, stable_version="3", canary_version="4")
        up = Upstreams(compile_config(overlay(cfg, {alias: bad})), Metrics())
        canary = "support-chatbot-canary"
        for _ in range(20):
            up.breakers[canary].record_failure()
        assert not up.breakers[canary].available()
        up.update(compile_config(overlay(cfg, {alias: bad.model_copy(update={"epoch": 9})})))
        assert not up.breakers[canary].available()  # same version: still open
        stable = up.breakers["support-chatbot"]
        nxt = bad.model_copy(update={"canary_version": "5"})
        up.update(compile_config(overlay(cfg, {alias: nxt})))
        assert up.breakers[canary].available()  # another version: judged afresh
        assert up.breakers["support-chatbot"] is stable  # the stable arm's is kept
        await up.close()

    asyncio.run(run())
