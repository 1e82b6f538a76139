"""The Gateway component under Pulumi mocks: what lands in the cluster, validated offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pulumi
import pytest
import yaml

from components.gateway import ElastiCacheArgs, Gateway, GatewayArgs, GatewayKey
from gateway.config import parse_config
from gateway.spec import RouteTarget, UseCaseGateway, routes_from_use_cases
from tandem import manifests
from tandem.engine import run_under_mocks
from vocabulary import labels
from vocabulary.config import GatewayConfig
from vocabulary.errors import ConfigError

RAW_KEY = "sk-live-customer-care-0123456789"
GOLDEN = Path(__file__).parent / "golden" / "gateway_routes.yaml"
ENTRIES = [
    RouteTarget(
        "support-chatbot",
        "customer-care",
        UseCaseGateway(
            alias="support-chat",
            fallbacks=["support-chat-lite"],
            degrade_to="support-chat-lite",
            budget={"usd": 500, "period": "month"},
            price={"input_per_mtok": 0.2, "output_per_mtok": 0.6},
        ),
        "http://support-chatbot-serve.tandem-serving:8000/v1",
        "support-chat-8b",
    ),
    RouteTarget(
        "support-lite",
        "customer-care",
        UseCaseGateway(alias="support-chat-lite", price={"output_per_mtok": 0.1}),
        "http://support-lite-serve.tandem-serving:8000/v1",
    ),
]


def program(**cfg):
    def run() -> None:
        routes = routes_from_use_cases(ENTRIES)
        Gateway(
            "gateway",
            GatewayArgs(
                routes=routes,
                config=GatewayConfig(**cfg),
                keys=[
                    GatewayKey(
                        "cc",
                        "customer-care",
                        pulumi.Output.secret(RAW_KEY),
                        ["support-chat"],
                        rpm=600,
                    )
                ],
                provider_secrets={"OPENAI_API_KEY": pulumi.Output.secret("sk-provider")},
                elasticache=ElastiCacheArgs(
                    subnet_ids=["subnet-1", "subnet-2"], security_group_ids=["sg-1"]
                )
                if cfg.get("redis") == "elasticache"
                else None,
            ),
        )

    return run


@pytest.fixture(scope="module")
def res():
    return run_under_mocks(program(ingress_host="ai.example.com", tls_secret="ai-tls"))


def test_all_objects_validate_against_kubernetes_and_crd_schemas(res) -> None:
    assert manifests.validate_all(res, "1.31") == []


def test_keys_travel_as_pulumi_secrets(res) -> None:
    for name in ("gateway-keys", "gateway-providers"):
        assert (
            manifests.SECRET_SIG in res.one("kubernetes:core/v1:Secret", name).inputs["stringData"]
        )


def test_deployment_is_hardened_with_probes_and_resources(res) -> None:
    dep = res.one("kubernetes:apps/v1:Deployment", "gateway").inputs
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= c.keys()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert c["args"] == ["gateway", "serve", "--config", "/etc/tandem-gateway/routes.yaml"]
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "OPENAI_API_KEY"
    assert dep["metadata"]["namespace"] == labels.NS_GATEWAY


def test_routes_config_map_loads_and_keys_are_hashed(res) -> None:
    cm = res.one("kubernetes:core/v1:ConfigMap", "gateway-routes").inputs
    routes = yaml.safe_load(cm["data"]["routes.yaml"])
    cfg = parse_config({k: v for k, v in routes.items() if k != "keys_file"})
    assert cfg.routes["support-chat"].fallbacks == ["support-chat-lite"]
    assert cfg.backends["support-chatbot"].model == "support-chat-8b"
    assert cfg.teams["customer-care"].budget.usd == 500
    assert routes["redis"]["url"].startswith("redis://gateway-redis.tandem-gateway")
    secret = manifests.plain(res.one("kubernetes:core/v1:Secret", "gateway-keys").inputs)
    text = secret["stringData"]["keys.yaml"]
    assert RAW_KEY not in text
    assert yaml.safe_load(text)[0]["sha256"] == hashlib.sha256(RAW_KEY.encode()).hexdigest()


def test_the_routes_file_is_written_as_it_always_was(res) -> None:
    """The ConfigMap is dumped once from the typed routes (only what was set, in field order):
    a change here rewrites every stack's routes file on the next deploy, so it is reviewed."""
    text = res.one("kubernetes:core/v1:ConfigMap", "gateway-routes").inputs["data"]["routes.yaml"]
    if os.environ.get("TANDEM_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "routes file changed: review, then TANDEM_UPDATE_GOLDEN=1"


def test_autoscaling_disruption_monitoring_network_and_ingress(res) -> None:
    hpa = res.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "gateway").inputs
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert (
        res.one("kubernetes:policy/v1:PodDisruptionBudget", "gateway").inputs["spec"][
            "maxUnavailable"
        ]
        == 1
    )
    sm = res.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor").inputs
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    np = res.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "gateway").inputs
    allowed = [
        s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        for s in np["spec"]["ingress"][0]["from"]
    ]
    assert labels.NS_SERVING in allowed and labels.NS_MONITORING in allowed
    ing = res.one("kubernetes:networking.k8s.io/v1:Ingress", "gateway").inputs
    assert ing["spec"]["tls"] == [{"hosts": ["ai.example.com"], "secretName": "ai-tls"}]
    assert res.one("kubernetes:apps/v1:Deployment", "gateway-redis")


