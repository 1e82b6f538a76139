"""Assistant traffic: the tool from its user agent, sessions, and the audit record's shape."""

from __future__ import annotations

import json

import pytest

from gateway.assistants import Sessions, ToolClassifier, session_id
from gateway.audit import FIELDS, AuditLog


@pytest.mark.parametrize(
    ("user_agent", "tool", "version"),
    [
        ("claude-cli/2.1.332 (external, sdk-cli)", "claude-code", "2.1.332"),
        (
            "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
            "codex",
            "0.171.0",
        ),
        ("codex_cli_rs/0.169.0 (Mac OS 15.1.0; arm64)", "codex", "0.169.0"),
        ("Anthropic/Python 2.17.0", "anthropic-sdk", "2.17.0"),
        ("AsyncOpenAI/Python 3.57.0", "openai-sdk", "3.57.0"),
        ("Mozilla/5.0 Cursor/1.2.3 Chrome/132", "cursor", "1.2.3"),
        ("GitHubCopilotChat/0.30.1", "copilot", "0.30.1"),
        ("curl/8.5.0", "other", ""),
        ("", "other", ""),
    ],
)
def test_the_tool_is_read_from_the_user_agent(user_agent: str, tool: str, version: str) -> None:
    classify = ToolClassifier()
    assert classify(user_agent) == (tool, version)
    assert classify(user_agent) == (tool, version)  # remembered


def test_session_ids_from_each_tool_s_header() -> None:
    assert session_id({"x-claude-code-session-id": "cc-1"}) == "cc-1"
    assert session_id({"session-id": "codex-1"}) == "codex-1"
    assert session_id({"user-agent": "x"}) is None


async def test_a_session_is_counted_once_and_idle_gaps_start_new_ones(monkeypatch) -> None:
    import gateway.assistants as assistants

    s = Sessions()
    assert await s.starts("t", "alice", "claude-code", "cc-1")
    assert not await s.starts("t", "alice", "claude-code", "cc-1")
    assert await s.starts("t", "alice", "claude-code", "cc-2")
    now = [1000.0]
    monkeypatch.setattr(assistants.time, "monotonic", lambda: now[0])
    assert await s.starts("t", "bob", "cursor", None)  # no id: sessions are runs of activity
    now[0] += 29 * 60
    assert not await s.starts("t", "bob", "cursor", None)
    now[0] += 31 * 60
    assert await s.starts("t", "bob", "cursor", None)


def test_the_audit_log_is_one_json_line_per_record(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write({"key": "k", "developer": "alice", "cost_usd": 0.1})
    log.write({"key": "k", "developer": "bob", "cost_usd": 0.2})
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["developer"] for r in records] == ["alice", "bob"]
    assert all("ts" in r for r in records) and "ts" in FIELDS
