"""Prompts as code: the file's checks, references, rendering, the context budget's arithmetic,
the stack's checks of a use case's prompts, and `tandem prompts`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from prompts.registry import CompiledPrompts, PromptNotFound
from prompts.tokens import ESTIMATE, drop_oldest, fit_oldest, message_tokens
from tandem.cli import main
from vocabulary.errors import ConfigError
from vocabulary.prompts import PromptFile, PromptRef, load_prompts

SHIPPED = Path(__file__).resolve().parents[2] / "stacks" / "prompts"


def _prompt(**changes: object) -> dict:
    base: dict = {
        "owner": "support",
        "model": "chat",
        "labels": {"production": 1},
        "versions": [
            {
                "version": 1,
                "messages": [
                    {"role": "system", "content": "You help {{ customer }}."},
                    {"role": "user", "content": "{{question}}"},
                ],
                "parameters": {"temperature": 0.1},
            }
        ],
    }
    return {**base, **changes}


def _write(root: Path, name: str, data: dict) -> None:
    path = root / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"labels": {"candidate": 1}}, ["labels", "'production'"]),
        ({"labels": {"production": 4}}, ["labels.production", "version 4 does not exist"]),
        ({"labels": {"production": 1, "Prod!": 1}}, ["labels.Prod!"]),
        (
            {"versions": [_prompt()["versions"][0], _prompt()["versions"][0]]},
            ["unique", "[1]"],
        ),
        (
            {"versions": [{"version": 1, "messages": [{"role": "user", "content": "{{a b}}"}]}]},
            ["versions[0].messages[0].content", "not a variable"],
        ),
        (
            {"versions": [{"version": 1, "messages": [{"role": "tool", "content": "x"}]}]},
            ["versions[0].messages[0].role", "system"],
        ),
        (
            {
                "versions": [
                    {
                        "version": 1,
                        "messages": [{"role": "user", "content": "x"}],
                        "parameters": {"temprature": 1},
                    }
                ]
            },
            ["parameters", "temprature"],
        ),  # fmt: skip
        ({"model": ""}, ["model"]),
    ],
)
def test_prompt_file_errors_name_the_field(tmp_path: Path, changes: dict, words: list[str]) -> None:
    _write(tmp_path, "support/answer", _prompt(**changes))
    with pytest.raises(ConfigError) as err:
        load_prompts(tmp_path)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "answer.yaml" in str(err.value)


def test_unknown_prompt_names_the_ones_there_are(tmp_path: Path) -> None:
    _write(tmp_path, "support/answer", _prompt())
    with pytest.raises(ConfigError, match=r"support/other.*prompts: support/answer"):
        load_prompts(tmp_path, ["support/other"])
    with pytest.raises(ConfigError, match="<namespace>/<name>"):
        load_prompts(tmp_path, ["answer"])


def test_references() -> None:
    assert PromptRef.parse("support/answer") == PromptRef(name="support/answer", label="production")
    assert PromptRef.parse("support/answer@7").version == 7
    assert PromptRef.parse("support/answer@candidate").label == "candidate"
    for bad in ("answer", "support/answer@", "Support/Answer", "support/answer@Bad Label"):
        with pytest.raises(ValueError):
            PromptRef.parse(bad)


def test_rendering_places_the_conversation_between_system_and_the_templated_turn() -> None:
    compiled = CompiledPrompts({"support/answer": PromptFile.model_validate(_prompt())})
    prompt, version, arm = compiled.resolve("support/answer", {})
    assert (prompt.model, version.version, arm) == ("chat", 1, "")
    assert version.variables == {"customer", "question"}
    assert version.problems({"customer", "extra"}) == (["question"], ["extra"])
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    out = version.render({"customer": "Ana", "question": "Why?"}, history)
    assert out == [
        {"role": "system", "content": "You help Ana."},
        *history,
        {"role": "user", "content": "Why?"},
    ]
    with pytest.raises(PromptNotFound, match="no label 'staging'"):
        compiled.resolve("support/answer@staging", {})
    with pytest.raises(PromptNotFound, match="does not exist"):
        compiled.resolve("support/nothing", {})


def test_truncation_drops_the_oldest_turns_never_system_nor_the_last() -> None:
    messages = [
        {"role": "system", "content": "s" * 40},
        *({"role": "user", "content": "u" * 40} for _ in range(4)),
        {"role": "user", "content": "last" * 10},
    ]
    counts = message_tokens(ESTIMATE, messages)
    assert counts == [15] * 6  # 10 tokens of text + 5 of template overhead
    assert fit_oldest(counts, messages, 90) == 0
    assert fit_oldest(counts, messages, 60) == 2
    kept = drop_oldest(messages, 2)
    assert kept[0] == messages[0] and kept[-1] == messages[-1] and len(kept) == 4
    assert fit_oldest(counts, messages, 29) == -1  # system + last alone are 30


def test_routes_file_checks_prompts_and_tokenizers() -> None:
    base = {
        "backends": {"b": {"url": "http://127.0.0.1:1/v1"}},
        "routes": {"chat": {"backends": [{"backend": "b"}]}},
    }
    with pytest.raises(ConfigError, match=r"prompts\.support/answer\.model: unknown route 'nope'"):
        parse_config({**base, "prompts": {"support/answer": _prompt(model="nope")}})
    with pytest.raises(ConfigError, match=r"prompts\.answer: a prompt name is"):
        parse_config({**base, "prompts": {"answer": _prompt()}})
    from gateway.config import compile_config

    cfg = parse_config(
        {**base, "routes": {"chat": {**base["routes"]["chat"], "context": {"tokenizer": "/no"}}}}
    )
    with pytest.raises(ConfigError, match=r"routes\.chat\.context\.tokenizer: cannot load"):
        compile_config(cfg)
    with pytest.raises(ConfigError, match=r"context\.overflow"):
        parse_config(
            {**base, "routes": {"chat": {**base["routes"]["chat"], "context": {"overflow": "x"}}}}
        )


def test_a_use_case_lists_prompts_that_exist_and_are_written_for_it() -> None:
    from tandem.stack import prompt_errors
    from vocabulary.usecase import UseCaseSpec, load_use_case

    chatbot = load_use_case(SHIPPED.parents[0] / "usecases" / "support-chatbot.yaml")
    assert chatbot.prompts == ["support/answer"] and prompt_errors([chatbot]) == []
    wrong = chatbot.model_copy(update={"prompts": ["support/answer", "support/missing"]})
    (line,) = prompt_errors([wrong])
    assert "support/missing" in line and "prompts: support/answer" in line
    renamed = chatbot.model_copy(
        update={"gateway": chatbot.gateway.model_copy(update={"alias": "help"})}  # type: ignore[union-attr]
    )
    (line,) = prompt_errors([renamed])
    assert "written for the model 'support-chat'" in line and "'help'" in line
    data = yaml.safe_load((SHIPPED.parents[0] / "usecases" / "support-chatbot.yaml").read_text())
    data.pop("gateway"), data.pop("rollout"), data.pop("features")
    with pytest.raises(ValueError, match="prompts: the gateway renders"):
        UseCaseSpec.model_validate(data)


def test_cli_list_diff_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "list", "--output", "json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["prompt"] == "support/answer"]
    assert row["model"] == "support-chat" and row["labels"]["production"] in row["versions"]

    assert main(["prompts", "diff", "support/answer@production", "support/answer@candidate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- support/answer@2 (support/answer@production)")
    assert "\n+language of the question." in out and "\n [user]\n {{question}}\n" in out

    args = ["prompts", "render", "support/answer@1", "--var", "question=Where is my refund?"]
    assert main(args) == 0
    captured = capsys.readouterr()
    request = json.loads(captured.out)
    assert request["messages"][-1] == {"role": "user", "content": "Where is my refund?"}
    assert request["max_tokens"] == 400 and "tokens in 2 messages (estimate)" in captured.err

    assert main(["prompts", "render", "support/answer", "--var", "question=x"]) == 2
    err = capsys.readouterr().err
    assert "missing variables ['open_tickets', 'plan_tier', 'tenure_months']" in err
    assert main(["prompts", "diff", "support/answer@nope", "support/answer@1"]) == 2
    assert "no label 'nope'" in capsys.readouterr().err
