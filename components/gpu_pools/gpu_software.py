"""GPU software: what turns a GPU node into schedulable `nvidia.com/gpu` resources.

`device-plugin` installs the NVIDIA device plugin alone (EKS GPU AMIs already ship the driver
and container toolkit), optionally with time-slicing so several small pods share one GPU.
`gpu-operator` installs the NVIDIA GPU operator with its driver and toolkit turned off (they are
in the AMI; a second driver breaks the node) for MIG partitioning and managed DCGM.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.helm import pinned_release
from observability.dcgm import dcgm_metrics_csv
from vocabulary import labels, pins
from vocabulary.config import GpuSoftwareConfig

# Run the plugin daemonset only where GPUs are: nodes labelled by any Tandem GPU pool.
GPU_NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": labels.LABEL_GPU_MODEL, "operator": "Exists"}]}
            ]
        }
    }
}


def time_slicing_config(replicas: int) -> str:
    """The device plugin's sharing config: each GPU is advertised as `replicas` GPUs."""
    return yaml.safe_dump(
        {
            "version": "v1",
            "flags": {"migStrategy": "none"},
            "sharing": {
                "timeSlicing": {
                    "renameByDefault": False,
                    "failRequestsGreaterThanOne": True,
                    "resources": [{"name": labels.GPU_RESOURCE, "replicas": replicas}],
                }
            },
        },
        sort_keys=False,
    )


def device_plugin_values(cfg: GpuSoftwareConfig) -> dict:
    values: dict = {
        "tolerations": [labels.gpu_toleration()],
        "affinity": GPU_NODE_AFFINITY,
        "priorityClassName": "system-node-critical",
    }
    if cfg.time_slicing:
        values["config"] = {
            "map": {"default": time_slicing_config(cfg.time_slicing.replicas)},
            "default": "default",
        }
    return values


def gpu_operator_values(cfg: GpuSoftwareConfig) -> dict:
    values: dict = {
        "driver": {"enabled": False},
        "toolkit": {"enabled": False},
        "mig": {"strategy": cfg.mig_strategy if cfg.mig_strategy != "none" else "single"},
        "migManager": {"enabled": cfg.mig_strategy != "none"},
        # The same fields and pod attribution as the standalone exporter (observability.dcgm),
        # honorLabels so a sample keeps the workload pod's labels, not the exporter's.
        "dcgmExporter": {
            "enabled": True,
            "config": {"create": True, "name": "tandem-dcgm-metrics", "data": dcgm_metrics_csv()},
            "serviceMonitor": {"enabled": True, "honorLabels": True},
        },
        "daemonsets": {"tolerations": [labels.gpu_toleration()]},
        "node-feature-discovery": {"worker": {"tolerations": [labels.gpu_toleration()]}},
    }
    if cfg.time_slicing:
        values["devicePlugin"] = {"config": {"name": "time-slicing", "default": "default"}}
    return values


@dataclass
class GpuSoftwareArgs:
    config: GpuSoftwareConfig
    k8s_provider: k8s.Provider


class GpuSoftware(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: GpuSoftwareArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(labels.TOKEN_GPU_SOFTWARE, name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={"name": labels.NS_GPU, "labels": labels.platform_labels()},
            opts=child,
        )
        after_ns = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=[namespace]
        )
        if cfg.mode == "device-plugin":
            chart, values = pins.NVIDIA_DEVICE_PLUGIN, device_plugin_values(cfg)
        else:
            chart, values = pins.GPU_OPERATOR, gpu_operator_values(cfg)
            if cfg.time_slicing:
                k8s.core.v1.ConfigMap(
                    f"{name}-time-slicing",
                    metadata={
                        "name": "time-slicing",
                        "namespace": labels.NS_GPU,
                        "labels": labels.platform_labels(),
                    },
                    data={"default": time_slicing_config(cfg.time_slicing.replicas)},
                    opts=after_ns,
                )
        self.release = pinned_release(
            f"{name}-{chart.name}", chart, namespace=labels.NS_GPU, values=values, opts=after_ns
        )
        self.register_outputs({"chart": chart.name, "version": chart.version})
