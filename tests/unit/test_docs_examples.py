"""Every example in README.md and docs/*.md is checked, so a doc cannot drift from the code.

Each fenced block declares what it is: its info string (`yaml`, `json`, `bash`, `console`,
`python`, `promql`, `text` for diagrams and output) and, for YAML and PromQL, an HTML comment on
the line before the fence:

    <!-- example: KIND [key=value ...] -->

| kind | checked as |
|---|---|
| `stack-fragment [base=dev]` | `tandem:*` keys (bare or under `config:`) merged into stacks/Pulumi.<base>.yaml, then the stack loaded as `tandem plan` loads it (config and use cases) |
| `use-case` / `use-case-fragment` | a use-case file; a fragment is merged into stacks/usecases/support-chatbot.yaml first |
| `deployment` | one ModelDeployment file (what `tandem serve --local` also accepts) |
| `routes` / `routes-fragment` | a gateway routes file; a fragment's sections are merged into a minimal one (a route given only `cache:` gets a backend) |
| `prices` | a `finops report --prices` file |
| `prompt` | a prompt file (`stacks/prompts/<namespace>/<name>.yaml`), validated as `tandem plan` loads it |
| `alert-rule` | a Prometheus alert; its expression must be the one observability/rules.py generates |
| `illustration reason=...` | abridged on purpose (`...` inside); only the reason is required |

JSON blocks must parse. Python blocks must parse and their imports resolve. Shell blocks (`bash`;
`console` lines starting with `$ `): every `tandem` command line is parsed by the real argument
parser and the cheap ones are run (`CHEAP`); `make` targets must exist; scripts must exist (and
`bash -n` them); `python SCRIPT`/`-m MODULE` lines are checked against the program's `--help`
(every flag shown must exist); `curl`, `pulumi`, `vllm`, `claude` and `codex` are named in
EXTERNAL with why they are not run here; TOML blocks must parse. Inline `tandem ...` spans in the prose are parsed too.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import io
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGS = {"yaml", "json", "toml", "bash", "console", "python", "promql", "text"}
# programs a doc may show that this test does not run, and why
EXTERNAL = {
    "curl": "talks to a server the reader started (the LLM tier and integration tests send the same requests)",
    "pulumi": "the Pulumi CLI cannot be installed on the build machines (FIELD-NOTES)",
    "vllm": "vLLM's own CLI lives in .venv-llm; tests/llm runs `vllm --version` and `vllm bench serve`",
    "claude": "Claude Code (npm); tests/integration/test_assistant_clients.py runs it through the gateway",
    "codex": "Codex CLI (npm); tests/integration/test_assistant_clients.py runs it through the gateway",
}
# `tandem` commands fast and side-effect free enough to run for real, by their command words
CHEAP = {
    ("gate",),
    ("gateway", "hash-key"),
    ("serve",),
    ("policies",),
    ("prompts", "list"),
    ("prompts", "diff"),
    ("prompts", "render"),
}
# placeholders in prose spans -> a value the parser accepts
PLACEHOLDERS = {
    "<name>": "support-chatbot",
    "<stack>": "dev",
    "URL": "http://127.0.0.1:9090",
    "FILE": "stacks/usecases/support-chatbot.yaml",
    " S ": " dev ",
}


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    kind: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


_FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_ANNOTATION = re.compile(r"<!--\s*example:\s*(?P<kind>[\w-]+)(?P<opts>.*?)-->\s*$")


def blocks() -> list[Block]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in _FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            block = Block(doc, line, m.group("lang").strip(), m.group("body"))
            ann = _ANNOTATION.search(before)
            if ann:
                block.kind = ann.group("kind")
                opts = shlex.split(ann.group("opts"))
                block.options = dict(o.split("=", 1) for o in opts if "=" in o)
            out.append(block)
    return out


BLOCKS = blocks()


def _of(*langs: str) -> list[Block]:
    return [b for b in BLOCKS if b.lang in langs]


def test_every_block_says_what_it_is() -> None:
    bad = [f"{b.where}: info string {b.lang!r}" for b in BLOCKS if b.lang not in LANGS]
    bad += [
        f"{b.where}: a {b.lang} block needs <!-- example: KIND --> on the line before it"
        for b in _of("yaml", "promql")
        if not b.kind
    ]
    bad += [
        f"{b.where}: illustration without reason=..."
        for b in BLOCKS
        if b.kind == "illustration" and not b.options.get("reason")
    ]
    assert not bad, "\n".join(bad)
    assert len(BLOCKS) > 30  # the extractor sees the docs


# --- YAML ------------------------------------------------------------------------------------


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(patch)


def _stack(data: dict, base: str) -> None:
    from tandem.stack import from_flat, read_stack_file

    flat = data.get("config", data)
    assert all(":" in k for k in flat), f"stack keys are namespaced (tandem:...): {list(flat)}"
    from_flat(base, _merge(read_stack_file(base), flat))


def _use_case(data: dict, fragment: bool) -> None:
    from vocabulary.usecase import UseCaseSpec

    if fragment:
        base = yaml.safe_load((REPO / "stacks/usecases/support-chatbot.yaml").read_text())
        data = _merge(base, data)
    UseCaseSpec.model_validate(data)


def _routes(data: dict, fragment: bool) -> None:
    from gateway.config import parse_config

    if fragment:
        base: dict[str, Any] = {"backends": {"b": {"url": "http://127.0.0.1:9/v1"}}, "routes": {}}
        routes = {
            alias: route
            if "backends" in (route or {})
            else {**(route or {}), "backends": [{"backend": "b"}]}
            for alias, route in (data.get("routes") or {}).items()
        }
        data = _merge(base, {**data, "routes": routes or {"r": {"backends": [{"backend": "b"}]}}})
    parse_config(data, "docs example")


def _prices(text: str, tmp_path: Path) -> None:
    from finops.prices import load_prices

    path = tmp_path / "prices.yaml"
    path.write_text(text)
    load_prices(path)


def _alert_rule(data: Any) -> None:
    from observability.rules import RuleSettings, alert_rules

    rules = data if isinstance(data, list) else [data]
    shipped = {r["alert"]: r for group in alert_rules(RuleSettings()) for r in group["rules"]}
    for rule in rules:
        assert rule["alert"] in shipped, f"no shipped alert {rule['alert']!r}"
        want = shipped[rule["alert"]]
        assert " ".join(rule["expr"].split()) == " ".join(want["expr"].split()), want["expr"]
        assert rule.get("for") == want.get("for")
        assert rule.get("labels", {}).items() <= want["labels"].items()


YAML_KINDS = {
    "stack-fragment",
    "use-case",
    "use-case-fragment",
    "deployment",
    "routes",
    "routes-fragment",
    "prices",
    "prompt",
    "alert-rule",
    "illustration",
}


@pytest.mark.parametrize("block", _of("yaml"), ids=lambda b: b.where)
def test_yaml_example_loads_through_the_validator(block: Block, tmp_path: Path) -> None:
    assert block.kind in YAML_KINDS, f"{block.where}: unknown kind {block.kind!r}; {YAML_KINDS}"
    if block.kind == "illustration":
        return
    data = yaml.safe_load(block.text)
    if block.kind == "stack-fragment":
        _stack(data, block.options.get("base", "dev"))
    elif block.kind in ("use-case", "use-case-fragment"):
        _use_case(data, block.kind.endswith("fragment"))
    elif block.kind == "deployment":
        from vocabulary.deployment import ModelDeployment

        ModelDeployment.model_validate(data)
    elif block.kind in ("routes", "routes-fragment"):
        _routes(data, block.kind.endswith("fragment"))
    elif block.kind == "prices":
        _prices(block.text, tmp_path)
    elif block.kind == "prompt":
        from vocabulary.prompts import PromptFile

        PromptFile.model_validate(data)
    else:
        _alert_rule(data)


@pytest.mark.parametrize("block", _of("json"), ids=lambda b: b.where)
def test_json_example_parses(block: Block) -> None:
    json.loads(block.text)


@pytest.mark.parametrize("block", _of("toml"), ids=lambda b: b.where)
def test_toml_example_parses(block: Block) -> None:
    import tomllib

    tomllib.loads(block.text)


@pytest.mark.parametrize("block", _of("python"), ids=lambda b: b.where)
def test_python_example_parses_and_its_imports_exist(block: Block) -> None:
    tree = ast.parse(block.text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


@pytest.mark.parametrize("block", _of("promql"), ids=lambda b: b.where)
def test_promql_example_is_marked(block: Block) -> None:
    assert block.kind == "illustration", f"{block.where}: a PromQL block is an illustration"


# --- shell -----------------------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The command lines of a shell block, split as the shell would (comments dropped)."""
    text = block.text
    if block.lang == "console":
        text = "\n".join(ln[2:] for ln in text.splitlines() if ln.startswith("$ "))
    text = text.replace("\\\n", " ")
    out, variables = [], {}
    for line in text.splitlines():
        argv = shlex.split(line, comments=True)
        argv = [
            re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), a) for a in argv
        ]
        assigned = [a for a in argv if re.fullmatch(r"[A-Z_]+=\S*", a)]
        if assigned == argv:  # PROM=http://...: later lines say $PROM
            variables.update(a.split("=", 1) for a in argv)
            continue
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
            argv = argv[1:]  # VAR=value prefixes
        out.append(argv)
    return out


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """(`tandem` / `python` / `make` / ..., the arguments), venv prefixes dropped."""
    first = re.sub(r"^\.venv(-llm)?/bin/", "", argv[0])
    return first, argv[1:]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))


