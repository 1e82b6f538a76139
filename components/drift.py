"""`DriftMonitor`: the drift service (`tandem drift serve`, docs/drift.md) in the cluster.

It runs Tandem's Python services image (the gateway's) with its config in a ConfigMap: the use
cases that have a `monitoring:` section, each with its team and section as written. It polls
every gateway pod through a headless Service in the gateway's namespace (the gateway's signal log
is per replica), reads and commands the rollout controller over HTTP, and is scraped by
Prometheus, whose PrometheusRule (drift/rules.py) turns `tandem_drift_detected` into the
`TandemDriftDetected` alert routed by its `team` label. One replica: two would act twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.internal_http import healthz_probes, internal_http_service
from components.pod_security import container_security, pod_security
from drift import rules
from vocabulary import labels
from vocabulary.usecase import UseCaseSpec

PORT = 8096
NAME = "drift-monitor"
CONFIG_PATH = "/etc/tandem/drift.yaml"
GATEWAY_PORT = 8080  # the gateway container's port (components/gateway.py PORT)
NON_ROOT = 10001


def drift_config(use_cases: list[UseCaseSpec]) -> str:
    """The service's --config file: every monitored use case, its team and `monitoring:`."""
    items = [
        {
            "name": uc.name,
            "team": uc.team,
            "monitoring": uc.monitoring.model_dump(mode="json", exclude_unset=True),
        }
        for uc in use_cases
        if uc.monitoring is not None
    ]
    return yaml.safe_dump({"use_cases": items}, sort_keys=False)


@dataclass
class DriftMonitorArgs:
    use_cases: list[UseCaseSpec]
    image: pulumi.Input[str]
    gateway_selector: dict[str, str]  # the gateway pods' labels (the headless Service's selector)
    controller_url: pulumi.Input[str] | None = None
    k8s_provider: pulumi.ProviderResource | None = None
    namespace: str = labels.NS_LIFECYCLE
    gateway_namespace: str = labels.NS_GATEWAY
    poll_s: float = 10.0
    monitoring: bool = True
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class DriftMonitor(pulumi.ComponentResource):
    SELECTOR = {"app.kubernetes.io/name": NAME}

    def __init__(
        self, name: str, args: DriftMonitorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(labels.TOKEN_DRIFT_MONITOR, name, None, opts)
        lab = labels.platform_labels(**{labels.LABEL_COMPONENT: NAME})
        child = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=args.depends_on
        )
        meta = {"name": NAME, "namespace": args.namespace, "labels": lab}
        config = drift_config(args.use_cases)
        k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=meta, data={"drift.yaml": config}, opts=child
        )
        pods = f"{NAME}-gateway-pods"
        # every gateway replica keeps its own signal log: a headless Service resolves to each pod
        k8s.core.v1.Service(
            f"{name}-gateway-pods",
            metadata={"name": pods, "namespace": args.gateway_namespace, "labels": lab},
            spec={
                "clusterIP": "None",
                "selector": args.gateway_selector,
                "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": GATEWAY_PORT}],
            },
            opts=child,
        )
        gateway = f"http://{pods}.{args.gateway_namespace}.svc.cluster.local:{GATEWAY_PORT}"
        command = pulumi.Output.from_input(args.controller_url or "").apply(
            lambda ctl: [
                "drift",
                "serve",
                f"--config={CONFIG_PATH}",
                f"--gateway={gateway}",
                "--host=0.0.0.0",
                f"--port={PORT}",
                f"--poll={args.poll_s:g}",
                *([f"--controller={ctl}"] if ctl else []),
            ]  # fmt: skip
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deploy",
            metadata=meta,
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": self.SELECTOR},
                "template": {
                    "metadata": {
                        "labels": {**lab, **self.SELECTOR},
                        # a changed config rolls the pod (the service reads it at start)
                        "annotations": {"tandem.dev/config-sha": _sha(config)},
                    },
                    "spec": {
                        "securityContext": pod_security(NON_ROOT, NON_ROOT),
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "drift",
                                "image": args.image,
                                "command": ["tandem"],
                                "args": command,
                                "ports": [{"name": "http", "containerPort": PORT}],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "512Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                **healthz_probes(),
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/tandem", "readOnly": True}
                                ],
                                "securityContext": container_security(),
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                    },
                },
            },
            opts=child,
        )
        internal_http_service(
            name,
            metadata=meta,
            selector=self.SELECTOR,
            port=PORT,
            allowed_namespaces=[labels.NS_MONITORING, args.namespace],
            namespace=args.namespace,
            monitor_labels=lab if args.monitoring else None,
            opts=child,
        )
        if args.monitoring:
            k8s.apiextensions.CustomResource(
                f"{name}-rules",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata={**meta, "name": f"{NAME}-alerts"},
                spec={"groups": rules.rule_groups(job=NAME)},
                opts=child,
            )
        self.url = pulumi.Output.from_input(f"http://{NAME}.{args.namespace}.svc:{PORT}")
        self.register_outputs({"url": self.url})


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]