def test_elasticache_mode_creates_an_encrypted_replication_group() -> None:
    res = run_under_mocks(program(redis="elasticache"))
    rg = res.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert rg["atRestEncryptionEnabled"] and rg["transitEncryptionEnabled"]
    assert not res.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert not [
        r for r in res.of_type("kubernetes:apps/v1:Deployment") if r.name == "gateway-redis"
    ]


def test_generated_routes_refuse_a_dangling_fallback() -> None:
    bad = [RouteTarget("a", "t", UseCaseGateway(fallbacks=["nope"]), "http://a:8000/v1")]
    with pytest.raises(ConfigError) as err:
        routes_from_use_cases(bad)
    assert err.value.errors == ["routes.a.fallbacks[0]: unknown route 'nope'; allowed: ['a']"]
    budget_no_price = [RouteTarget("a", "t", UseCaseGateway(budget={"usd": 5}), "http://a:8000/v1")]
    with pytest.raises(ConfigError, match="no price"):
        routes_from_use_cases(budget_no_price)
    twice = [
        RouteTarget("a", "t", UseCaseGateway(alias="chat"), "http://a:8000/v1"),
        RouteTarget("b", "t", UseCaseGateway(alias="chat"), "http://b:8000/v1"),
    ]
    with pytest.raises(ConfigError, match="gateway.alias 'chat' is already used by use case 'a'"):
        routes_from_use_cases(twice)


def test_cache_section_reaches_the_routes_file_and_shares_the_gateway_redis() -> None:
    res = run_under_mocks(program(cache={"mode": "semantic", "ttl_s": 600}))
    cm = res.one("kubernetes:core/v1:ConfigMap", "gateway-routes").inputs
    routes = yaml.safe_load(cm["data"]["routes.yaml"])
    assert routes["cache"]["mode"] == "semantic" and routes["cache"]["ttl_s"] == 600
    assert routes["cache"]["redis_url"] == routes["redis"]["url"]  # replicas share answers
    assert parse_config({k: v for k, v in routes.items() if k != "keys_file"}).cache


