"""The real coding assistants through the gateway: Claude Code and Codex CLI, as developers run them.

Claude Code (`claude -p`, non-interactive) answers a prompt and does a tool-using task in a
scratch git repository ("create .../hello.txt containing hi": it must call its Write tool and the
file must exist afterwards), through the gateway's Messages API (a) passed through to a scripted
Anthropic-compatible upstream on loopback (tests/support/anthropic_upstream.py) and (b) translated
to the scripted OpenAI-compatible upstream (tests/support/upstream.py), as it would be to a
self-hosted vLLM model. Codex CLI (`codex exec`) does the same through the Responses API,
translated to chat completions. Each client authenticates with a developer's key; the gateway's
per-developer metrics and audit log must show the tool, the developer and no prompt text.

The clients are the npm packages pinned in tests/integration/assistants/package-lock.json,
installed there by `make assistant-clients` (`make test` runs it). Missing clients fail the test,
never skip it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import hash_key
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration

CLIENTS = Path(__file__).parent / "assistants" / "node_modules"
PROVIDER_KEY = "sk-ant-provider"  # what the gateway sends upstream, never the developer's key
DEV_KEY = "sk-tandem-alice"
RUN_TIMEOUT_S = 120


def _claude_binary() -> Path:
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x64")
    for variant in (f"linux-{arch}", f"linux-{arch}-musl", f"darwin-{arch}"):
        exe = CLIENTS / "@anthropic-ai" / f"claude-code-{variant}" / "claude"
        if exe.exists():
            return exe
    pytest.fail(
        f"Claude Code is not installed in {CLIENTS}: run `make assistant-clients`",
        pytrace=False,
    )


def _codex_binary() -> Path:
    exe = CLIENTS / ".bin" / "codex"
    if not exe.exists():
        pytest.fail(
            f"Codex CLI is not installed in {CLIENTS}: run `make assistant-clients`",
            pytrace=False,
        )
    return exe


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    os.environ["TANDEM_TEST_PROVIDER_KEY"] = PROVIDER_KEY
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    anthropic_up, openai_up = AnthropicUpstream("claude"), Upstream("local")
    with ServerThread(anthropic_up.app) as a_srv, ServerThread(openai_up.app) as o_srv:
        config = {
            "backends": {
                "claude": {
                    "url": a_srv.url + "/v1",
                    "protocol": "anthropic",
                    "api_key_env": "TANDEM_TEST_PROVIDER_KEY",
                },
                "local": {"url": o_srv.url + "/v1"},
            },
            "routes": {
                "claude-sonnet": {"backends": [{"backend": "claude"}]},
                "coder": {"backends": [{"backend": "local"}]},
            },
            "prices": {
                "claude": {
                    "input_per_mtok": 3,
                    "output_per_mtok": 15,
                    "cached_input_per_mtok": 0.3,
                },
                "local": {"input_per_mtok": 0.2, "output_per_mtok": 0.6},
            },
            "teams": {"platform": {"developer_budget": {"usd": 100, "period": "month"}}},
            "keys": [
                {
                    "id": "alice",
                    "team": "platform",
                    "sha256": hash_key(DEV_KEY),
                    "developer": "alice@example.com",
                    "models": ["claude-sonnet", "coder"],
                }
            ],
            "audit": {"path": str(audit)},
        }
        with RunningGateway(config) as gw:
            yield {"gw": gw, "anthropic": anthropic_up, "openai": openai_up, "audit": audit}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scratch git repository for the assistant to work in."""
    path = tmp_path / "repo"
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def claude(gw: RunningGateway, model: str, prompt: str, cwd: Path) -> subprocess.CompletedProcess:
    env = _env(
        cwd.parent / "home",
        ANTHROPIC_BASE_URL=gw.url,
        ANTHROPIC_API_KEY=DEV_KEY,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
    )
    argv = [
        str(_claude_binary()),
        "-p",
        prompt,
        "--model",
        model,
        "--permission-mode",
        "acceptEdits",
    ]
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, f"claude exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def codex(gw: RunningGateway, model: str, prompt: str, cwd: Path) -> subprocess.CompletedProcess:
    home = cwd.parent / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "tandem"\n'
        "[model_providers.tandem]\n"
        'name = "Tandem"\n'
        f'base_url = "{gw.url}/v1"\n'
        'env_key = "TANDEM_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = _env(home, CODEX_HOME=str(codex_home), TANDEM_API_KEY=DEV_KEY)
    # no sandbox: bubblewrap needs user namespaces a CI container may not grant; the scratch
    # repository is the blast radius
    argv = [
        str(_codex_binary()),
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        prompt,
    ]
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"codex exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_claude_code_through_the_anthropic_pass_through(stack, repo: Path) -> None:
    gw, up = stack["gw"], stack["anthropic"]
    up.reset()
    out = claude(gw, "claude-sonnet", "say hi", repo)
    assert "claude: hello there" in out.stdout
    first = up.requests[0]
    assert first["path"] == "/v1/messages" and first["body"]["stream"] is True
    # the developer's key stays at the gateway; the provider's goes upstream
    assert first["headers"]["x-api-key"] == PROVIDER_KEY
    assert "claude-code-" in first["headers"]["anthropic-beta"]  # betas passed through
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    assert first["body"]["model"] == "claude-sonnet"

    up.reset()
    claude(gw, "claude-sonnet", f"create {repo}/hello.txt containing hi", repo)
    assert (repo / "hello.txt").read_text() == "hi"
    calls = [r["body"] for r in up.requests]
    assert len(calls) == 2  # the tool call, then the answer to its result
    results = [b for m in calls[1]["messages"] for b in m["content"] if isinstance(b, dict)]
    assert any(b.get("type") == "tool_result" and b["tool_use_id"] == "toolu_1" for b in results)
    sessions = gw.metric(
        "tandem_gateway_assistant_sessions_total", developer="alice@example.com", tool="claude-code"
    )
    assert sessions >= 2  # one per `claude -p` run (its X-Claude-Code-Session-Id)


