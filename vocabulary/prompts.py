"""Prompts as code: the prompt file (`stacks/prompts/<namespace>/<name>.yaml`), a request's
reference to one (`support/answer@production`) and a route's context budget.

Floor 1, pydantic only. The prompt file, `tandem prompts`, `tandem plan`, the policy pack and the
gateway's routes file (which carries the prompts its routes serve) read these types, so a prompt
the gateway would refuse is refused by the plan first.

A prompt is a list of versions (each: chat messages whose text may hold `{{variable}}`
placeholders, model parameters) and labels naming versions (`production: 3`). Versions are
immutable by convention: a change is a new version, and moving `production` is the release.
The placeholder syntax is MLflow's prompt registry's (`{{ name }}`), so a template reads the same
in both places.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vocabulary.errors import ConfigError, format_validation_error
from vocabulary.rollout import Rollout
from vocabulary.yamlfile import load_yaml

PROMPTS_DIR = "stacks/prompts"
PROMPTS_ROOT = Path(__file__).resolve().parent.parent / PROMPTS_DIR  # the repository's
DEFAULT_LABEL = "production"  # what a reference without `@` means
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# `<namespace>/<name>`: the folder under stacks/prompts/ and the file's stem
PROMPT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}/[a-z0-9][a-z0-9_-]{0,62}$")
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# rollout keys that only mean something for a model version (its Serve application)
MODEL_ONLY_ROLLOUT_KEYS = frozenset({"deployment", "deploy_timeout_s"})
Role = Literal["system", "developer", "user", "assistant"]
# model parameters a prompt may fix (the OpenAI chat-completions names); a caller's own wins
Parameter = Literal[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
    "response_format",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def variables_of(text: str) -> list[str]:
    """The placeholders of a template text, in order of first use."""
    return list(dict.fromkeys(VARIABLE.findall(text)))


class PromptMessage(_Strict):
    role: Role
    content: str = Field(min_length=1, description="text; `{{name}}` is a variable")

    @field_validator("content")
    @classmethod
    def _braces(cls, v: str) -> str:
        stray = VARIABLE.sub("", v)
        if "{{" in stray or "}}" in stray:
            raise ValueError(
                "a `{{` or `}}` that is not a variable: variables are `{{name}}` (letters, "
                "digits, '_', not starting with a digit)"
            )
        return v


class PromptVersion(_Strict):
    version: int = Field(ge=1)
    messages: list[PromptMessage] = Field(min_length=1)
    parameters: dict[Parameter, Any] = Field(
        default_factory=dict, description="defaults sent with the request; the caller's win"
    )
    description: str = ""

    @property
    def variables(self) -> list[str]:
        return list(dict.fromkeys(v for m in self.messages for v in variables_of(m.content)))


class PromptFile(_Strict):
    """One prompt file: who owns it, what model alias it is written for, its versions, labels."""

    owner: str = Field(min_length=1, description="the team that owns the prompt")
    contact: str = ""
    description: str = ""
    model: str = Field(min_length=1, description="the gateway alias the prompt is written for")
    versions: list[PromptVersion] = Field(min_length=1)
    labels: dict[str, int] = Field(
        description="label -> version; `production` is what a reference without @ means"
    )
    rollout: Rollout | None = Field(
        None,
        description="how a new version reaches `production` references (`tandem prompts "
        "rollout`): the canary steps or A/B experiment and analysis a model version uses; "
        "default: the canary defaults",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PromptFile:
        numbers = [v.version for v in self.versions]
        dupes = sorted({n for n in numbers if numbers.count(n) > 1})
        if dupes:
            raise ValueError(f"versions: version numbers must be unique: {dupes}")
        if DEFAULT_LABEL not in self.labels:
            raise ValueError(
                f"labels: needs {DEFAULT_LABEL!r} (what `<name>` without @label serves)"
            )
        if self.rollout is not None:
            # given a value of their own (a dumped file carries the defaults: those are fine)
            defaults = {
                k: type(self.rollout).model_fields[k].default for k in MODEL_ONLY_ROLLOUT_KEYS
            }
            moot = sorted(k for k, d in defaults.items() if getattr(self.rollout, k) != d)
            if moot:
                raise ValueError(
                    f"rollout: {', '.join(moot)} apply to a model's Serve deployment; a prompt "
                    "version deploys nothing (every gateway holds every version), remove them"
                )
        for label, version in self.labels.items():
            if not LABEL.match(label):
                raise ValueError(
                    f"labels.{label}: a label is lower-case letters, digits, '-' and '_'"
                )
            if version not in numbers:
                raise ValueError(
                    f"labels.{label}: version {version} does not exist; versions: {numbers}"
                )
        return self

    def version(self, number: int) -> PromptVersion:
        return next(v for v in self.versions if v.version == number)


class PromptRef(_Strict):
    """`<namespace>/<name>[@label|@version]` as a request or a command names a prompt."""

    name: str
    label: str | None = None
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> PromptRef:
        name, at, selector = text.partition("@")
        if not PROMPT_NAME.match(name):
            raise ValueError(
                f"{text!r} is not a prompt reference: <namespace>/<name>[@label|@version], "
                "e.g. support/answer@production"
            )
        if not at:
            return cls(name=name, label=DEFAULT_LABEL)
        if selector.isdigit():
            return cls(name=name, version=int(selector))
        if not LABEL.match(selector):
            raise ValueError(f"{text!r}: after @ comes a label (e.g. production) or a version")
        return cls(name=name, label=selector)

    def __str__(self) -> str:
        return f"{self.name}@{self.label if self.label is not None else self.version}"


Overflow = Literal["fallback", "truncate_oldest"]


class ContextPolicy(_Strict):
    """What the gateway does when a request would not fit the route's context window (the
    smallest `context_window` its backends declare), counted before any call."""

    overflow: Overflow = Field(
        "fallback",
        description="fallback: send it to the route's context_fallback (400 without one); "
        "truncate_oldest: drop the oldest conversation turns (never system messages nor the "
        "last message) until it fits, then the fallback if it still does not",
    )
    tokenizer: str | None = Field(
        None,
        description="path of the model's tokenizer.json (Hugging Face tokenizers) the gateway "
        "counts with; default: an estimate of 4 characters a token",
    )


def prompt_name(path: Path, root: Path) -> str:
    """`<namespace>/<name>` of the prompt file at `path` under the prompts folder `root`."""
    rel = path.relative_to(root)
    return f"{rel.parent.as_posix()}/{rel.stem}"


def load_prompt(path: str | Path) -> PromptFile:
    """One prompt file, validated; ConfigError naming the file and the field paths."""
    data = load_yaml(path, "prompt file")
    if not isinstance(data, dict):
        raise ConfigError(
            ["(root): a prompt file is a mapping (owner, model, versions, labels)"], str(path)
        )
    try:
        return PromptFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, PromptFile), str(path)) from None


def load_prompts(root: str | Path, names: list[str] | None = None) -> dict[str, PromptFile]:
    """The prompts under `root` (`<namespace>/<name>.yaml`), or just `names`: ConfigError with
    one line per problem (an unknown name lists the prompts there are)."""
    root = Path(root)
    found = {prompt_name(p, root): p for p in sorted(root.glob("*/*.yaml"))}
    errors: list[str] = []
    out: dict[str, PromptFile] = {}
    for name in names if names is not None else list(found):
        if not PROMPT_NAME.match(name):
            errors.append(f"{name!r}: a prompt name is <namespace>/<name>, e.g. support/answer")
            continue
        if name not in found:
            errors.append(
                f"{name!r}: no prompt file {root.name}/{name}.yaml; prompts: "
                f"{', '.join(found) or 'none'}"
            )
            continue
        try:
            out[name] = load_prompt(found[name])
        except ConfigError as exc:
            errors += [f"{found[name]}: {line}" for line in exc.errors]
    if errors:
        raise ConfigError(errors, "prompts")
    return out