@pytest.mark.parametrize(
    ("cache", "request_mem", "limit"),
    [
        (None, "256Mi", "1Gi"),  # no cache: as configured
        ({"mode": "exact", "max_bytes": 128 * 2**20}, "256Mi", "1Gi"),  # fits the default limit
        ({"mode": "semantic", "max_bytes": 256 * 2**20}, "640Mi", "1Gi"),  # models need a request
        ({"mode": "semantic"}, "640Mi", "1152Mi"),  # 512 MiB of entries + models + the gateway
        ({"mode": "semantic", "max_bytes": 2 * 2**30}, "640Mi", "2688Mi"),
        ({"enabled": False, "max_bytes": 2 * 2**30}, "256Mi", "1Gi"),
    ],
)
def test_pod_memory_grows_with_the_cache(cache, request_mem, limit) -> None:
    """A cache configured in the stack cannot outgrow its pod: the limit holds max_bytes + models."""
    res = run_under_mocks(program(cache=cache))
    (container,) = res.one("kubernetes:apps/v1:Deployment", "gateway").inputs["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["resources"]["requests"]["memory"] == request_mem
    assert container["resources"]["limits"]["memory"] == limit


def test_recheck_pairs_log_gets_a_writable_volume() -> None:
    """The root filesystem is read-only: the labelled-pairs log needs its own volume, and a
    relative path (which would resolve into it) is a config error naming the field."""
    cache = {"mode": "semantic", "recheck": {"fraction": 0.02, "pairs_log": "/data/labels/p.jsonl"}}
    res = run_under_mocks(program(cache=cache))
    pod = res.one("kubernetes:apps/v1:Deployment", "gateway").inputs["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "cache-labels", "mountPath": "/data/labels"} in container["volumeMounts"]
    # sized for the file and its one rotated copy (2 x 256 MiB by default) plus slack
    assert {"name": "cache-labels", "emptyDir": {"sizeLimit": "528Mi"}} in pod["volumes"]
    small = {"mode": "semantic", "recheck": {"pairs_log": "/d/p.jsonl", "pairs_log_max_mb": 10}}
    spec = run_under_mocks(program(cache=small)).one("kubernetes:apps/v1:Deployment", "gateway")
    volumes = spec.inputs["spec"]["template"]["spec"]["volumes"]
    assert {"name": "cache-labels", "emptyDir": {"sizeLimit": "36Mi"}} in volumes
    plain = run_under_mocks(program(cache={"mode": "semantic"}))
    spec = plain.one("kubernetes:apps/v1:Deployment", "gateway").inputs["spec"]["template"]["spec"]
    assert all(v["name"] != "cache-labels" for v in spec["volumes"])
    with pytest.raises(ValueError, match=r"cache.recheck.pairs_log: must be an absolute path"):
        GatewayConfig(cache={"recheck": {"pairs_log": "labels.jsonl"}})
    with pytest.raises(
        ValueError, match=r"cache\.recheck\.pairs_log_max_mb\s+Input should be a valid number"
    ):
        GatewayConfig(cache={"recheck": {"pairs_log": "/d/p.jsonl", "pairs_log_max_mb": "1G"}})


def test_a_use_cases_route_cache_is_checked_with_the_use_case() -> None:
    """The use case's `gateway.cache` is the same typed policy the routes file reads: a typo fails
    when the use case loads, naming its path, not when the gateway first reads the ConfigMap."""
    from pydantic import ValidationError

    from vocabulary.errors import format_validation_error
    from vocabulary.usecase import UseCaseSpec

    spec = {
        "name": "uc",
        "team": "t",
        "pool": "p",
        "deployments": [{"name": "m", "kind": "llm", "model": "m", "source": "hf://m"}],
        "gateway": {"cache": {"mode": "exact", "ttl": 60}},
    }
    with pytest.raises(ValidationError) as err:
        UseCaseSpec.model_validate(spec)
    (line,) = format_validation_error(err.value, UseCaseSpec)
    assert line.startswith("gateway.cache.ttl: unknown key 'ttl'; allowed keys: allow_sampled,")
    spec["gateway"] = {"cache": {"mode": "exact", "ttl_s": 60}}
    routes = routes_from_use_cases(
        [RouteTarget("uc", "t", UseCaseSpec.model_validate(spec).gateway, "http://uc/v1")]
    )
    assert "    cache:\n      mode: exact\n      ttl_s: 60.0\n" in routes.to_yaml()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_stacks_route_coding_assistants_with_keys_audit_and_the_dashboard(
    stack_resources, stack: str
) -> None:
    """`docs/assistants.md`'s roll-out, as the shipped stacks plan it."""
    res = stack_resources[stack]
    cm = res.one("kubernetes:core/v1:ConfigMap", "gateway-routes").inputs
    routes = yaml.safe_load(cm["data"]["routes.yaml"])
    cfg = parse_config({k: v for k, v in routes.items() if k != "keys_file"})
    claude = cfg.backends["assistant-claude-sonnet-4-6"]
    assert (claude.protocol, claude.url) == ("anthropic", "https://api.anthropic.com/v1")
    assert claude.api_key_env == "TANDEM_PROVIDER_KEY_ANTHROPIC"
    selfhosted = cfg.backends["assistant-selfhosted-8b"]
    assert selfhosted.protocol == "openai" and selfhosted.url == cfg.backends["support-chatbot"].url
    assert cfg.audit is not None and cfg.teams["ml-platform"].developer_budget is not None
    keys = yaml.safe_load(
        manifests.plain(res.one("kubernetes:core/v1:Secret", "gateway-keys").inputs)["stringData"][
            "keys.yaml"
        ]
    )
    assert any(k.get("developer") or k.get("developer_header") for k in keys)
    env = res.one("kubernetes:apps/v1:Deployment", "gateway").inputs["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert "TANDEM_PROVIDER_KEY_ANTHROPIC" in {e["name"] for e in env}
    boards = [r for r in res if r.name == "observability-dashboard-tandem-assistants"]
    assert len(boards) == 1


def test_assistant_routes_are_checked_against_the_stack() -> None:
    from gateway.spec import with_assistants
    from vocabulary.config import AssistantsConfig

    routes = routes_from_use_cases(ENTRIES)
    bad = AssistantsConfig.model_validate(
        {
            "routes": [
                {"alias": "coder", "useCase": "nope"},
                {"alias": "support-chat", "useCase": "support-lite"},
            ]
        }
    )
    with pytest.raises(ConfigError) as err:
        with_assistants(routes, bad, ENTRIES, audit=True)
    text = str(err.value)
    assert "assistants.routes[0].useCase: 'nope' is not a use case" in text
    assert "assistants.routes[1].alias: 'support-chat' is a use case's alias too" in text
    clash = AssistantsConfig.model_validate(
        {
            "routes": [{"alias": "coder", "useCase": "support-lite"}],
            "teams": {"customer-care": {"budget": {"usd": 1}}},
        }
    )
    with pytest.raises(ConfigError) as err:
        with_assistants(routes, clash, ENTRIES, audit=False)
    assert "set it in one place" in str(err.value)
    ok = with_assistants(
        routes,
        AssistantsConfig.model_validate(
            {"routes": [{"alias": "coder", "useCase": "support-lite"}]}
        ),
        ENTRIES,
        audit=False,
    )
    assert ok.audit is None and ok.routes["coder"].backends[0].backend == "assistant-coder"
    assert ok.prices["assistant-coder"].output_per_mtok == 0.1  # the use case's price


def _restart_sha(tracing=None, entries=ENTRIES) -> str:
    from components.gateway import RESTART_SHA_ANNOTATION

    def run() -> None:
        Gateway(
            "gateway",
            GatewayArgs(
                routes=routes_from_use_cases(entries), config=GatewayConfig(), tracing=tracing
            ),
        )

    dep = run_under_mocks(run).one("kubernetes:apps/v1:Deployment", "gateway").inputs
    return dep["spec"]["template"]["metadata"]["annotations"][RESTART_SHA_ANNOTATION]


def test_a_change_the_gateway_reads_only_at_start_rolls_its_pods() -> None:
    """Routes, backends and keys hot-reload; tracing (like server, redis, cache) is read at
    start, so its change must change the pod template or it would wait for the next restart."""
    from gateway.config import Tracing

    base = _restart_sha()
    assert len(base) == 16
    assert _restart_sha(entries=ENTRIES[1:]) == base  # a route less: reloaded, no rollout
    traced = Tracing(exporter="otlp", endpoint="http://collector:4317", sampling=0.1)
    assert _restart_sha(tracing=traced) != base
