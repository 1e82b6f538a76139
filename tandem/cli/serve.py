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
from typing import TYPE_CHECKING

from tandem.cli.errors import EXIT_UNAVAILABLE, CommandError, port_number, require_free_port

if TYPE_CHECKING:
    from vocabulary.deployment import ModelDeployment

STATE_DIR = Path(".tandem") / "serve-local"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a use case's Serve config on a local Ray (local mode)",
        epilog="Exit codes: 0 running (or stopped), 2 a bad file, 3 the port is taken, a local "
        "Serve already runs, this Python lacks vLLM for an LLM, or Serve did not start.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", metavar="FILE", help="use-case or ModelDeployment YAML to run")
    mode.add_argument("--stop", action="store_true", help="stop the local Serve started by --local")
    mode.add_argument("--print-config", metavar="FILE", help="print the generated Serve config")
    parser.add_argument("--port", type=port_number, default=8000, help="HTTP port (default 8000)")
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
    # a missing file, bad YAML or an unknown field raises vocabulary.errors.InputError: exit 2
    use_case = load_deployment_or_use_case(args.local or args.print_config)
    if args.print_config:
        sys.stdout.write(builder.to_yaml(builder.serve_config(use_case.deployments)))
        return 0
    if (args.state_dir / local.STATE_FILE).exists():
        raise CommandError(
            "a local Serve is already running: `tandem serve --stop` first", EXIT_UNAVAILABLE
        )
    deployments = [_local_source(d, Path(args.local)) for d in use_case.deployments]
    _runnable_here(use_case.name, deployments)
    require_free_port("127.0.0.1", args.port, "the local Serve", "pass another --port")
    config = builder.serve_config(deployments, host="127.0.0.1", port=args.port)
    try:
        server = local.start(config, args.state_dir, num_cpus=args.num_cpus, timeout_s=args.timeout)
    except (RuntimeError, TimeoutError) as exc:
        log = (args.state_dir / "serve-local.log").resolve()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CommandError(
            f"the local Serve did not start: {first}; the runner's log: {log}", EXIT_UNAVAILABLE
        ) from exc
    print(f"use case {use_case.name} running on a local Ray (logs: {server.log_path})")
    for d in deployments:
        api = "/v1/embeddings" if d.kind == "batch" else "/v1/chat/completions"
        print(f"  {d.name}: {server.endpoint}{builder.route_prefix(d)}{api}  (model {d.model})")
    print(f"  dashboard: {server.dashboard}   metrics: {server.metrics}")
    print("stop with: tandem serve --stop")
    return 0


def _local_source(d: ModelDeployment, file: Path) -> ModelDeployment:
    """A `source` that is a local folder, relative to the file (or to the current directory),
    made absolute: the Serve replicas do not run in the caller's directory."""
    if "://" in d.source or Path(d.source).is_absolute():
        return d
    for base in (file.parent, Path.cwd()):
        if (base / d.source).is_dir():
            return d.model_copy(update={"source": str((base / d.source).resolve())})
    return d


def _runnable_here(name: str, deployments: list[ModelDeployment]) -> None:
    """Refuse, with the fix, what would only hang on this machine: an LLM without vLLM installed,
    a GPU deployment without a GPU (Ray would wait for the GPU until --timeout)."""
    import importlib.util
    import shutil

    llms = [d.name for d in deployments if d.kind == "llm"]
    if llms and importlib.util.find_spec("vllm") is None:
        raise CommandError(
            f"{name}: {', '.join(llms)} is an LLM deployment and needs vLLM, which this Python "
            f"({sys.executable}) lacks; run it from the LLM environment: `make llm-env`, then "
            "`.venv-llm/bin/tandem serve --local FILE` (docs/serving.md, Local mode)",
            EXIT_UNAVAILABLE,
        )
    on_gpu = [f"{d.name} (gpu: {d.gpu})" for d in deployments if d.uses_gpu]
    if on_gpu and shutil.which("nvidia-smi") is None:
        raise CommandError(
            f"{name}: {', '.join(on_gpu)} needs a GPU and this machine has none (no nvidia-smi); "
            "for a local run on CPU set `gpu: cpu` in a copy of the file, e.g. "
            "stacks/local/tiny-llm.yaml",
            EXIT_UNAVAILABLE,
        )
