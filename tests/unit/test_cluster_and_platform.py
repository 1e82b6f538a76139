"""The cluster and the composed platform under mocks: EKS hardening, existing-cluster mode,
and the wiring between cluster, Karpenter, GPU software and pools."""

from __future__ import annotations

import json

from tandem.program import main
from vocabulary import labels
from vocabulary.config import parse_config, pulumi_config_values


def run_config(run_program, raw: dict):
    return run_program(
        main, config=pulumi_config_values({f"tandem:{k}": v for k, v in raw.items()})
    )


def test_prod_eks_cluster_is_private_encrypted_and_logged(stack_resources) -> None:
    res = stack_resources["prod"]
    cluster = next(r for r in res if r.type == "aws:eks/cluster:Cluster").inputs
    assert cluster["vpcConfig"]["endpointPublicAccess"] is False
    assert cluster["vpcConfig"]["endpointPrivateAccess"] is True
    assert cluster["encryptionConfig"]["resources"] == ["secrets"]
    assert set(cluster["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    assert cluster["accessConfig"]["authenticationMode"] == "API"
    assert cluster["version"] == "1.35"
    kms = next(r for r in res if r.type == "aws:kms/key:Key").inputs
    assert kms["enableKeyRotation"] is True
    oidc = next(r for r in res if r.type == "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc.inputs["url"].startswith("https://oidc.eks.")


def test_prod_access_entries_and_system_node_group(stack_resources) -> None:
    res = stack_resources["prod"]
    assoc = [
        r.inputs for r in res if r.type == "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
    ]
    assert {a["policyArn"].rsplit("/", 1)[1] for a in assoc} == {
        "AmazonEKSClusterAdminPolicy",
        "AmazonEKSViewPolicy",
    }
    system = next(r for r in res if r.name == "cluster-system" and r.type.endswith("NodeGroup"))
    assert system.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert system.inputs["capacityType"] == "ON_DEMAND"
    assert system.inputs["scalingConfig"]["minSize"] == 3
    assert "taints" not in system.inputs


def test_dev_public_endpoint_is_cidr_restricted(stack_resources) -> None:
    cluster = next(r for r in stack_resources["dev"] if r.type == "aws:eks/cluster:Cluster")
    assert cluster.inputs["vpcConfig"]["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_kubernetes_objects_use_the_cluster_provider(stack_resources) -> None:
    res = stack_resources["prod"]
    provider = next(r for r in res if r.type == "pulumi:providers:kubernetes")
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    assert kubeconfig["users"][0]["user"]["exec"]["command"] == "aws"
    for r in res:
        if r.type.startswith("kubernetes:"):
            assert r.provider and r.provider.startswith(provider.urn), r.name


def test_every_taggable_aws_resource_has_required_tags(stack_resources) -> None:
    for stack, res in stack_resources.items():
        for r in res:
            if r.type.startswith("aws:") and "tags" in r.inputs:
                missing = set(labels.REQUIRED_TAGS) - set(r.inputs["tags"])
                assert not missing, f"{stack}: {r.type} {r.name} lacks {missing}"


def test_platform_tree_has_one_root_and_named_components(stack_resources) -> None:
    res = stack_resources["prod"]
    roots = [r for r in res if r.type == labels.TOKEN_PLATFORM]
    assert len(roots) == 1
    components = {r.name for r in res if not r.custom}
    assert {"network", "cluster", "karpenter", "gpu-software", "pool-l4-serving"} <= components
    # Nothing hangs off the stack but the platform.
    stack_children = [r for r in res if r.parent and r.parent.endswith("::tandem-prod")]
    assert [r.type for r in stack_children] == [labels.TOKEN_PLATFORM]


def test_existing_cluster_mode_creates_no_aws_resources(run_program, tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    raw = {
        "environment": "dev",
        "cluster": {"mode": "existing", "kubeconfig": str(kubeconfig), "context": "gpu"},
        "gpuPools": [
            {
                "name": "onprem",
                "mechanism": "existing",
                "instanceTypes": ["g6e.12xlarge"],
                "maxNodes": 2,
            }
        ],
    }
    parse_config(raw)
    res = run_config(run_program, raw)
    assert not [r for r in res if r.type.startswith("aws:")]
    provider = res.one("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "gpu"
    secret = provider.inputs["kubeconfig"]  # wire format of a secret: sentinel + value
    assert "4dabf18193072939515e22adb298388d" in secret, "kubeconfig must be a secret"
    assert "clusters: []" in secret["value"]
    charts = {r.inputs["chart"] for r in res.of_type("kubernetes:helm.sh/v3:Release")}
    assert "nvidia-device-plugin" in charts


def test_gpu_operator_runs_without_driver_and_toolkit(stack_resources) -> None:
    release = next(
        r
        for r in stack_resources["prod"]
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs["name"] == "gpu-operator"
    )
    values = release.inputs["values"]
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    assert release.inputs["version"]


def test_dev_device_plugin_time_slicing(stack_resources) -> None:
    release = next(
        r
        for r in stack_resources["dev"]
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs["name"] == "nvidia-device-plugin"
    )
    values = release.inputs["values"]
    assert "replicas: 2" in values["config"]["map"]["default"]
    assert values["tolerations"] == [labels.gpu_toleration()]


def test_karpenter_controller_is_pinned_with_irsa_and_interruption_queue(stack_resources) -> None:
    res = stack_resources["dev"]
    release = next(
        r
        for r in res
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs["name"] == "karpenter"
    )
    assert release.inputs["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert release.inputs["version"] == "1.14.1"
    values = release.inputs["values"]
    assert values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:"
    )
    assert values["settings"]["interruptionQueue"]
    rules = [r for r in res if r.type == "aws:cloudwatch/eventRule:EventRule"]
    assert len(rules) == 5  # Karpenter 1.14's reference: spot, rebalance, state, health, ODCR
    role = next(
        r for r in res if r.name == "karpenter-controller" and r.type == "aws:iam/role:Role"
    )
    trust = json.loads(role.inputs["assumeRolePolicy"])
    cond = trust["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:karpenter:karpenter" in cond.values()


def test_s3_reaches_the_nodes_without_nat(stack_resources) -> None:
    """Weights stream from S3: a gateway endpoint on every private route table keeps them off
    the NAT gateways' per-GB charge (the cost envelope assumes it)."""
    res = stack_resources["prod"]
    endpoint = res.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert endpoint["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert len(endpoint["routeTableIds"]) == 3  # one private route table per AZ
