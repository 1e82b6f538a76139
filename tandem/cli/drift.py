"""`tandem drift`: the drift service, its report, and re-pinning a reference.

    tandem drift serve --config FILE --gateway URL [--controller URL]   the service process
    tandem drift report USE_CASE [--service URL] [--output text|json|html] [-o FILE]
    tandem drift pin USE_CASE [--version V] [--service URL]            re-pin the reference

Exit codes: 0 done; 2 bad input (config file, flags, unknown use case); 3 the service cannot be
reached or the port is taken; 1 `pin` found too few samples to pin.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tandem.cli.errors import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    CommandError,
    http_url,
    output_path,
    port_number,
    positive_number,
)

DEFAULT_SERVICE = "http://127.0.0.1:8096"


def _service_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--service",
        type=http_url,
        default=os.environ.get("TANDEM_DRIFT_URL", DEFAULT_SERVICE),
        help=f"drift service URL (default $TANDEM_DRIFT_URL or {DEFAULT_SERVICE})",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="drift service, report, reference re-pinning")
    ops = p.add_subparsers(dest="drift_command", metavar="ACTION", required=True)
    s = ops.add_parser("serve", help="run the drift service (what the DriftMonitor runs)")
    s.add_argument(
        "--config", required=True, help="use cases' monitoring (YAML; see docs/drift.md)"
    )
    s.add_argument(
        "--gateway", type=http_url, action="append", required=True,
        help="a gateway base URL (repeat; a headless Service name polls every pod)",
    )  # fmt: skip
    s.add_argument("--controller", type=http_url, help="rollout controller URL (rollbacks)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port_number, default=8096)
    s.add_argument("--poll", type=positive_number, default=10.0, help="seconds between passes")
    s.set_defaults(func=serve)
    r = ops.add_parser("report", help="which signals moved, since when (text, json, html)")
    r.add_argument("use_case", metavar="USE_CASE")
    _service_flag(r)
    r.add_argument("--output", choices=("text", "json", "html"), default="text")
    r.add_argument("-o", "--out", type=output_path, help="write to this file (default: stdout)")
    r.set_defaults(func=report)
    n = ops.add_parser("pin", help="re-pin a use case's reference from a version's samples")
    n.add_argument("use_case", metavar="USE_CASE")
    n.add_argument("--version", help="the model version (default: the serving one)")
    _service_flag(n)
    n.set_defaults(func=pin)


def serve(args: argparse.Namespace) -> int:
    import logging

    # one BLAS thread: the tests are small matrix products, and idle BLAS threads spin on CPU
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    from drift.monitor import Monitor
    from drift.service import DriftService, load_use_cases

    use_cases = load_use_cases(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    svc = DriftService(Monitor(use_cases), args.gateway, args.controller)
    try:
        svc.serve(args.host, args.port, args.poll)
    except OSError as exc:
        raise CommandError(
            f"cannot start the drift service on {args.host}:{args.port}: {exc}", EXIT_UNAVAILABLE
        ) from None
    return 0


def _get(url: str, what: str) -> dict:
    from drift.service import HttpError, http_json

    try:
        return http_json("GET", url)
    except HttpError as exc:
        raise CommandError(f"{what}: {exc}") from None
    except OSError as exc:
        raise CommandError(f"drift service {url} unreachable: {exc}", EXIT_UNAVAILABLE) from None


def report(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from drift.report import render_html, render_json, render_text

    base = args.service.rstrip("/")
    status = _get(f"{base}/status?use_case={quote(args.use_case)}", f"use case {args.use_case!r}")
    render = {"text": render_text, "json": render_json, "html": render_html}[args.output]
    out = render(status, args.use_case)
    if args.out:
        Path(args.out).write_text(out + "\n")
    else:
        print(out)
    return 0


def pin(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from drift.service import HttpError, http_json

    url = f"{args.service.rstrip('/')}/references/{quote(args.use_case)}"
    try:
        ref = http_json("POST", url, {"version": args.version} if args.version else {})
    except HttpError as exc:
        code = EXIT_FAILED if exc.status == 409 else 2
        raise CommandError(f"pin {args.use_case!r}: {exc}", code) from None
    except OSError as exc:
        raise CommandError(f"drift service {url} unreachable: {exc}", EXIT_UNAVAILABLE) from None
    print(json.dumps(ref, indent=2))
    return 0
