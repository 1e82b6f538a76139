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
import pulumi_kubernetes as k8s

from components.aws_common import irsa_role
from components.cluster import Cluster, ClusterArgs
from components.drift import DriftMonitor, DriftMonitorArgs
from components.feature_store import FeatureStore, FeatureStoreArgs
from components.gateway import Gateway, GatewayArgs, GatewayKey
from components.gpu_pools.gpu_software import GpuSoftware, GpuSoftwareArgs
from components.gpu_pools.karpenter import Karpenter, KarpenterArgs
from components.gpu_pools.node_pool import GpuNodePool, GpuNodePoolArgs
from components.images import Images, ImagesArgs
from components.lifecycle import (
    AwsRegistryArgs,
    ModelRegistry,
    ModelRegistryArgs,
    RolloutController,
    RolloutControllerArgs,
)
from components.network import Network, NetworkArgs
from components.observability import WORKLOAD_MONITORS, Observability, ObservabilityArgs
from components.pipelines import (
    FILES_SERVICE_ACCOUNT,
    WEBHOOK_SECRET_ENV,
    WORKER_SELECTOR,
    BatchStorage,
    BatchStorageArgs,
    BatchWorkers,
    BatchWorkersArgs,
    EksIdentity,
    Keda,
    KedaArgs,
    batch_section,
)
from components.redis import ElastiCacheArgs, elasticache_redis, in_cluster_redis
from components.serving.inference_cluster import (
    HF_TOKEN_KEY,
    HF_TOKEN_SECRET,
    GcsFaultTolerance,
    KubeRayOperator,
    KubeRayOperatorArgs,
    ModelCache,
    label_value,
)
from components.tracing import Tracing, TracingArgs, routes_tracing, serve_env
from components.use_case import UseCase, UseCaseArgs, gateway_entry
from features.repo import Repo
from gateway.spec import provider_key_env, routes_from_use_cases, with_assistants
from observability.rules import DeploymentSlo
from serving.checks import CheckResult, resolve_contract
from vocabulary import labels
from vocabulary.config import PlatformConfig, image_services
from vocabulary.features import FeatureRead
from vocabulary.usecase import UseCaseSpec


@dataclass
class PlatformArgs:
    config: PlatformConfig
    use_cases: list[UseCaseSpec] = field(default_factory=list)
    # key id -> the raw API key (a Pulumi secret, read by the program from stack config)
    gateway_keys: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    # use case -> its plan-time check results, when the caller already ran them (tandem plan)
    checks: dict[str, list[CheckResult]] | None = None
    # alert receiver -> its credential (a Pulumi secret read by the program from stack config)
    alerting_secrets: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    # assistant route apiKeySecret -> the provider's API key (a Pulumi secret, tandem:providerKey-*)
    provider_keys: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    hf_token: pulumi.Input[str] | None = None  # tandem:huggingFaceToken, for gated Hub models
    # tandem:batchWebhookSecret (whsec_...): signs async jobs' webhooks; unset, none are sent
    batch_webhook_secret: pulumi.Input[str] | None = None
    # tandem:registryDbPassword: the model registry's RDS master password (EKS mode)
    registry_db_password: pulumi.Input[str] | None = None
    # tandem:tracingSecret: the trace backend's (Phoenix's) secrets are derived from it
    tracing_secret: pulumi.Input[str] | None = None
    # the feature projects as Feast plans them and each use case's resolved `features:`
    # (tandem.stack.plan_features): the FeatureStore deploys the first, the gateway reads the
    # second
    feature_repos: dict[str, Repo] = field(default_factory=dict)
    feature_reads: dict[str, FeatureRead] = field(default_factory=dict)


class Platform(pulumi.ComponentResource):
    """The whole platform, built in the order its data flows (each step a method below)."""

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_PLATFORM, name, None, opts)
        self.config = cfg = args.config
        self.tags = cfg.base_tags()
        self._webhooks = False  # set by _gateway: async jobs' webhooks are signed and sent
        self._alerting_secrets = args.alerting_secrets
        self.network = self._network()
        self.cluster = self._cluster()
        self.gpu_software = self._gpu_software()
        self.karpenter = self._karpenter()
        self.pools = self._pools()
        routes = [
            e
            for uc in args.use_cases
            if (e := gateway_entry(uc, features=args.feature_reads.get(uc.name))) is not None
        ]
        with_gateway = cfg.gateway.enabled and bool(routes)  # nothing to route without a use case
        self.images = self._images(image_services(cfg, args.use_cases))
        self.feature_store = self._feature_store(args)
        self.observability = self._observability(args.use_cases, with_gateway)
        self.tracing = self._tracing(args.tracing_secret) if cfg.tracing.enabled else None
        rollouts = any(uc.rollout is not None for uc in args.use_cases)
        with_batch = with_gateway and cfg.batch.enabled
        self.batch_storage = self._batch_storage() if with_batch else None
        self.gateway = (
            self._gateway(
                routes,
                args.gateway_keys,
                args.provider_keys,
                rollouts,
                args.use_cases,
                args.batch_webhook_secret,
            )
            if with_gateway
            else None
        )
        self.batch = self._batch_workers() if self.gateway and self.batch_storage else None
        self.registry = self._registry(args.registry_db_password) if cfg.registry.enabled else None
        self.use_cases = self._use_cases(args.use_cases, args.checks or {}, args.hf_token)
        self.rollout_controller = self._rollout_controller() if rollouts else None
        monitored = [uc for uc in args.use_cases if uc.monitoring is not None]
        self.drift = self._drift_monitor(monitored) if monitored and self.gateway else None
        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "pools": {name: p.contract.to_dict() for name, p in self.pools.items()},
            }
        )

    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _network(self) -> Network | None:
        """The VPC, on EKS only (an existing cluster brings its own network)."""
        cfg = self.config
        if cfg.cluster.mode != "eks":
            return None
        return Network(
            "network",
            NetworkArgs(cfg.network, cfg.region, cfg.cluster_name, self.tags),
            opts=self._child(),
        )

    def _cluster(self) -> Cluster:
        """EKS, or the existing cluster's kubeconfig: the Kubernetes provider everything uses."""
        cfg = self.config
        return Cluster(
            "cluster",
            ClusterArgs(cfg.cluster, cfg.cluster_name, cfg.region, self.tags, self.network),
            opts=self._child(),
        )

    def _gpu_software(self) -> GpuSoftware | None:
        """The device plugin or GPU operator, once there is a GPU pool to make schedulable."""
        cfg = self.config
        if not cfg.gpu_pools:
            return None
        return GpuSoftware(
            "gpu-software",
            GpuSoftwareArgs(cfg.gpu_software, self.cluster.provider),
            opts=self._child(),
        )

    def _karpenter(self) -> Karpenter | None:
        """The Karpenter controller, when a pool uses it (config allows that on EKS only)."""
        if not any(p.mechanism == "karpenter" for p in self.config.gpu_pools):
            return None
        eks = self.cluster.eks_identity()
        return Karpenter(
            "karpenter",
            KarpenterArgs(
                cluster_name=self.cluster.name,
                region=self.config.region,
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer_url=eks.oidc_issuer_url,
                node_role=eks.node_role,
                k8s_provider=self.cluster.provider,
                tags=self.tags,
            ),
            opts=self._child(),
        )

    def _pools(self) -> dict[str, GpuNodePool]:
        """Every GPU pool; each exports the scheduling contract the use cases land on."""
        pools: dict[str, GpuNodePool] = {}
        fallbacks = {p.fallback_pool for p in self.config.gpu_pools if p.fallback_pool}
        for pool in self.config.gpu_pools:
            karpenter = self.karpenter if pool.mechanism == "karpenter" else None
            pools[pool.name] = GpuNodePool(
                f"pool-{pool.name}",
                GpuNodePoolArgs(
                    pool=pool,
                    cluster_name=self.cluster.name,
                    tags=self.tags,
                    k8s_provider=self.cluster.provider,
                    node_role=self.cluster.node_role,
                    subnet_ids=self.cluster.private_subnet_ids,
                    security_group_id=self.cluster.security_group_id,
                    karpenter_node_role_name=(
                        self.karpenter.node_role_name if self.karpenter else None
                    ),
                    is_fallback=pool.name in fallbacks,
                    depends_on=[karpenter.release] if karpenter else [],
                ),
                opts=self._child(),
            )
        return pools

    def _images(self, services: list[str]) -> Images:
        """Tandem's own images: built from this repository into ECR by `pulumi up`, or the
        prebuilt ones the stack names (`tandem:images`; required on an existing cluster)."""
        cfg = self.config
        overrides = {s: ref for s in services if (ref := cfg.images.override(s))}
        return Images(
            "images",
            ImagesArgs(
                services=services,
                overrides=overrides,
                repository_prefix=cfg.cluster_name,
                tags=self.tags,
            ),
            opts=self._child(),
        )

    def _tracing(self, secret: pulumi.Input[str] | None) -> Tracing:
        """The collector and the trace backend, before the gateway and the inference clusters
        that send to it."""
        return Tracing(
            "tracing",
            TracingArgs(
                config=self.config.tracing, secret=secret, k8s_provider=self.cluster.provider
            ),
            opts=self._child(),
        )

    def _observability(
        self, use_cases: list[UseCaseSpec], with_gateway: bool
    ) -> Observability | None:
        """kube-prometheus-stack, DCGM and the platform's monitors, rules and dashboards.

        Workloads that bring their own monitors (RayService PodMonitors, the gateway's
        ServiceMonitor) are not monitored twice: double scraping double-counts every counter."""
        cfg = self.config
        if not cfg.observability.enabled:
            return None
        owned = {"ray", "vllm"} if use_cases else set()
        owned |= {"gateway"} if with_gateway else set()
        owned |= {"feast"} if self.feature_store is not None else set()
        return Observability(
            "observability",
            ObservabilityArgs(
                config=cfg.observability,
                pools=list(cfg.gpu_pools),
                budget=cfg.budget,
                k8s_provider=self.cluster.provider,
                # the GPU operator runs its own DCGM exporter
                dcgm_exporter=cfg.gpu_software.mode != "gpu-operator",
                monitors=tuple(m for m in WORKLOAD_MONITORS if m not in owned),
                alerting=cfg.alerting,
                alerting_secrets=self._alerting_secrets,
                deployment_slos=deployment_slos(use_cases),
            ),
            opts=self._child(),
        )

    def _batch_storage(self) -> BatchStorage:
        """The batch files' bucket (and its IAM roles) before the gateway: its name goes into
        the routes file the gateway and the workers read."""
        cfg = self.config
        eks = None
        if self.network is not None:
            identity = self.cluster.eks_identity()
            eks = EksIdentity(identity.oidc_provider_arn, identity.oidc_issuer_url)
        return BatchStorage(
            "batch-files",
            BatchStorageArgs(
                config=cfg.batch, cluster_name=cfg.cluster_name, tags=self.tags, eks=eks
            ),
            opts=self._child(),
        )

    def _batch_workers(self) -> BatchWorkers:
        """The workers beside the gateway, KEDA scaling them on the gateway Redis' queue."""
        assert self.gateway is not None and self.gateway.redis_url is not None
        assert self.batch_storage is not None
        keda = Keda("keda", KedaArgs(k8s_provider=self.cluster.provider), opts=self._child())
        return BatchWorkers(
            "batch-workers",
            BatchWorkersArgs(
                config=self.config.batch,
                gateway=self.gateway,
                redis_url=self.gateway.redis_url,
                keda=keda,
                image=self.images.refs["gateway"],
                k8s_provider=self.cluster.provider,
                rayjob_role_arn=self.batch_storage.rayjob_role_arn,
                webhook_secret_name=(
                    self.gateway.providers_secret_name if self._webhooks else None
                ),
                monitoring=self.config.observability.enabled,
            ),
            opts=self._child(),
        )

    def _gateway(
        self,
        routes: list,
        raw_keys: dict[str, pulumi.Input[str]],
        provider_keys: dict[str, pulumi.Input[str]],
        rollouts: bool,
        use_cases: list[UseCaseSpec],
        webhook_secret: pulumi.Input[str] | None,
    ) -> Gateway:
        """The shared AI gateway, routing to every use case that has a `gateway:` section and to
        the coding assistants' models (`gateway.assistants`), with an audit record per request
        (and, with tandem:batch, serving the Batch API)."""
        cfg = self.config
        storage = self.batch_storage
        self._webhooks = storage is not None and webhook_secret is not None
        batch_args: dict = {}
        if storage is not None:
            slo = route_slos(use_cases)
            batch_args = {
                "batch": storage.bucket.apply(
                    lambda bucket: batch_section(
                        cfg.batch, bucket, cfg.region, slo, webhooks=self._webhooks
                    )
                ),
                "service_account": FILES_SERVICE_ACCOUNT,
                "service_account_role_arn": storage.role_arn,
                # the queue must outlive the Redis pod: its append-only file on a volume
                "redis_volume_gib": 10 if cfg.gateway.redis == "in-cluster" else None,
                "client_namespaces": [labels.NS_SERVING, labels.NS_BATCH],
            }
        if any(uc.monitoring is not None for uc in use_cases):  # the drift monitor polls it
            clients = batch_args.get("client_namespaces", [labels.NS_SERVING])
            batch_args["client_namespaces"] = [*clients, labels.NS_LIFECYCLE]
        # pods besides the gateway that reach its Redis: the rollout controller (live splits),
        # the batch workers (the queue, the records)
        redis_clients = [RolloutController.redis_client()] if rollouts else []
        if storage is not None:
            redis_clients.append({"podSelector": {"matchLabels": WORKER_SELECTOR}})
        # one Secret beside the gateway: the assistants' provider keys and the webhook secret
        secrets = {provider_key_env(name): key for name, key in provider_keys.items()}
        if self._webhooks and webhook_secret:
            secrets[WEBHOOK_SECRET_ENV] = webhook_secret
        return Gateway(
            "gateway",
            GatewayArgs(
                routes=with_assistants(
                    routes_from_use_cases(routes, batch=storage is not None),
                    cfg.gateway.assistants,
                    routes,
                    cfg.gateway.audit,
                ),
                config=cfg.gateway,
                tracing=routes_tracing(cfg.tracing),
                keys=[
                    GatewayKey(
                        id=k.id,
                        team=k.team,
                        key=raw_keys[k.id],
                        models=list(k.models),
                        rpm=k.rpm,
                        tpm=k.tpm,
                        developer=k.developer,
                        developer_header=k.developer_header,
                    )
                    for k in cfg.gateway.keys
                ],
                provider_secrets=secrets,
                k8s_provider=self.cluster.provider,
                elasticache=self._elasticache() if cfg.gateway.redis == "elasticache" else None,
                monitoring=cfg.observability.enabled,
                image=self.images.refs["gateway"],
                **batch_args,
                redis_clients=redis_clients,
                feature_store_redis=(
                    self.feature_store.redis_url
                    if self.feature_store is not None and any(r.features for r in routes)
                    else None
                ),
            ),
            opts=self._child(),
        )

    def _registry(self, db_password: pulumi.Input[str] | None) -> ModelRegistry:
        """MLflow's tracking server with its Model Registry: on EKS with its own RDS Postgres and
        S3 bucket (through IRSA); on an existing cluster with the DSN Secret and bucket given."""
        cfg = self.config
        aws_args = None
        if self.network is not None:
            assert db_password is not None
            eks = self.cluster.eks_identity()
            aws_args = AwsRegistryArgs(
                subnet_ids=self.cluster.private_subnet_ids,
                node_security_group_id=eks.security_group_id,
                vpc_id=self.network.vpc_id,
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer_url=eks.oidc_issuer_url,
                db_password=db_password,
                tags=self.tags,
            )
        return ModelRegistry(
            "model-registry",
            ModelRegistryArgs(
                config=cfg.registry,
                environment=cfg.environment,
                cluster_name=cfg.cluster_name,
                k8s_provider=self.cluster.provider,
                aws=aws_args,
                monitoring=cfg.observability.enabled,
            ),
            opts=self._child(),
        )

    def _rollout_controller(self) -> RolloutController:
        """The controller that moves use cases' traffic between stable and canary versions
        (config validation made sure the gateway has a Redis and Prometheus runs)."""
        assert self.gateway is not None and self.gateway.redis_url is not None
        assert self.observability is not None
        return RolloutController(
            "rollout-controller",
            RolloutControllerArgs(
                redis_url=self.gateway.redis_url,
                prometheus_url=self.observability.prometheus_url,
                image=self.images.refs["gateway"],
                registry_url=self.registry.url if self.registry is not None else None,
                k8s_provider=self.cluster.provider,
                monitoring=self.config.observability.enabled,
                depends_on=[
                    r for r in (self.registry, getattr(self, "kuberay", None)) if r is not None
                ],
            ),
            opts=self._child(),
        )

    def _drift_monitor(self, use_cases: list[UseCaseSpec]) -> DriftMonitor:
        """The drift service for the use cases with `monitoring:` (docs/drift.md): it polls the
        gateway pods' signal logs and rolls back through the rollout controller."""
        assert self.gateway is not None
        return DriftMonitor(
            "drift-monitor",
            DriftMonitorArgs(
                use_cases=use_cases,
                image=self.images.refs["gateway"],
                gateway_selector=self.gateway.selector,
                controller_url=(
                    self.rollout_controller.url if self.rollout_controller is not None else None
                ),
                k8s_provider=self.cluster.provider,
                monitoring=self.config.observability.enabled,
                depends_on=[self.gateway],
            ),
            opts=self._child(),
        )

    def _feature_store(self, args: PlatformArgs) -> FeatureStore | None:
        """Feast: registry and offline data on S3 through IRSA, its own Redis online store,
        a feature server per project (tandem:featureStore; docs/feature-store.md)."""
        cfg = self.config
        if cfg.feature_store is None:
            return None
        eks = self.cluster.eks_identity()
        teams: dict[str, str] = {}
        for uc in args.use_cases:
            if uc.features is not None:
                teams.setdefault(uc.features.project, uc.team)
        return FeatureStore(
            "feature-store",
            FeatureStoreArgs(
                config=cfg.feature_store,
                repos=args.feature_repos,
                cluster_name=cfg.cluster_name,
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer_url=eks.oidc_issuer_url,
                k8s_provider=self.cluster.provider,
                elasticache=(
                    self._elasticache() if cfg.feature_store.redis == "elasticache" else None
                ),
                tags=self.tags,
                teams=teams,
                monitoring=cfg.observability.enabled,
            ),
            opts=self._child(),
        )

    def _elasticache(self) -> ElastiCacheArgs:
        """Where an ElastiCache Redis goes: the cluster's private subnets, reachable from nodes."""
        return ElastiCacheArgs(
            subnet_ids=self.cluster.private_subnet_ids,
            security_group_ids=[self.cluster.eks_identity().security_group_id],
            tags=self.tags,
        )

    def _use_cases(
        self,
        specs: list[UseCaseSpec],
        checks: dict[str, list[CheckResult]],
        hf_token: pulumi.Input[str] | None,
    ) -> dict[str, UseCase]:
        """The KubeRay operator, then one inference cluster per use case on the pool it names."""
        if not specs:
            return {}
        cfg = self.config
        self.kuberay = KubeRayOperator(
            "kuberay", KubeRayOperatorArgs(k8s_provider=self.cluster.provider), opts=self._child()
        )
        if hf_token is not None:
            k8s.core.v1.Secret(
                "hf-token",
                metadata={
                    "name": HF_TOKEN_SECRET,
                    "namespace": labels.NS_SERVING,
                    "labels": labels.platform_labels(),
                },
                string_data={HF_TOKEN_KEY: pulumi.Output.secret(hf_token)},
                opts=pulumi.ResourceOptions(
                    parent=self, provider=self.cluster.provider, depends_on=[self.kuberay]
                ),
            )
        gcs_ft = self._gcs_fault_tolerance() if cfg.environment == "prod" else None
        contracts = {name: p.contract for name, p in self.pools.items()}
        return {
            spec.name: UseCase(
                f"usecase-{spec.name}",
                UseCaseArgs(
                    use_case=spec,
                    contract=resolve_contract(spec, contracts),
                    k8s_provider=self.cluster.provider,
                    environment=cfg.environment,
                    operator=self.kuberay,
                    model_cache=self._model_cache(spec),
                    gcs_ft=gcs_ft,
                    checks=checks.get(spec.name),
                    image=self.images.refs["serving"],
                    extra_env=serve_env(cfg.tracing, f"{spec.name}-serve"),
                ),
                opts=self._child(),
            )
            for spec in specs
        }

    def _gcs_fault_tolerance(self) -> GcsFaultTolerance:
        """Prod keeps Ray's GCS in Redis so a head-pod restart does not drop the Serve apps:
        ElastiCache on EKS, an in-cluster Redis (reachable only from Ray head pods) otherwise."""
        if self.network is not None:
            url = elasticache_redis(
                "ray-gcs",
                self._elasticache(),
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

    def _model_cache(self, spec: UseCaseSpec) -> ModelCache:
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
            {**self.tags, "use-case": spec.name, "team": spec.team},
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


def route_slos(use_cases: list[UseCaseSpec]) -> dict[str, float]:
    """Each gateway alias' online p95 promise in ms (its deployment's TTFT SLO, or the whole
    request's for non-LLM deployments): what batch work yields to (pipelines/limiter.py)."""
    out = {}
    for uc in use_cases:
        if uc.gateway is None:
            continue
        d = next((d for d in uc.deployments if d.kind == "llm"), uc.deployments[0])
        ms = d.slo.ttft_p95_ms or d.slo.latency_p95_ms
        if ms:
            out[uc.gateway.alias or uc.name] = ms
    return out


def deployment_slos(use_cases: list[UseCaseSpec]) -> list[DeploymentSlo]:
    """Each deployment's `slo:` as alert targets, labelled the way its pods' metrics are."""
    out = []
    for uc in use_cases:
        for d in uc.deployments:
            slo = d.slo
            if slo.ttft_p95_ms is None and slo.itl_p95_ms is None and slo.latency_p95_ms is None:
                continue
            out.append(
                DeploymentSlo(
                    team=uc.team,
                    use_case=uc.name,
                    model=label_value(d.model),
                    ttft_p95_s=slo.ttft_p95_ms / 1000 if slo.ttft_p95_ms else None,
                    itl_p95_s=slo.itl_p95_ms / 1000 if slo.itl_p95_ms else None,
                    latency_p95_ms=slo.latency_p95_ms,
                )
            )
    return out
