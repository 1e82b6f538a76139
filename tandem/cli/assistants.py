"""`tandem assistants report`: coding-assistant adoption and cost per team, from Prometheus (heavy
imports stay inside the handler)."""

from __future__ import annotations

import argparse
import sys

from tandem.cli.errors import EXIT_UNAVAILABLE, CommandError, http_url, output_path
from tandem.cli.finops import parse_duration, parse_time

FORMATS = ("table", "md", "html", "json")


def _report(args: argparse.Namespace) -> int:
    from finops.assistants import NoAssistantData, build_report, fetch, render
    from finops.prom import PromClient, PromError

    end = float(args.end)
    try:
        raw = fetch(PromClient(args.prometheus), end, args.range_s)
        rep = build_report(raw, end, args.range_s, args.prometheus)
    except (PromError, NoAssistantData) as exc:
        raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
    text = render(rep, args.format)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    assistants = subparsers.add_parser(
        "assistants", help="coding assistants through the gateway: adoption, usage, cost"
    )
    sub = assistants.add_subparsers(dest="assistants_command", metavar="COMMAND")
    p = sub.add_parser(
        "report",
        help="per team: adoption (weekly active / with keys), sessions and tokens per active "
        "developer, cost per developer, tool mix, prompt-cache savings",
    )
    p.add_argument(
        "--prometheus",
        required=True,
        type=http_url,
        help="Prometheus that scrapes the gateway, e.g. http://127.0.0.1:9090",
    )
    p.add_argument("--range", dest="range_s", metavar="DURATION", type=parse_duration,
                   default=parse_duration("30d"), help="window ending at --end (m/h/d/w), default 30d")  # fmt: skip
    p.add_argument(
        "--end", type=parse_time, default="now", help="window end: now, epoch or ISO 8601"
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("-o", "--output", type=output_path, help="write here instead of stdout")
    p.set_defaults(func=_report)
    assistants.set_defaults(func=lambda _args: assistants.print_help() or 2)
