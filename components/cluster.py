"""The Kubernetes cluster every other component runs on, and the provider that reaches it.

Two modes behind one component. `eks`: a private-by-default EKS control plane built from
pulumi-aws primitives (KMS secrets encryption, control-plane logs, OIDC for IRSA, API access
entries, a small on-demand system node group). `existing`: any conformant cluster reached
through a kubeconfig, so teams that already run Kubernetes adopt the rest of the platform.

Why pulumi-aws primitives and not pulumi-eks: pulumi-eks is a multi-language component whose
children are created inside its own provider plugin, so under the mock engine (the only engine
on the build machines) they are invisible and cannot be asserted or policy-checked; it also
shells out to kubectl/aws-cli for several features. Primitives keep every resource visible to
tests and to the policy pack, at the cost of ~150 lines here. See docs/architecture.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_common import NODE_POLICIES, secure_launch_template, service_role
from components.network import Network
from vocabulary import labels
from vocabulary.config import ClusterConfig

# Root CA thumbprint of the EKS OIDC endpoints (IAM ignores it for well-known providers now,
# but the API still requires a value).
EKS_OIDC_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
ACCESS_POLICIES = {
    "cluster-admin": "AmazonEKSClusterAdminPolicy",
    "admin": "AmazonEKSAdminPolicy",
    "edit": "AmazonEKSEditPolicy",
    "view": "AmazonEKSViewPolicy",
}
LOG_RETENTION_DAYS = 90


@dataclass(frozen=True)
class EksIdentity:
    """What only an EKS cluster built here has: IRSA's OIDC provider, the node role, the SG."""

    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    node_role: aws.iam.Role
    security_group_id: pulumi.Output[str]


@dataclass
class ClusterArgs:
    config: ClusterConfig
    cluster_name: str
    region: str
    tags: dict[str, str]
    network: Network | None = None  # required in eks mode


class Cluster(pulumi.ComponentResource):
    """Exposes `provider` (the Kubernetes provider everything else uses) in both modes; in eks
    mode also the OIDC provider for IRSA, the node role and the private subnets."""

    provider: k8s.Provider
    name: pulumi.Output[str] | str
    oidc_provider_arn: pulumi.Output[str] | None = None
    oidc_issuer_url: pulumi.Output[str] | None = None
    node_role: aws.iam.Role | None = None
    security_group_id: pulumi.Output[str] | None = None
    private_subnet_ids: list[pulumi.Input[str]]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_CLUSTER, name, None, opts)
        self.private_subnet_ids = []
        if args.config.mode == "existing":
            self._existing(name, args)
        else:
            self._eks(name, args)
        self.register_outputs({"name": self.name, "oidcProviderArn": self.oidc_provider_arn})

    def eks_identity(self) -> EksIdentity:
        """The EKS-only parts; asking for them on an existing cluster is a programming error
        (config validation keeps EKS-only features off existing clusters)."""
        if (
            self.oidc_provider_arn is None
            or self.oidc_issuer_url is None
            or self.node_role is None
            or self.security_group_id is None
        ):
            raise RuntimeError("this needs an EKS cluster built by Tandem (cluster.mode: eks)")
        return EksIdentity(
            self.oidc_provider_arn, self.oidc_issuer_url, self.node_role, self.security_group_id
        )

    def _existing(self, name: str, args: ClusterArgs) -> None:
        cfg = args.config
        kubeconfig = cfg.kubeconfig or ""
        path = Path(kubeconfig).expanduser()
        if "\n" not in kubeconfig and path.exists():
            kubeconfig = path.read_text()
        self.name = args.cluster_name
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.secret(kubeconfig),
            context=cfg.context,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _eks(self, name: str, args: ClusterArgs) -> None:
        cfg, tags = args.config, args.tags
        if args.network is None:
            raise ValueError("eks mode needs a Network")
        child = pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets envelope encryption for {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=LOG_RETENTION_DAYS,
            tags=tags,
            opts=child,
        )
        cluster_role = service_role(
            f"{name}-cluster-role", "eks.amazonaws.com", ["AmazonEKSClusterPolicy"], tags, self
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=cfg.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config={
                "subnet_ids": args.network.private_subnet_ids,
                "endpoint_private_access": True,
                "endpoint_public_access": cfg.endpoint_public_access,
                "public_access_cidrs": cfg.public_access_cidrs or None,
            },
            encryption_config={"resources": ["secrets"], "provider": {"key_arn": key.arn}},
            enabled_cluster_log_types=list(cfg.log_types),
            access_config={
                "authentication_mode": "API",
                "bootstrap_cluster_creator_admin_permissions": True,
            },
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        issuer = cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            thumbprint_lists=[EKS_OIDC_THUMBPRINT],
            tags=tags,
            opts=child,
        )
        for i, entry in enumerate(cfg.access_entries):
            access = aws.eks.AccessEntry(
                f"{name}-access-{i}",
                cluster_name=cluster.name,
                principal_arn=entry.principal_arn,
                type="STANDARD",
                tags=tags,
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-access-{i}",
                cluster_name=cluster.name,
                principal_arn=entry.principal_arn,
                policy_arn=f"arn:aws:eks::aws:cluster-access-policy/{ACCESS_POLICIES[entry.policy]}",
                access_scope=(
                    {"type": "namespace", "namespaces": entry.namespaces}
                    if entry.namespaces
                    else {"type": "cluster"}
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[access]),
            )
        self.node_role = service_role(
            f"{name}-node-role", "ec2.amazonaws.com", NODE_POLICIES, tags, self
        )
        system = cfg.system_node_group
        system_lt = secure_launch_template(
            f"{name}-system", root_volume_gib=50, tags=tags, parent=self
        )
        aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=args.network.private_subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=[system.instance_type],
            scaling_config={
                "min_size": system.min_nodes,
                "max_size": system.max_nodes,
                "desired_size": system.min_nodes,
            },
            launch_template={"id": system_lt.id, "version": system_lt.latest_version.apply(str)},
            update_config={"max_unavailable": 1},
            labels={labels.LABEL_WORKLOAD: "system"},
            tags=tags,
            opts=child,
        )
        self.name = cluster.name
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer_url = issuer
        self.security_group_id = cluster.vpc_config.cluster_security_group_id
        self.private_subnet_ids = list(args.network.private_subnet_ids)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.all(
                cluster.name, cluster.endpoint, cluster.certificate_authority.data
            ).apply(lambda a: _kubeconfig(a[0], a[1], a[2], args.region)),
            enable_server_side_apply=True,
            opts=child,
        )


def _kubeconfig(name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with short-lived tokens from `aws eks get-token`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
            "users": [
                {
                    "name": name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                name,
                                "--region",
                                region,
                            ],
                        }
                    },
                }
            ],
        }
    )
