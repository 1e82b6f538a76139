"""Reading a YAML file a user wrote: every failure names the file, and a syntax error its line.

PyYAML reports a string it was handed as `<unicode string>`; reading through this module keeps
the path the user typed in every message, so `tandem plan`, `tandem serve`, `tandem gate`, the
gateway and `finops report --prices` locate a typo the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vocabulary.errors import ConfigError, InputError


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text, or an InputError naming it and why it cannot be read."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what}") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied reading the {what}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text {what} ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """`line L, column C: problem (context)`: a YAML error as one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}not valid YAML: {problem}" + (f" ({context})" if context else "")


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse a YAML (or JSON) file. Raises InputError (unreadable) or ConfigError (bad YAML)."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)], str(path)) from None
