"""The real CrossGuard pack, served the way the Pulumi CLI serves it, answering gRPC analyzer calls.

The Pulumi CLI is not installable here, so this test plays its part: it starts the pack with
`python -m pulumi.policy <engine> policies` (what `pulumi-analyzer-policy-python` runs) with the
stack config in PULUMI_CONFIG, reads the port the pack prints, and calls GetAnalyzerInfo,
Analyze and AnalyzeStack over gRPC, as `pulumi preview --policy-pack policies` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies.rules import ALL_RULES
from tests.support.policies import to_recorded

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASELINE = yaml.safe_load((REPO / "tests" / "policy_cases" / "baseline.yaml").read_text())
MANDATORY = analyzer_pb2.EnforcementLevel.Value("MANDATORY")
ADVISORY = analyzer_pb2.EnforcementLevel.Value("ADVISORY")


def start_pack(environment: str) -> tuple[subprocess.Popen, analyzer_pb2_grpc.AnalyzerStub]:
    env = {
        **os.environ,
        "PULUMI_CONFIG": json.dumps(
            {"tandem:environment": environment, "tandem:budget": '{"monthlyUsd": 150000}'}
        ),
        "PULUMI_STACK": environment,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", str(REPO / "policies")],
        cwd=REPO / "policies",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = proc.stdout.readline().strip()  # the pack prints its port, then serves forever
    if not port.isdigit():
        proc.kill()
        raise AssertionError(f"policy pack did not start: {port!r} {proc.stderr.read()[-2000:]}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return proc, analyzer_pb2_grpc.AnalyzerStub(channel)


@pytest.fixture(scope="module")
def prod() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    proc, stub = start_pack("prod")
    try:
        yield stub
    finally:
        proc.kill()
        proc.wait(timeout=10)


def struct(props: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(props)))
    return s


def analyze(stub, type_: str, props: dict, name: str = "pool") -> list:
    req = analyzer_pb2.AnalyzeRequest(
        type=type_,
        properties=struct(props),
        urn=f"urn:pulumi:prod::tandem::{type_}::{name}",
        name=name,
    )
    return list(stub.Analyze(req, timeout=30).diagnostics)


def test_pack_describes_every_rule_mandatory_in_prod(prod) -> None:
    info = prod.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "tandem"
    assert [p.name for p in info.policies] == [r.name for r in ALL_RULES]
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert levels["gpu-pool-taint"] == MANDATORY
    assert all(p.remediation_steps for p in info.policies)


def test_analyze_reports_a_violation_with_its_level(prod) -> None:
    bad = {
        "instanceTypes": ["g6e.xlarge"],
        "amiType": "AL2023_x86_64_NVIDIA",
        "scalingConfig": {"maxSize": 2},
    }
    diags = analyze(prod, "aws:eks/nodeGroup:NodeGroup", bad)
    assert [(d.policyName, d.enforcementLevel) for d in diags] == [("gpu-pool-taint", MANDATORY)]
    assert "nvidia.com/gpu" in diags[0].message


def test_unknown_values_during_preview_are_advisory_not_failures(prod) -> None:
    props = {
        "vpcConfig": {"endpointPublicAccess": UNKNOWN_STRING_VALUE},
        "enabledClusterLogTypes": ["api", "audit", "authenticator"],
        "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "k"}},
    }
    diags = analyze(prod, "aws:eks/cluster:Cluster", props, "c")
    assert [(d.policyName, d.enforcementLevel) for d in diags] == [
        ("eks-public-endpoint", ADVISORY)
    ]
    assert "during preview" in diags[0].message


def test_analyze_stack_on_the_compliant_baseline_is_clean_and_catches_a_bad_review(prod) -> None:
    def stack_request(docs: list[dict]) -> analyzer_pb2.AnalyzeStackRequest:
        recs = to_recorded(docs)
        by_urn = {r.urn: r for r in recs}

        def provider(ref: str | None) -> analyzer_pb2.AnalyzerProviderResource | None:
            p = by_urn.get((ref or "").rsplit("::", 1)[0])
            return p and analyzer_pb2.AnalyzerProviderResource(
                type=p.type, properties=struct(p.inputs), urn=p.urn, name=p.name
            )

        resources = [
            analyzer_pb2.AnalyzerResource(
                type=r.type,
                properties=struct(r.inputs),
                urn=r.urn,
                name=r.name,
                parent=r.parent or "",
                provider=provider(r.provider),
            )
            for r in recs
        ]
        return analyzer_pb2.AnalyzeStackRequest(resources=resources)

    assert (
        list(prod.AnalyzeStack(stack_request(BASELINE["resources"]), timeout=60).diagnostics) == []
    )
    docs = [
        dict(d) for d in BASELINE["resources"] if d["name"] != "claims-assistant-usecase-manifest"
    ]
    diags = prod.AnalyzeStack(stack_request(docs), timeout=60).diagnostics
    assert [(d.policyName, d.enforcementLevel) for d in diags] == [
        ("usecase-review-gate", MANDATORY)
    ]


def test_dev_stack_gets_advisory_levels() -> None:
    proc, stub = start_pack("dev")
    try:
        info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        levels = {p.name: p.enforcementLevel for p in info.policies}
        assert levels["gpu-pool-taint"] == ADVISORY
        assert levels["serving-pdb"] == analyzer_pb2.EnforcementLevel.Value("DISABLED")
    finally:
        proc.kill()
        proc.wait(timeout=10)
