"""The policy framework: enforcement per stack, waivers, unknown values, the engine adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policies.harness import blocking, evaluate, evaluate_waived
from policies.rules import ALL_RULES, by_name
from policies.settings import PolicySettings
from tests.support.policies import apply_patches, to_recorded

CASES = Path(__file__).resolve().parent.parent / "policy_cases"
BASELINE = yaml.safe_load((CASES / "baseline.yaml").read_text())
OPEN_ENDPOINT = {
    "type": "aws:eks/cluster:Cluster",
    "name": "tandem-prod",
    "merge": {"vpcConfig": {"publicAccessCidrs": ["0.0.0.0/0"]}},
}


def run(patches: list[dict], config: dict | None = None, stack: str = "prod") -> list:
    docs = apply_patches(BASELINE["resources"], patches)
    cfg = {**BASELINE["config"], "tandem:environment": stack, **(config or {})}
    return evaluate(to_recorded(docs, stack), cfg, stack=stack)


def test_every_rule_has_metadata_and_unique_name() -> None:
    names = [r.name for r in ALL_RULES]
    assert len(names) == len(set(names))
    for rule in ALL_RULES:
        assert rule.description and rule.remediation and rule.severity
        assert rule.scope == "stack" or rule.resource_types, rule.name


def test_pack_entry_point_builds_policies_without_starting_the_pack() -> None:
    import policies.__main__ as entry  # must not construct PolicyPack (that never returns)

    assert [p.name for p in entry.POLICIES] == [r.name for r in ALL_RULES]
    for policy, rule in zip(entry.POLICIES, ALL_RULES, strict=True):
        kind = ResourceValidationPolicy if rule.scope == "resource" else StackValidationPolicy
        assert isinstance(policy, kind)
        assert policy.description == rule.description
        assert policy.remediation_steps == rule.remediation
        assert policy.severity is not None and policy.enforcement_level is not None


def test_engine_settings_come_from_pulumi_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.__main__ import engine_settings

    cfg = {
        "tandem:config:environment": "prod",
        "tandem:policies": json.dumps({"overrides": {"s3-versioned": "advisory"}}),
        "tandem:budget": json.dumps({"monthlyUsd": 5000}),
    }
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(cfg))
    monkeypatch.setenv("PULUMI_STACK", "prod")
    s = engine_settings()
    assert (s.environment, s.monthly_budget_usd) == ("prod", 5000)
    assert s.level_for(by_name("s3-versioned")) == "advisory"
    assert s.level_for(by_name("s3-private")) == "mandatory"


@pytest.mark.parametrize(
    ("config", "rule", "level"),
    [
        ({"tandem:environment": "dev"}, "eks-public-endpoint", "advisory"),
        ({"tandem:environment": "prod"}, "eks-public-endpoint", "mandatory"),
        ({"tandem:environment": "staging"}, "s3-private", "advisory"),
        (
            {"tandem:environment": "dev", "tandem:policies": {"enforcement": "mandatory"}},
            "s3-private",
            "mandatory",
        ),
        (
            {"tandem:environment": "prod", "tandem:policies": {"enforcement": "advisory"}},
            "s3-private",
            "advisory",
        ),
        (
            {
                "tandem:environment": "prod",
                "tandem:policies": {"overrides": {"s3-private": "disabled"}},
            },
            "s3-private",
            "disabled",
        ),
        ({"tandem:environment": "dev"}, "serving-pdb", "disabled"),  # production-only
        (
            {"tandem:environment": "dev", "tandem:policies": {"enforcement": "mandatory"}},
            "serving-pdb",
            "disabled",
        ),
    ],
)
def test_enforcement_per_stack(config: dict, rule: str, level: str) -> None:
    assert PolicySettings.from_stack_config(config, "x").level_for(by_name(rule)) == level


def test_dev_reports_advisory_and_does_not_block() -> None:
    found = run([OPEN_ENDPOINT], stack="dev")
    assert [(v.policy, v.enforcement) for v in found] == [("eks-public-endpoint", "advisory")]
    assert blocking(found) == []


def test_disabled_rule_reports_nothing() -> None:
    assert (
        run(
            [OPEN_ENDPOINT], {"tandem:policies": {"overrides": {"eks-public-endpoint": "disabled"}}}
        )
        == []
    )


def test_resource_waiver_needs_a_reason() -> None:
    waive = {"tandem.dev/waive-policies": "eks-public-endpoint, eks-control-plane-logs"}
    unexplained = {**OPEN_ENDPOINT, "merge": {**OPEN_ENDPOINT["merge"], "tags": waive}}
    assert [v.policy for v in run([unexplained])] == ["eks-public-endpoint"]
    explained = {
        **unexplained,
        "merge": {
            **unexplained["merge"],
            "tags": {**waive, "tandem.dev/waiver-reason": "INC-123 break-glass"},
        },
    }
    assert run([explained]) == []
    docs = apply_patches(BASELINE["resources"], [explained])
    cfg = {**BASELINE["config"], "tandem:environment": "prod"}
    hidden = evaluate_waived(to_recorded(docs, "prod"), cfg, stack="prod")
    assert [(v.policy, v.waiver) for v in hidden] == [
        ("eks-public-endpoint", "INC-123 break-glass")
    ]


def test_kubernetes_annotation_waiver() -> None:
    patch = {
        "type": "kubernetes:networking.k8s.io/v1:Ingress",
        "name": "gateway",
        "merge": {
            "metadata": {
                "annotations": {
                    "tandem.dev/waive-policies": "ingress-tls",
                    "tandem.dev/waiver-reason": "TLS at CloudFront",
                }
            },
            "spec": {"tls": None},
        },
    }
    assert run([patch]) == []


def test_stack_waiver_matches_names_and_expires() -> None:
    waiver = {"policy": "eks-public-endpoint", "resource": "tandem-*", "reason": "migration window"}
    assert run([OPEN_ENDPOINT], {"tandem:policies": {"waivers": [waiver]}}) == []
    other = {**waiver, "resource": "other-cluster"}
    assert len(run([OPEN_ENDPOINT], {"tandem:policies": {"waivers": [other]}})) == 1
    expired = {**waiver, "expires": "2020-01-01"}
    assert len(run([OPEN_ENDPOINT], {"tandem:policies": {"waivers": [expired]}})) == 1


def test_stack_wide_waiver_for_stack_level_findings() -> None:
    over = {
        "type": "aws:eks/nodeGroup:NodeGroup",
        "name": "gpu-h100",
        "merge": {"scalingConfig": {"maxSize": 6}},
    }
    assert [v.policy for v in run([over])] == ["stack-gpu-budget"]
    waiver = {"policy": "stack-gpu-budget", "reason": "Q4 launch, approved by FinOps"}
    assert run([over], {"tandem:policies": {"waivers": [waiver]}}) == []


def test_unknown_values_skip_instead_of_failing() -> None:
    """During preview an unknown read raises in the engine; the harness treats it like the SDK does."""
    unknown = {
        "type": "aws:eks/cluster:Cluster",
        "name": "tandem-prod",
        "merge": {
            "vpcConfig": {"endpointPublicAccess": UNKNOWN_STRING_VALUE},
            "enabledClusterLogTypes": UNKNOWN_STRING_VALUE,
        },
    }
    assert run([unknown]) == []
    with pytest.raises(UnknownValueError):
        by_name("eks-control-plane-logs").check(
            type(
                "R",
                (),
                {
                    "props": unknown_checking_proxy(
                        {"enabledClusterLogTypes": UNKNOWN_STRING_VALUE}
                    ),
                    "name": "c",
                },
            )(),
            PolicySettings(),
        ).__next__()


def test_engine_adapter_reports_through_the_sdk_callback() -> None:
    from pulumi_policy import ResourceValidationArgs

    from policies.pack import to_policy

    policy = to_policy(by_name("gpu-pool-taint"), PolicySettings(environment="prod"))
    assert policy.enforcement_level == EnforcementLevel.MANDATORY
    props = unknown_checking_proxy(
        {"instanceTypes": ["g6e.xlarge"], "amiType": "AL2023_x86_64_NVIDIA"}
    )
    reports: list = []
    args = ResourceValidationArgs("aws:eks/nodeGroup:NodeGroup", props, "urn:x", "pool", None, None)
    policy.validate(args, lambda msg, urn=None: reports.append((msg, urn)))
    assert len(reports) == 1 and "nvidia.com/gpu" in reports[0][0]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_shipped_stacks_raise_no_mandatory_violation(stack: str, stack_resources) -> None:
    from tandem.stack import read_stack_file

    found = evaluate(stack_resources[stack], read_stack_file(stack), stack=stack)
    assert blocking(found) == [], "\n".join(
        f"{v.policy} {v.resource_name}: {v.message}" for v in found
    )
