"""Pins are consistent and evidenced: one Ray (and vLLM) version in every tier, base images and
charts with a recorded source, and CRD schemas that are the ones the pinned charts install."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from vocabulary import pins

REPO = Path(__file__).resolve().parents[2]
RAY_SERVICE = "kubernetes:ray.io/v1:RayService"


def _file(rel: str) -> str:
    return (REPO / rel).read_text()


def test_every_pin_names_where_and_when_it_was_verified() -> None:
    found = pins.all_pins()
    assert len(found) >= 12
    for name, verified in found.items():
        assert len(verified.source) > 30, f"{name}: the source must say where it was seen"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", verified.checked), name


def test_one_ray_version_in_every_tier(stack_resources) -> None:
    """The serving image, the RayService, the local tier and the LLM test tier run one Ray."""
    v = pins.RAY_VERSION
    assert f'"ray[serve]=={v}"' in _file("pyproject.toml")
    assert f"\nray=={v}\n" in _file("constraints.txt")
    assert f'"ray[serve]=={v}"' in _file("tests/llm/setup-env.sh")
    assert f"ARG RAY_VERSION={v}\n" in _file("serving/Dockerfile")
    assert importlib.metadata.version("ray") == v  # what the local tier actually runs
    ray_services = [r for stack in stack_resources.values() for r in stack.of_type(RAY_SERVICE)]
    assert ray_services
    for rs in ray_services:
        assert rs.inputs["spec"]["rayClusterConfig"]["rayVersion"] == v


def test_one_vllm_version_between_the_image_and_the_llm_tier() -> None:
    """ray[llm] pins the vLLM the serving image's base ships and the LLM tier runs on CPU."""
    llm = [r for r in importlib.metadata.requires("ray") or [] if 'extra == "llm"' in r]
    assert any(f"vllm[audio]=={pins.VLLM_VERSION};" in r.replace(" ", "") for r in llm), llm
    assert f"FROM {pins.VLLM_IMAGE.ref}\n" in _file("serving/Dockerfile")
    assert f"\nVLLM_CPU={pins.VLLM_VERSION} " in _file("tests/llm/setup-env.sh")


@pytest.mark.parametrize(
    ("dockerfile", "image"),
    [("gateway/Dockerfile", pins.PYTHON_IMAGE), ("serving/Dockerfile", pins.VLLM_IMAGE)],
)
def test_dockerfile_bases_are_the_pinned_images(dockerfile: str, image: pins.Image) -> None:
    bases = re.findall(r"^FROM (\S+)", _file(dockerfile), re.M)
    assert bases and set(bases) == {image.ref}


def test_images_and_amis_the_stacks_run_are_pinned(stack_resources) -> None:
    for stack in stack_resources.values():
        for nc in stack.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"):
            alias = nc.inputs["spec"]["amiSelectorTerms"][0]["alias"]
            assert alias in pins.KARPENTER_AMI_ALIAS.values()
        for dep in stack.of_type("kubernetes:apps/v1:Deployment"):
            if dep.name.endswith("redis"):
                image = dep.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
                assert image == pins.REDIS_IMAGE.ref


def _git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.mark.parametrize("name", sorted(pins.CRD_SNAPSHOTS))
def test_crd_schemas_are_the_ones_the_pinned_charts_install(crd_dir: Path, name: str) -> None:
    blob, installed_by = pins.CRD_SNAPSHOTS[name]
    assert _git_blob(crd_dir / name) == blob, (
        f"{name} in $TANDEM_CRD_DIR is not the schema {installed_by} installs"
    )


def test_prometheus_operator_crds_match_the_chart_pin(crd_dir: Path) -> None:
    """kube-prometheus-stack installs the operator (and CRDs) of its appVersion: the CRDs the
    monitors are validated against must carry that version (79.7.1 installed 0.86.2 against
    0.93 schemas)."""
    for path in sorted(crd_dir.glob("monitoring.coreos.com_*.yaml")):
        doc = yaml.safe_load(path.read_text())
        version = doc["metadata"]["annotations"]["operator.prometheus.io/version"]
        assert version == pins.KUBE_PROMETHEUS_STACK.app_version, path.name


def test_karpenter_objects_avoid_what_differs_from_the_released_crds(stack_resources) -> None:
    """The Karpenter CRD files are v1.14.1 plus unreleased kubelet / label-key changes; Tandem's
    NodePools and EC2NodeClasses must not depend on either, so v1.14.1 accepts them too."""
    kinds = ("kubernetes:karpenter.sh/v1:NodePool", "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
    for stack in stack_resources.values():
        for token in kinds:
            for obj in stack.of_type(token):
                text = yaml.safe_dump(obj.inputs)
                for field in pins.KARPENTER_CRD_DELTA_FIELDS:
                    assert field not in text, f"{obj.name} uses {field}"


def test_one_feast_version_in_the_cluster_and_the_feast_environment() -> None:
    """The feature-server chart and image the cluster runs are the Feast that plans the feature
    repositories and runs the feature-store tests (.venv-feast)."""
    v = pins.FEAST_VERSION
    assert pins.FEAST_FEATURE_SERVER.version == v and pins.FEAST_IMAGE.tag == v
    assert f"\nFEAST={v} " in _file("features/setup-env.sh")
    assert f"\nfeast=={v}\n" in _file("features/feast-constraints.txt")


def test_one_phoenix_version_between_the_chart_and_the_tracing_tier() -> None:
    """The Phoenix the Tracing component deploys is the one the tracing tier's tests run."""
    assert pins.PHOENIX.app_version == pins.PHOENIX_VERSION
    assert f"\narize-phoenix=={pins.PHOENIX_VERSION}\n" in _file(
        "observability/phoenix-requirements.txt"
    )
    assert pins.OTEL_COLLECTOR_IMAGE.tag == pins.OTEL_COLLECTOR.app_version
