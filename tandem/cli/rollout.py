"""`tandem rollout`: operate rollouts, and run the controller itself.

    tandem rollout status [USE_CASE]           phase, step, weight, last analysis, events
    tandem rollout pause USE_CASE              hold the current step (analysis continues)
    tandem rollout resume USE_CASE
    tandem rollout abort USE_CASE --reason ... 100 % stable now, canary removed, alias untouched
    tandem rollout controller --redis ... --prometheus ... --serve ...   (the controller process)

Exit codes: 0 done; 2 bad input; 3 the controller cannot be reached; 1 the command does not apply
(no active rollout, or it is already promoting / rolling back).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from tandem.cli.errors import EXIT_FAILED, EXIT_UNAVAILABLE, CommandError, http_url, port_number

DEFAULT_CONTROLLER = "http://127.0.0.1:8095"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout", help="status, pause, resume or abort a rollout; run the controller"
    )
    ops = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    for name, text in (
        ("status", "show rollouts (one use case, or all)"),
        ("pause", "hold the current step (analysis and automatic rollback continue)"),
        ("resume", "continue a paused rollout"),
        ("abort", "roll back now: 100 % stable, canary removed, registry alias untouched"),
    ):
        op = ops.add_parser(name, help=text)
        op.add_argument("use_case", nargs="?" if name == "status" else None, metavar="USE_CASE")
        op.add_argument(
            "--controller",
            type=http_url,
            default=os.environ.get("TANDEM_CONTROLLER_URL", DEFAULT_CONTROLLER),
            help="rollout controller URL (default $TANDEM_CONTROLLER_URL or "
            + DEFAULT_CONTROLLER
            + ")",
        )
        if name == "abort":
            op.add_argument("--reason", default="", help="recorded in the rollout's events")
        if name == "status":
            op.add_argument("--output", choices=("table", "json"), default="table")
        op.set_defaults(func=act)
    c = ops.add_parser("controller", help="run the rollout controller (what its Deployment runs)")
    c.add_argument("--redis", required=True, help="the gateway's Redis URL (splits and state)")
    c.add_argument("--prometheus", type=http_url, required=True, help="Prometheus base URL")
    c.add_argument(
        "--serve",
        required=True,
        help="local:http://HOST:PORT (a Ray dashboard) or kuberay:NAMESPACE (in a cluster)",
    )
    c.add_argument("--registry", type=http_url, help="MLflow tracking server URL (moves aliases)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=port_number, default=8095)
    c.add_argument("--tick", type=float, default=2.0, help="seconds between reconcile ticks")
    c.add_argument("--lease", type=float, default=15.0, help="leader lease, seconds")
    c.set_defaults(func=controller)


def act(args: argparse.Namespace) -> int:
    from lifecycle.client import ControllerClient, ControllerError

    client = ControllerClient(args.controller)
    try:
        if args.rollout_command == "status":
            states = [client.status(args.use_case)] if args.use_case else client.all()
            if args.output == "json":
                print(json.dumps(states, indent=2, default=str))
            else:
                for s in states:
                    _print_state(s)
                if not states:
                    print("no rollouts")
            return 0
        state = client.act(args.use_case, args.rollout_command, getattr(args, "reason", ""))
    except ControllerError as exc:
        if exc.status == 0:
            raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
        if exc.status == 404:
            raise CommandError(f"no rollout for use case {args.use_case!r}", EXIT_FAILED) from None
        raise CommandError(str(exc), EXIT_FAILED) from None
    _print_state(state)
    return 0


def _print_state(s: dict[str, Any]) -> None:
    plan = s["plan"]
    paused = " (paused)" if s.get("paused") else ""
    print(
        f"{s['use_case']}: {s['phase']}{paused}  version {plan['canary_version']} vs stable "
        f"{plan['stable_version']}  step {s['step'] + 1}  canary {s['canary_weight']:g}%"
    )
    if s.get("decision"):
        print(f"  decision: {s['decision']}: {s.get('reason', '')}")
    if s.get("analyses"):
        a = s["analyses"][-1]
        print(f"  last analysis: {a.get('outcome')}: {a.get('reason', '')}")
    if s.get("experiment"):
        e = s["experiment"]
        print(f"  experiment: {e['summary']}")
        for arm in e["arms"]:
            print(
                f"    {arm['arm']:<9} attempts {arm['attempts']}  error rate "
                f"{_f(arm['error_rate'])}  p95 {_f(arm['latency_p95_ms'])} ms"
            )
    for e in s.get("events", [])[-8:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["t"]))
        print(f"  {stamp} {e['kind']:<12} {e['message']}")


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def controller(args: argparse.Namespace) -> int:
    from lifecycle.server import run

    try:
        run(
            redis_url=args.redis,
            prometheus_url=args.prometheus,
            serve=args.serve,
            registry_url=args.registry,
            host=args.host,
            port=args.port,
            tick_s=args.tick,
            lease_s=args.lease,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(
            f"cannot start the controller on {args.host}:{args.port}: {exc}", EXIT_UNAVAILABLE
        ) from None
    return 0
