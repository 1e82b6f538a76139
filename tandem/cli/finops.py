"""`tandem finops report` and `tandem finops demo` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from tandem.cli.errors import (
    EXIT_UNAVAILABLE,
    CommandError,
    http_url,
    output_path,
    port_number,
    positive_int,
    positive_number,
    require_free_port,
)

FORMATS = ("table", "md", "html", "csv", "json")
DEMO_DIR = Path(
    os.environ.get("TANDEM_FINOPS_DEMO_DIR", Path.home() / ".cache" / "tandem" / "finops-demo")
)
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    m = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and a unit m/h/d/w, e.g. 30d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str) -> float:
    if text == "now":
        return time.time()
    try:
        return float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use 'now', epoch seconds or ISO 8601"
            ) from None


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prometheus",
        required=True,
        type=http_url,
        help="Prometheus base URL, e.g. http://127.0.0.1:9090",
    )
    p.add_argument("--range", dest="range_s", metavar="DURATION", type=parse_duration, default=parse_duration("30d"),
                   help="window ending at --end (m/h/d/w), default 30d")  # fmt: skip
    p.add_argument(
        "--end", type=parse_time, default="now", help="window end: now, epoch or ISO 8601"
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("-o", "--output", type=output_path, help="write here instead of stdout")
    p.add_argument("--prices", help="YAML/JSON price override (on_demand, spot, spot_factor)")
    p.add_argument("--output-token-weight", type=positive_number, default=4.0,
                   help="GPU cost of one output token in input tokens, for the $/M split (default 4)")  # fmt: skip
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from finops.prices import load_prices
    from finops.prom import PromClient, PromError
    from finops.query import NoDataError, observed_from_prometheus, queries
    from finops.render import render
    from finops.report import build_report

    prices = load_prices(args.prices)  # a bad file: InputError naming it, exit 2
    end = float(args.end)
    start = end - args.range_s
    client = PromClient(args.prometheus)
    try:
        console = _stderr_console()
        with Progress(transient=True, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task(
                "querying Prometheus", total=len(queries()) + 3
            )  # + interval probe + 2 label lookups
            obs = observed_from_prometheus(
                client,
                start,
                end,
                progress=lambda name: progress.update(task, advance=1, description=name),
            )
    except (PromError, NoDataError) as exc:
        raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
    rep = build_report(
        obs, prices, source=args.prometheus, output_token_weight=args.output_token_weight
    )
    for note in rep["window"]["notes"]:  # e.g. --range 90d over 30 days of data
        print(f"warning: {note}", file=sys.stderr)
    text = render(rep, args.format)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=positive_number, default=30)
    p.add_argument("--copies", type=positive_int, default=1, help="fleet copies (20 GPUs each)")
    p.add_argument("--step", type=positive_int, default=60, help="sample interval in seconds")
    p.add_argument("--dir", type=Path, default=DEMO_DIR)
    p.add_argument("--port", type=port_number, default=0, help="default: a free port")
    p.add_argument("--serving-metrics", action="store_true",
                   help="also emit vLLM latency and gateway series (for the Grafana dashboards)")  # fmt: skip
    p.add_argument("--stop", action="store_true", help="stop the demo Prometheus and exit")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import shutil
    import signal

    from finops import demo, fleet, localprom

    pid_file = args.dir / "prometheus.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"stopped the demo Prometheus (pid {pid})")
        except ProcessLookupError:
            pass
        pid_file.unlink()
    if args.stop:
        return 0
    require_free_port("127.0.0.1", args.port, "the demo Prometheus", "pass another --port")
    shutil.rmtree(args.dir / "data", ignore_errors=True)
    spec = fleet.base_fleet(
        copies=args.copies, days=args.days, step_s=args.step, full=args.serving_metrics
    )
    print(
        f"simulating {spec.gpus} GPUs x {args.days:g} days at {args.step}s and backfilling ...",
        flush=True,
    )
    built = demo.build(spec, args.dir)
    prom = localprom.LocalPrometheus(built.data_dir, port=args.port or None).start(detach=True)
    assert prom.proc is not None
    pid_file.write_text(f"{prom.proc.pid} {prom.url}\n")
    print(
        f"Prometheus with the simulated fleet: {prom.url}  (pid {prom.proc.pid}, data in {args.dir})"
    )
    print(
        f"  tandem finops report --prometheus {prom.url} --range {int(args.days)}d --format html -o report.html"
    )
    print("  stop it with: tandem finops demo --stop   (or kill", prom.proc.pid, ")")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    finops = subparsers.add_parser(
        "finops", help="GPU cost and utilization reports from Prometheus"
    )
    sub = finops.add_subparsers(dest="finops_command", metavar="COMMAND")
    _report_args(
        sub.add_parser(
            "report", help="allocated vs active GPU-hours, cost, idle, $/M tokens, recommendations"
        )
    )
    _demo_args(
        sub.add_parser(
            "demo", help="simulate a GPU fleet into a local Prometheus and print its URL"
        )
    )
    finops.set_defaults(func=lambda _args: finops.print_help() or 2)


def report_main(argv: list[str]) -> int:
    """`tandem finops report ARGS` (tests, scripts): the same parser and error handling."""
    from tandem.cli import main

    return main(["finops", "report", *argv])
