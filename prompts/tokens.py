"""Counting a request's tokens before any call: with the model's own tokenizer when the route
names its `tokenizer.json` (Hugging Face `tokenizers`, loaded once per file), otherwise an
estimate of one token per CHARS_PER_TOKEN characters.

A chat message costs its content's tokens plus MESSAGE_OVERHEAD for the chat template's role
markers (Llama 3's and ChatML's templates add 4 to 5 tokens a message; OpenAI documents 3 to 4),
so a count is a close upper bound rather than the server's exact figure; the window check keeps
that margin.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 5


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class Estimate:
    name = "estimate"

    def count(self, text: str) -> int:
        return -(-len(text) // CHARS_PER_TOKEN)  # rounded up: an upper bound for short texts


class HFTokenizer:
    """A `tokenizer.json` (the file every Hugging Face model ships) through `tokenizers`."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer

        self.name = f"tokenizer:{Path(path).name}"
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


ESTIMATE = Estimate()


@lru_cache(maxsize=16)
def counter(path: str | None) -> TokenCounter:
    """The counter for a route's `context.tokenizer` (one per file, however many routes)."""
    if path is None:
        return ESTIMATE
    try:
        return HFTokenizer(path)
    except Exception as exc:  # the file's problem, said with its path
        raise ValueError(f"cannot load the tokenizer {path!r}: {exc}") from exc


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def message_tokens(c: TokenCounter, messages: list[Any]) -> list[int]:
    """Each message's tokens, template overhead included."""
    return [
        MESSAGE_OVERHEAD + (c.count(content_text(m.get("content"))) if isinstance(m, dict) else 0)
        for m in messages
    ]


def fit_oldest(counts: list[int], messages: list[Any], budget: int) -> int:
    """How many of the oldest conversation turns to drop so the messages fit `budget` tokens:
    system and developer messages and the last message are never dropped; -1 if even that is
    too long."""
    total = sum(counts)
    if total <= budget:
        return 0
    droppable = [
        i
        for i, m in enumerate(messages[:-1])
        if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))
    ]
    for n, i in enumerate(droppable, 1):
        total -= counts[i]
        if total <= budget:
            return n
    return -1


def drop_oldest(messages: list[Any], n: int) -> list[Any]:
    """The messages without their `n` oldest conversation turns (as fit_oldest counted them)."""
    out = []
    for i, m in enumerate(messages):
        turn = i < len(messages) - 1 and not (
            isinstance(m, dict) and m.get("role") in ("system", "developer")
        )
        if turn and n > 0:
            n -= 1
            continue
        out.append(m)
    return out
