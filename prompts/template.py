"""A prompt version compiled for the request path: each message's text split once into literal
runs and variable names, so rendering is one `str.join` per message and no parsing.

Placement: the version's leading system (and developer) messages come first, then the caller's
conversation (`messages` of the request: earlier turns), then the version's other messages (the
templated user turn). Values are strings; numbers and booleans are written as
features.context.render_value writes feature values (true/false, 6 significant digits), so a
caller's variable and a feature read the same.
"""

from __future__ import annotations

from typing import Any

from vocabulary.prompts import VARIABLE, PromptVersion

Part = tuple[str, str | None]  # (literal text, the variable after it or None)


def _parts(text: str) -> tuple[Part, ...]:
    out: list[Part] = []
    at = 0
    for m in VARIABLE.finditer(text):
        out.append((text[at : m.start()], m.group(1)))
        at = m.end()
    out.append((text[at:], None))
    return tuple(out)


class CompiledVersion:
    """One version of one prompt, ready to render."""

    __slots__ = ("name", "version", "spec", "head", "tail", "variables", "parameters", "label")

    def __init__(self, name: str, spec: PromptVersion) -> None:
        self.name = name
        self.version = spec.version
        self.label = str(spec.version)  # the `prompt_version` metric label and span attribute
        self.spec = spec
        compiled = [(m.role, _parts(m.content)) for m in spec.messages]
        lead = 0
        while lead < len(compiled) and compiled[lead][0] in ("system", "developer"):
            lead += 1
        self.head = compiled[:lead]
        self.tail = compiled[lead:]
        self.variables = frozenset(spec.variables)
        self.parameters = dict(spec.parameters)

    def problems(self, given: set[str] | frozenset[str]) -> tuple[list[str], list[str]]:
        """(missing, extra) variable names for the values `given`, each sorted."""
        return sorted(self.variables - given), sorted(given - self.variables)

    def render(
        self, values: dict[str, str], history: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The messages for `values` (every variable present: check `problems` first)."""
        out = [_message(role, parts, values) for role, parts in self.head]
        if history:
            out += history
        out += [_message(role, parts, values) for role, parts in self.tail]
        return out


def _message(role: str, parts: tuple[Part, ...], values: dict[str, str]) -> dict[str, Any]:
    if len(parts) == 1:
        return {"role": role, "content": parts[0][0]}
    return {
        "role": role,
        "content": "".join(lit + (values[var] if var is not None else "") for lit, var in parts),
    }


def as_text(value: Any) -> str | None:
    """A variable's value as the template writes it; None for what a template cannot hold
    (objects, arrays of objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return None
