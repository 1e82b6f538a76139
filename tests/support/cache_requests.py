"""Cache requests and upstream answers as the gateway hands them to the cache (shared by tests)."""

from __future__ import annotations

from gateway.cache.api import CacheRequest


def chat(
    question: str,
    *,
    tenant: str = "team-a",
    model: str = "llama",
    system: str | None = "Be brief.",
    history: list[dict] | None = None,
    **params: object,
) -> CacheRequest:
    """A chat request; the system prompt and earlier turns are part of the cache scope."""
    messages = ([{"role": "system", "content": system}] if system else []) + (history or [])
    body = {
        "model": model,
        "temperature": 0,
        "messages": [*messages, {"role": "user", "content": question}],
        **params,
    }
    return CacheRequest(tenant=tenant, model=model, endpoint="chat.completions", body=body)


def answer(content: str, finish: str = "stop") -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "llama",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
