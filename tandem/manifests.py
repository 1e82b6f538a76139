"""Turn recorded Kubernetes registrations into manifests and validate them offline.

A typo in a Deployment or a RayService field passes `pulumi preview` and fails only when the API
server rejects it mid-update. Validating every object the stacks produce against the Kubernetes
schemas for the target version (kubernetes-validate) and custom resources against their
upstream CRD schemas (read from $TANDEM_CRD_DIR, never shipped) moves that failure to CI.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tandem.engine import Recorded, Resources

CRD_DIR_ENV = "TANDEM_CRD_DIR"
# The KubeRay CRDs are ~1 MB each; libyaml parses them ~10x faster than pure Python.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Pulumi-only resource types under the kubernetes provider that are not API objects.
NON_MANIFEST_PREFIXES = ("kubernetes:helm.sh/", "kubernetes:yaml", "kubernetes:kustomize")
NON_MANIFEST_TYPES = ("pulumi:providers:kubernetes",)


@dataclass(frozen=True)
class ManifestError:
    resource: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.resource}: {self.message}"


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire-format marker for a secret


def plain(value: Any) -> Any:
    """The value as the API server receives it: secrets unwrapped (the provider decrypts them)
    and integral floats back to ints (the mock engine carries every number as a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_kubernetes_object(rec: Recorded) -> bool:
    return (
        rec.custom
        and rec.type.startswith("kubernetes:")
        and not rec.type.startswith(NON_MANIFEST_PREFIXES)
        and rec.type not in NON_MANIFEST_TYPES
    )


def api_version_and_kind(token: str) -> tuple[str, str]:
    """`kubernetes:apps/v1:Deployment` -> (`apps/v1`, `Deployment`); `core/v1` -> `v1`."""
    _, api, kind = token.split(":", 2)
    return ("v1" if api == "core/v1" else api), kind


def to_manifest(rec: Recorded) -> dict[str, Any]:
    """The object the provider would send to the API server (auto-names filled in)."""
    api_version, kind = api_version_and_kind(rec.type)
    obj = plain(dict(rec.inputs))
    obj["apiVersion"] = obj.get("apiVersion") or api_version
    obj["kind"] = obj.get("kind") or kind
    metadata = dict(obj.get("metadata") or {})
    metadata.setdefault("name", rec.name)
    obj["metadata"] = metadata
    return obj


def manifests(resources: Resources) -> list[tuple[Recorded, dict[str, Any]]]:
    return [(r, to_manifest(r)) for r in resources if is_kubernetes_object(r)]


def crd_dir() -> Path:
    """Where the upstream CRDs are. Unset is an error, not a skip: CI must validate them."""
    value = os.environ.get(CRD_DIR_ENV)
    if not value:
        raise RuntimeError(
            f"{CRD_DIR_ENV} is not set: point it at the upstream CRD schemas "
            "(CI uses ../shared/crds) so custom resources can be validated"
        )
    path = Path(value)
    if not path.is_dir():
        raise RuntimeError(f"{CRD_DIR_ENV}={value} is not a directory")
    return path


@functools.cache
def load_crd_schemas(directory: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(`group/version`, kind) -> openAPIV3Schema for every served version of every CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        with open(path) as fh:
            for doc in yaml.load_all(fh, Loader=YAML_LOADER):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _validate_custom(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path}: {err.message}")
    return errors


def _validate_core(obj: dict[str, Any], k8s_version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        return [f"{path}: {exc.message}"]
    return []


def is_custom_resource(api_version: str) -> bool:
    """Built-in API groups are un-dotted (`apps`) or end in `.k8s.io`; the rest come from CRDs."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    return "." in group and not group.endswith(".k8s.io")


def validate_manifest(obj: dict[str, Any], k8s_version: str) -> list[str]:
    """Errors for one object: its CRD's schema for a custom resource, else the core schema."""
    if not is_custom_resource(obj["apiVersion"]):
        return _validate_core(obj, k8s_version)
    key = (obj["apiVersion"], obj["kind"])
    crds = load_crd_schemas(str(crd_dir()))
    if key not in crds:
        return [f"no CRD schema for {key[0]} {key[1]} in {crd_dir()}"]
    return _validate_custom(obj, crds[key])


def validate_all(resources: Resources, k8s_version: str) -> list[ManifestError]:
    errors = []
    for rec, obj in manifests(resources):
        for message in validate_manifest(obj, k8s_version):
            errors.append(ManifestError(rec.name, obj["kind"], message))
    return errors
