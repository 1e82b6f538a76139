"""The Karpenter controller: IRSA role, interruption queue and the pinned Helm chart.

Installed once per cluster when any pool uses mechanism `karpenter`; each such pool then only
adds a NodePool and an EC2NodeClass. The interruption queue lets Karpenter drain a spot GPU node
in its two-minute notice instead of losing in-flight requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role
from components.helm import pinned_release
from vocabulary import labels, pins

SERVICE_ACCOUNT = "karpenter"
# The EventBridge rules of Karpenter 1.14's reference CloudFormation (getting-started
# cloudformation.yaml): every event that tells Karpenter a node is about to go away.
INTERRUPTION_EVENTS = {
    "spot-interruption": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Spot Instance Interruption Warning"],
    },
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
    },
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "capacity-reservation-interruption": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
    },
}


def _stmt(sid: str, actions: list[str] | str, resources: list[str] | str, **condition) -> dict:
    out: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def controller_policy(
    cluster_name: str, region: str, account: str, queue_arn: str, node_role_arn: str
) -> str:
    """The controller's permissions: Karpenter 1.14's reference policy (the five managed
    policies of its getting-started CloudFormation, statement for statement), scoped by the tags
    Karpenter puts on what it creates rather than by region alone. docs/gpu-pools.md compares
    it line by line."""
    ec2 = f"arn:aws:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_tags = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
    }
    nodepool = {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    launched = [
        f"{ec2}:*:{kind}/*"
        for kind in (
            "fleet",
            "instance",
            "volume",
            "network-interface",
            "launch-template",
            "spot-instances-request",
        )
    ]
    profiles = f"arn:aws:iam::{account}:instance-profile/*"
    region_tag = {"aws:ResourceTag/topology.kubernetes.io/region": region}
    nodeclass = {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}
    statements = [
        # NodeLifecyclePolicy
        _stmt(
            "AllowScopedEC2InstanceAccessActions",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            [
                f"{ec2}::image/*",
                f"{ec2}::snapshot/*",
                f"{ec2}:*:security-group/*",
                f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*",
                f"{ec2}:*:placement-group/*",
            ],
        ),
        _stmt(
            "AllowScopedEC2LaunchTemplateAccessActions",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            f"{ec2}:*:launch-template/*",
            StringEquals=owned,
            StringLike={"aws:ResourceTag/karpenter.sh/nodepool": "*"},
        ),
        _stmt(
            "AllowScopedEC2InstanceActionsWithTags",
            ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            launched,
            StringEquals=request_tags,
            StringLike=nodepool,
        ),
        _stmt(
            "AllowScopedResourceCreationTagging",
            "ec2:CreateTags",
            launched,
            StringEquals={
                **request_tags,
                "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
            },
            StringLike=nodepool,
        ),
        _stmt(
            "AllowScopedResourceTagging",
            "ec2:CreateTags",
            f"{ec2}:*:instance/*",
            StringEquals=owned,
            StringLike={"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            StringEqualsIfExists={"aws:RequestTag/eks:eks-cluster-name": cluster_name},
            **{
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                }
            },
        ),
        _stmt(
            "AllowScopedDeletion",
            ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            StringEquals=owned,
            StringLike={"aws:ResourceTag/karpenter.sh/nodepool": "*"},
        ),
        # IAMIntegrationPolicy
        _stmt(
            "AllowPassingInstanceRole",
            "iam:PassRole",
            node_role_arn,
            StringEquals={"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]},
        ),
        _stmt(
            "AllowScopedInstanceProfileCreationActions",
            ["iam:CreateInstanceProfile"],
            profiles,
            StringEquals={
                **request_tags,
                "aws:RequestTag/topology.kubernetes.io/region": region,
            },
            StringLike={"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
        ),
        _stmt(
            "AllowScopedInstanceProfileTagActions",
            ["iam:TagInstanceProfile"],
            profiles,
            StringEquals={
                **owned,
                **region_tag,
                **request_tags,
                "aws:RequestTag/topology.kubernetes.io/region": region,
            },
            StringLike={**nodeclass, "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
        ),
        _stmt(
            "AllowScopedInstanceProfileActions",
            [
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            profiles,
            StringEquals={**owned, **region_tag},
            StringLike=nodeclass,
        ),
        # EKSIntegrationPolicy
        _stmt(
            "AllowAPIServerEndpointDiscovery",
            "eks:DescribeCluster",
            f"arn:aws:eks:{region}:{account}:cluster/{cluster_name}",
        ),
        # InterruptionPolicy
        _stmt(
            "AllowInterruptionQueueActions",
            ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            queue_arn,
        ),
        # ZonalShiftPolicy
        _stmt(
            "AllowZonalShiftStatusReadOnly",
            ["arc-zonal-shift:GetManagedResource"],
            "*",
            StringEquals={
                "arc-zonal-shift:ResourceIdentifier": (
                    f"arn:aws:eks:{region}:{account}:cluster/{cluster_name}"
                )
            },
        ),
        # ResourceDiscoveryPolicy
        _stmt(
            "AllowRegionalReadActions",
            [
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
            ],
            "*",
            StringEquals={"aws:RequestedRegion": region},
        ),
        _stmt(
            "AllowSSMReadActions",
            "ssm:GetParameter",
            f"arn:aws:ssm:{region}::parameter/aws/service/*",
        ),
        _stmt("AllowPricingReadActions", "pricing:GetProducts", "*"),
        _stmt("AllowUnscopedInstanceProfileListAction", "iam:ListInstanceProfiles", "*"),
        _stmt("AllowInstanceProfileReadActions", "iam:GetInstanceProfile", profiles),
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def queue_policy(queue_arn: str) -> str:
    """EventBridge and SQS may send; nothing may talk to the queue over plain HTTP."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "EC2InterruptionPolicy",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                },
                {
                    "Sid": "DenyHTTP",
                    "Effect": "Deny",
                    "Action": "sqs:*",
                    "Resource": queue_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": False}},
                    "Principal": "*",
                },
            ],
        }
    )


