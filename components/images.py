"""`Images`: Tandem's own container images, built and pushed by `pulumi up`, or prebuilt ones.

Per service (the gateway, the serving image for batch apps) either the stack names a prebuilt
image (`tandem:images.<service>`, any registry, pinned by tag or digest), or this component
creates an ECR repository and builds the service's Dockerfile from this repository with
pulumi-docker-build (BuildKit), pushing it there:

- the repository scans every push, refuses to overwrite a tag (IMMUTABLE) and keeps its storage
  bounded with a lifecycle policy (untagged layers expire after a week, at most
  `KEEP_IMAGES` tagged images);
- the tag is `<IMAGE_VERSION>-<content hash>`: the hash covers the Dockerfile and every file its
  COPY lines bring in, so a code change is a new tag (immutable tags need that) and an unchanged
  tree is the same tag (no rebuild, no push);
- workloads run the image by digest (`ref` is `repository:tag@sha256:...`), so what was scanned
  is what runs.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from vocabulary import labels, pins

KEEP_IMAGES = pins.ECR_KEEP_IMAGES
UNTAGGED_DAYS = 7
PLATFORM = "linux/amd64"
_SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile's COPY/ADD lines read (stage copies `--from` excluded)."""
    sources: list[str] = []
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
            continue
        sources += args[:-1]
    return sources


def content_hash(root: Path, dockerfile: str) -> str:
    """sha256 over the Dockerfile and every file its COPY lines bring in (sorted paths)."""
    path = root / dockerfile
    digest = hashlib.sha256()
    files = {path}
    for src in copy_sources(path):
        target = root / src
        if target.is_dir():
            files |= {
                p
                for p in target.rglob("*")
                if p.is_file() and not (_SKIP & set(p.parts)) and p.suffix != ".pyc"
            }
        elif target.is_file():
            files.add(target)
    for f in sorted(files):
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def image_tag(root: Path, dockerfile: str) -> str:
    return f"{pins.IMAGE_VERSION}-{content_hash(root, dockerfile)[:12]}"


def lifecycle_policy() -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"expire untagged images after {UNTAGGED_DAYS} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": UNTAGGED_DAYS,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the newest {KEEP_IMAGES} tagged images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": KEEP_IMAGES,
                    },
                    "action": {"type": "expire"},
                },
            ]
        }
    )


@dataclass
class ImagesArgs:
    services: list[str]  # the services this stack runs (keys of pins.TANDEM_IMAGES)
    overrides: dict[str, str] = field(default_factory=dict)  # service -> prebuilt image
    repository_prefix: str = "tandem"
    root: Path = Path(__file__).resolve().parent.parent
    tags: dict[str, str] = field(default_factory=dict)


class Images(pulumi.ComponentResource):
    """`refs[service]`: the image reference each service's workloads run."""

    refs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(labels.TOKEN_IMAGES, name, None, opts)
        self.refs = {}
        for service in args.services:
            if service in args.overrides:
                self.refs[service] = pulumi.Output.from_input(args.overrides[service])
            else:
                self.refs[service] = self._build(name, service, args)
        self.register_outputs({"refs": self.refs})

    def _build(self, name: str, service: str, args: ImagesArgs) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        repo = aws.ecr.Repository(
            f"{name}-{service}",
            name=f"{args.repository_prefix}/{service}",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "AES256"}],
            tags=args.tags,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-{service}",
            repository=repo.name,
            policy=lifecycle_policy(),
            opts=pulumi.ResourceOptions(parent=repo),
        )
        auth = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id)
        dockerfile = pins.TANDEM_IMAGES[service]
        tag = image_tag(args.root, dockerfile)
        image = docker_build.Image(
            f"{name}-{service}",
            context={"location": str(args.root)},
            dockerfile={"location": str(args.root / dockerfile)},
            platforms=[PLATFORM],
            tags=[repo.repository_url.apply(lambda url: f"{url}:{tag}")],
            push=True,
            registries=[
                {
                    "address": repo.repository_url,
                    "username": auth.user_name,
                    "password": pulumi.Output.secret(auth.password),
                }
            ],
            labels={"org.opencontainers.image.version": tag},
            # previews stay fast and need no Docker daemon; `pulumi up` builds (the ray-llm
            # base alone is many GB). Dockerfiles are linted in CI (make hadolint) instead.
            build_on_preview=False,
            opts=pulumi.ResourceOptions(parent=repo),
        )
        return image.ref
