"""The Karpenter controller: IRSA role, interruption queue and the pinned Helm chart.

Installed once per cluster when any pool uses mechanism `karpenter`; each such pool then only
adds a NodePool and an EC2NodeClass. The interruption queue lets Karpenter drain a spot GPU node
in its two-minute notice instead of losing in-flight requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role
from components.helm import pinned_release
from vocabulary import labels, pins

SERVICE_ACCOUNT = "karpenter"
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
}


def controller_policy(cluster_name: str, region: str, queue_arn: str, node_role_arn: str) -> str:
    """The controller's permissions, scoped to this cluster's tagged resources where EC2 allows."""
    tagged = {"StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}}
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Read",
                    "Effect": "Allow",
                    "Action": [
                        "ec2:DescribeAvailabilityZones",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstances",
                        "ec2:DescribeInstanceTypeOfferings",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplates",
                        "ec2:DescribeSecurityGroups",
                        "ec2:DescribeSpotPriceHistory",
                        "ec2:DescribeSubnets",
                        "ec2:DescribeCapacityReservations",
                        "pricing:GetProducts",
                        "ssm:GetParameter",
                        "eks:DescribeCluster",
                        "iam:GetInstanceProfile",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "Launch",
                    "Effect": "Allow",
                    "Action": [
                        "ec2:RunInstances",
                        "ec2:CreateFleet",
                        "ec2:CreateLaunchTemplate",
                        "ec2:CreateTags",
                    ],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
                },
                {
                    "Sid": "Terminate",
                    "Effect": "Allow",
                    "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                    "Resource": "*",
                    "Condition": tagged,
                },
                {
                    "Sid": "InstanceProfiles",
                    "Effect": "Allow",
                    "Action": [
                        "iam:CreateInstanceProfile",
                        "iam:TagInstanceProfile",
                        "iam:AddRoleToInstanceProfile",
                        "iam:RemoveRoleFromInstanceProfile",
                        "iam:DeleteInstanceProfile",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "PassNodeRole",
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": node_role_arn,
                },
                {
                    "Sid": "Interruption",
                    "Effect": "Allow",
                    "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                    "Resource": queue_arn,
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
            policy=queue.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {
                                    "Service": ["events.amazonaws.com", "sqs.amazonaws.com"]
                                },
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                            }
                        ],
                    }
                )
            ),
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
        aws.iam.RolePolicy(
            f"{name}-controller",
            role=role.id,
            policy=pulumi.Output.all(args.cluster_name, queue.arn, args.node_role.arn).apply(
                lambda a: controller_policy(a[0], args.region, a[1], a[2])
            ),
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
