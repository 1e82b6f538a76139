"""Redaction of captured prompt and response text, before it leaves the gateway on a span.

Built once per routes config (`Redactor(kinds, patterns)`): the kinds' regular expressions are
compiled at import, the extra patterns when the config is compiled, so a request pays only the
scans. Each finding is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[KEY]`,
`[REDACTED]` for an extra pattern), so a trace still shows that something was there.

- email: RFC-5322-shaped addresses (`local@domain.tld`).
- phone: international (`+` and 7-15 digits) and North-American numbers, with the usual
  separators; not bare digit runs without separators or `+` (order numbers stay readable).
- card: 13-19 digit runs, spaced or dashed, that pass the Luhn check (a random 16-digit id that
  fails Luhn is left alone).
- key: secrets by shape: OpenAI / Anthropic (`sk-...`, `sk-ant-...`), AWS access key ids
  (`AKIA...`/`ASIA...`), GitHub tokens (`ghp_`, `github_pat_`...), Slack (`xox?-`), Google
  (`AIza...`), JWTs, `Bearer <token>` and `api_key=...`-style assignments.
Keys run first (a key may contain digits that look like a phone number), then cards, emails,
phones, then the extra patterns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KINDS = ("key", "card", "email", "phone")

_KEY = re.compile(
    r"""
    \bsk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{16,}          # OpenAI, Anthropic
  | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                             # AWS access key id
  | \b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b              # GitHub tokens
  | \bgithub_pat_[A-Za-z0-9_]{40,}\b
  | \bxox[abposr]-[A-Za-z0-9\-]{10,}                          # Slack
  | \bAIza[0-9A-Za-z_\-]{35}                                  # Google API key
  | \beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}  # JWT
  | (?i:\bbearer\s+)[A-Za-z0-9_\-\.=~+/]{16,}                 # Authorization: Bearer ...
  | (?i:\b(?:api[_-]?key|secret|token|password|passwd)\b["']?\s*[:=]\s*["']?)[^\s"',;]{8,}
    """,
    re.VERBOSE,
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(
    r"""
    (?<![\w+])\+\d{1,3}[\s.\-]?(?:\(\d{1,4}\)[\s.\-]?)?\d{1,4}(?:[\s.\-]?\d{2,4}){1,4}(?!\w)
  | (?<![\w+])(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?!\w)
    """,
    re.VERBOSE,
)
PLACEHOLDERS = {"key": "[KEY]", "card": "[CARD]", "email": "[EMAIL]", "phone": "[PHONE]"}


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


class Redactor:
    """Replaces what `kinds` and `patterns` find in a text; `redact` is the only hot call."""

    __slots__ = ("_steps",)

    def __init__(self, kinds: Iterable[str] = KINDS, patterns: Iterable[str] = ()) -> None:
        wanted = set(kinds)
        unknown = wanted - set(KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; allowed: {list(KINDS)}")
        steps: list[tuple[re.Pattern[str], object]] = []
        if "key" in wanted:
            steps.append((_KEY, "[KEY]"))
        if "card" in wanted:
            steps.append((_CARD, _card))
        if "email" in wanted:
            steps.append((_EMAIL, "[EMAIL]"))
        if "phone" in wanted:
            steps.append((_PHONE, "[PHONE]"))
        steps.extend((re.compile(p), "[REDACTED]") for p in patterns)
        self._steps = tuple(steps)

    def redact(self, text: str) -> str:
        for pattern, repl in self._steps:
            text = pattern.sub(repl, text)  # type: ignore[call-overload]
        return text