def test_claude_code_on_a_self_hosted_model_through_translation(stack, repo: Path) -> None:
    gw, up = stack["gw"], stack["openai"]
    up.reset_counts()
    out = claude(gw, "coder", "say hi", repo)
    assert "local: done" in out.stdout
    sent = up.bodies[0]
    assert sent["model"] == "coder" and sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"  # Claude Code's system prompt
    assert {t["function"]["name"] for t in sent["tools"]} >= {"Write", "Bash", "Read"}

    up.reset_counts()
    claude(gw, "coder", f"create {repo}/hello.txt containing hi", repo)
    assert (repo / "hello.txt").read_text() == "hi"
    assert len(up.bodies) == 2
    tool_messages = [m for m in up.bodies[1]["messages"] if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["tool_call_id"] == "call_1"
    assert (
        gw.metric(
            "tandem_gateway_assistant_requests_total", developer="alice@example.com", model="coder"
        )
        >= 3
    )


def test_codex_through_the_responses_api_translated(stack, repo: Path) -> None:
    gw, up = stack["gw"], stack["openai"]
    up.reset_counts()
    out = codex(gw, "coder", "say hi", repo)
    assert "local: done" in out.stdout
    assert up.bodies[0]["stream"] is True
    assert "exec_command" in {t["function"]["name"] for t in up.bodies[0]["tools"]}

    up.reset_counts()
    codex(gw, "coder", f"create {repo}/hello.txt containing hi", repo)
    assert (repo / "hello.txt").read_text() == "hi"
    follow_up = up.bodies[-1]["messages"]
    assert any(m["role"] == "tool" for m in follow_up)  # the command's output went back
    assert (
        gw.metric(
            "tandem_gateway_assistant_requests_total", developer="alice@example.com", tool="codex"
        )
        >= 3
    )


def test_the_audit_log_says_who_and_which_tool_and_never_the_prompt(stack) -> None:
    import json

    lines = stack["audit"].read_text().splitlines()
    records = [json.loads(line) for line in lines]
    tools = {r["tool"] for r in records}
    assert {"claude-code", "codex"} <= tools, tools
    for r in records:
        assert r["developer"] == "alice@example.com" and r["team"] == "platform"
        assert r["status"] == 200 and r["tokens_in"] > 0
    claude_runs = [r for r in records if r["tool"] == "claude-code"]
    assert all(r["tool_version"] == "2.1.332" and r["session"] for r in claude_runs)
    text = stack["audit"].read_text()
    assert "hello.txt" not in text and "say hi" not in text  # no prompt text, ever
