"""The pack on real component output: what a platform engineer sees when wiring the gateway."""

from __future__ import annotations

from components.gateway import Gateway, GatewayArgs, GatewayKey
from gateway.config import parse_config
from policies.harness import evaluate
from tandem.engine import run_under_mocks
from vocabulary.config import GatewayConfig

ROUTES = parse_config(
    {
        "backends": {"chat": {"url": "http://chat-serve-svc.tandem-serving:8000/chat/v1"}},
        "routes": {"chat": {"backends": [{"backend": "chat", "weight": 100}]}},
    }
)


def gateway_violations(keys: bool, tls: bool) -> set[tuple[str, str]]:
    def program() -> None:
        key = [GatewayKey(id="support", team="support", key="sk-test-" + "a" * 32)] if keys else []
        cfg = GatewayConfig(
            ingress_host="ai.example.com", tls_secret="gateway-tls" if tls else None
        )
        Gateway("gateway", GatewayArgs(routes=ROUTES, keys=key, config=cfg))

    found = evaluate(
        run_under_mocks(program, stack="prod"), {"tandem:environment": "prod"}, stack="prod"
    )
    return {(v.policy, v.enforcement) for v in found}


def test_gateway_with_keys_and_tls_passes_the_pack() -> None:
    assert gateway_violations(keys=True, tls=True) == set()


def test_gateway_without_keys_or_tls_is_blocked_in_prod() -> None:
    assert gateway_violations(keys=False, tls=False) == {
        ("gateway-auth", "mandatory"),
        ("ingress-tls", "mandatory"),
    }
