"""`tandem deploy`: notebook to production. Register a model (or take a registered version), run
the checks, start the use case's rollout and follow it to promotion or rollback.

    tandem deploy stacks/usecases/support-chatbot.yaml --stack prod --version 7
    tandem deploy lifecycle-demo.yaml --resolutions reg.yaml --model-dir ./out --output json

Phases, each timed (`--output json` gives the seconds): register (a local model directory or an
MLflow run becomes a registry version), checks (the plan-time fit checks with both versions up,
the review gate, and with --stack the stack's policy pack), start (the controller accepts the
rollout plan), then the controller's own phases (deploying, progressing or experimenting,
promoting or rolling_back). On promotion the new version is recorded in the resolution file, so
the next `tandem plan` / `pulumi up` deploys it.

Exit codes: 0 promoted (or started, with --no-follow); 1 a check failed or the version was rolled
back; 2 bad input; 3 the registry or the controller cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tandem.cli.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CommandError,
    http_url,
)

DEFAULT_CONTROLLER = "http://127.0.0.1:8095"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="register a model version and roll it out (canary or A/B) to production",
        description="Register (or take) a model version, run the checks, start the use case's "
        "rollout and follow it to promotion or rollback (docs/lifecycle.md).",
        epilog="Exit codes: 0 promoted, 1 a check failed or the version was rolled back, "
        "2 bad input, 3 the registry or the controller cannot be reached.",
    )
    p.add_argument("use_case", metavar="USE_CASE_FILE", help="the use-case file (with rollout:)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--version", help="a version already in the registry")
    what.add_argument("--model-dir", type=Path, help="a local model directory to register")
    what.add_argument("--run", help="an MLflow run to register: RUN_ID or RUN_ID:ARTIFACT_PATH")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--stack", help="stack whose resolutions, pools and policies apply")
    where.add_argument("--resolutions", type=Path, help="a resolution file (local tier)")
    p.add_argument(
        "--registry",
        type=http_url,
        default=os.environ.get("TANDEM_REGISTRY_URL"),
        help="MLflow tracking server URL (default $TANDEM_REGISTRY_URL)",
    )
    p.add_argument(
        "--artifacts-destination",
        default=os.environ.get("TANDEM_REGISTRY_ARTIFACTS"),
        help="the registry server's --artifacts-destination, where serving reads versions "
        "(default $TANDEM_REGISTRY_ARTIFACTS)",
    )
    p.add_argument(
        "--controller",
        type=http_url,
        default=os.environ.get("TANDEM_CONTROLLER_URL", DEFAULT_CONTROLLER),
        help="rollout controller URL (default $TANDEM_CONTROLLER_URL or "
        + DEFAULT_CONTROLLER
        + ")",
    )
    p.add_argument("--no-follow", action="store_true", help="start the rollout and return")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def run(self, name: str, fn: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.phases[name] = round(time.monotonic() - t0, 3)


def run(args: argparse.Namespace) -> int:
    from lifecycle.client import ControllerClient, ControllerError
    from lifecycle.plan import build_plan
    from lifecycle.registry import Registry, RegistryError, serving_source
    from tandem.stack import REPO_ROOT
    from vocabulary.registry import load_resolutions, resolution_path
    from vocabulary.usecase import load_use_case, resolve_registry

    out = Progress(args.output)
    timer = Timer()
    spec = load_use_case(args.use_case)
    if spec.rollout is None:
        raise CommandError(
            f"{args.use_case}: the use case has no rollout: section (docs/lifecycle.md)"
        )
    d = spec.rollout_deployment
    assert d is not None and d.registry is not None
    ref = d.registry
    if args.stack is None and args.resolutions is None:
        raise CommandError(
            "give --stack NAME (its stacks/registry/NAME.yaml) or --resolutions FILE"
        )
    res_path = args.resolutions or resolution_path(REPO_ROOT, args.stack)
    resolutions = load_resolutions(res_path)
    spec, _ = resolve_registry(spec, resolutions, str(res_path))
    stable = next(x for x in spec.deployments if x.name == d.name)
    if not args.registry:
        raise CommandError("no registry: give --registry URL or set TANDEM_REGISTRY_URL")
    registry = Registry(args.registry)

    def register_version() -> Any:
        if args.model_dir is not None:
            if not args.model_dir.is_dir():
                raise CommandError(f"--model-dir {args.model_dir}: not a directory")
            return registry.register_directory(ref.name, args.model_dir)
        if args.run is not None:
            run_id, _, path = args.run.partition(":")
            return registry.register_run(ref.name, run_id, path or "model")
        return registry.get_version(ref.name, str(args.version))

    try:
        mv = timer.run("register", register_version)
        source = serving_source(mv.source, args.artifacts_destination)
    except RegistryError as exc:
        code = (
            EXIT_UNAVAILABLE
            if "cannot be reached" in str(exc) or "cannot connect" in str(exc)
            else 2
        )
        raise CommandError(str(exc), code) from None
    registered_at = time.time()
    out.line(f"registered {d.registry.name} version {mv.version} ({source})")

    failed = timer.run("checks", _checks, args, spec, d.name, mv.version, source, out)
    if failed:
        out.final({"outcome": "checks_failed", "failed": failed, "phases": timer.phases}, timer)
        return EXIT_FAILED
    try:
        plan = build_plan(spec, mv.version, source, registered_at=registered_at)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    client = ControllerClient(args.controller)
    try:
        timer.run("start", client.start, plan)
    except ControllerError as exc:
        raise CommandError(
            f"rollout not started: {exc}", EXIT_UNAVAILABLE if exc.status == 0 else EXIT_FAILED
        ) from None
    out.line(
        f"rollout of {spec.name}: version {mv.version} against stable {stable.version} "
        f"({plan.spec().strategy})"
    )
    if args.no_follow:
        out.final({"outcome": "started", "version": mv.version, "phases": timer.phases}, timer)
        return EXIT_OK
    try:
        state = follow(client, spec.name, args.poll, out)
    except ControllerError as exc:
        raise CommandError(
            f"lost the controller while following: {exc}", EXIT_UNAVAILABLE
        ) from None
    result = _result(state, mv.version, timer, registered_at)
    if state["phase"] == "promoted":
        from vocabulary.registry import save_resolutions

        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        resolutions.record(d.registry.name, mv.version, source, when, d.registry.alias)
        save_resolutions(res_path, args.stack or res_path.stem, resolutions)
        result["resolution_file"] = str(res_path)
        out.line(f"recorded {d.registry.pointer} -> {mv.version} in {res_path}; commit it")
    out.final(result, timer)
    return EXIT_OK if state["phase"] == "promoted" else EXIT_FAILED


def _checks(
    args: argparse.Namespace, spec: Any, deployment: str, version: str, source: str, out: Progress
) -> list[str]:
    """Plan-time fit checks (both versions up), the review gate, and with --stack the policies.
    Returns the failures, one line each."""
    from policies import review_gate
    from serving.checks import resolve_contract, run_checks
    from vocabulary.usecase import with_version

    failed: list[str] = []
    candidate = with_version(spec, deployment, version, source)
    contract = None
    if args.stack:
        from tandem.stack import load

        stack = load(args.stack)
        contract = resolve_contract(candidate, stack.contracts)
    for r in run_checks(candidate, contract):
        if not r.ok:
            failed.append(f"[{r.check}] {r.message}")
    for c in review_gate.evaluate(spec.review, use_case=spec.name):
        if not c.ok:
            failed.append(f"[review: {c.criterion}] {c.reason}")
    if args.stack:
        from tandem.plan import build_plan

        plan = build_plan(args.stack)
        failed += [
            f"[policy {v['policy']}] {v['message']}"
            for v in plan.violations
            if v.get("enforcement") == "mandatory"
        ]
        failed += [f"[{c['check']}] {c['message']}" for c in plan.checks if not c["ok"]]
    else:
        out.line("checks: policies skipped (no --stack: there are no stack resources to police)")
    out.line("checks: " + ("passed" if not failed else f"{len(failed)} failed"))
    for line in failed:
        out.line(f"  - {line}")
    return failed


def follow(client: Any, use_case: str, poll: float, out: Progress) -> dict[str, Any]:
    seen = 0
    while True:
        state = client.status(use_case)
        events = state["events"]
        for e in events[seen:]:
            out.event(e, state)
        seen = len(events)
        if state["phase"] in ("promoted", "rolled_back"):
            return state
        time.sleep(poll)


def _result(
    state: dict[str, Any], version: str, timer: Timer, registered_at: float
) -> dict[str, Any]:
    marks = state.get("marks", {})
    phases = dict(timer.phases)
    phases.update(state.get("phases", {}))
    full = marks.get("full_traffic_at")
    return {
        "use_case": state["use_case"],
        "version": version,
        "outcome": state["phase"],
        "decision": state.get("decision"),
        "reason": state.get("reason"),
        "register_to_full_traffic_s": round(full - registered_at, 3) if full else None,
        "phases": phases,
        "experiment": state.get("experiment"),
    }


class Progress:
    """Live progress for people (event lines as they happen), one JSON object for machines."""

    def __init__(self, mode: str) -> None:
        self.json = mode == "json"

    def line(self, text: str) -> None:
        if not self.json:
            print(text, flush=True)

    def event(self, e: dict[str, Any], state: dict[str, Any]) -> None:
        if self.json or e["kind"] in ("started",):
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(e["t"]))
        weight = f"canary {state['canary_weight']:g}%"
        print(f"{stamp}  {e['phase']:<13} {e['kind']:<12} {e['message']}   [{weight}]", flush=True)

    def final(self, result: dict[str, Any], timer: Timer) -> None:
        if self.json:
            json.dump(result, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.get("phases", {}).items())
        print(f"{result.get('outcome')}: {result.get('reason') or ''}".rstrip(": "))
        if result.get("register_to_full_traffic_s") is not None:
            print(f"registered -> 100 % traffic: {result['register_to_full_traffic_s']:.1f} s")
        print(f"phases: {phases}")
