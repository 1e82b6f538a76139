"""Coding-assistant traffic: which tool sent a request, and which requests start a session.

A request is assistant traffic when its key names a developer (a developer's own key, or a team
key behind an identity-aware proxy: gateway/stages/authenticate.py). For those the gateway also
records the tool, read from the user agent (`claude-cli/2.1.332 ...` is Claude Code,
`codex_exec/0.171.0 ...` Codex), and counts sessions: a tool's own session id where it sends
one (Claude Code's `X-Claude-Code-Session-Id`, Codex's `session-id`), otherwise a new session
after 30 idle minutes of that developer with that tool. With Redis the first sighting of a
session is decided there (one `SET NX`), so replicas do not count it twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("tandem.gateway")

# (pattern on the user agent, tool): first match wins. The version is the first group.
TOOLS: tuple[tuple[str, str], ...] = (
    (r"claude-cli/([\w.\-]+)", "claude-code"),
    (r"codex_\w+/([\w.\-]+)", "codex"),
    (r"Cursor/([\w.\-]+)", "cursor"),
    (r"GitHubCopilot\w*/([\w.\-]+)", "copilot"),
    (r"\bCline/([\w.\-]+)", "cline"),
    (r"\bContinue/([\w.\-]+)", "continue"),
    (r"\b(?:Windsurf|codeium)/([\w.\-]+)", "windsurf"),
    (r"\baider/([\w.\-]+)", "aider"),
    (r"\bZed/([\w.\-]+)", "zed"),
    (r"(?:Async)?Anthropic/Python ([\w.\-]+)", "anthropic-sdk"),
    (r"(?:Async)?OpenAI/Python ([\w.\-]+)", "openai-sdk"),
    (r"(?:Anthropic|OpenAI)/JS ([\w.\-]+)", "js-sdk"),
)
_TOOLS = tuple((re.compile(p, re.IGNORECASE), tool) for p, tool in TOOLS)
SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "session_id", "x-session-id")
SESSION_GAP_S = 30 * 60
_MEMO_MAX = 4096


class ToolClassifier:
    """User agent -> (tool, version), remembered: a fleet sends few distinct user agents."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[str, str]] = {}

    def __call__(self, user_agent: str) -> tuple[str, str]:
        hit = self._memo.get(user_agent)
        if hit is not None:
            return hit
        found = ("other", "")
        for pattern, tool in _TOOLS:
            m = pattern.search(user_agent)
            if m:
                found = (tool, m.group(1))
                break
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[user_agent] = found
        return found


def session_id(headers: Mapping[str, str]) -> str | None:
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value[:128]
    return None


class Sessions:
    """Decides whether a request starts a session (counted once per session)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()  # session key -> last seen
        self._redis: Any = None
        self._prefix = ""
        self._errors: tuple[type[BaseException], ...] = ()

    def share(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._redis = aioredis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._prefix = prefix
        self._errors = (RedisError, OSError)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def starts(self, team: str, developer: str, tool: str, session: str | None) -> bool:
        """True for the first request of a session. A tool's own id lives a day; without one a
        session is the developer's run of requests with that tool, broken by 30 idle minutes."""
        if session is not None:
            key, ttl, refresh = f"id:{session}", 86400, False
        else:
            key, ttl, refresh = f"gap:{team}:{developer}:{tool}", SESSION_GAP_S, True
        if self._redis is not None:
            try:
                name = f"{self._prefix}:session:{key}"
                if refresh:  # idle gap: every request pushes the session's end out
                    pipe = self._redis.pipeline(transaction=False)
                    pipe.exists(name)
                    pipe.set(name, 1, ex=ttl)
                    fresh = (await pipe.execute())[0] == 0
                else:
                    fresh = bool(await self._redis.set(name, 1, ex=ttl, nx=True))
                return fresh
            except self._errors as exc:
                log.warning("session counter unavailable, counting locally: %s", exc)
        return self._local(key, ttl)

    def _local(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        last = self._seen.pop(key, None)
        self._seen[key] = now
        while len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        return last is None or now - last > ttl