@dataclass
class KarpenterArgs:
    cluster_name: pulumi.Input[str]
    region: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    node_role: aws.iam.Role
    k8s_provider: k8s.Provider
    tags: dict[str, str]


class Karpenter(pulumi.ComponentResource):
    """Exposes `node_role_name` for EC2NodeClasses and `release` for dependency ordering."""

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_KARPENTER, name, None, opts)
        tags = args.tags
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(
            f"{name}-interruption",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption",
            queue_url=queue.url,
            policy=queue.arn.apply(queue_policy),
            opts=child,
        )
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{event}", event_pattern=json.dumps(pattern), tags=tags, opts=child
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{event}",
                rule=rule.name,
                arn=queue.arn,
                opts=pulumi.ResourceOptions(parent=rule),
            )
        role = irsa_role(
            f"{name}-controller",
            args.oidc_provider_arn,
            args.oidc_issuer_url,
            labels.NS_KARPENTER,
            SERVICE_ACCOUNT,
            tags,
            self,
        )
        account = aws.get_caller_identity_output().account_id
        aws.iam.RolePolicy(
            f"{name}-controller",
            role=role.id,
            policy=pulumi.Output.all(
                args.cluster_name, account, queue.arn, args.node_role.arn
            ).apply(lambda a: controller_policy(a[0], args.region, a[1], a[2], a[3])),
            opts=pulumi.ResourceOptions(parent=role),
        )
        # Nodes Karpenter launches join through an access entry for the shared node role.
        aws.eks.AccessEntry(
            f"{name}-nodes",
            cluster_name=args.cluster_name,
            principal_arn=args.node_role.arn,
            type="EC2_LINUX",
            tags=tags,
            opts=child,
        )
        self.release = pinned_release(
            f"{name}-controller",
            pins.KARPENTER,
            namespace=labels.NS_KARPENTER,
            create_namespace=True,
            values={
                "settings": {
                    "clusterName": args.cluster_name,
                    "interruptionQueue": queue.name,
                },
                "serviceAccount": {
                    "name": SERVICE_ACCOUNT,
                    "annotations": {"eks.amazonaws.com/role-arn": role.arn},
                },
                "controller": {
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }
                },
                "replicas": 2,
                # Never schedule the controller on a node it manages.
                "nodeSelector": {labels.LABEL_WORKLOAD: "system"},
            },
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )
        self.node_role_name = args.node_role.name
        self.register_outputs({"interruptionQueue": queue.name, "controllerRoleArn": role.arn})
