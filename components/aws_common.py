"""AWS building blocks more than one component needs: roles, launch templates, buckets, tags.

Kept in one place so the system node group and every GPU node group get the same security
baseline (IMDSv2, encrypted gp3), every bucket the same protections, and a policy fix lands
everywhere at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

AWS_MANAGED = "arn:aws:iam::aws:policy/"
NODE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",  # pull only: nodes never list or describe repositories
    "AmazonSSMManagedInstanceCore",
)


def service_role(
    name: str,
    service: str,
    managed_policies: Sequence[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """An IAM role assumable by one AWS service, with AWS-managed policies attached."""
    role = aws.iam.Role(
        name,
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    for policy in managed_policies:
        aws.iam.RolePolicyAttachment(
            f"{name}-{policy.lower().replace('_', '-')}",
            role=role.name,
            policy_arn=AWS_MANAGED + policy,
            opts=pulumi.ResourceOptions(parent=role),
        )
    return role


def irsa_role(
    name: str,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer_url: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """A role only one Kubernetes service account can assume (IAM Roles for Service Accounts)."""

    def trust(args: list[str]) -> str:
        arn, url = args
        issuer = url.removeprefix("https://")
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": arn},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {
                            "StringEquals": {
                                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                f"{issuer}:aud": "sts.amazonaws.com",
                            }
                        },
                    }
                ],
            }
        )

    return aws.iam.Role(
        name,
        assume_role_policy=pulumi.Output.all(oidc_provider_arn, oidc_issuer_url).apply(trust),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def secure_launch_template(
    name: str,
    *,
    root_volume_gib: int,
    tags: dict[str, str],
    parent: pulumi.Resource,
    device_name: str = "/dev/xvda",
    efa_interfaces: int = 0,
    placement_group: pulumi.Input[str] | None = None,
    security_group_ids: Sequence[pulumi.Input[str]] = (),
    capacity_reservation_id: str | None = None,
) -> aws.ec2.LaunchTemplate:
    """The node baseline: IMDSv2 only with hop limit 1 (pods cannot borrow the node's
    credentials), an encrypted gp3 volume sized for multi-GB model images, tags on instances
    and volumes so cost reports attribute them."""
    network_interfaces = None
    if efa_interfaces:
        # EC2's layout for multi-card EFA instances (p5.48xlarge: 32 cards): the primary ENI on
        # card 0 is an EFA interface, every further card gets one EFA-only interface (device 1),
        # so NCCL sees the whole fabric rather than one card's share of it.
        network_interfaces = [
            {
                "network_card_index": card,
                "device_index": 0 if card == 0 else 1,
                "interface_type": "efa" if card == 0 else "efa-only",
                "delete_on_termination": "true",
                "security_groups": list(security_group_ids),
            }
            for card in range(efa_interfaces)
        ]
    return aws.ec2.LaunchTemplate(
        name,
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",
            "http_put_response_hop_limit": 1,
            "instance_metadata_tags": "disabled",
        },
        block_device_mappings=[
            {
                "device_name": device_name,
                "ebs": {
                    "volume_size": root_volume_gib,
                    "volume_type": "gp3",
                    "iops": 3000,
                    "throughput": 250,
                    "encrypted": "true",
                    "delete_on_termination": "true",
                },
            }
        ],
        network_interfaces=network_interfaces,
        placement={"group_name": placement_group} if placement_group else None,
        capacity_reservation_specification=(
            {"capacity_reservation_target": {"capacity_reservation_id": capacity_reservation_id}}
            if capacity_reservation_id
            else None
        ),
        tag_specifications=[
            {"resource_type": "instance", "tags": tags},
            {"resource_type": "volume", "tags": tags},
        ],
        update_default_version=True,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def private_bucket(
    name: str,
    *,
    tags: dict[str, str],
    parent: pulumi.Resource,
    bucket: str | None = None,
    bucket_prefix: str | None = None,
) -> aws.s3.Bucket:
    """A Tandem bucket: never public, SSE-KMS (with a bucket key: one KMS call per object, not per
    request), versioned (a bad write or a deletion can be undone), ACLs off, and deleted with the
    stack only when empty. The policy pack's S3 rules check each of these on every bucket, so one
    place builds them all. `bucket` names it exactly; otherwise AWS adds a suffix to the prefix."""
    b = aws.s3.Bucket(
        name,
        bucket=bucket,
        bucket_prefix=None if bucket else bucket_prefix,
        force_destroy=False,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    on_bucket = pulumi.ResourceOptions(parent=b)
    aws.s3.BucketPublicAccessBlock(
        f"{name}-pab",
        bucket=b.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=on_bucket,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-sse",
        bucket=b.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                "bucket_key_enabled": True,
            }
        ],
        opts=on_bucket,
    )
    aws.s3.BucketVersioning(
        f"{name}-versioning",
        bucket=b.id,
        versioning_configuration={"status": "Enabled"},
        opts=on_bucket,
    )
    aws.s3.BucketOwnershipControls(
        f"{name}-ownership",
        bucket=b.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=on_bucket,
    )
    return b
