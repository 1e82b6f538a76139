"""`GpuNodePool`: one component, three mechanisms, one scheduling contract.

- `managed`: an EKS managed node group on a GPU AMI with a hardened launch template, optional
  EFA networking (one EFA device per network card) in a cluster placement group.
- `karpenter`: a Karpenter NodePool + EC2NodeClass (instance-family requirements, capacity
  types, a GPU limit, `WhenEmpty` disruption for serving so a busy replica is never evicted to
  save money, a disruption budget, a termination grace period, a weight below the pool's own
  for a pool that is another's fallback, EFA interfaces per network card).
- `existing`: nodes someone else runs; nothing is created, the contract still describes them.

Every pool carries the `nvidia.com/gpu` NoSchedule taint and the platform labels, and exports a
`SchedulingContract` that inference clusters consume instead of re-deriving selectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import secure_launch_template
from gpu_pools.contract import SchedulingContract, pool_node_labels, scheduling_contract
from vocabulary import labels, pins
from vocabulary.catalog import load_catalog
from vocabulary.config import GpuPoolConfig

EKS_CAPACITY = {"on-demand": "ON_DEMAND", "spot": "SPOT", "reserved": "ON_DEMAND"}
# Karpenter tries higher-weight NodePools first: a pool's fallback is weighted below it, so
# pods that may run on both (gpu_pools.contract placement) land on the fallback only when the
# primary cannot launch (spot reclaimed, capacity errors, its GPU limit reached).
PRIMARY_WEIGHT = 50
FALLBACK_WEIGHT = 10
# Voluntary disruption (drift, emptiness) at most this many nodes at a time: serving pools roll
# one node at a time so a model's replicas are never all reloading at once.
DISRUPTION_BUDGET = {"serving": "1", "training": "10%", "batch": "10%"}
# Bottlerocket keeps container images on its second (data) volume; AL2023 on the root volume.
IMAGE_VOLUME_DEVICE = {
    "AL2023_x86_64_NVIDIA": "/dev/xvda",
    "BOTTLEROCKET_x86_64_NVIDIA": "/dev/xvdb",
}


@dataclass
class GpuNodePoolArgs:
    pool: GpuPoolConfig
    cluster_name: pulumi.Input[str]
    tags: dict[str, str]
    k8s_provider: k8s.Provider | None = None
    node_role: aws.iam.Role | None = None  # managed
    subnet_ids: list[pulumi.Input[str]] = field(default_factory=list)  # managed
    security_group_id: pulumi.Input[str] | None = None  # managed + efa
    karpenter_node_role_name: pulumi.Input[str] | None = None  # karpenter
    is_fallback: bool = False  # another pool names this one as its fallbackPool
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class GpuNodePool(pulumi.ComponentResource):
    contract: SchedulingContract

    def __init__(
        self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(labels.TOKEN_GPU_NODE_POOL, name, None, opts)
        pool = self._pool = args.pool
        self.contract = scheduling_contract(pool)
        self.node_labels = pool_node_labels(pool)
        self.tags = {**args.tags, "team": pool.team, "tandem-pool": pool.name}
        if pool.mechanism == "managed":
            self._managed(name, args)
        elif pool.mechanism == "karpenter":
            self._karpenter(name, args)
        self.register_outputs({"contract": self.contract.to_dict()})

    def _managed(self, name: str, args: GpuNodePoolArgs) -> None:
        pool = args.pool
        if args.node_role is None:
            raise ValueError(f"pool {pool.name}: managed node groups need the cluster's node role")
        placement = None
        subnets = list(args.subnet_ids)
        if pool.efa:
            # A cluster placement group lives in one AZ: pin the group to the first private subnet.
            placement = self._placement_group(name)
            subnets = subnets[:1]
        template = secure_launch_template(
            f"{name}-lt",
            root_volume_gib=pool.root_volume_gib,
            device_name=IMAGE_VOLUME_DEVICE[pool.ami_type],
            tags=self.tags,
            parent=self,
            efa_interfaces=efa_interfaces(pool),
            placement_group=placement,
            security_group_ids=[args.security_group_id] if args.security_group_id else [],
            capacity_reservation_id=(
                pool.capacity_reservation_ids[0] if pool.capacity_reservation_ids else None
            ),
        )
        desired = pool.desired_nodes if pool.desired_nodes is not None else pool.min_nodes
        self.node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=args.cluster_name,
            node_group_name=f"gpu-{pool.name}",
            node_role_arn=args.node_role.arn,
            subnet_ids=subnets,
            ami_type=pool.ami_type,
            capacity_type=EKS_CAPACITY[pool.capacity_type],
            instance_types=list(pool.instance_types),
            scaling_config={
                "min_size": pool.min_nodes,
                "max_size": pool.max_nodes,
                "desired_size": desired,
            },
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            taints=[
                {
                    "key": labels.GPU_TAINT_KEY,
                    "value": labels.GPU_TAINT_VALUE,
                    "effect": "NO_SCHEDULE",
                }
            ],
            labels=self.node_labels,
            update_config={"max_unavailable": 1},
            tags=self.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                # The cluster autoscaler / operators move desired size; do not fight them.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _placement_group(self, name: str) -> pulumi.Output[str]:
        """EFA wants every node of a job in one cluster placement group (one AZ, one spine)."""
        return aws.ec2.PlacementGroup(
            f"{name}-placement",
            strategy="cluster",
            tags=self.tags,
            opts=pulumi.ResourceOptions(parent=self),
        ).name

    def _karpenter(self, name: str, args: GpuNodePoolArgs) -> None:
        pool = args.pool
        if args.k8s_provider is None or args.karpenter_node_role_name is None:
            raise ValueError(f"pool {pool.name}: karpenter pools need the controller installed")
        child = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=args.depends_on
        )
        catalog = load_catalog()
        inst = catalog.get(pool.primary_instance)
        families = sorted({catalog.get(t).family for t in pool.instance_types})
        node_class = k8s.apiextensions.CustomResource(
            f"{name}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": pool.name, "labels": labels.platform_labels()},
            spec={
                "role": args.karpenter_node_role_name,
                "amiSelectorTerms": [{"alias": pins.KARPENTER_AMI_ALIAS[pool.ami_type]}],
                "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": args.cluster_name}}],
                "securityGroupSelectorTerms": [
                    {"tags": {"karpenter.sh/discovery": args.cluster_name}}
                ],
                "metadataOptions": {
                    "httpEndpoint": "enabled",
                    "httpTokens": "required",
                    "httpPutResponseHopLimit": 1,
                    "httpProtocolIPv6": "disabled",
                },
                "blockDeviceMappings": [
                    {
                        "deviceName": IMAGE_VOLUME_DEVICE[pool.ami_type],
                        "ebs": {
                            "volumeSize": f"{pool.root_volume_gib}Gi",
                            "volumeType": "gp3",
                            "encrypted": True,
                            "deleteOnTermination": True,
                        },
                    }
                ],
                **(
                    {
                        "capacityReservationSelectorTerms": [
                            {"id": rid} for rid in pool.capacity_reservation_ids
                        ]
                    }
                    if pool.capacity_reservation_ids
                    else {}
                ),
                **(self._karpenter_efa(name) if pool.efa else {}),
                "tags": self.tags,
            },
            opts=child,
        )
        self.node_pool = k8s.apiextensions.CustomResource(
            f"{name}-nodepool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": pool.name, "labels": labels.platform_labels()},
            spec={
                "template": {
                    "metadata": {"labels": self.node_labels},
                    "spec": {
                        "nodeClassRef": {
                            "group": "karpenter.k8s.aws",
                            "kind": "EC2NodeClass",
                            "name": pool.name,
                        },
                        "requirements": [
                            {
                                "key": "karpenter.k8s.aws/instance-family",
                                "operator": "In",
                                "values": families,
                            },
                            {
                                "key": "node.kubernetes.io/instance-type",
                                "operator": "In",
                                "values": list(pool.instance_types),
                            },
                            {
                                "key": "karpenter.sh/capacity-type",
                                "operator": "In",
                                "values": [pool.capacity_type],
                            },
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                        ],
                        "taints": [
                            {
                                "key": labels.GPU_TAINT_KEY,
                                "value": labels.GPU_TAINT_VALUE,
                                "effect": labels.GPU_TAINT_EFFECT,
                            }
                        ],
                        "expireAfter": pool.expire_after,
                        "terminationGracePeriod": pool.termination_grace_period,
                    },
                },
                "weight": FALLBACK_WEIGHT if args.is_fallback else PRIMARY_WEIGHT,
                "limits": {
                    labels.GPU_RESOURCE: str(pool.max_nodes * inst.gpus),
                    "cpu": str(pool.max_nodes * inst.vcpu),
                },
                "disruption": {
                    # Serving pools only give back empty nodes: consolidating a node that holds
                    # a model replica drops its in-flight requests and its warm KV cache.
                    "consolidationPolicy": (
                        "WhenEmpty" if pool.workload == "serving" else "WhenEmptyOrUnderutilized"
                    ),
                    "consolidateAfter": pool.consolidate_after,
                    "budgets": [{"nodes": DISRUPTION_BUDGET[pool.workload]}],
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.k8s_provider,
                depends_on=[node_class, *args.depends_on],
            ),
        )

    def _karpenter_efa(self, name: str) -> dict:
        """EC2NodeClass fields for EFA: one EFA-only interface per network card beside the
        primary ENI (Karpenter's networkInterfaces), in a cluster placement group."""
        cards = efa_interfaces(self._pool)
        interfaces = [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}]
        interfaces += [
            {
                "networkCardIndex": card,
                "deviceIndex": 1 if card == 0 else 0,
                "interfaceType": "efa-only",
            }
            for card in range(cards)
        ]
        return {
            "networkInterfaces": interfaces,
            "placementGroupSelector": {"name": self._placement_group(name)},
        }


def efa_interfaces(pool: GpuPoolConfig) -> int:
    """EFA devices per node for an EFA pool: the fewest any of its instance types takes, so
    every type the pool may launch accepts the interface layout."""
    if not pool.efa:
        return 0
    catalog = load_catalog()
    return min(catalog.get(t).efa_interfaces for t in pool.instance_types)
