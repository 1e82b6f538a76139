"""`Platform`: the composition root's one component, built from a validated `PlatformConfig`.

Order matters only through data: the network feeds the cluster, the cluster's provider and
roles feed the GPU software, Karpenter and the pools, and the pools' scheduling contracts feed
the use cases. Everything below is a child of this component, so `pulumi stack --show-urns`
and `tandem plan` show one tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.cluster import Cluster, ClusterArgs
from components.network import Network, NetworkArgs
from gpu_pools.gpu_software import GpuSoftware, GpuSoftwareArgs
from gpu_pools.karpenter import Karpenter, KarpenterArgs
from gpu_pools.node_pool import GpuNodePool, GpuNodePoolArgs
from tandem import labels
from tandem.config import PlatformConfig


@dataclass
class PlatformArgs:
    config: PlatformConfig


class Platform(pulumi.ComponentResource):
    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_PLATFORM, name, None, opts)
        cfg = args.config
        tags = cfg.base_tags()
        child = pulumi.ResourceOptions(parent=self)

        self.network = None
        if cfg.cluster.mode == "eks":
            self.network = Network(
                "network",
                NetworkArgs(cfg.network, cfg.region, cfg.cluster_name, tags),
                opts=child,
            )
        self.cluster = Cluster(
            "cluster",
            ClusterArgs(cfg.cluster, cfg.cluster_name, cfg.region, tags, self.network),
            opts=child,
        )
        provider = self.cluster.provider

        self.gpu_software = None
        if cfg.gpu_pools:
            self.gpu_software = GpuSoftware(
                "gpu-software", GpuSoftwareArgs(cfg.gpu_software, provider), opts=child
            )

        self.karpenter = None
        if any(p.mechanism == "karpenter" for p in cfg.gpu_pools):
            self.karpenter = Karpenter(
                "karpenter",
                KarpenterArgs(
                    cluster_name=self.cluster.name,
                    region=cfg.region,
                    oidc_provider_arn=self.cluster.oidc_provider_arn,
                    oidc_issuer_url=self.cluster.oidc_issuer_url,
                    node_role=self.cluster.node_role,
                    k8s_provider=provider,
                    tags=tags,
                ),
                opts=child,
            )

        self.pools: dict[str, GpuNodePool] = {}
        for pool in cfg.gpu_pools:
            self.pools[pool.name] = GpuNodePool(
                f"pool-{pool.name}",
                GpuNodePoolArgs(
                    pool=pool,
                    cluster_name=self.cluster.name,
                    tags=tags,
                    k8s_provider=provider,
                    node_role=self.cluster.node_role,
                    subnet_ids=self.cluster.private_subnet_ids,
                    security_group_id=self.cluster.security_group_id,
                    karpenter_node_role_name=(
                        self.karpenter.node_role_name if self.karpenter else None
                    ),
                    depends_on=[self.karpenter.release] if pool.mechanism == "karpenter" else [],
                ),
                opts=child,
            )

        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "pools": {name: p.contract.to_dict() for name, p in self.pools.items()},
            }
        )
