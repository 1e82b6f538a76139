"""A prompt version's rollout: the plan `tandem prompts rollout` sends the controller, the
analysis' queries for arms told apart by `prompt_version`, the prompt file's `rollout:` checks,
and the gateway ignoring a split written against an older `production`
(tests/integration/test_prompts_rollout.py runs it on real parts)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lifecycle.analysis import (
    Arms,
    PromptArms,
    attempts_query,
    breaker_query,
    custom_query,
    error_rate_query,
)
from lifecycle.plan import PROMPT, RolloutPlan, build_prompt_plan
from prompts.registry import CompiledPrompts
from vocabulary.prompts import PromptFile
from vocabulary.rollout import CANARY, STABLE, Experiment, PromqlCheck, TrafficSplit


def _file(**changes: object) -> PromptFile:
    versions = [
        {"version": n, "messages": [{"role": "user", "content": f"v{n}: {{{{question}}}}"}]}
        for n in (1, 2, 3)
    ]
    doc: dict = {
        "owner": "care",
        "model": "support-chat",
        "labels": {"production": 2},
        "versions": versions,
    }
    return PromptFile.model_validate({**doc, **changes})


def test_the_plan_moves_production_references_from_the_labelled_version() -> None:
    plan = build_prompt_plan("support/answer", _file(), 3, redis_prefix="gw")
    assert plan.kind == PROMPT and plan.is_prompt
    assert plan.use_case == "prompt:support/answer"  # the controller's key for it
    assert (plan.stable_version, plan.canary_version) == ("2", "3")
    assert plan.split_key == "gw:split:prompt:support/answer"  # the key the gateway watches
    assert plan.configs == {} and plan.team == "care"
    assert plan.spec().strategy == "canary"  # the canary defaults without a rollout: section
    # it survives the controller's durable state unchanged
    assert RolloutPlan.from_dict(plan.to_dict()) == plan
    assert isinstance(plan.arms(), PromptArms)


def test_the_prompt_files_rollout_section_is_the_plans() -> None:
    rollout = {"strategy": "experiment", "split": 20, "sticky_by": "metadata.session_id"}
    plan = build_prompt_plan("support/answer", _file(rollout=rollout), 1)
    spec = plan.spec()
    assert isinstance(spec, Experiment) and spec.split == 20
    assert spec.sticky_by == "metadata.session_id"


@pytest.mark.parametrize(
    ("version", "words"),
    [(2, "already its 'production'"), (9, "no version 9; versions: [1, 2, 3]")],
)
def test_a_version_that_cannot_roll_out_is_refused(version: int, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        build_prompt_plan("support/answer", _file(), version)


@pytest.mark.parametrize("key", ["deployment", "deploy_timeout_s"])
def test_model_only_rollout_keys_are_refused_in_a_prompt(key: str) -> None:
    value = "llm" if key == "deployment" else 60
    with pytest.raises(ValidationError, match=f"rollout: {key} apply to a model"):
        _file(rollout={"strategy": "canary", key: value})


def test_model_plans_keep_their_backend_arms() -> None:
    plan = RolloutPlan(
        use_case="chat", team="t", alias="chat", deployment="llm", canary_app="llm-canary",
        stable_backend="chat", canary_backend="chat-canary", split_key="k",
        registry_name="m", registry_alias="champion", stable_version="1", canary_version="2",
        stable_source="s", canary_source="c", rollout={"strategy": "canary"}, configs={},
    )  # fmt: skip
    assert plan.kind == "model" and not plan.is_prompt
    assert plan.arms() == Arms("chat", "chat", "chat-canary")


def test_prompt_arms_are_told_apart_by_version_and_count_what_the_version_broke() -> None:
    arms = PromptArms("support/answer", "2", "3")
    attempts = attempts_query(arms, CANARY, "30s")
    assert attempts == (
        'sum(increase(tandem_gateway_prompt_renders_total{prompt="support/answer",'
        'prompt_version="3"}[30s]))'
    )
    assert 'prompt_version="2"' in attempts_query(arms, STABLE, "30s")
    errors = error_rate_query(arms, CANARY, "30s")
    assert 'outcome="invalid"' in errors  # refused variables: a template callers cannot fill
    assert 'code=~"400|5.."' in errors  # the backend refusing or failing on the prompt
    assert "429" not in errors and "backend=" not in errors
    assert breaker_query(arms, "30s") is None  # the backend's breaker is not the prompt's
    check = PromqlCheck(
        name="refusals",
        query='sum(rate(x{prompt="{{prompt}}",prompt_version="{{prompt_version}}"}[{{interval}}]))',
        max=0.1,
    )
    assert custom_query(check, arms, CANARY, "30s") == (
        'sum(rate(x{prompt="support/answer",prompt_version="3"}[30s]))'
    )


def test_a_check_must_select_the_arm() -> None:
    with pytest.raises(ValidationError, match="must select the arm"):
        PromqlCheck(name="c", query="sum(rate(x[1m]))", max=1)
    PromqlCheck(name="c", query='x{prompt_version="{{prompt_version}}"}', max=1)  # a prompt's


def _served(prompts: CompiledPrompts, split: TrafficSplit | None) -> str:
    prompts.apply_splits({"prompt:support/answer": split} if split else {})
    _, version, _ = prompts.resolve("support/answer", {})
    return version.label


def test_a_split_applies_only_against_the_production_it_was_written_for() -> None:
    prompts = CompiledPrompts({"support/answer": _file()})  # production: 2
    full = {"canary_weight": 100, "canary_version": "3", "salt": "s"}
    assert _served(prompts, TrafficSplit(stable_version="2", **full)) == "3"
    assert _served(prompts, TrafficSplit(**full)) == "3"  # a record without one: applies
    # written when production was 1; the file has moved on: the file decides
    assert _served(prompts, TrafficSplit(stable_version="1", **full)) == "2"
    assert _served(prompts, None) == "2"


def test_a_prompt_file_with_a_rollout_round_trips_through_its_dump() -> None:
    """The routes ConfigMap and the benchmarks carry the file as dumped (defaults written out):
    the model-only keys at their defaults are not "set" by the team."""
    prompt = _file(rollout={"strategy": "canary", "steps": [20]})
    assert PromptFile.model_validate(prompt.model_dump(mode="json")) == prompt
