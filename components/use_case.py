"""`UseCase`: one product team's AI feature, from its use-case file to running infrastructure.

A use case is its inference cluster plus the review manifest (a ConfigMap the policy pack's
`usecase-review-gate` reads). Its gateway section becomes routes through `gateway_entry`, which
the platform hands to the shared Gateway component. The plan-time checks run first: a use case
whose model would not fit its pool raises before any resource is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.serving.inference_cluster import (
    InferenceCluster,
    InferenceClusterArgs,
)
from gateway.spec import RouteTarget
from serving import builder
from serving.checks import CheckResult, run_checks
from vocabulary import labels, review
from vocabulary.features import FeatureRead
from vocabulary.prompts import PROMPTS_ROOT, load_prompts
from vocabulary.rollout import canary_name
from vocabulary.usecase import UseCaseSpec


class UseCaseCheckError(ValueError):
    """Plan-time checks failed; the message lists each failing check with its numbers."""


@dataclass
class UseCaseArgs(InferenceClusterArgs):
    """A use case is its inference cluster plus the review manifest, so it takes the cluster's
    args as they are (nothing copied field by field). `checks`: the plan-time check results when
    the caller already ran them (`tandem plan` does, once per stack); None runs them here."""

    checks: list[CheckResult] | None = None


class UseCase(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: UseCaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        checks = (
            args.checks if args.checks is not None else run_checks(args.use_case, args.contract)
        )
        failed = [r for r in checks if not r.ok]
        if failed:
            lines = "\n".join(f"  - [{r.check}] {r.message}" for r in failed)
            raise UseCaseCheckError(
                f"use case {args.use_case.name!r} fails plan-time checks:\n{lines}"
            )
        super().__init__(labels.TOKEN_USE_CASE, name, None, opts)
        self.inference_cluster = InferenceCluster(name, args, pulumi.ResourceOptions(parent=self))
        spec = args.use_case
        self.review_manifest = k8s.core.v1.ConfigMap(
            f"{name}-review",
            metadata={
                "name": f"{spec.name}-usecase",
                "namespace": args.namespace,
                "labels": labels.platform_labels(
                    **{
                        labels.LABEL_COMPONENT: review.MANIFEST_COMPONENT,
                        labels.LABEL_USE_CASE: spec.name,
                        labels.LABEL_TEAM: spec.team,
                    }
                ),
            },
            data=review.manifest_data(spec.review),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )
        self.register_outputs({"inference_cluster": self.inference_cluster.urn})


def gateway_entry(
    spec: UseCaseSpec,
    namespace: str = labels.NS_SERVING,
    features: FeatureRead | None = None,
) -> RouteTarget | None:
    """Where the gateway sends this use case's callers (gateway.spec.routes_from_use_cases).

    The gateway fronts the use case's first LLM deployment (or its first deployment): the
    RayService's Serve service, under that deployment's route prefix. `features` is the use
    case's `features:` resolved against its feature project (tandem.stack), read per request.
    """
    if spec.gateway is None:
        return None
    target = spec.rollout_deployment or next(
        (d for d in spec.deployments if d.kind == "llm"), spec.deployments[0]
    )
    base = f"http://{spec.name}-serve-svc.{namespace}.svc:{builder.SERVE_PORT}"
    url = f"{base}{builder.route_prefix(target)}/v1"
    canary_url = None
    if spec.rollout is not None:  # the canary Serve app lives beside the stable one
        canary_url = f"{base}/{canary_name(target.name)}/v1"
    return RouteTarget(
        spec.name,
        spec.team,
        spec.gateway,
        url,
        target.model,
        model_version=target.model_version if target.registry is not None else "",
        canary_url=canary_url,
        features=features,
        monitoring=spec.monitoring,
        prompts=load_prompts(PROMPTS_ROOT, spec.prompts) if spec.prompts else {},
    )
