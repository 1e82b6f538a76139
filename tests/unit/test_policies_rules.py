"""Rule-level cases: the edges each rule must get right, beyond the corpus.

Every rule is compliant on the corpus baseline (tests/policy_cases/baseline.yaml) and has at
least one violating corpus case; the tests here pin the boundaries between the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.framework import ResourceView
from policies.rules import ALL_RULES, by_name
from policies.rules import common as c
from policies.rules.stack import pool_max_monthly_usd
from policies.settings import PolicySettings

CORPUS = Path(__file__).resolve().parent.parent / "policy_cases" / "cases"
PROD = PolicySettings(environment="prod", allowed_instance_families=["g6e", "p5"])


def messages(
    rule: str, type_: str, props: dict[str, Any], settings: PolicySettings = PROD
) -> list[str]:
    return list(by_name(rule).check(ResourceView(type_, "r", "urn:r", props), settings))


def stack_messages(
    rule: str, resources: list[tuple[str, dict]], settings: PolicySettings = PROD
) -> list[str]:
    views = [ResourceView(t, f"r{i}", f"urn:r{i}", p) for i, (t, p) in enumerate(resources)]
    return [f.message for f in by_name(rule).check(views, settings)]


def pod(container: dict, **spec: Any) -> dict:
    return {"spec": {"template": {"spec": {"containers": [container], **spec}}}}


SAFE = {
    "name": "app",
    "image": "ghcr.io/acme/app:1.2.3",
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
}


def test_every_rule_has_a_violating_corpus_case() -> None:
    expected = {yaml.safe_load(p.read_text())["expect"] for p in CORPUS.glob("*.yaml")}
    assert {r.name for r in ALL_RULES} <= expected


@pytest.mark.parametrize(
    ("image", "bad"),
    [
        ("ghcr.io/acme/app:1.2.3", False),
        ("localhost:5000/app", True),  # a registry port is not a tag
        ("localhost:5000/app:2.0", False),
        ("app@sha256:" + "a" * 64, False),
        ("redis:latest", True),
        ("", True),
    ],
)
def test_image_pinning(image: str, bad: bool) -> None:
    assert bool(messages("image-pinned", c.DEPLOYMENT, pod({**SAFE, "image": image}))) is bad


def test_gpu_pods_need_limits_and_toleration_non_gpu_pods_must_not_tolerate() -> None:
    gpu = {
        **SAFE,
        "resources": {**SAFE["resources"], "limits": {"memory": "1Gi", "nvidia.com/gpu": 1}},
    }
    tol = [{"operator": "Exists"}]  # a bare Exists toleration tolerates every taint
    assert messages("gpu-pod-scheduling", c.DEPLOYMENT, pod(gpu, tolerations=tol)) == []
    assert "does not tolerate" in messages("gpu-pod-scheduling", c.DEPLOYMENT, pod(gpu))[0]
    req_only = {**SAFE, "resources": {"requests": {"nvidia.com/gpu": 1}}}
    assert any(
        "without a limit" in m
        for m in messages("gpu-pod-scheduling", c.POD, {"spec": {"containers": [req_only]}})
    )
    gpu_tol = [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert (
        "uses no GPU"
        in messages("gpu-pod-scheduling", c.DEPLOYMENT, pod(SAFE, tolerations=gpu_tol))[0]
    )
    # DaemonSets (device plugin, DCGM exporter) legitimately tolerate GPU nodes without using GPUs.
    assert messages("gpu-pod-scheduling", c.DAEMON_SET, pod(SAFE, tolerations=gpu_tol)) == []


def test_pod_security_accepts_pod_level_non_root() -> None:
    ctr = {**SAFE, "securityContext": {"allowPrivilegeEscalation": False}}
    assert (
        messages("pod-security", c.DEPLOYMENT, pod(ctr, securityContext={"runAsNonRoot": True}))
        == []
    )
    assert (
        len(
            messages(
                "pod-security", c.DEPLOYMENT, pod({**SAFE, "securityContext": {"privileged": True}})
            )
        )
        == 3
    )


def test_cronjob_and_init_containers_are_checked() -> None:
    cron = {
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [SAFE],
                            "initContainers": [{"name": "init", "image": "busybox"}],
                        }
                    }
                }
            }
        }
    }
    found = messages("image-pinned", c.CRON_JOB, cron)
    assert len(found) == 1 and "init" in found[0]


@pytest.mark.parametrize(
    ("annotations", "ranges", "count"),
    [
        ({}, [], 2),
        ({"service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:acm"}, ["10.0.0.0/8"], 0),
        ({"service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:acm"}, ["0.0.0.0/0"], 1),
        (
            {
                "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:acm",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
            },
            [],
            0,
        ),
    ],
)
def test_loadbalancer_service(annotations: dict, ranges: list, count: int) -> None:
    svc = {
        "metadata": {"annotations": annotations},
        "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ranges},
    }
    assert len(messages("loadbalancer-service", c.SERVICE, svc)) == count
    assert messages("loadbalancer-service", c.SERVICE, {"spec": {"type": "ClusterIP"}}) == []


def test_plaintext_secret_detection_avoids_lookalikes() -> None:
    cm = {"data": {"max_tokens": "4096", "api_key_env": "OPENAI_API_KEY", "token_budget": "100"}}
    assert messages("no-plaintext-secrets", c.CONFIG_MAP, cm) == []
    assert messages("no-plaintext-secrets", c.CONFIG_MAP, {"data": {"db_password": "hunter22"}})
    routes = "redis:\n  url: rediss://:s3cr3t@cache.example.com:6379\n"
    assert messages("no-plaintext-secrets", c.CONFIG_MAP, {"data": {"routes.yaml": routes}})
    plain = "redis:\n  url: redis://gateway-redis.tandem-gateway:6379\n"
    assert messages("no-plaintext-secrets", c.CONFIG_MAP, {"data": {"routes.yaml": plain}}) == []
    env = pod(
        {
            **SAFE,
            "env": [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "k"}}}],
        }
    )
    assert messages("no-plaintext-secrets", c.DEPLOYMENT, env) == []


def test_imds_defaults_differ_between_launch_templates_and_karpenter() -> None:
    assert messages("imdsv2-required", c.LAUNCH_TEMPLATE, {})  # AWS default: optional
    assert (
        messages("imdsv2-required", c.KARPENTER_NODECLASS, {"spec": {}}) == []
    )  # Karpenter: required


def test_gpu_pool_detection() -> None:
    cpu = ResourceView(
        c.EKS_NODE_GROUP,
        "sys",
        "u",
        {"instanceTypes": ["m7i.large"], "amiType": "AL2023_x86_64_STANDARD"},
    )
    assert not c.is_gpu_pool(cpu)
    assert messages("gpu-pool-taint", c.EKS_NODE_GROUP, cpu.props) == []
    assert c.is_gpu_pool(ResourceView(c.EKS_NODE_GROUP, "g", "u", {"instanceTypes": ["g6.xlarge"]}))
    karp = {"spec": {"limits": {"nvidia.com/gpu": 4}, "template": {"spec": {}}}}
    assert c.is_gpu_pool(ResourceView(c.KARPENTER_NODEPOOL, "k", "u", karp))


def test_instance_family_rule_is_off_without_an_allow_list() -> None:
    props = {"instanceTypes": ["p4d.24xlarge"], "amiType": "AL2023_x86_64_NVIDIA"}
    assert messages("gpu-pool-instance-family", c.EKS_NODE_GROUP, props)
    assert messages("gpu-pool-instance-family", c.EKS_NODE_GROUP, props, PolicySettings()) == []


def test_spot_is_fine_with_an_on_demand_fallback_or_outside_serving() -> None:
    spot = {
        "instanceTypes": ["g6e.xlarge"],
        "capacityType": "SPOT",
        "labels": {"tandem.dev/workload": "serving"},
    }
    od = {**spot, "capacityType": "ON_DEMAND"}
    assert stack_messages("gpu-pool-spot-fallback", [(c.EKS_NODE_GROUP, spot)])
    assert (
        stack_messages("gpu-pool-spot-fallback", [(c.EKS_NODE_GROUP, spot), (c.EKS_NODE_GROUP, od)])
        == []
    )
    training = {**spot, "labels": {"tandem.dev/workload": "training"}}
    assert stack_messages("gpu-pool-spot-fallback", [(c.EKS_NODE_GROUP, training)]) == []


def test_max_scale_pricing_uses_the_catalog() -> None:
    from vocabulary.catalog import HOURS_PER_MONTH, load_catalog

    cat = load_catalog()
    ng = ResourceView(
        c.EKS_NODE_GROUP,
        "g",
        "u",
        {"instanceTypes": ["p5.48xlarge"], "scalingConfig": {"maxSize": 2}},
    )
    usd, _ = pool_max_monthly_usd(ng)
    assert usd == pytest.approx(2 * cat.get("p5.48xlarge").usd_per_hour * HOURS_PER_MONTH)
    family_only = {
        "spec": {
            "limits": {"nvidia.com/gpu": "8"},
            "template": {
                "spec": {
                    "requirements": [
                        {
                            "key": "karpenter.k8s.aws/instance-family",
                            "operator": "In",
                            "values": ["g6e"],
                        }
                    ]
                }
            },
        }
    }
    usd, how = pool_max_monthly_usd(ResourceView(c.KARPENTER_NODEPOOL, "k", "u", family_only))
    worst = max(cat.get(t).usd_per_gpu_hour for t in cat.names() if t.startswith("g6e."))
    assert usd == pytest.approx(8 * worst * HOURS_PER_MONTH) and "8 GPUs" in how
    assert (
        stack_messages("stack-gpu-budget", [(c.EKS_NODE_GROUP, ng.props)], PolicySettings()) == []
    )  # no budget


def test_required_tags_merge_provider_default_tags_and_skip_untaggable() -> None:
    tags = {"team": "a", "cost-center": "b", "use-case": "c", "environment": "d"}
    view = ResourceView(
        "aws:ec2/vpc:Vpc", "v", "u", {}, provider_props={"defaultTags": json.dumps({"tags": tags})}
    )
    assert list(by_name("required-tags").check([view], PROD)) == []
    assert stack_messages("required-tags", [("aws:ec2/vpc:Vpc", {"tags": {"team": "a"}})])
    assert (
        stack_messages("required-tags", [("aws:iam/rolePolicyAttachment:RolePolicyAttachment", {})])
        == []
    )


def test_serving_rules_read_the_serve_config() -> None:
    serve = "applications:\n- name: a\n  args:\n    llm_configs:\n    - engine_kwargs: {tensor_parallel_size: 2, pipeline_parallel_size: 2}\n"
    worker = {
        "groupName": "g",
        "minReplicas": 0,
        "maxReplicas": 1,
        "template": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 4}}}]}},
    }
    rs = {"spec": {"serveConfigV2": serve, "rayClusterConfig": {"workerGroupSpecs": [worker]}}}
    assert messages("ray-gpus-match-parallelism", c.RAY_SERVICE, rs) == []
    worker2 = {
        **worker,
        "template": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 2}}}]}},
    }
    rs2 = {"spec": {"serveConfigV2": serve, "rayClusterConfig": {"workerGroupSpecs": [worker2]}}}
    assert "needs 4 GPU(s)" in messages("ray-gpus-match-parallelism", c.RAY_SERVICE, rs2)[0]
    cpu = "applications:\n- name: a\n  args:\n    llm_configs:\n    - placement_group_config: {bundles: [{CPU: 2}]}\n"
    assert (
        messages("ray-gpus-match-parallelism", c.RAY_SERVICE, {"spec": {"serveConfigV2": cpu}})
        == []
    )


def test_gcs_fault_tolerance_accepts_the_legacy_annotation() -> None:
    legacy = {"metadata": {"annotations": {"ray.io/ft-enabled": "true"}}, "spec": {}}
    assert messages("ray-gcs-fault-tolerance", c.RAY_SERVICE, legacy) == []
    assert messages("ray-gcs-fault-tolerance", c.RAY_SERVICE, {"spec": {}})


def test_gateway_auth_only_judges_gateway_configs() -> None:
    open_cfg = {
        "data": {
            "gateway.yaml": "backends: {a: {url: 'http://a'}}\nroutes: {r: {backends: [{backend: a}]}}\n"
        }
    }
    assert messages("gateway-auth", c.CONFIG_MAP, open_cfg)
    assert messages("gateway-auth", c.CONFIG_MAP, {"data": {"app.yaml": "routes: 1\n"}}) == []