def _run_tandem(args: list[str]) -> tuple[int, str]:
    from tandem.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _parse_tandem(args: list[str]) -> str | None:
    """None if `tandem ARGS` parses, else argparse's complaint."""
    from tandem.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code:
                return err.getvalue().strip().splitlines()[-1]
    return None


def _words(args: list[str]) -> tuple[str, ...]:
    return tuple(a for a in args[:2] if not a.startswith("-"))


def _cheap(args: list[str]) -> bool:
    if _words(args)[:1] == ("serve",):
        return "--print-config" in args  # never --local or --stop: they start and stop things
    return any(_words(args)[: len(c)] == c for c in CHEAP)


def check_command(argv: list[str]) -> None:
    program, args = _program(argv)
    if program in EXTERNAL:
        return
    if program == "tandem":
        problem = _parse_tandem(args)
        assert problem is None, f"tandem {shlex.join(args)}: {problem}"
        if _cheap(args):
            code, err = _run_tandem(args)
            assert code in (0, 1), f"tandem {shlex.join(args)} exited {code}: {err}"
        return
    if program == "make":
        targets = [a for a in args if "=" not in a and not a.startswith("-")]
        assert set(targets) <= _make_targets(), f"make: no target {set(targets) - _make_targets()}"
        return
    if program == "bash":
        script = REPO / args[0]
        assert script.is_file(), f"no script {args[0]}"
        subprocess.run(["bash", "-n", str(script)], check=True)
        return
    if program.startswith("python"):
        target = ["-m", args[1]] if args[0] == "-m" else [str(REPO / args[0])]
        if args[0] != "-m":
            assert (REPO / args[0]).is_file(), f"no script {args[0]}"
        rest = args[2:] if args[0] == "-m" else args[1:]
        if rest and rest[0].isidentifier():  # a sub-command: its own --help lists its flags
            target.append(rest[0])
        flags = {a.split("=")[0] for a in args if a.startswith("--")}
        done = subprocess.run(
            [sys.executable, *target, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        missing = sorted(f for f in flags if f not in done.stdout)
        assert not missing, f"{shlex.join(argv)}: {missing} not in its --help"
        return
    raise AssertionError(f"unknown program {program!r}: teach tests/unit/test_docs_examples.py")


@pytest.mark.parametrize("block", _of("bash", "console"), ids=lambda b: b.where)
def test_shell_example_commands_exist_and_parse(block: Block) -> None:
    found = commands(block)
    assert found, f"{block.where}: a shell block without a command"
    for argv in found:
        check_command(argv)


_SPAN = re.compile(r"`((?:\.venv(?:-llm)?/bin/)?tandem(?: [^`]*)?)`")


def spans() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        prose = _FENCE.sub("", doc.read_text())
        out += [(str(doc.relative_to(REPO)), m.group(1)) for m in _SPAN.finditer(prose)]
    return out


@pytest.mark.parametrize("where, span", spans(), ids=lambda x: x)
def test_inline_tandem_commands_parse(where: str, span: str) -> None:
    from tandem.cli import build_parser

    if re.match(r"tandem [\w <>-]*:", span):
        return  # the shape of a message (`tandem plan: ...`), not a command
    text = re.sub(r"\[([^\]]*)\]", r"\1", f" {span} ")  # [--output json]: optional, show it
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    _, args = _program(shlex.split(text))
    if all(not a.startswith("-") for a in args) and len(args) <= 2:
        # a mention (`tandem plan`, `tandem cache replay`): the command words must exist
        parser = build_parser()
        for word in args:
            sub = next(a for a in parser._actions if a.dest.endswith("command"))
            assert word in sub.choices, f"{where}: `{span}`: no command {word!r}"
            parser = sub.choices[word]
            if not any(a.dest.endswith("command") for a in parser._actions):
                break
        return
    problem = _parse_tandem(args)
    assert problem is None, f"{where}: `{span}`: {problem}"
