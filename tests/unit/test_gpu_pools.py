"""GpuNodePool under the mock engine: each mechanism's resources and the properties that keep
GPU nodes safe, schedulable and affordable."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest

from components.gpu_pools.node_pool import GpuNodePool, GpuNodePoolArgs
from gpu_pools.contract import scheduling_contract
from vocabulary import labels
from vocabulary.config import GpuPoolConfig

TAGS = {"team": "ml", "cost-center": "cc-1", "use-case": "platform", "environment": "dev"}


def pool(**kw) -> GpuPoolConfig:
    base = {"name": "l4", "instanceTypes": ["g6.xlarge"], "minNodes": 0, "maxNodes": 3}
    return GpuPoolConfig.model_validate({**base, **kw})


def run_pool(run_program, cfg: GpuPoolConfig):
    def program() -> None:
        role = aws.iam.Role("node-role", assume_role_policy="{}")
        provider = k8s.Provider("k8s", kubeconfig="{}")
        GpuNodePool(
            f"pool-{cfg.name}",
            GpuNodePoolArgs(
                pool=cfg,
                cluster_name="tandem-test",
                tags=TAGS,
                k8s_provider=provider,
                node_role=role,
                subnet_ids=["subnet-a", "subnet-b"],
                security_group_id="sg-1",
                karpenter_node_role_name=role.name,
            ),
        )

    return run_program(program)


def test_managed_pool_node_group(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="managed", capacityType="spot", maxNodes=4))
    ng = res.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["amiType"] == "AL2023_x86_64_NVIDIA"
    assert ng["capacityType"] == "SPOT"
    assert ng["scalingConfig"] == {"minSize": 0, "maxSize": 4, "desiredSize": 0}
    assert ng["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert ng["labels"][labels.LABEL_POOL] == "l4"
    assert ng["labels"][labels.LABEL_GPU_MODEL] == "L4"
    assert ng["labels"][labels.LABEL_TEAM] == "platform"
    assert ng["tags"]["team"] == "platform" and ng["tags"]["cost-center"] == "cc-1"


def test_managed_pool_launch_template_is_hardened(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="managed", rootVolumeGib=400))
    lt = res.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert lt["metadataOptions"]["httpPutResponseHopLimit"] == 1
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3" and ebs["volumeSize"] == 400
    assert "networkInterfaces" not in lt and "placement" not in lt


def test_bottlerocket_pool_sizes_the_data_volume(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="managed", amiType="BOTTLEROCKET_x86_64_NVIDIA"))
    lt = res.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"
    ng = res.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["amiType"] == "BOTTLEROCKET_x86_64_NVIDIA"


def test_efa_pool_gets_placement_group_and_efa_interface(run_program) -> None:
    cfg = pool(name="h100", mechanism="managed", instanceTypes=["p5.48xlarge"], efa=True)
    res = run_pool(run_program, cfg)
    pg = res.one("aws:ec2/placementGroup:PlacementGroup").inputs
    assert pg["strategy"] == "cluster"
    lt = res.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["networkInterfaces"][0]["interfaceType"] == "efa"
    assert "groupName" in lt["placement"]
    ng = res.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["subnetIds"] == ["subnet-a"], "a cluster placement group lives in one AZ"


def test_karpenter_serving_pool(run_program) -> None:
    cfg = pool(
        mechanism="karpenter",
        instanceTypes=["g6e.xlarge", "g6e.2xlarge"],
        capacityType="on-demand",
        maxNodes=5,
        workload="serving",
    )
    res = run_pool(run_program, cfg)
    assert not res.of_type("aws:eks/nodeGroup:NodeGroup")
    np_ = res.one("kubernetes:karpenter.sh/v1:NodePool").inputs["spec"]
    template = np_["template"]["spec"]
    assert template["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]
    reqs = {r["key"]: r["values"] for r in template["requirements"]}
    assert reqs["karpenter.k8s.aws/instance-family"] == ["g6e"]
    assert reqs["node.kubernetes.io/instance-type"] == ["g6e.xlarge", "g6e.2xlarge"]
    assert reqs["karpenter.sh/capacity-type"] == ["on-demand"]
    assert template["expireAfter"] == "720h"
    assert np_["limits"]["nvidia.com/gpu"] == "5"  # 5 nodes x 1 GPU
    assert np_["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert np_["template"]["metadata"]["labels"][labels.LABEL_POOL] == "l4"


def test_karpenter_batch_pool_consolidates_underutilized(run_program) -> None:
    cfg = pool(mechanism="karpenter", instanceTypes=["g6.12xlarge"], workload="batch", maxNodes=2)
    res = run_pool(run_program, cfg)
    np_ = res.one("kubernetes:karpenter.sh/v1:NodePool").inputs["spec"]
    assert np_["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert np_["limits"]["nvidia.com/gpu"] == "8"  # 2 nodes x 4 L4


def test_karpenter_node_class_is_hardened(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="karpenter", rootVolumeGib=300))
    spec = res.one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass").inputs["spec"]
    assert spec["metadataOptions"]["httpTokens"] == "required"
    ebs = spec["blockDeviceMappings"][0]["ebs"]
    assert ebs == {
        "volumeSize": "300Gi",
        "volumeType": "gp3",
        "encrypted": True,
        "deleteOnTermination": True,
    }
    assert spec["amiSelectorTerms"][0]["alias"].startswith("al2023@v")


def test_existing_pool_creates_nothing_but_exports_contract(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="existing"))
    assert sorted(r.type for r in res) == [
        "aws:iam/role:Role",
        "pulumi:providers:kubernetes",
        labels.TOKEN_GPU_NODE_POOL,
    ]  # registration order between a provider and a component is not deterministic


def test_every_child_is_parented_to_the_pool(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="managed", efa=False))
    comp = res.one(labels.TOKEN_GPU_NODE_POOL)
    children = res.children_of(comp)
    assert {c.type for c in children} == {
        "aws:ec2/launchTemplate:LaunchTemplate",
        "aws:eks/nodeGroup:NodeGroup",
    }


@pytest.mark.parametrize(
    "instance,gpus,mem,price",
    [
        ("g6.xlarge", 1, 22.35, 0.8048),
        ("p4d.24xlarge", 8, 40, 21.958),
        ("g6e.12xlarge", 4, 44.7, 10.493),
    ],
)
def test_scheduling_contract(instance: str, gpus: int, mem: float, price: float) -> None:
    c = scheduling_contract(pool(instanceTypes=[instance], maxNodes=3, minNodes=1))
    assert c.node_selector == {labels.LABEL_POOL: "l4"}
    assert c.tolerations == (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    assert c.gpu_resource == "nvidia.com/gpu"
    assert (c.gpus_per_node, c.gpu_memory_gib_per_gpu, c.hourly_usd) == (gpus, mem, price)
    assert c.max_gpus == 3 * gpus
    assert c.to_dict()["instance_type"] == instance


def test_karpenter_contract_assumes_the_most_expensive_type() -> None:
    c = scheduling_contract(
        pool(mechanism="karpenter", instanceTypes=["g6e.2xlarge", "g6e.xlarge"])
    )
    assert c.instance_type == "g6e.2xlarge"


def test_pool_exports_contract_as_output(run_program) -> None:
    cfg = pool(mechanism="managed")
    holder = {}

    def program() -> None:
        role = aws.iam.Role("node-role", assume_role_policy="{}")
        holder["pool"] = GpuNodePool(
            "p", GpuNodePoolArgs(pool=cfg, cluster_name="c", tags=TAGS, node_role=role)
        )

    run_program(program)
    assert holder["pool"].contract == scheduling_contract(cfg)
    assert isinstance(holder["pool"], pulumi.ComponentResource)
