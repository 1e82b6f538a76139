"""Registry resolutions: which model version each `registry:` reference of a stack deploys.

A deployment may take its model from the model registry by alias (`champion`) or by pinned
version. Plans and `pulumi up` run offline and must be reproducible, so neither asks the registry
what an alias means today: they read the stack's recorded resolution file,
`stacks/registry/<stack>.yaml`, which `tandem deploy` updates when it promotes a version and
`tandem registry resolve` writes from the live registry. A reference the file cannot answer is a
config error naming the command that records it; there is no "latest".

Pure (pydantic + yaml).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.yamlfile import load_yaml

RESOLUTION_DIR = "stacks/registry"
HEADER = (
    "# Registry resolutions of stack {stack}: the version each alias named when it was recorded,\n"
    "# and each version's source. Written by `tandem deploy` (on promotion) and `tandem registry\n"
    "# resolve`; read by `tandem plan` and `pulumi up`, which never ask the registry. Commit it.\n"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordedVersion(_Strict):
    source: str = Field(min_length=1)
    recorded: str = ""  # ISO time the record was written


class RecordedModel(_Strict):
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> version
    versions: dict[str, RecordedVersion] = Field(default_factory=dict)


class Resolutions(_Strict):
    models: dict[str, RecordedModel] = Field(default_factory=dict)

    def record(self, model: str, version: str, source: str, when: str, alias: str | None) -> None:
        entry = self.models.setdefault(model, RecordedModel())
        entry.versions[version] = RecordedVersion(source=source, recorded=when)
        if alias:
            entry.aliases[alias] = version


@dataclass(frozen=True)
class Resolved:
    """One reference as the plan shows it."""

    use_case: str
    deployment: str
    reference: str  # name@alias or name/version
    version: str
    source: str
    recorded: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def resolution_path(root: Path, stack: str) -> Path:
    return root / RESOLUTION_DIR / f"{stack}.yaml"


def load_resolutions(path: Path) -> Resolutions:
    """The recorded resolutions (empty when the file does not exist yet)."""
    if not path.exists():
        return Resolutions()
    data = load_yaml(path, "registry resolution file") or {}
    try:
        return Resolutions.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Resolutions), str(path)) from None


def save_resolutions(path: Path, stack: str, resolutions: Resolutions) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(resolutions.model_dump(mode="json"), sort_keys=True)
    path.write_text(HEADER.format(stack=stack) + body)


def resolve(
    use_case: str,
    deployment: str,
    ref: Any,
    resolutions: Resolutions,
    where: str,
    field: str = "registry",
) -> Resolved:
    """The version and source `ref` (a vocabulary.rollout.RegistryRef) deploys; ConfigError
    naming the reference and the command that records it when the file cannot say."""
    model = resolutions.models.get(ref.name)
    fix = (
        "run `tandem registry resolve --stack <stack> --registry <url>` (or `tandem deploy`) "
        f"to record it in {where}"
    )
    version = ref.version
    if ref.alias is not None:
        version = model.aliases.get(ref.alias) if model else None
        if version is None:
            raise ConfigError(
                [
                    f"{field}: {ref.pointer} (use case {use_case!r}, deployment "
                    f"{deployment!r}) has no recorded resolution of alias {ref.alias!r} (never "
                    f"'latest'); {fix}"
                ],
                where,
            )
    assert version is not None
    record = model.versions.get(version) if model else None
    if record is None:
        raise ConfigError(
            [
                f"{field}: {ref.name} version {version} (use case {use_case!r}, deployment "
                f"{deployment!r}): its source is not recorded; {fix}"
            ],
            where,
        )
    return Resolved(use_case, deployment, ref.pointer, version, record.source, record.recorded)
