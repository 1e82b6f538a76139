"""`tandem gate FILE` (the six-criteria AI-initiative review) and `tandem policies` (the rules).

`tandem gate` is for the review meeting.

Reads only the use-case file's `review:` section (the rest of the file may still be a draft),
prints each criterion with pass / fail and why, and exits 1 when any criterion fails (2 when the
section itself is malformed), so the same command gates a merge in CI.

JSON (`--output json`):
    {"use_case": "claims-assistant", "file": "...", "passed": false,
     "criteria": [{"criterion": "strategic alignment", "ok": true, "reason": "..."}, ...]}
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_gate(subparsers)
    _register_policies(subparsers)


def _register_policies(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "policies",
        help="list the policy pack's rules and their enforcement on a stack",
        description="Every rule with its severity and its level on this stack (docs/policies.md).",
    )
    p.add_argument(
        "--stack", default="dev", help="stack whose config sets the levels (default dev)"
    )
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.set_defaults(func=list_policies)


def list_policies(args: argparse.Namespace) -> int:
    from policies.rules import ALL_RULES
    from policies.settings import PolicySettings
    from tandem.stack import read_stack_file

    # a bad stack file raises vocabulary.errors.ConfigError: tandem.cli.main prints it, exit 2
    settings = PolicySettings.from_stack_config(read_stack_file(args.stack), args.stack)
    rows: list[dict[str, Any]] = [
        {
            "policy": r.name,
            "scope": r.scope,
            "severity": r.severity,
            "enforcement": settings.level_for(r),
            "description": r.description,
            "waivers": [w.model_dump(mode="json") for w in settings.waivers if w.policy == r.name],
        }
        for r in ALL_RULES
    ]
    if args.output == "json":
        print(
            json.dumps(
                {"stack": args.stack, "environment": settings.environment, "policies": rows},
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    colors = {"mandatory": "red", "advisory": "yellow", "disabled": "dim"}
    table = Table(title=f"Policies on stack {args.stack} ({settings.environment})")
    for col in ("policy", "severity", "enforcement", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        level = row["enforcement"]
        waived = f" [dim](waived x{len(row['waivers'])})[/]" if row["waivers"] else ""
        table.add_row(
            row["policy"],
            row["severity"],
            f"[{colors[level]}]{level}[/]{waived}",
            row["description"],
        )
    Console().print(table)
    return 0


def _register_gate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gate",
        help="check a use case against the six-criteria AI-initiative review",
        description="Evaluate the review: section of a use-case file (docs/policies.md).",
    )
    p.add_argument("file", type=Path, help="use-case file, e.g. stacks/usecases/chatbot.yaml")
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--today",
        type=_iso_date,
        default=None,
        help="evaluate as of this date (YYYY-MM-DD) when the review has no date",
    )
    p.set_defaults(func=gate)


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a date as YYYY-MM-DD") from None


def gate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from policies import review_gate
    from vocabulary.errors import ConfigError, format_validation_error
    from vocabulary.review import ReviewGate
    from vocabulary.yamlfile import load_yaml

    doc = load_yaml(args.file, "use-case file")  # unreadable or bad YAML: exit 2, file and line
    doc = doc if isinstance(doc, dict) else {}
    name = str(doc.get("name") or args.file.stem)
    try:
        results = review_gate.evaluate(doc.get("review"), today=args.today, use_case=name)
    except ValidationError as exc:
        lines = format_validation_error(exc, ReviewGate, "review")
        raise ConfigError(lines, str(args.file)) from None
    ok = review_gate.passed(results)
    if args.output == "json":
        payload = {
            "use_case": name,
            "file": str(args.file),
            "passed": ok,
            "criteria": [r.to_dict() for r in results],
        }
        print(json.dumps(payload, indent=2))
    else:
        _print_table(name, results, ok)
    return 0 if ok else 1


def _print_table(name: str, results: list, ok: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"AI-initiative review gate: {name}")
    table.add_column("criterion")
    table.add_column("result")
    table.add_column("why", overflow="fold")
    for r in results:
        table.add_row(r.criterion, "[green]pass[/]" if r.ok else "[red]FAIL[/]", r.reason)
    console = Console()
    console.print(table)
    failed = sum(not r.ok for r in results)
    console.print("[green]approved[/]" if ok else f"[red]not approved: {failed} criteria fail[/]")
