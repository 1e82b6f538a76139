"""The CLI's error contract: a user mistake ends in a message that names the thing and what to do,
with a documented exit code, and no traceback unless `tandem --debug` asked for one.

Exit codes (every command; docs/architecture.md, "Exit codes"):

    0  done
    1  the command ran and its verdict is negative (a plan with a failed policy or check, a
       use case the review gate does not approve)
    2  bad input: a flag value, a missing or unreadable file, invalid YAML, an unknown or bad
       field, an output that cannot be written
    3  the environment: a port in use, a server that cannot be reached, a package or service
       this machine lacks, a local server already running
    70 a bug in Tandem (the message says so; `--debug` shows the traceback)

Handlers raise `CommandError` (or let a loader's `vocabulary.errors.InputError` through);
`tandem.cli.main` turns either into one `tandem <command>: <message>` on stderr. The helpers
below check what a handler is about to use (an input file, an output path, a URL, a port) so the
message can say what to do before anything half-starts.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_BUG = 70


class CommandError(Exception):
    """A problem the user can fix, with the exit code that classifies it."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def output_path(text: str) -> Path:
    """An output file that can be written: its folder exists and is writable (argparse type)."""
    path = Path(text)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name in it")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: the folder {str(folder)!r} does not exist; create it first "
            f"(mkdir -p {folder})"
        )
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
    return path


def http_url(text: str) -> str:
    """A base URL with its scheme (argparse type): `prometheus:9090` is refused with the fix."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL; write it with the scheme, e.g. http://{text}"
        )
    return text


def port_number(text: str) -> int:
    """A TCP port 0-65535 (argparse type; 0 asks for a free one where the command allows it)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def positive_number(text: str) -> float:
    """A number above 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0")
    return value


def positive_int(text: str) -> int:
    """A whole number above 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def require_free_port(host: str, port: int, what: str, fix: str) -> None:
    """Fail with EXIT_UNAVAILABLE when `host:port` cannot be bound (in use, or not this host)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # as servers bind (aiohttp, Ray): a port left in TIME_WAIT by a server that just stopped
        # is free, one something listens on is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CommandError(bind_failure(exc, host, port, what, fix), EXIT_UNAVAILABLE) from None


def bind_failure(exc: OSError, host: str, port: int, what: str, fix: str) -> str:
    """The message for a server that could not bind `host:port`."""
    if exc.errno == errno.EADDRINUSE:
        return f"cannot start {what}: port {port} on {host} is already in use; {fix}"
    if exc.errno == errno.EACCES:
        return f"cannot start {what}: no permission to listen on port {port}; {fix}"
    if exc.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME):
        return f"cannot start {what}: {host} is not an address of this machine; use 127.0.0.1"
    return f"cannot start {what} on {host}:{port}: {exc.strerror or exc}"
