"""`tandem gateway serve --config routes.yaml` (and `tandem gateway hash-key`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from tandem.cli.errors import (
    EXIT_UNAVAILABLE,
    CommandError,
    bind_failure,
    port_number,
    require_free_port,
)

# The cache's model runs on worker threads beside the event loop. A multi-threaded BLAS (the
# default: one thread per core) busy-waits on the other cores between small products: measured
# 194 ms of CPU per cold lookup against 8 ms single-threaded. Read once, when numpy loads.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def register(subparsers: argparse._SubParsersAction) -> None:
    gw = subparsers.add_parser("gateway", help="Run the AI gateway locally")
    sub = gw.add_subparsers(dest="gateway_command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="Serve the OpenAI-compatible API from a routes file")
    serve.add_argument("--config", required=True, help="routes YAML file (hot-reloaded)")
    serve.add_argument("--host", default=None, help="override server.host")
    serve.add_argument("--port", type=port_number, default=None, help="override server.port")
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default INFO",
    )
    serve.set_defaults(func=_serve)
    hk = sub.add_parser("hash-key", help="Print the sha256 to put in a routes file for an API key")
    hk.add_argument("key", nargs="?", help="the key (read from stdin when omitted)")
    hk.set_defaults(func=_hash_key)
    gw.set_defaults(func=lambda _a: gw.print_help() or 2)


def _serve(args: argparse.Namespace) -> int:
    import logging

    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)  # before the cache imports numpy

    from gateway.app import StartupError, serve
    from gateway.config import load_config
    from vocabulary.errors import ConfigError

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:  # missing file, bad YAML (file, line), unknown or bad field
        raise CommandError(str(exc)) from None
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    fix = "pass --port N (or set server.port in the routes file), or stop what holds it"
    # checked before the gateway builds anything: a taken port is one line, not a traceback
    require_free_port(host, port, "the gateway", fix)
    extend: Callable[[Any], None] | None = None
    if cfg.batch is not None:  # the Batch API, async jobs (pipelines/api.py)
        try:
            from pipelines.api import mount as extend
        except ImportError as exc:
            raise CommandError(
                f"the routes file's `batch:` section needs the Python package {exc.name!r}, "
                "which this install lacks: pip install 'tandem[pipelines]'",
                EXIT_UNAVAILABLE,
            ) from None
    try:
        serve(cfg, args.config, host=args.host, port=args.port, extend=extend)
    except StartupError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:  # the port was taken between the check and the bind
        if exc.errno is None or exc.filename:
            raise
        raise CommandError(
            bind_failure(exc, host, port, "the gateway", fix), EXIT_UNAVAILABLE
        ) from None
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.config import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    print(hash_key(key))
    return 0
