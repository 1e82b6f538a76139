"""`Platform`: the composition root's one component, built from a validated `PlatformConfig`.

Order matters only through data: the network feeds the cluster, the cluster's provider and
roles feed the GPU software, Karpenter and the pools, and the pools' scheduling contracts feed
the use cases. Everything below is a child of this component, so `pulumi stack --show-urns`
and `tandem plan` show one tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.aws_common import irsa_role
from components.cluster import Cluster, ClusterArgs
from components.gateway import Gateway, GatewayArgs, GatewayKey
from components.gpu_pools.gpu_software import GpuSoftware, GpuSoftwareArgs
from components.gpu_pools.karpenter import Karpenter, KarpenterArgs
from components.gpu_pools.node_pool import GpuNodePool, GpuNodePoolArgs
from components.network import Network, NetworkArgs
from components.observability import WORKLOAD_MONITORS, Observability, ObservabilityArgs
from components.redis import ElastiCacheArgs, elasticache_redis, in_cluster_redis
from components.serving.inference_cluster import (
    GcsFaultTolerance,
    KubeRayOperator,
    KubeRayOperatorArgs,
    ModelCache,
)
from components.use_case import UseCase, UseCaseArgs, gateway_entry
from gateway.spec import routes_from_use_cases
from serving.checks import resolve_contract
from vocabulary import labels
from vocabulary.config import PlatformConfig
from vocabulary.usecase import UseCaseSpec


@dataclass
class PlatformArgs:
    config: PlatformConfig
    use_cases: list[UseCaseSpec] = field(default_factory=list)
    # key id -> the raw API key (a Pulumi secret, read by the program from stack config)
    gateway_keys: dict[str, pulumi.Input[str]] = field(default_factory=dict)


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

        self.karpenter: Karpenter | None = None
        if any(p.mechanism == "karpenter" for p in cfg.gpu_pools):
            eks = self.cluster.eks_identity()  # config allows Karpenter pools on EKS only
            self.karpenter = Karpenter(
                "karpenter",
                KarpenterArgs(
                    cluster_name=self.cluster.name,
                    region=cfg.region,
                    oidc_provider_arn=eks.oidc_provider_arn,
                    oidc_issuer_url=eks.oidc_issuer_url,
                    node_role=eks.node_role,
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
                    depends_on=(
                        [self.karpenter.release]
                        if self.karpenter and pool.mechanism == "karpenter"
                        else []
                    ),
                ),
                opts=child,
            )

        # Workloads that bring their own monitors (RayService PodMonitors, the gateway's
        # ServiceMonitor) are not monitored twice: double scraping double-counts every counter.
        entries = [e for e in map(gateway_entry, args.use_cases) if e is not None]
        with_gateway = cfg.gateway.enabled and bool(entries)  # nothing to route without a use case
        owned = {"ray", "vllm"} if args.use_cases else set()
        owned |= {"gateway"} if with_gateway else set()
        self.observability = None
        if cfg.observability.enabled:
            self.observability = Observability(
                "observability",
                ObservabilityArgs(
                    config=cfg.observability,
                    pools=list(cfg.gpu_pools),
                    budget=cfg.budget,
                    k8s_provider=provider,
                    # the GPU operator runs its own DCGM exporter
                    dcgm_exporter=cfg.gpu_software.mode != "gpu-operator",
                    monitors=tuple(m for m in WORKLOAD_MONITORS if m not in owned),
                ),
                opts=child,
            )

        self.gateway = None
        if with_gateway:
            self.gateway = Gateway(
                "gateway",
                GatewayArgs(
                    routes=routes_from_use_cases(entries),
                    config=cfg.gateway,
                    keys=[
                        GatewayKey(
                            id=k.id,
                            team=k.team,
                            key=args.gateway_keys[k.id],
                            models=list(k.models),
                            rpm=k.rpm,
                            tpm=k.tpm,
                        )
                        for k in cfg.gateway.keys
                    ],
                    k8s_provider=provider,
                    elasticache=(
                        ElastiCacheArgs(
                            subnet_ids=self.cluster.private_subnet_ids,
                            security_group_ids=[self.cluster.eks_identity().security_group_id],
                            tags=tags,
                        )
                        if cfg.gateway.redis == "elasticache"
                        else None
                    ),
                    monitoring=cfg.observability.enabled,
                ),
                opts=child,
            )

        self.use_cases: dict[str, UseCase] = {}
        if args.use_cases:
            self.kuberay = KubeRayOperator(
                "kuberay", KubeRayOperatorArgs(k8s_provider=provider), opts=child
            )
            gcs_ft = self._gcs_fault_tolerance(cfg, tags) if cfg.environment == "prod" else None
            contracts = {name: p.contract for name, p in self.pools.items()}
            for spec in args.use_cases:
                self.use_cases[spec.name] = UseCase(
                    f"usecase-{spec.name}",
                    UseCaseArgs(
                        use_case=spec,
                        contract=resolve_contract(spec, contracts),
                        k8s_provider=provider,
                        environment=cfg.environment,
                        operator=self.kuberay,
                        model_cache=self._model_cache(spec, tags),
                        gcs_ft=gcs_ft,
                    ),
                    opts=child,
                )

        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "pools": {name: p.contract.to_dict() for name, p in self.pools.items()},
            }
        )

    def _gcs_fault_tolerance(self, cfg: PlatformConfig, tags: dict[str, str]) -> GcsFaultTolerance:
        """Prod keeps Ray's GCS in Redis so a head-pod restart does not drop the Serve apps:
        ElastiCache on EKS, an in-cluster Redis (reachable only from Ray head pods) otherwise."""
        if self.network is not None:
            url = elasticache_redis(
                "ray-gcs",
                ElastiCacheArgs(
                    subnet_ids=self.cluster.private_subnet_ids,
                    security_group_ids=[self.cluster.eks_identity().security_group_id],
                    tags=tags,
                ),
                description="Ray GCS fault tolerance for Tandem inference clusters",
                parent=self,
            )
        else:
            url = in_cluster_redis(
                "ray-gcs",
                namespace=labels.NS_SERVING,
                component="ray-gcs",
                object_labels=labels.platform_labels(**{labels.LABEL_COMPONENT: "ray-gcs"}),
                clients=[{"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
                opts=pulumi.ResourceOptions(
                    parent=self, provider=self.cluster.provider, depends_on=[self.kuberay]
                ),
            )
        # KubeRay takes host:port (plain) or a rediss:// URL (TLS); no database suffix.
        return GcsFaultTolerance(
            redis_address=url.apply(lambda u: u.removeprefix("redis://").rsplit("/", 1)[0])
        )

    def _model_cache(self, spec: UseCaseSpec, tags: dict[str, str]) -> ModelCache:
        """On EKS, weights stream from S3 with a role only this use case's Ray pods can assume,
        limited to reading the buckets its deployments name."""
        buckets = sorted(
            {
                d.source.removeprefix("s3://").split("/", 1)[0]
                for d in spec.deployments
                if d.source.startswith("s3://")
            }
        )
        if not buckets or self.network is None:  # IRSA needs the EKS OIDC provider
            return ModelCache()
        eks = self.cluster.eks_identity()
        role = irsa_role(
            f"usecase-{spec.name}-models",
            eks.oidc_provider_arn,
            eks.oidc_issuer_url,
            labels.NS_SERVING,
            f"{spec.name}-ray",
            {**tags, "use-case": spec.name, "team": spec.team},
            self,
        )
        aws.iam.RolePolicy(
            f"usecase-{spec.name}-models",
            role=role.id,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:ListBucket"],
                            "Resource": [
                                arn
                                for b in buckets
                                for arn in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")
                            ],
                        }
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(parent=role),
        )
        return ModelCache(kind="s3", role_arn=role.arn)
