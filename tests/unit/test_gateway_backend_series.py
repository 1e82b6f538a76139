"""The series a backend exports over a config reload: what the rollout analysis reads of a canary
backend must mean the canary now there, not an earlier one of the same name."""

from __future__ import annotations

from gateway.config import compile_config, parse_config
from gateway.metrics import Metrics
from gateway.proxy import ERROR_CLASSES, Upstreams


def _config(*backends: str):
    return compile_config(
        parse_config(
            {
                "backends": {n: {"url": f"http://127.0.0.1:9/{n}/v1"} for n in backends},
                "routes": {"chat": {"backends": [{"backend": backends[0]}]}},
            }
        )
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_new_backends_error_classes_start_at_zero() -> None:
    # increase() cannot see a series' first increment: a canary failing from its first call
    # must add to a series that was already there at 0
    metrics = Metrics()
    up = Upstreams(_config("stable"), metrics)
    try:
        for err in ERROR_CLASSES:
            assert (
                _value(
                    metrics,
                    "tandem_gateway_upstream_errors_total",
                    backend="stable",
                    **{"class": err},
                )
                == 0.0
            )
        up.update(_config("stable", "canary"))
        assert (
            _value(
                metrics,
                "tandem_gateway_upstream_errors_total",
                backend="canary",
                **{"class": "http_500"},
            )
            == 0.0
        )
    finally:
        await up.close()


async def test_a_removed_backends_breaker_state_is_no_longer_exported() -> None:
    # a rolled-back canary's open breaker must not be read as the next canary's
    metrics = Metrics()
    up = Upstreams(_config("stable", "canary"), metrics)
    try:
        for _ in range(10):
            up.breakers["canary"].record_failure()
        assert _value(metrics, "tandem_gateway_breaker_state", backend="canary") == 1.0
        up.update(_config("stable"))
        assert _value(metrics, "tandem_gateway_breaker_state", backend="canary") is None
        assert _value(metrics, "tandem_gateway_concurrency_limit", backend="canary") is None
        assert _value(metrics, "tandem_gateway_breaker_state", backend="stable") == 0.0
        # its counters stay: a series that vanished and came back would lose an increment
        assert (
            _value(
                metrics,
                "tandem_gateway_upstream_errors_total",
                backend="canary",
                **{"class": "http_500"},
            )
            == 0.0
        )
        up.update(_config("stable", "canary"))  # the next canary starts closed
        assert _value(metrics, "tandem_gateway_breaker_state", backend="canary") == 0.0
    finally:
        await up.close()
