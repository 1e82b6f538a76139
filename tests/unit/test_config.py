"""Stack config validation: every bad config fails with the field path and what is allowed,
and a bad config registers no resource."""

from __future__ import annotations

import copy
import json

import pulumi
import pytest

from tandem.stack import load, read_stack_file
from vocabulary.config import ConfigError, namespace_config, parse_config


def base() -> dict:
    return {
        "environment": "dev",
        "tags": {"team": "ml", "cost-center": "cc-1"},
        "gpuPools": [
            {"name": "l4", "instanceTypes": ["g6.xlarge"], "minNodes": 0, "maxNodes": 2},
        ],
    }


def with_changes(**changes) -> dict:
    cfg = copy.deepcopy(base())
    for path, value in changes.items():
        target = cfg
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
        target[keys[-1]] = value
    return cfg


BAD_CONFIGS = {
    "assistant route with both targets": (
        with_changes(
            gateway__assistants={
                "routes": [
                    {
                        "alias": "coder",
                        "useCase": "x",
                        "provider": "anthropic",
                        "url": "https://a/v1",
                    }
                ]
            }
        ),
        ["gateway.assistants.routes[0]", "either provider + url", "or useCase"],
    ),
    "assistant fallback to nowhere": (
        with_changes(
            gateway__assistants={
                "routes": [
                    {
                        "alias": "claude",
                        "provider": "anthropic",
                        "url": "https://a/v1",
                        "fallbacks": ["nope"],
                    }
                ]
            }
        ),
        ["gateway.assistants", "routes[0].fallbacks", "'nope' is not another assistant route"],
    ),
    "developer key that is also a proxy key": (
        with_changes(
            gateway__keys=[
                {"id": "a", "team": "t", "developer": "a@x", "developerHeader": "X-User"}
            ]
        ),
        ["gateway.keys[0]", "developer and developerHeader"],
    ),
    "unknown instance type": (
        with_changes(gpuPools__0__instanceTypes=["g9.xlarge"]),
        ["gpuPools[0].instanceTypes[0]", "g9.xlarge", "allowed:", "g6.xlarge"],
    ),
    "min greater than max": (
        with_changes(gpuPools__0__minNodes=5),
        ["gpuPools[0]", "minNodes (5) must be <= maxNodes (2)"],
    ),
    "spot in a critical pool": (
        with_changes(gpuPools__0__capacityType="spot", gpuPools__0__critical=True),
        ["gpuPools[0]", "'spot' is not allowed in a pool marked critical", "allowed:"],
    ),
    "unknown key in a pool": (
        with_changes(gpuPools__0__maxNode=3),
        ["gpuPools[0].maxNode", "unknown key 'maxNode'", "allowed keys:", "maxNodes"],
    ),
    "unknown top-level key": (
        {**base(), "gpuPool": []},
        ["gpuPool", "unknown key 'gpuPool'", "gpuPools"],
    ),
    "bad cluster mode": (
        with_changes(cluster__mode="k3s"),
        ["cluster.mode", "k3s", "'eks' or 'existing'"],
    ),
    "unsupported kubernetes version": (
        with_changes(cluster__kubernetesVersion="1.21"),
        ["cluster.kubernetesVersion", "1.21", "allowed: 1.30"],
    ),
    "existing mode without kubeconfig": (
        with_changes(cluster__mode="existing", gpuPools__0__mechanism="existing"),
        ["cluster", "kubeconfig is required"],
    ),
    "bad environment": (
        with_changes(environment="qa"),
        ["environment", "qa", "'dev', 'staging' or 'prod'"],
    ),
    "efa on an instance without EFA": (
        with_changes(gpuPools__0__efa=True),
        ["gpuPools[0]", "g6.xlarge do not support EFA", "EFA-capable:"],
    ),
    "managed pool mixing GPU models": (
        with_changes(gpuPools__0__instanceTypes=["g6.xlarge", "g6e.xlarge"]),
        ["gpuPools[0]", "mixes L4, L40S", "karpenter"],
    ),
    "MIG without the GPU operator": (
        with_changes(gpuSoftware={"mode": "device-plugin", "migStrategy": "single"}),
        ["gpuSoftware", "needs mode 'gpu-operator'"],
    ),
    "time-slicing replicas out of range": (
        with_changes(gpuSoftware={"timeSlicing": {"replicas": 1}}),
        ["gpuSoftware.timeSlicing.replicas", "greater than or equal to 2"],
    ),
    "bad pool name": (
        with_changes(gpuPools__0__name="L4_Pool"),
        ["gpuPools[0].name", "L4_Pool", "lowercase"],
    ),
    "fallback to a pool that does not exist": (
        with_changes(gpuPools__0__fallbackPool="nope"),
        ["gpuPools[0].fallbackPool", "'nope' is not a pool"],
    ),
    "negative budget": (
        with_changes(budget={"monthlyUsd": -5}),
        ["budget.monthlyUsd", "greater than 0"],
    ),
    "public prod endpoint without CIDRs": (
        with_changes(environment="prod", cluster__endpointPublicAccess=True),
        ["cluster.publicAccessCidrs", "prod cluster with a public API endpoint"],
    ),
    "unknown instance family in the policy allow-list": (
        with_changes(policies={"allowedInstanceFamilies": ["g6", "x2"]}),
        ["policies.allowedInstanceFamilies", "'x2'", "allowed: g5"],
    ),
    "managed pool on an existing cluster": (
        with_changes(cluster__mode="existing", cluster__kubeconfig="/tmp/kubeconfig"),
        ["gpuPools[0].mechanism", "'managed' needs cluster.mode 'eks'", "use 'existing'"],
    ),
    "bad region": (
        with_changes(region="useast1"),
        ["region", "useast1", "not an AWS region"],
    ),
    "typo in the gateway cache section": (
        with_changes(gateway={"cache": {"mode": "semantic", "treshold": 0.9}}),
        ["gateway.cache.treshold: unknown key 'treshold'", "allowed keys:", " threshold,"],
    ),
    # --- issue 21: no dead config, fallbacks, alerting, images, production guard rails ----
    "budget notify to an unknown receiver": (
        with_changes(budget={"monthlyUsd": 1000, "notify": ["finops@example.com"]}),
        ["budget.notify[0]", "'finops@example.com' is not a receiver", "define alerting.receivers"],
    ),
    "budget threshold out of range": (
        with_changes(budget={"monthlyUsd": 1000, "alertThresholds": [0.5, 80]}),
        ["budget.alertThresholds", "alertThresholds[1]: 80", "0 < threshold <= 2"],
    ),
    "receiver with two kinds": (
        with_changes(
            alerting={
                "defaultReceiver": "a",
                "receivers": [{"name": "a", "slack": {"channel": "#x"}, "webhook": {}}],
            }
        ),
        ["alerting.receivers[0]", "set exactly one of email, slack, webhook, pagerduty"],
    ),
    "route to an unknown receiver": (
        with_changes(
            alerting={
                "defaultReceiver": "a",
                "receivers": [{"name": "a", "webhook": {}}],
                "routes": [{"team": "x", "receiver": "b"}],
            }
        ),
        ["alerting", "routes[0].receiver: 'b' is not a receiver; allowed: a"],
    ),
    "fallback with another GPU model": (
        with_changes(
            gpuPools=[
                {
                    "name": "l4",
                    "instanceTypes": ["g6.xlarge"],
                    "maxNodes": 2,
                    "capacityType": "spot",
                    "fallbackPool": "l40s",
                },
                {"name": "l40s", "instanceTypes": ["g6e.xlarge"], "maxNodes": 2},
            ]
        ),
        ["gpuPools[0].fallbackPool", "1 x L40S per node", "same GPU model"],
    ),
    "fallback on smaller nodes": (
        with_changes(
            gpuPools=[
                {
                    "name": "a",
                    "instanceTypes": ["g6.2xlarge"],
                    "maxNodes": 2,
                    "capacityType": "spot",
                    "fallbackPool": "b",
                },
                {
                    "name": "b",
                    "mechanism": "karpenter",
                    "instanceTypes": ["g6.xlarge"],
                    "maxNodes": 2,
                },
            ]
        ),
        ["gpuPools[0].fallbackPool", "g6.xlarge (4 vCPU", "smaller than"],
    ),
    "spot falling back to spot": (
        with_changes(
            gpuPools=[
                {
                    "name": "a",
                    "instanceTypes": ["g6.xlarge"],
                    "maxNodes": 2,
                    "capacityType": "spot",
                    "fallbackPool": "b",
                },
                {
                    "name": "b",
                    "instanceTypes": ["g6.xlarge"],
                    "maxNodes": 2,
                    "capacityType": "spot",
                },
            ]
        ),
        ["gpuPools[0].fallbackPool", "'b' is spot too", "on-demand or reserved"],
    ),
    "karpenter-only key on a managed pool": (
        with_changes(gpuPools__0__consolidateAfter="10m"),
        ["gpuPools[0]", "consolidateAfter applies only to mechanism 'karpenter'"],
    ),
    "desiredNodes on a karpenter pool": (
        with_changes(gpuPools__0__mechanism="karpenter", gpuPools__0__desiredNodes=1),
        ["gpuPools[0]", "desiredNodes applies only to mechanism 'managed'"],
    ),
    "reservation ids without reserved capacity": (
        with_changes(gpuPools__0__capacityReservationIds=["cr-0123"]),
        ["gpuPools[0]", "only used with capacityType 'reserved'"],
    ),
    "MIG on GPUs without MIG": (
        with_changes(gpuSoftware={"mode": "gpu-operator", "migStrategy": "single"}),
        ["gpuSoftware.migStrategy", "l4 (L4)", "do nothing there", "H100"],
    ),
    "tlsSecret without an ingress host": (
        with_changes(gateway={"tlsSecret": "tls"}),
        ["gateway", "tlsSecret is used only by the ingress"],
    ),
    "EKS-only keys on an existing cluster": (
        with_changes(
            cluster__mode="existing",
            cluster__kubeconfig="/tmp/kubeconfig",
            cluster__logTypes=["api"],
            gpuPools__0__mechanism="existing",
        ),
        ["cluster", "logTypes only apply when mode is 'eks'"],
    ),
    "network section on an existing cluster": (
        with_changes(
            cluster__mode="existing",
            cluster__kubeconfig="/tmp/kubeconfig",
            network={"azCount": 3},
            gpuPools__0__mechanism="existing",
        ),
        ["network: Tandem builds a VPC only when cluster.mode is 'eks'"],
    ),
    "unpriced system node type": (
        with_changes(cluster__systemNodeGroup={"instanceType": "m7i.large2"}),
        ["cluster.systemNodeGroup.instanceType", "m7i.large2", "allowed: c7i.large"],
    ),
    "prod without alert receivers": (
        with_changes(environment="prod", budget={"monthlyUsd": 1000}),
        ["alerting.receivers: a prod stack must send its alerts somewhere"],
    ),
    "prod without a budget": (
        with_changes(environment="prod"),
        ["budget: a prod stack with GPU pools needs tandem:budget.monthlyUsd"],
    ),
    "prod with advisory enforcement": (
        with_changes(
            environment="prod",
            budget={"monthlyUsd": 1000},
            alerting={"defaultReceiver": "a", "receivers": [{"name": "a", "webhook": {}}]},
            policies={"enforcement": "advisory"},
        ),
        ["policies.enforcement: 'advisory' turns every guard rail off in prod", "waivers"],
    ),
    "prod lowering a guard rail": (
        with_changes(
            environment="prod",
            budget={"monthlyUsd": 1000},
            alerting={"defaultReceiver": "a", "receivers": [{"name": "a", "webhook": {}}]},
            policies={"overrides": {"serving-pdb": "disabled"}},
        ),
        ["policies.overrides: serving-pdb are production guard rails"],
    ),
    "bad cache decision": (
        with_changes(gateway={"cache": {"decision": "neighbourhod"}}),
        [
            'gateway.cache.decision: "neighbourhod"',
            "'verifier', 'neighbourhood' or 'threshold'",
        ],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_names_field_value_and_allowed(case: str) -> None:
    raw, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


def test_at_least_ten_distinct_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 10


def test_several_errors_are_reported_together() -> None:
    raw = with_changes(environment="qa", gpuPools__0__minNodes=9)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert len(info.value.errors) == 2


def test_bad_config_registers_no_resource(run_program) -> None:
    from tandem.program import main

    flat = {f"tandem:{k}": json.dumps(v) for k, v in with_changes(gpuPools__0__minNodes=9).items()}
    with pytest.raises(pulumi.RunError) as info:
        run_program(main, config=flat)
    assert "minNodes (9) must be <= maxNodes (2)" in str(info.value)
    assert info.value.registered == []


def test_shipped_stacks_are_valid() -> None:
    dev, prod = load("dev").config, load("prod").config
    assert dev.environment == "dev" and prod.environment == "prod"
    assert all(p.min_nodes == 0 for p in dev.gpu_pools)
    # dev runs on spot, each spot serving pool with an on-demand fallback
    for p in dev.gpu_pools:
        if p.workload == "serving" and p.capacity_type == "spot":
            assert dev.pool(p.fallback_pool or "").capacity_type == "on-demand"
    serving = [p for p in prod.gpu_pools if p.workload == "serving"]
    assert serving and all(p.capacity_type == "on-demand" for p in serving)
    models = {p.primary_instance.split(".")[0] for p in prod.gpu_pools}
    assert {"g6", "g6e", "p5"} <= models


def test_aws_region_seeds_platform_region() -> None:
    raw = namespace_config({"aws:region": "eu-west-1", "tandem:environment": "dev"})
    assert parse_config(raw).region == "eu-west-1"
    assert namespace_config(read_stack_file("dev"))["environment"] == "dev"


@pytest.mark.parametrize("secret", ["registryDbPassword", "huggingFaceToken", "batchWebhookSecret"])
def test_a_set_named_secret_is_read_by_the_program_not_refused_by_the_schema(secret) -> None:
    # `pulumi config set --secret tandem:registryDbPassword ...` is how the lifecycle docs say to
    # give RDS its password; the schema used to refuse it as an unknown key
    flat = {**read_stack_file("prod"), f"tandem:{secret}": {"secure": "v1:AAAA"}}
    raw = namespace_config(flat)
    assert secret not in raw
    parse_config(raw)


@pytest.mark.parametrize("name", ["8b-chat", "Chat", "chat_bot", "-chat", "chat-", "x" * 41])
def test_object_names_are_rfc1035_labels(name: str) -> None:
    """Pools, use cases, deployments and key ids become Service names: start with a letter."""
    from vocabulary.labels import dns_label

    with pytest.raises(ValueError, match="start with a letter"):
        dns_label(name, "name")
    assert dns_label("chat-8b") == "chat-8b"
