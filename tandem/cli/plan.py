"""`tandem plan --stack NAME [--output table|json]`: the offline plan, for people and machines.

Exit codes: 0 the plan is clean; 1 a mandatory policy or a plan-time check failed; 2 the stack
file or a use-case file it lists cannot be read or is invalid: YAML syntax (file, line), an
unknown field, a bad value (the message names the field, the bad value and what is allowed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tandem.cli.errors import EXIT_FAILED, EXIT_INPUT, EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan a stack offline: resources, cost envelope, policies")
    p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tandem.plan import build_plan
    from vocabulary.errors import ConfigError, InputError

    try:
        plan = build_plan(args.stack)
    except InputError as exc:
        if args.output != "json":
            raise  # tandem.cli.main prints it and exits 2
        errors = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
        print(json.dumps({"ok": False, "stack": args.stack, "config_errors": errors}))
        return EXIT_INPUT
    if args.output == "json":
        print(json.dumps(plan.to_dict(), indent=2, default=str))
    else:
        render(plan)
    return EXIT_FAILED if plan.failed else EXIT_OK


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.0f}"


def resource_tree(plan: Any):
    """Components as branches, their resources as leaves, in registration order."""
    from rich.tree import Tree

    root = Tree(f"[bold]stack {plan.stack}[/] ({len(plan.resources)} resources)")
    nodes: dict[str | None, Tree] = {}
    for rec in plan.resources:
        parent = nodes.get(rec.parent, root)
        if rec.custom:
            parent.add(f"{rec.name} [dim]{rec.type}[/]")
        else:
            nodes[rec.urn] = parent.add(f"[bold cyan]{rec.name}[/] [dim]{rec.type}[/]")
    return root


def render(plan: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for the tables when piped (rich falls back to 80 columns without a TTY).
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(resource_tree(plan))

    counts = Table(title="Resources by type")
    counts.add_column("type")
    counts.add_column("count", justify="right")
    for token, n in plan.counts_by_type().items():
        counts.add_row(token, str(n))
    console.print(counts)

    cost = plan.cost
    table = Table(
        title="GPU cost envelope, $ per month",
        caption=f"on-demand list prices, {cost.price_source}, reviewed {cost.price_date}",
    )
    for col in ("pool", "instance", "capacity", "nodes", "GPUs", "$/h", "min", "max"):
        table.add_column(
            col, justify="left" if col in ("pool", "instance") else "right", no_wrap=True
        )
    for p in cost.pools:
        table.add_row(
            p.pool,
            p.instance_type,
            p.capacity_type,
            f"{p.min_nodes}–{p.max_nodes}",
            str(p.gpus_per_node),
            f"${p.hourly_usd_per_node:,.2f}",
            _usd(p.min_monthly_usd),
            _usd(p.max_monthly_usd),
        )
    table.add_section()
    table.add_row(
        "GPU pools",
        "",
        "",
        "",
        "",
        "",
        _usd(sum(p.min_monthly_usd for p in cost.pools)),
        _usd(sum(p.max_monthly_usd for p in cost.pools)),
    )
    console.print(table)
    if cost.by_component:
        others = Table(title="Everything else the stack bills, $ per month")
        for col in ("component", "what", "min", "max"):
            others.add_column(col, justify="right" if col in ("min", "max") else "left")
        for c in cost.by_component:
            others.add_row(c.component, c.detail, _usd(c.min_monthly_usd), _usd(c.max_monthly_usd))
        others.add_section()
        others.add_row("stack total", "", _usd(cost.min_monthly_usd), _usd(cost.max_monthly_usd))
        console.print(others)
    if cost.budget_monthly_usd is not None:
        verdict = "[green]within[/]" if cost.within_budget else "[red]OVER[/]"
        console.print(
            f"Budget {_usd(cost.budget_monthly_usd)}/month: maximum scale "
            f"{_usd(cost.max_monthly_usd)} is {verdict} budget."
        )

    if plan.upgrade_surge:
        surge = Table(title="Blue-green upgrade surge (extra GPUs while two clusters run)")
        for col in ("use case", "strategy", "GPUs", "nodes", "$/h", "fits in pool"):
            surge.add_column(col)
        for s in plan.upgrade_surge:
            surge.add_row(
                s["use_case"],
                s["strategy"],
                str(s["gpus"]),
                str(s["nodes"]),
                f"${s['hourly_usd']:,.2f}",
                "yes" if s["fits_in_pool"] else "[yellow]no[/]",
            )
        console.print(surge)
        for s in plan.upgrade_surge:
            if not s["fits_in_pool"]:
                console.print(f"[yellow]warning:[/] {s['use_case']}: {s['message']}")

    if plan.rollouts:
        ro = Table(
            title="Rollouts: a candidate version beside the stable one (extra while it runs)"
        )
        for col in ("use case", "strategy", "deployment", "GPUs", "nodes", "$/h"):
            ro.add_column(col)
        for r in plan.rollouts:
            ro.add_row(
                r["use_case"],
                r["strategy"],
                r["deployment"],
                str(r["canary_gpus"]),
                str(r["canary_nodes"]),
                f"${r['hourly_usd']:,.2f}",
            )
        console.print(ro)
    if plan.registry:
        reg = Table(title="Model registry references (recorded resolutions; never 'latest')")
        for col in ("use case", "deployment", "reference", "version", "source", "recorded"):
            reg.add_column(col)
        for r in plan.registry:
            reg.add_row(
                r["use_case"],
                r["deployment"],
                r["reference"],
                r["version"],
                r["source"],
                r["recorded"],
            )
        console.print(reg)

    if plan.checks:
        checks = Table(title="Plan-time checks")
        for col in ("use case", "check", "ok", "message"):
            checks.add_column(col)
        for c in plan.checks:
            ok = "[green]ok[/]" if c["ok"] else "[red]FAIL[/]"
            checks.add_row(c["use_case"], c["check"], ok, c["message"])
        console.print(checks)

    policy = Table(title="Policy violations")
    for col in ("policy", "resource", "enforcement", "message", "remediation"):
        policy.add_column(col)
    for v in plan.violations:
        style = "red" if v["enforcement"] == "mandatory" else "yellow"
        policy.add_row(
            v["policy"],
            v.get("resource_name") or v["resource"],
            f"[{style}]{v['enforcement']}[/]",
            v["message"],
            v["remediation"],
        )
    if plan.violations:
        console.print(policy)
    else:
        console.print("[green]Policies: no violations.[/]")
    if plan.waived:
        waived = Table(title="Waived (not failing the plan)")
        for col in ("policy", "resource", "would be", "message", "waiver reason"):
            waived.add_column(col)
        for v in plan.waived:
            waived.add_row(
                v["policy"],
                v.get("resource_name") or v["resource"],
                v["enforcement"],
                v["message"],
                v["waiver"] or "[red](none given)[/]",
            )
        console.print(waived)
    status = "[red]FAILED[/]" if plan.failed else "[green]OK[/]"
    console.print(f"Plan {status} in {plan.seconds:.1f} s.")
