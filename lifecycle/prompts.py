"""Publishing the prompt files to MLflow's prompt registry (`tandem prompts publish`), for teams
who browse, compare and load prompts there (`mlflow.genai.load_prompt("prompts:/support.answer@production")`).

The files in stacks/prompts/ stay the source of truth and the gateway never asks MLflow
(docs/prompts.md says why); this mirrors them with MLflow's own storage convention, over the same
REST API the model registry client uses (stdlib only): a prompt is a registered model tagged
`mlflow.prompt.is_prompt`, each version a model version whose `mlflow.prompt.text` tag holds the
chat messages as JSON (`_mlflow_prompt_type: chat`), and each label an alias. MLflow numbers
versions itself (1, 2, 3...), so a file's versions must be 1..N; a version already published is
compared, never overwritten: versions are immutable on both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lifecycle.registry import API, Registry, RegistryError
from vocabulary.prompts import PromptFile, PromptVersion

IS_PROMPT = "mlflow.prompt.is_prompt"
TEXT = "mlflow.prompt.text"
TYPE = "_mlflow_prompt_type"
SOURCE = "prompt-template"  # MLflow's placeholder source for prompt versions


class PublishError(RuntimeError):
    """A prompt MLflow cannot mirror as the file says (the message names it and why)."""


def mlflow_name(name: str) -> str:
    """MLflow prompt names allow letters, digits, '-', '_' and '.': `support/answer` ->
    `support.answer`."""
    return name.replace("/", ".")


def template(version: PromptVersion) -> str:
    return json.dumps([{"role": m.role, "content": m.content} for m in version.messages])


@dataclass
class Published:
    name: str
    created: list[int]
    unchanged: list[int]
    aliases: dict[str, int]


def publish(registry: Registry, name: str, prompt: PromptFile) -> Published:
    """Mirror one prompt file; PublishError when MLflow holds a different text for a version."""
    numbers = sorted(v.version for v in prompt.versions)
    if numbers != list(range(1, len(numbers) + 1)):
        raise PublishError(
            f"{name}: versions {numbers}: MLflow numbers versions 1, 2, 3...; publish needs the "
            "file's versions to be 1..N"
        )
    target = mlflow_name(name)
    tags = [
        {"key": IS_PROMPT, "value": "true"},
        {"key": "tandem.owner", "value": prompt.owner},
        {"key": "tandem.model", "value": prompt.model},
    ]
    try:
        registry._call(
            "POST",
            f"{API}/registered-models/create",
            {"name": target, "tags": tags, "description": prompt.description},
        )
    except RegistryError as exc:
        if getattr(exc, "code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
    out = Published(target, [], [], {})
    for version in sorted(prompt.versions, key=lambda v: v.version):
        text = template(version)
        existing = _version(registry, target, version.version)
        if existing is not None:
            if existing.get(TEXT) != text:
                raise PublishError(
                    f"{name}@{version.version}: MLflow's {target} version {version.version} has "
                    "other messages; versions are immutable: add a new version to the file"
                )
            out.unchanged.append(version.version)
            continue
        body = {
            "name": target,
            "source": SOURCE,
            "description": version.description,
            "tags": [
                {"key": IS_PROMPT, "value": "true"},
                {"key": TEXT, "value": text},
                {"key": TYPE, "value": "chat"},
                {"key": "tandem.parameters", "value": json.dumps(version.parameters)},
            ],
        }
        mv = registry._call("POST", f"{API}/model-versions/create", body)["model_version"]
        if str(mv["version"]) != str(version.version):
            raise PublishError(
                f"{name}@{version.version}: MLflow numbered it {mv['version']} (its registry "
                f"holds versions the file does not): compare `{target}` in MLflow with the file"
            )
        out.created.append(version.version)
    for label, number in prompt.labels.items():
        registry.set_alias(target, label, str(number))
        out.aliases[label] = number
    return out


def _version(registry: Registry, name: str, version: int) -> dict[str, str] | None:
    """The tags of a published version, or None when MLflow has no such version."""
    try:
        data = registry._call(
            "GET", f"{API}/model-versions/get", params={"name": name, "version": str(version)}
        )
    except RegistryError as exc:
        if getattr(exc, "code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return {t["key"]: t["value"] for t in data["model_version"].get("tags") or ()}
