"""The prompts a gateway serves, compiled once per config load: a request's reference
(`support/answer@production`, `support/answer@3`, `support/answer`) resolved to one compiled
version with dictionary lookups.

A prompt version rolls out like a model version: a live `vocabulary.rollout.TrafficSplit` under
the gateway's Redis key `<prefix>:split:prompt:<name>` (the same record, watcher and sticky
hashing as a route's split: gateway/split.py) sends `canary_weight` percent of the references to
the `production` label to `canary_version`; with `sticky_by` each caller keeps one arm for the
whole experiment. A reference to another label or to a version number is never split.

The rollout controller steps that split like a model's (`tandem prompts rollout`, lifecycle/);
a promotion leaves it at 100 % on the new version until the `production` label in the prompt file
is moved to it (prompts are code, reviewed like code). A split applies only while the file's
`production` is the version it was written against (its `stable_version`): once the label moves,
to the promoted version or to any other, the file decides again and a stale record cannot pin an
old version.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from prompts.template import CompiledVersion
from vocabulary.prompts import DEFAULT_LABEL, PromptFile, PromptRef
from vocabulary.rollout import CANARY, STABLE, TrafficSplit, sticky_point

log = logging.getLogger("tandem.prompts")
SPLIT_PREFIX = "prompt:"  # the split watcher's key for a prompt: `prompt:<name>`


class PromptNotFound(LookupError):
    """The reference names no prompt, label or version here; the message says which."""


class CompiledPrompt:
    __slots__ = (
        "name",
        "spec",
        "model",
        "owner",
        "versions",
        "labels",
        "canary",
        "weight",
        "sticky",
    )

    def __init__(self, name: str, spec: PromptFile) -> None:
        self.name = name
        self.spec = spec
        self.model = spec.model
        self.owner = spec.owner
        self.versions = {v.version: CompiledVersion(name, v) for v in spec.versions}
        self.labels = {label: self.versions[n] for label, n in spec.labels.items()}
        self.canary: CompiledVersion | None = None  # a live split's candidate for `production`
        self.weight = 0.0  # its share, 0..1
        self.sticky: tuple[str, str] | None = None  # (attribute, salt) of an experiment

    def apply_split(self, split: TrafficSplit | None) -> None:
        self.canary, self.weight, self.sticky = None, 0.0, None
        if split is None or split.canary_weight <= 0:
            return
        production = self.labels[DEFAULT_LABEL].label
        if split.stable_version and split.stable_version != production:
            log.info(
                "prompt %s: the split was written against version %s, the file's production is "
                "%s; the file decides",
                self.name,
                split.stable_version,
                production,
            )
            return
        try:
            version = self.versions[int(split.canary_version)]
        except (ValueError, KeyError):
            log.error(
                "prompt %s: the split names version %r, which the prompt file does not have; "
                "serving the production label only",
                self.name,
                split.canary_version,
            )
            return
        self.canary, self.weight = version, split.canary_weight / 100
        self.sticky = (split.sticky_by, split.salt) if split.sticky_by else None

    def pick(self, ref: PromptRef, body: dict[str, Any]) -> tuple[CompiledVersion, str]:
        """The version for `ref` and its arm (`stable` / `canary`; "" outside a rollout)."""
        if ref.version is not None:
            v = self.versions.get(ref.version)
            if v is None:
                raise PromptNotFound(
                    f"The prompt '{self.name}' has no version {ref.version}; versions: "
                    f"{sorted(self.versions)}."
                )
            return v, ""
        assert ref.label is not None
        v = self.labels.get(ref.label)
        if v is None:
            raise PromptNotFound(
                f"The prompt '{self.name}' has no label '{ref.label}'; labels: "
                f"{sorted(self.labels)}."
            )
        if ref.label != DEFAULT_LABEL or self.canary is None:
            return v, ""
        point = sticky_point(self.sticky, body) if self.sticky is not None else None
        if point is None:
            point = random.random()
        return (self.canary, CANARY) if point < self.weight else (v, STABLE)


class CompiledPrompts:
    """Every prompt of a routes file, by name."""

    def __init__(self, prompts: dict[str, PromptFile]) -> None:
        self.by_name = {name: CompiledPrompt(name, spec) for name, spec in prompts.items()}

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def resolve(
        self, text: str, body: dict[str, Any]
    ) -> tuple[CompiledPrompt, CompiledVersion, str]:
        """The prompt, version and arm a reference names; ValueError for a malformed reference,
        PromptNotFound for one that names nothing here."""
        ref = PromptRef.parse(text)
        prompt = self.by_name.get(ref.name)
        if prompt is None:
            raise PromptNotFound(f"The prompt '{ref.name}' does not exist.")
        version, arm = prompt.pick(ref, body)
        return prompt, version, arm

    def apply_splits(self, splits: dict[str, TrafficSplit]) -> None:
        """Lay the live splits (keys `prompt:<name>`) over the prompts; others are left as the
        file says."""
        for name, prompt in self.by_name.items():
            prompt.apply_split(splits.get(SPLIT_PREFIX + name))
