"""What a trace may carry of a request's text: the capture settings, declared once for the two
places they are written (the stack's `tandem:tracing.capture` and the gateway's routes file).

Floor 1, pydantic only.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RedactionKind = Literal["email", "phone", "card", "key"]
REDACTION_KINDS: tuple[RedactionKind, ...] = (
    "email",
    "phone",
    "card",
    "key",
)  # gateway/redact.py replaces each


class TraceCapture(BaseModel):
    """Prompt and response text on the spans of the routes that opt in, redacted first
    (docs/tracing.md). One declaration for both places it is written: the stack's
    `tandem:tracing.capture` (camelCase, TracingCaptureConfig) and the gateway's routes file
    (snake_case, gateway.config.Capture), so the two cannot disagree on a default or a bound."""

    model_config = ConfigDict(extra="forbid")

    routes: list[str] = Field(
        default_factory=list, description="route aliases whose text is captured; none: no text"
    )
    redact: list[RedactionKind] = Field(
        default_factory=lambda: list(REDACTION_KINDS),
        description="what is replaced before the text leaves the gateway (gateway/redact.py)",
    )
    patterns: list[str] = Field(
        default_factory=list, description="extra regular expressions, replaced by [REDACTED]"
    )
    max_chars: int = Field(
        4096, ge=64, le=65536, description="longer message texts are cut to this"
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"[{i}]: {p!r} is not a regular expression ({exc})") from None
        return v
