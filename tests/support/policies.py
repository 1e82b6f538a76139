"""Recorded-resource lists from YAML: the policy corpus, its compliant baseline, docs examples.

A fixture is the same shape `tandem.engine.run_under_mocks` records (type, name, inputs in wire
format), written by hand so a rule can be shown a precise bad configuration. Conveniences:
`provider:` and `parent:` name another resource in the list; a ConfigMap's `data` value that is
a mapping is JSON-encoded (so use-case reviews stay readable); the AWS provider's `defaultTags`
object is JSON-encoded as the engine hands provider config.

A corpus case either runs the real program for a shipped stack with its config patched
(`stack: prod`, `stack_patch: {tandem:budget: {monthlyUsd: 50000}}`; lists are replaced whole),
or patches the baseline:

    description: ...
    expect: gpu-pool-taint        # the policy that must report (mandatory unless `enforcement:`)
    also: [stack-gpu-budget]      # optional: other policies the same mistake rightly trips
    environment: prod             # stack environment (default prod)
    config: {tandem:budget: {monthlyUsd: 1000}}   # extra stack config, merged
    patch:
      - {type: ..., name: ..., merge: {...}}      # deep-merge into an existing resource
      - {type: ..., name: ..., set: {...}}        # replace its inputs
      - {type: ..., name: ..., remove: true}
      - {type: ..., name: ..., add: {...}}        # a new resource with these inputs
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tandem.engine import Recorded

PROJECT = "tandem"


def deep_merge(base: Any, over: Any) -> Any:
    """`over` wins; mappings merge recursively; a None value deletes the key."""
    if not (isinstance(base, Mapping) and isinstance(over, Mapping)):
        return copy.deepcopy(over)
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
    return out


def apply_patches(
    docs: Sequence[Mapping[str, Any]], patches: Sequence[Mapping[str, Any]]
) -> list[dict]:
    out = [dict(d) for d in docs]
    for p in patches:
        key = (p["type"], p["name"])
        idx = next((i for i, d in enumerate(out) if (d["type"], d["name"]) == key), None)
        if "add" in p:
            out.append({k: v for k, v in p.items() if k not in ("add",)} | {"inputs": p["add"]})
            continue
        if idx is None:
            raise KeyError(f"patch targets {key}, which the baseline does not have")
        if p.get("remove"):
            del out[idx]
        elif "set" in p:
            out[idx]["inputs"] = copy.deepcopy(p["set"])
        else:
            out[idx]["inputs"] = deep_merge(out[idx].get("inputs", {}), p.get("merge", {}))
    return out


def _encode(doc: Mapping[str, Any]) -> dict[str, Any]:
    inputs = copy.deepcopy(dict(doc.get("inputs") or {}))
    if doc["type"] == "kubernetes:core/v1:ConfigMap" and isinstance(inputs.get("data"), Mapping):
        inputs["data"] = {
            k: v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in inputs["data"].items()
        }
    if doc["type"].startswith("pulumi:providers:") and isinstance(
        inputs.get("defaultTags"), Mapping
    ):
        inputs["defaultTags"] = json.dumps(inputs["defaultTags"])
    return inputs


def to_recorded(docs: Sequence[Mapping[str, Any]], stack: str = "prod") -> list[Recorded]:
    """Build URNs the way the engine does (parent type chain) and resolve provider / parent names.

    `parent:` / `provider:` name the first resource with that name (or `type::name`).
    """

    def find(ref: str) -> int:
        for i, d in enumerate(docs):
            if ref in (d["name"], f"{d['type']}::{d['name']}"):
                return i
        raise KeyError(f"fixture references unknown resource {ref!r}")

    def urn(i: int, depth: int = 0) -> str:
        d = docs[i]
        if depth > 20:
            raise ValueError(f"parent cycle at {d['name']!r}")
        chain = d["type"]
        if d.get("parent"):
            parent_urn = urn(find(d["parent"]), depth + 1)
            chain = parent_urn.split("::")[-2] + "$" + chain
        return f"urn:pulumi:{stack}::{PROJECT}::{chain}::{d['name']}"

    return [
        Recorded(
            type=d["type"],
            name=d["name"],
            urn=urn(i),
            parent=urn(find(d["parent"])) if d.get("parent") else None,
            inputs=_encode(d),
            custom=d.get("custom", not d["type"].startswith("tandem:")),
            provider=f"{urn(find(d['provider']))}::{d['provider']}-id"
            if d.get("provider")
            else None,
        )
        for i, d in enumerate(docs)
    ]


def load_docs(path: str | Path) -> list[dict]:
    data = yaml.safe_load(Path(path).read_text())
    return list(data["resources"] if isinstance(data, Mapping) else data)


@dataclass
class Case:
    """One corpus entry: a bad configuration and the violation it must raise."""

    name: str
    description: str
    expect: str
    environment: str = "prod"
    enforcement: str = "mandatory"
    message_contains: str = ""
    also: list[str] = field(default_factory=list)  # other policies the mistake rightly trips
    config: dict[str, Any] = field(default_factory=dict)
    patch: list[dict[str, Any]] = field(default_factory=list)
    stack: str | None = None  # run the real program for this shipped stack instead of the baseline
    stack_patch: dict[str, Any] = field(default_factory=dict)  # merged into its config: block

    def stack_config(self, base: Mapping[str, Any]) -> dict[str, Any]:
        return deep_merge(dict(base), {"tandem:environment": self.environment, **self.config})

    def resources(self, baseline: Sequence[Mapping[str, Any]]) -> list[Recorded]:
        return to_recorded(apply_patches(baseline, self.patch), stack=self.environment)


def stack_case_violations(case: Case) -> list:
    """Run the program for `case.stack` with its config patched, and evaluate it."""
    from policies.harness import evaluate
    from tandem.plan import run_config
    from tandem.stack import read_stack_file

    assert case.stack is not None
    flat = deep_merge(read_stack_file(case.stack), case.stack_patch)

    resources = run_config(case.stack, flat)
    return evaluate(resources, flat, stack=case.stack)


def load_case(path: str | Path) -> Case:
    raw = yaml.safe_load(Path(path).read_text())
    return Case(name=Path(path).stem, **raw)
