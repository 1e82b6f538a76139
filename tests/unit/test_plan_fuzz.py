"""Property: whatever a platform engineer types into a stack file, `tandem plan` ends in a plan or
in a config error that names the field, never in a Python traceback.

Hypothesis mutates the shipped dev and prod stacks (a value replaced by one of another type or
shape, a key deleted, an unknown key added, anywhere in the tree) and runs everything `tandem
plan` does before the engine: parsing and validation (config and use cases), the plan-time
checks, the cost envelope and the policy settings. The mock engine run itself is exercised on a
few mutated stacks below (it costs seconds per stack). Bounded: the stacks are parsed once and
the example count is fixed, so the unit tier stays quick.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finops.envelope import cost_envelope
from policies.settings import PolicySettings
from tandem.plan import build_plan
from tandem.stack import REPO_ROOT, from_flat, read_stack_file
from vocabulary.errors import ConfigError

STACKS = {name: read_stack_file(name) for name in ("dev", "prod")}
USE_CASES = {
    rel: yaml.safe_load((REPO_ROOT / rel).read_text()) for rel in STACKS["dev"]["tandem:useCases"]
}
# A use-case file is data too: mutations reach it through a copy the stack then lists.
UC_DIR = Path(tempfile.mkdtemp(prefix="tandem-fuzz-"))
# a field path as the errors spell it: `gpuPools[0].maxNodes`, `budget.notify[1]`, `images.gateway`
FIELD = re.compile(r"^[A-Za-z][^\s]*?: ")


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = {name: _paths(flat) for name, flat in STACKS.items()}
PATHS |= {rel: _paths(doc) for rel, doc in USE_CASES.items()}
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "latest", "spot", "karpenter", "g9.xlarge", "1.21", "prod", "H100", "-1"]),
    st.lists(st.integers(min_value=-1, max_value=3), max_size=3),
    st.dictionaries(st.sampled_from(["x", "name", "secure"]), st.integers(), max_size=2),
)


@st.composite
def mutated(draw) -> tuple[str, dict, tuple]:
    stack = draw(st.sampled_from(sorted(STACKS)))
    flat = copy.deepcopy(STACKS[stack])
    target = draw(st.sampled_from([stack, *sorted(USE_CASES)]))
    doc: Any = flat if target == stack else copy.deepcopy(USE_CASES[target])
    path = draw(st.sampled_from(PATHS[target]))
    if target != stack:
        copy_path = UC_DIR / f"{len(list(UC_DIR.iterdir()))}-{Path(target).name}"
        flat["tandem:useCases"] = [
            str(copy_path) if rel == target else rel for rel in flat["tandem:useCases"]
        ]
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    last = path[-1]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["bogusKey", "maxNode", "tandem:nope"]))] = draw(VALUES)
    else:
        parent[last] = draw(VALUES)
    if target != stack:
        copy_path.write_text(yaml.safe_dump(doc))
    return stack, flat, path


def _plan_without_engine(stack: str, flat: dict) -> None:
    spec = from_flat(stack, flat)
    for results in spec.checks.values():
        for r in results:
            r.to_dict()
    cost_envelope(spec.config, spec.use_cases).to_dict()
    PolicySettings.from_stack_config(spec.flat, stack)


def _assert_names_a_field(err: ConfigError) -> None:
    assert err.errors, "a config error with no message"
    for line in err.errors:
        body = line.split(": ", 1)[1] if line.startswith("(root): ") else line
        # `(root): {...}: budget.notify[0]: ...` names the field after the root marker
        body = body.removeprefix("{...}: ")
        file_prefixed = re.sub(r"^\S+\.yaml: ", "", body)
        assert FIELD.match(file_prefixed) or "no stack" in line, line


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(mutated())
def test_a_mutated_stack_plans_or_names_the_field(case: tuple[str, dict, tuple]) -> None:
    stack, flat, _path = case
    try:
        _plan_without_engine(stack, flat)
    except ConfigError as err:
        _assert_names_a_field(err)


# without the chatbot, whose canary needs the gateway's Redis and Prometheus (and without the
# coding-assistant route that serves it)
EMBEDDINGS_ONLY = {"tandem:useCases": ["stacks/usecases/document-embeddings.yaml"]}


def _without_chatbot(stack: str) -> dict:
    gw = copy.deepcopy(STACKS[stack]["tandem:gateway"])
    assistants = gw.get("assistants") or {}
    gone = {
        r["alias"] for r in assistants.get("routes", []) if r.get("useCase") == "support-chatbot"
    }
    if assistants:
        assistants["routes"] = [r for r in assistants["routes"] if r["alias"] not in gone]
        for r in assistants["routes"]:
            if "fallbacks" in r:
                r["fallbacks"] = [f for f in r["fallbacks"] if f not in gone]
    for k in gw.get("keys", []):
        if "models" in k:
            k["models"] = [m for m in k["models"] if m not in gone]
    out = {**EMBEDDINGS_ONLY, "tandem:gateway": gw}
    tracing = copy.deepcopy(STACKS[stack].get("tandem:tracing"))
    if tracing and "capture" in tracing:  # the chatbot's route is gone: so is its capture
        tracing["capture"]["routes"] = [
            r for r in tracing["capture"].get("routes", []) if r not in gone | {"support-chat"}
        ]
        out["tandem:tracing"] = tracing
    return out


@pytest.mark.parametrize(
    ("stack", "key", "value", "extra"),
    [
        ("dev", "tandem:gpuSoftware", {"mode": "device-plugin"}, {}),  # valid: plans
        (
            "prod",
            "tandem:gateway",
            {"minReplicas": 2, "maxReplicas": 4, "redis": "none"},
            # without the gateway's Redis there is no queue: the Batch API goes too
            {**EMBEDDINGS_ONLY, "tandem:batch": {"enabled": False}},
        ),
        ("dev", "tandem:observability", {"enabled": False}, _without_chatbot("dev")),
        ("dev", "tandem:registry", {"enabled": True, "replicas": 3}, {}),
    ],
)
def test_mutated_stacks_run_through_the_engine(
    stack: str, key: str, value: Any, extra: dict, monkeypatch
) -> None:
    """The engine run itself (mock engine, policy pack) on stacks whose config is valid but
    unlike the shipped ones: it must end in a plan, not a traceback."""
    import tandem.plan as plan_module

    flat = {**STACKS[stack], key: value, **extra}
    monkeypatch.setattr(plan_module, "load", lambda name: from_flat(name, flat))
    plan = build_plan(stack)
    assert plan.resources and isinstance(plan.to_dict()["cost"]["by_component"], list)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (
            "tandem:policies",
            {"waivers": [{"policy": "s3-versioned"}]},
            "policies.waivers[0].reason",
        ),
        (
            "tandem:policies",
            {"waivers": [{"policy": "no-such", "reason": "x y z"}]},
            "policies.waivers[0].policy",
        ),
        (
            "tandem:policies",
            {"overrides": {"gpu-pool-spotfallback": "advisory"}},
            "policies.overrides",
        ),
        ("tandem:tags", {"team": 7}, "tags.team"),
        ("tandem:gpuPools", [{"name": "x"}], "gpuPools[0]"),
        ("tandem:gateway", {"redis": "none"}, "gateway.redis"),
        ("tandem:observability", {"enabled": False}, "observability.enabled"),
        ("tandem:registry", {"enabled": False}, "registry.enabled"),
    ],
)
def test_values_that_used_to_crash_the_plan_name_their_field(
    key: str, value: Any, field: str
) -> None:
    flat = {**STACKS["dev"], key: value}
    with pytest.raises(ConfigError) as err:
        _plan_without_engine("dev", flat)
    assert field in str(err.value)
