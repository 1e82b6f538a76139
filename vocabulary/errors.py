"""The one validation-error format: every config error names the field path as the user wrote it,
the bad value and what is allowed.

Shared by the stack config, the use-case files and the gateway's routes file, so a platform
engineer reads the same shape of message whichever file is wrong.
"""

from __future__ import annotations

import json
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError


class InputError(ValueError):
    """Input a user can fix (a file, a field, a value): the message names it and what to do.

    The `tandem` CLI prints it without a traceback and exits 2 (docs/architecture.md, "Exit
    codes"); every loader of a file a user writes raises this or a subclass.
    """


class UnavailableError(RuntimeError):
    """Something this machine lacks that a command needs (a tool, an environment, a server): the
    message names it and how to get it. The `tandem` CLI exits 3 (docs/architecture.md)."""


class ConfigError(InputError):
    """A config (stack, use case, routes...) that must not be used. `errors` holds one line per
    problem, `source` names the file or section."""

    def __init__(self, errors: list[str], source: str = "stack config"):
        self.errors = errors
        self.source = source
        if len(errors) == 1:  # one problem, one line
            super().__init__(f"invalid {source}: {errors[0]}")
        else:
            super().__init__(f"invalid {source}:\n" + "\n".join(f"  - {e}" for e in errors))


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk `loc` through the model tree to list the keys allowed where an unknown one was."""
    current: Any = model
    key_next = False  # the part after a `dict[str, Model]` field is a key the user chose
    for part in loc[:-1]:
        if isinstance(part, int) or key_next:
            key_next = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        key_next = _is_mapping(field.annotation)
        current = _unwrap_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def _is_mapping(annotation: Any) -> bool:
    """Whether `annotation` is `dict[...]` (or `dict[...] | None`)."""
    if get_origin(annotation) is dict:
        return True
    return any(get_origin(a) is dict for a in getattr(annotation, "__args__", ()))


def _unwrap_model(annotation: Any) -> Any:
    """The BaseModel inside `list[X]`, `X | None` and the like, or the annotation itself."""
    args = getattr(annotation, "__args__", None)
    if args:
        for arg in args:
            inner = _unwrap_model(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[str]:
    """One line per problem: `path: bad value: what is wrong and what is allowed`.

    `prefix` is where the model sits in the user's file (`cache`, `routes.chat.cache`). A rule on
    the whole model (a model validator at the root) names its own paths: each line of its message
    is one problem, as it stands.
    """
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _format_loc(loc)
        if prefix:
            path = prefix if not loc else f"{prefix}{'' if path.startswith('[') else '.'}{path}"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if not loc and not prefix and err["type"] == "value_error":
            lines.extend(msg.splitlines())
            continue
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = f"unknown key {loc[-1]!r}" + (
                f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            )
            lines.append(f"{path}: {msg}")
            continue
        if err["type"] == "missing":
            lines.append(f"{path}: required field is missing")
            continue
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{path}: {shown}: {msg}")
    return lines
