"""The VPC an EKS cluster lives in: private subnets for nodes, public ones for load balancers.

Nodes (GPU nodes included) never get public IPs; egress goes through NAT, except S3 (model
weights), which a free gateway endpoint serves. Private subnets carry the
`karpenter.sh/discovery` tag so Karpenter's EC2NodeClass finds them by selector.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from vocabulary import labels
from vocabulary.config import NetworkConfig


@dataclass
class NetworkArgs:
    config: NetworkConfig
    region: str
    cluster_name: str
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_NETWORK, name, None, opts)
        cfg, tags = args.config, args.tags
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=tags,
            opts=child,
        )
        # Split the VPC into /20s: the first az_count for public, the next for private subnets.
        blocks = list(ipaddress.ip_network(cfg.vpc_cidr).subnets(new_prefix=20))
        zones = [f"{args.region}{letter}" for letter in string.ascii_lowercase[: cfg.az_count]]
        self.public_subnet_ids, self.private_subnet_ids = [], []
        nat_ids: list[pulumi.Output[str]] = []
        private_route_tables: list[pulumi.Output[str]] = []
        for i, zone in enumerate(zones):
            public = aws.ec2.Subnet(
                f"{name}-public-{zone}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[i]),
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "kubernetes.io/role/elb": "1", "Name": f"public-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}",
                subnet_id=public.id,
                route_table_id=public_rt.id,
                opts=child,
            )
            self.public_subnet_ids.append(public.id)
            if i == 0 or not cfg.single_nat_gateway:
                eip = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags, opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{zone}",
                    subnet_id=public.id,
                    allocation_id=eip.id,
                    tags=tags,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
                nat_ids.append(nat.id)
            private = aws.ec2.Subnet(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[cfg.az_count + i]),
                availability_zone=zone,
                tags={
                    **tags,
                    "kubernetes.io/role/internal-elb": "1",
                    "karpenter.sh/discovery": args.cluster_name,
                    "Name": f"private-{zone}",
                },
                opts=child,
            )
            private_rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat_ids[-1]}],
                tags=tags,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}",
                subnet_id=private.id,
                route_table_id=private_rt.id,
                opts=child,
            )
            private_route_tables.append(private_rt.id)
            self.private_subnet_ids.append(private.id)
        # S3 through a gateway endpoint: model weights stream from S3 to GPU nodes, and through
        # NAT every GB would cost NAT data processing ($0.045/GB); the endpoint is free.
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=private_route_tables,
            tags=tags,
            opts=child,
        )
        self.vpc_id = vpc.id
        self.register_outputs(
            {
                "vpcId": vpc.id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )
