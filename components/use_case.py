"""`UseCase`: one product team's AI feature, from its use-case file to running infrastructure.

Today a use case is its inference cluster; the gateway routes, review gate and budget sections of
the same file are wired here as their areas land. The plan-time checks run first: a use case whose
model would not fit its pool raises before any resource is registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from gpu_pools.contract import SchedulingContract
from serving.checks import run_checks
from serving.inference_cluster import (
    GcsFaultTolerance,
    InferenceCluster,
    InferenceClusterArgs,
    ModelCache,
)
from tandem import labels
from tandem.usecase import UseCaseSpec


class UseCaseCheckError(ValueError):
    """Plan-time checks failed; the message lists each failing check with its numbers."""


@dataclass
class UseCaseArgs:
    use_case: UseCaseSpec
    contract: SchedulingContract | None  # the pool named by use_case.pool (None: CPU only)
    k8s_provider: pulumi.ProviderResource | None = None
    environment: str = "dev"
    namespace: str = labels.NS_SERVING
    operator: pulumi.Resource | None = None  # the platform's KubeRayOperator
    model_cache: ModelCache = field(default_factory=ModelCache)
    gcs_ft: GcsFaultTolerance | None = None  # set in prod
    image: str | None = None


class UseCase(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: UseCaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        failed = [r for r in run_checks(args.use_case, args.contract) if not r.ok]
        if failed:
            lines = "\n".join(f"  - [{r.check}] {r.message}" for r in failed)
            raise UseCaseCheckError(
                f"use case {args.use_case.name!r} fails plan-time checks:\n{lines}"
            )
        super().__init__(labels.TOKEN_USE_CASE, name, None, opts)
        self.inference_cluster = InferenceCluster(
            name,
            InferenceClusterArgs(
                use_case=args.use_case,
                contract=args.contract,
                k8s_provider=args.k8s_provider,
                namespace=args.namespace,
                environment=args.environment,
                operator=args.operator,
                model_cache=args.model_cache,
                gcs_ft=args.gcs_ft,
                image=args.image,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"inference_cluster": self.inference_cluster.urn})
