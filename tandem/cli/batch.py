"""`tandem batch worker` (the queue's worker process) and `tandem batch submit` (a JSONL batch
through the Batch API, or a Ray Data job for datasets too large for the queue)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tandem.cli.errors import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    CommandError,
    output_path,
    port_number,
    require_free_port,
)
from tandem.cli.gateway import BLAS_THREADS

QUEUE_MAX_BYTES = (
    100 * 2**20
)  # what the gateway's Files API takes by default (batch.max_file_bytes)
QUEUE_MAX_LINES = 50_000


def register(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser("batch", help="Batch work: the queue's workers, and submitting")
    sub = b.add_subparsers(dest="batch_command", metavar="COMMAND")

    w = sub.add_parser("worker", help="Run a batch worker (lines, async jobs) from a routes file")
    w.add_argument("--config", required=True, help="the gateway's routes YAML (with `batch:`)")
    w.add_argument("--host", default="127.0.0.1", help="/healthz and /metrics address")
    w.add_argument("--port", type=port_number, default=8081, help="/healthz and /metrics port")
    w.add_argument("--name", default=None, help="consumer name (default: host-pid-random)")
    w.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    w.set_defaults(func=_worker, extra="pipelines")

    s = sub.add_parser(
        "submit",
        help="Submit a JSONL batch: through the Batch API (the queue), or as a Ray Data job",
        description="A file up to 100 MiB and 50,000 lines goes through the gateway's Batch API; "
        "anything bigger, or an s3:// input, runs as a Ray Data job (a RayJob in the cluster, "
        "or with --local on a local Ray).",
    )
    s.add_argument("input", help="JSONL request lines (OpenAI batch format): a file or s3:// URI")
    s.add_argument("--endpoint", default="/v1/chat/completions", help="the batch's endpoint")
    s.add_argument(
        "--gateway",
        default=os.environ.get("TANDEM_GATEWAY_URL", "http://127.0.0.1:8080"),
        help="the gateway's base URL (default $TANDEM_GATEWAY_URL or http://127.0.0.1:8080)",
    )
    s.add_argument(
        "--api-key-env", default="TANDEM_API_KEY", help="env var holding your key (TANDEM_API_KEY)"
    )
    s.add_argument("--via", choices=("auto", "queue", "rayjob"), default="auto")
    s.add_argument("--wait", action="store_true", help="queue: wait for the batch to end")
    s.add_argument(
        "-o", "--output", type=output_path, default=None,
        help="queue with --wait: write the output records here (errors beside it)",
    )  # fmt: skip
    s.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--output-uri", help="rayjob: the folder for the records (s3:// or a path)")
    s.add_argument("--local", action="store_true", help="rayjob: run on a local Ray")
    s.add_argument("--team", default="default", help="rayjob: the team label of its pods")
    s.add_argument("--image", default=None, help="rayjob: the stack's serving image")
    s.add_argument("--key-secret", default="tandem-api-key", help="rayjob: Secret with api-key")
    s.add_argument("--workers", type=int, default=2, help="rayjob: Ray worker pods")
    s.add_argument("--actors", type=int, default=2, help="rayjob: actors calling the gateway")
    s.add_argument("--threads", type=int, default=8, help="rayjob: requests in flight per actor")
    s.set_defaults(func=_submit, extra="pipelines")
    b.set_defaults(func=lambda _a: b.print_help() or 2)


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)
    from gateway.config import load_config
    from vocabulary.errors import ConfigError

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if cfg.batch is None:
        raise CommandError(
            f"{args.config}: has no `batch:` section; a worker needs one (docs/async.md)"
        )
    require_free_port(
        args.host, args.port, "the worker's metrics", "pass --port N, or stop what holds it"
    )
    from pipelines.service import run_worker

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        pass
    asyncio.run(run_worker(cfg, args.config, args.host, args.port, name=args.name))
    return 0


def _submit(args: argparse.Namespace) -> int:
    via = args.via
    is_s3 = args.input.startswith("s3://")
    path = Path(args.input)
    if not is_s3 and not path.is_file():
        raise CommandError(f"{args.input}: no such file")
    if via == "auto":
        big = is_s3 or path.stat().st_size > QUEUE_MAX_BYTES or _lines(path) > QUEUE_MAX_LINES
        via = "rayjob" if big else "queue"
    if via == "queue":
        if is_s3:
            raise CommandError("--via queue uploads a local file; for s3:// use --via rayjob")
        return _submit_queue(args, path)
    return _submit_rayjob(args)


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise CommandError(f"--metadata {pair!r}: use KEY=VALUE")
        out[k] = v
    return out


def _submit_queue(args: argparse.Namespace, path: Path) -> int:
    import orjson

    from pipelines.client import ApiError, BatchClient

    client = BatchClient(args.gateway, os.environ.get(args.api_key_env))
    try:
        f = client.upload(path)
        batch = client.create(f["id"], args.endpoint, _metadata(args.metadata))
        print(f"batch {batch['id']} ({batch['status']}) from {path} as file {f['id']}")
        if not args.wait:
            return 0
        batch = client.wait(batch["id"])
        counts = batch["request_counts"]
        print(
            f"batch {batch['id']} {batch['status']}: {counts['completed']} completed, "
            f"{counts['failed']} failed of {counts['total']}"
        )
        if args.output is not None:
            for field, target in (
                ("output_file_id", args.output),
                ("error_file_id", args.output.with_suffix(".errors.jsonl")),
            ):
                if batch.get(field):
                    target.write_bytes(client.content(batch[field]))
                    print(f"{field.split('_')[0]} records: {target}")
        if batch["status"] == "failed":
            print(orjson.dumps(batch["errors"]).decode(), file=sys.stderr)
            return EXIT_FAILED
        return 0
    except ApiError as exc:
        code = EXIT_UNAVAILABLE if exc.status in (0, 502, 503, 504) else 2
        raise CommandError(f"{args.gateway}: {exc.message}", code) from None


def _submit_rayjob(args: argparse.Namespace) -> int:
    from pipelines.rayjob import RayJobSpec, job_name, rayjob_manifest

    if not args.output_uri:
        raise CommandError(
            "--via rayjob needs --output-uri (an s3:// folder, or a path with --local)"
        )
    if args.local:
        try:
            from pipelines.raydata import run
        except ImportError as exc:
            raise CommandError(
                f"the Ray Data job needs {exc.name!r}: pip install 'tandem[serving]'",
                EXIT_UNAVAILABLE,
            ) from None
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if args.api_key_env != "TANDEM_API_KEY" and os.environ.get(args.api_key_env):
            os.environ["TANDEM_API_KEY"] = os.environ[args.api_key_env]
        n = run(
            args.input, args.output_uri, args.gateway, args.endpoint,
            actors=args.actors, threads=args.threads, job=job_name(Path(args.input).stem),
        )  # fmt: skip
        print(f"{n} records written to {args.output_uri}")
        return 0
    import yaml

    spec = RayJobSpec(
        name=job_name(Path(args.input).stem),
        input_uri=args.input,
        output_uri=args.output_uri,
        gateway_url=args.gateway,
        team=args.team,
        endpoint=args.endpoint,
        key_secret=args.key_secret,
        workers=args.workers,
        actors=args.actors,
        threads=args.threads,
        **({"image": args.image} if args.image else {}),
    )
    print(yaml.safe_dump(rayjob_manifest(spec), sort_keys=False), end="")
    return 0
