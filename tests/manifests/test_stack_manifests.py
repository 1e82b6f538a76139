"""Every Kubernetes object the shipped stacks register is valid for the stack's Kubernetes
version (core kinds) or against its upstream CRD schema (custom resources)."""

from __future__ import annotations

import pytest

from tandem.manifests import manifests, validate_all, validate_manifest
from tandem.stack import load

STACKS = ("dev", "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_validates(stack: str, stack_resources, crd_dir) -> None:
    from tandem.engine import Resources

    res = Resources(stack_resources[stack])
    version = load(stack).config.cluster.kubernetes_version
    objs = manifests(res)
    assert len(objs) >= 3, "the stack should register Kubernetes objects"
    errors = validate_all(res, version)
    assert not errors, "\n".join(map(str, errors))


@pytest.mark.parametrize("stack", STACKS)
def test_custom_resources_are_checked_against_crds(stack: str, stack_resources, crd_dir) -> None:
    from tandem.engine import Resources

    kinds = {obj["kind"] for _, obj in manifests(Resources(stack_resources[stack]))}
    assert {"NodePool", "EC2NodeClass"} <= kinds


def test_validator_rejects_a_broken_node_pool(crd_dir) -> None:
    broken = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass"}}
            },
            "disruption": {"consolidationPolicy": "Sometimes"},
        },
    }
    errors = validate_manifest(broken, "1.33")
    joined = "\n".join(errors)
    assert "consolidationPolicy" in joined and "'name' is a required property" in joined


def test_validator_rejects_a_broken_core_object(crd_dir) -> None:
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}}
    assert validate_manifest(bad, "1.33")
    assert not validate_manifest({**bad, "data": {"a": "1"}}, "1.33")


def test_unknown_custom_resource_is_an_error(crd_dir) -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_manifest(obj, "1.33") == [
        f"no CRD schema for example.com/v1 Widget in {crd_dir}"
    ]
