"""`tandem serve`: run a use case's (or one model's) generated Serve config on a local Ray.

    tandem serve --local stacks/usecases/document-embeddings.yaml   # prints the endpoint
    tandem serve --print-config stacks/usecases/support-chatbot.yaml  # the serveConfigV2 YAML
    tandem serve --stop

The config is the builder's, the same text the RayService carries as `serveConfigV2`.
Registration is cheap: ray is imported only by the background runner.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STATE_DIR = Path(".tandem") / "serve-local"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run a use case's Serve config on a local Ray (local mode)"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", metavar="FILE", help="use-case or ModelDeployment YAML to run")
    mode.add_argument("--stop", action="store_true", help="stop the local Serve started by --local")
    mode.add_argument("--print-config", metavar="FILE", help="print the generated Serve config")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=8,
        help="logical CPUs for the local Ray; more than the cores so every replica schedules",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for RUNNING")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help=argparse.SUPPRESS)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from serving import builder, local
    from vocabulary.usecase import load_deployment_or_use_case

    if args.stop:
        stopped = local.stop(args.state_dir)
        print("stopped local Serve" if stopped else "no local Serve running")
        return 0
    use_case = load_deployment_or_use_case(args.local or args.print_config)
    if args.print_config:
        sys.stdout.write(builder.to_yaml(builder.serve_config(use_case.deployments)))
        return 0
    if (args.state_dir / local.STATE_FILE).exists():
        print("a local Serve is already running: `tandem serve --stop` first", file=sys.stderr)
        return 1
    config = builder.serve_config(use_case.deployments, host="127.0.0.1", port=args.port)
    server = local.start(config, args.state_dir, num_cpus=args.num_cpus, timeout_s=args.timeout)
    print(f"use case {use_case.name} running on a local Ray (logs: {server.log_path})")
    for d in use_case.deployments:
        api = "/v1/embeddings" if d.kind == "batch" else "/v1/chat/completions"
        print(f"  {d.name}: {server.endpoint}{builder.route_prefix(d)}{api}  (model {d.model})")
    print(f"  dashboard: {server.dashboard}   metrics: {server.metrics}")
    print("stop with: tandem serve --stop")
    return 0
