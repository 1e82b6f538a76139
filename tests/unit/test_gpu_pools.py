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
    # p5.48xlarge has 32 network cards: one EFA device on each (EC2 EfaInfo)
    cards = [(i["networkCardIndex"], i["interfaceType"]) for i in lt["networkInterfaces"]]
    assert cards == [(0, "efa")] + [(c, "efa-only") for c in range(1, 32)]
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


# --- parity with Karpenter 1.14's reference (website/content/en/v1.14/getting-started/
# getting-started-with-karpenter/cloudformation.yaml @ karpenter-provider-aws 1d927085) ----------

REFERENCE_STATEMENTS = {
    "AllowScopedEC2InstanceAccessActions": {"ec2:RunInstances", "ec2:CreateFleet"},
    "AllowScopedEC2LaunchTemplateAccessActions": {"ec2:RunInstances", "ec2:CreateFleet"},
    "AllowScopedEC2InstanceActionsWithTags": {
        "ec2:RunInstances",
        "ec2:CreateFleet",
        "ec2:CreateLaunchTemplate",
    },
    "AllowScopedResourceCreationTagging": {"ec2:CreateTags"},
    "AllowScopedResourceTagging": {"ec2:CreateTags"},
    "AllowScopedDeletion": {"ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"},
    "AllowPassingInstanceRole": {"iam:PassRole"},
    "AllowScopedInstanceProfileCreationActions": {"iam:CreateInstanceProfile"},
    "AllowScopedInstanceProfileTagActions": {"iam:TagInstanceProfile"},
    "AllowScopedInstanceProfileActions": {
        "iam:AddRoleToInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:DeleteInstanceProfile",
    },
    "AllowAPIServerEndpointDiscovery": {"eks:DescribeCluster"},
    "AllowInterruptionQueueActions": {
        "sqs:DeleteMessage",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
    },
    "AllowZonalShiftStatusReadOnly": {"arc-zonal-shift:GetManagedResource"},
    "AllowRegionalReadActions": {
        "ec2:DescribeCapacityReservations",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribePlacementGroups",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
    },
    "AllowSSMReadActions": {"ssm:GetParameter"},
    "AllowPricingReadActions": {"pricing:GetProducts"},
    "AllowUnscopedInstanceProfileListAction": {"iam:ListInstanceProfiles"},
    "AllowInstanceProfileReadActions": {"iam:GetInstanceProfile"},
}


def _controller_policy(stack_resources) -> dict:
    import json

    res = stack_resources["dev"]
    policy = res.one("aws:iam/rolePolicy:RolePolicy", "karpenter-controller")
    return json.loads(policy.inputs["policy"])


def test_karpenter_controller_policy_matches_the_114_reference(stack_resources) -> None:
    statements = {s["Sid"]: s for s in _controller_policy(stack_resources)["Statement"]}
    assert set(statements) == set(REFERENCE_STATEMENTS)
    for sid, actions in REFERENCE_STATEMENTS.items():
        got = statements[sid]["Action"]
        assert set([got] if isinstance(got, str) else got) == actions, sid
    # launch actions are scoped by the tags Karpenter sets, not by region alone
    tagged = statements["AllowScopedEC2InstanceActionsWithTags"]["Condition"]
    assert tagged["StringEquals"]["aws:RequestTag/eks:eks-cluster-name"] == "tandem-dev"
    assert tagged["StringLike"] == {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    passrole = statements["AllowPassingInstanceRole"]
    assert passrole["Condition"]["StringEquals"]["iam:PassedToService"][0] == "ec2.amazonaws.com"
    assert not passrole["Resource"].endswith("*")


def test_interruption_queue_refuses_plain_http(stack_resources) -> None:
    import json

    res = stack_resources["dev"]
    queue_policy = json.loads(res.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    deny = [s for s in queue_policy["Statement"] if s.get("Sid") == "DenyHTTP"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": False}}


def test_karpenter_pool_parity_fields(run_program) -> None:
    res = run_pool(run_program, pool(mechanism="karpenter", workload="serving"))
    spec = res.one("kubernetes:karpenter.sh/v1:NodePool").inputs["spec"]
    assert spec["weight"] == 50
    assert spec["disruption"]["budgets"] == [{"nodes": "1"}]
    assert spec["template"]["spec"]["terminationGracePeriod"] == "1h"
    assert spec["template"]["spec"]["expireAfter"] == "720h"
    batch = run_pool(run_program, pool(mechanism="karpenter", workload="batch"))
    bspec = batch.one("kubernetes:karpenter.sh/v1:NodePool").inputs["spec"]
    assert bspec["disruption"]["budgets"] == [{"nodes": "10%"}]


def test_a_fallback_pool_is_weighted_below_its_primary(stack_resources) -> None:
    res = stack_resources["dev"]
    weights = {
        np.inputs["metadata"]["name"]: np.inputs["spec"]["weight"]
        for np in res.of_type("kubernetes:karpenter.sh/v1:NodePool")
    }
    assert weights["l4-spot"] > weights["l4-on-demand"]


def test_workers_may_move_to_the_fallback_and_prefer_the_primary(stack_resources) -> None:
    rs = stack_resources["dev"].one(
        "kubernetes:ray.io/v1:RayService", "usecase-support-chatbot-rayservice"
    )
    worker = rs.inputs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "nodeSelector" not in worker
    node = worker["affinity"]["nodeAffinity"]
    required = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert required[0]["matchExpressions"][0]["values"] == ["l4-spot", "l4-on-demand"]
    preferred = node["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert preferred["preference"]["matchExpressions"][0]["values"] == ["l4-spot"]


def test_karpenter_efa_pool_gets_one_efa_interface_per_network_card(run_program) -> None:
    cfg = pool(name="h100", mechanism="karpenter", instanceTypes=["p5.48xlarge"], efa=True)
    res = run_pool(run_program, cfg)
    nc = res.one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass").inputs["spec"]
    interfaces = nc["networkInterfaces"]
    efa = [i for i in interfaces if i["interfaceType"] == "efa-only"]
    assert len(efa) == 32 and {i["networkCardIndex"] for i in efa} == set(range(32))
    assert interfaces[0] == {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}
    assert nc["placementGroupSelector"]["name"]
    assert res.one("aws:ec2/placementGroup:PlacementGroup").inputs["strategy"] == "cluster"
