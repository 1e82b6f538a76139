"""`tandem prompts list | diff | render | split | rollout | publish`: the prompts kept as code in stacks/prompts/.

- `list`: every prompt, its model alias, owner, versions and labels;
- `diff A B`: what changed between two versions (`support/answer@production
  support/answer@candidate`), as a unified diff of the messages and parameters;
- `render REF --var name=value ...`: the request the gateway would send (the same compiled
  template and checks: missing or unexpected variables are an error naming them) and its tokens,
  counted with `--tokenizer` (a tokenizer.json) or the gateway's estimate;
- `split NAME --version V --weight W --redis URL`: the live canary of a prompt version, the
  record the gateway reads from its Redis (`--weight 0` ends it), the same one a model's
  rollout writes;
- `rollout NAME --version V --controller URL`: the rollout controller takes `production`
  references to version V through the prompt file's `rollout:` (canary steps with analysis, or
  an A/B experiment), as it does a model version, and rolls it back when a check fails; `--wait`
  follows it to the end (exit 0 promoted, 1 rolled back);
- `publish [NAME ...] --registry URL`: the files mirrored to MLflow's prompt registry (versions
  and labels as aliases; lifecycle/prompts.py), for teams who browse prompts there.

Exit codes: 0 done; 2 bad input (an unknown prompt, label or version, bad variables, a version
MLflow holds with other text); 3 Redis or MLflow cannot be reached.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

from tandem.cli.errors import EXIT_FAILED, EXIT_UNAVAILABLE, CommandError, http_url
from tandem.cli.rollout import DEFAULT_CONTROLLER


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompts", help="list, compare and render the prompts in stacks/prompts/")
    ops = p.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", type=Path, help="prompts folder (default: stacks/prompts)")

    ls = ops.add_parser("list", help="every prompt: model alias, owner, versions, labels")
    common(ls)
    ls.add_argument("--output", choices=("table", "json"), default="table")
    ls.set_defaults(func=list_prompts)

    d = ops.add_parser("diff", help="the change between two versions, as a unified diff")
    common(d)
    d.add_argument("old", help="e.g. support/answer@production")
    d.add_argument("new", help="e.g. support/answer@candidate or support/answer@3")
    d.set_defaults(func=diff)

    r = ops.add_parser("render", help="the messages the gateway would send, and their tokens")
    common(r)
    r.add_argument("ref", help="e.g. support/answer@production")
    r.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable (repeat); features are variables too",
    )
    r.add_argument("--tokenizer", help="a tokenizer.json to count with (default: the estimate)")
    r.set_defaults(func=render)

    s = ops.add_parser("split", help="send a share of `production` references to a version")
    s.add_argument("name", help="e.g. support/answer")
    s.add_argument("--version", required=True, help="the candidate version")
    s.add_argument("--weight", type=float, required=True, help="percent of references, 0-100")
    s.add_argument("--sticky-by", help="user or metadata.<key>: each caller keeps one version")
    s.add_argument("--redis", required=True, help="the gateway's Redis URL")
    s.add_argument("--prefix", default="tandem:gw", help="the gateway's redis.prefix")
    common(s)
    s.set_defaults(func=split)

    ro = ops.add_parser("rollout", help="roll a version out through the rollout controller")
    ro.add_argument("name", help="e.g. support/answer")
    ro.add_argument("--version", type=int, required=True, help="the candidate version")
    ro.add_argument(
        "--controller",
        type=http_url,
        default=os.environ.get("TANDEM_CONTROLLER_URL", DEFAULT_CONTROLLER),
        help=f"rollout controller URL (default $TANDEM_CONTROLLER_URL or {DEFAULT_CONTROLLER})",
    )
    ro.add_argument("--prefix", default="tandem:gw", help="the gateway's redis.prefix")
    ro.add_argument("--wait", action="store_true", help="follow it until promoted or rolled back")
    ro.add_argument("--output", choices=("table", "json"), default="table")
    ro.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    common(ro)
    ro.set_defaults(func=rollout)

    pub = ops.add_parser("publish", help="mirror the prompt files to MLflow's prompt registry")
    pub.add_argument("names", nargs="*", help="prompts to publish (default: all)")
    pub.add_argument(
        "--registry",
        default=os.environ.get("TANDEM_REGISTRY_URL"),
        help="MLflow tracking server URL (default $TANDEM_REGISTRY_URL)",
    )
    common(pub)
    pub.set_defaults(func=publish)


def _prompts(args: argparse.Namespace, names: list[str] | None = None) -> dict:
    from vocabulary.prompts import PROMPTS_ROOT, load_prompts

    root = args.dir or PROMPTS_ROOT
    if not root.is_dir():
        raise CommandError(f"--dir: {root} is not a folder of prompts (<namespace>/<name>.yaml)")
    return load_prompts(root, names)


def _version(args: argparse.Namespace, text: str) -> tuple[Any, Any]:
    from prompts.registry import CompiledPrompts, PromptNotFound
    from vocabulary.prompts import PromptRef

    try:
        ref = PromptRef.parse(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    found = _prompts(args, [ref.name])
    try:
        prompt, version, _ = CompiledPrompts(found).resolve(text, {})
    except PromptNotFound as exc:
        raise CommandError(str(exc)) from None
    return prompt.spec, version


def list_prompts(args: argparse.Namespace) -> int:
    rows = [
        {
            "prompt": name,
            "model": p.model,
            "owner": p.owner,
            "versions": [v.version for v in p.versions],
            "labels": dict(p.labels),
        }
        for name, p in _prompts(args).items()
    ]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no prompts")
        return 0
    head = ("prompt", "model", "owner", "versions", "labels")
    table = [
        (
            r["prompt"],
            r["model"],
            r["owner"],
            ",".join(map(str, r["versions"])),
            " ".join(f"{k}={v}" for k, v in r["labels"].items()),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=True)]
    for line in (head, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _as_text(version: Any) -> list[str]:
    """A version as diffable lines: each message under its role, then the parameters."""
    lines = []
    for m in version.spec.messages:
        lines.append(f"[{m.role}]\n")
        lines += [line + "\n" for line in m.content.rstrip("\n").split("\n")]
    lines.append("[parameters]\n")
    lines += [f"{k}: {json.dumps(v)}\n" for k, v in sorted(version.parameters.items())]
    return lines


def diff(args: argparse.Namespace) -> int:
    _, old = _version(args, args.old)
    _, new = _version(args, args.new)
    lines = difflib.unified_diff(
        _as_text(old),
        _as_text(new),
        f"{old.name}@{old.label} ({args.old})",
        f"{new.name}@{new.label} ({args.new})",
    )
    out = "".join(lines)
    print(out if out else f"{args.old} and {args.new} are the same text and parameters")
    return 0


def render(args: argparse.Namespace) -> int:
    from prompts import tokens

    _, version = _version(args, args.ref)
    values = {}
    for item in args.var:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise CommandError(f"--var {item!r}: write NAME=VALUE")
        values[name] = value
    missing, extra = version.problems(values.keys())
    if missing or extra:
        said = [f"missing variables {missing}"] if missing else []
        said += [f"unexpected variables {extra}"] if extra else []
        raise CommandError(
            f"{version.name}@{version.label}: {'; '.join(said)} (it expects "
            f"{sorted(version.variables)}); give each with --var NAME=VALUE"
        )
    try:
        counter = tokens.counter(args.tokenizer)
    except ValueError as exc:
        raise CommandError(f"--tokenizer: {exc}") from None
    messages = version.render(values)
    counts = tokens.message_tokens(counter, messages)
    request = {**version.parameters, "messages": messages}
    json.dump(request, sys.stdout, indent=2, ensure_ascii=False)
    print()
    print(
        f"# {version.name}@{version.label}: {sum(counts)} tokens in {len(messages)} messages "
        f"({counter.name}); the model may add up to {request.get('max_tokens', 'its default')}",
        file=sys.stderr,
    )
    return 0


def split(args: argparse.Namespace) -> int:
    import redis

    from prompts.registry import SPLIT_PREFIX
    from vocabulary.rollout import TrafficSplit, split_key

    prompt, version = _version(args, f"{args.name}@{args.version}")
    if not 0 <= args.weight <= 100:
        raise CommandError(f"--weight {args.weight:g}: a percentage, 0 to 100")
    if args.sticky_by and not (args.sticky_by == "user" or args.sticky_by.startswith("metadata.")):
        raise CommandError("--sticky-by: user or metadata.<key>")
    key = split_key(args.prefix, SPLIT_PREFIX + args.name)
    client = redis.Redis.from_url(args.redis, socket_connect_timeout=5)
    try:
        if args.weight == 0:
            client.delete(key)
            print(
                f"{args.name}: no split; `production` serves version {prompt.labels['production']}"
            )
            return 0
        current = client.get(key)
        epoch = json.loads(current).get("epoch", 0) + 1 if current else 1
        record = TrafficSplit(
            canary_weight=args.weight,
            stable_version=str(prompt.labels["production"]),
            canary_version=version.label,
            salt=f"{args.name}@{version.label}#{epoch}",
            sticky_by=args.sticky_by,
            epoch=epoch,
        )
        client.set(key, record.model_dump_json())
    except redis.RedisError as exc:
        raise CommandError(f"--redis {args.redis}: {exc}", EXIT_UNAVAILABLE) from None
    finally:
        client.close()
    print(
        f"{args.name}: {args.weight:g} % of `production` references to version {version.label} "
        f"(stable: {prompt.labels['production']}); the gateways apply it within split_poll_s"
    )
    return 0


def rollout(args: argparse.Namespace) -> int:
    from lifecycle.client import ControllerClient, ControllerError
    from lifecycle.plan import build_prompt_plan, prompt_rollout_key
    from tandem.cli.deploy import Progress, follow

    prompt = _prompts(args, [args.name])[args.name]
    try:
        plan = build_prompt_plan(args.name, prompt, args.version, redis_prefix=args.prefix)
    except ValueError as exc:
        raise CommandError(f"--version: {exc}") from None
    client = ControllerClient(args.controller)
    key = prompt_rollout_key(args.name)
    out = Progress(args.output)
    try:
        state = client.start(plan)
        out.line(
            f"{key}: rolling version {plan.canary_version} out against {plan.stable_version} "
            f"({plan.spec().strategy}); `tandem rollout status {key}`"
        )
        if args.wait:
            state = follow(client, key, args.poll, out)
    except ControllerError as exc:
        if exc.status == 0:
            raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
        raise CommandError(f"{key}: {exc}", EXIT_FAILED) from None
    if args.output == "json":
        keep = ("use_case", "phase", "decision", "reason", "canary_weight", "analyses", "marks")
        print(json.dumps({k: state.get(k) for k in keep}, indent=2, default=str))
    return EXIT_FAILED if state["phase"] == "rolled_back" else 0


def publish(args: argparse.Namespace) -> int:
    from lifecycle.prompts import PublishError
    from lifecycle.prompts import publish as mirror
    from lifecycle.registry import Registry, RegistryError

    if not args.registry:
        raise CommandError("no registry: give --registry URL or set TANDEM_REGISTRY_URL")
    try:
        registry = Registry(args.registry)
    except ValueError as exc:
        raise CommandError(f"--registry: {exc}") from None
    found = _prompts(args, args.names or None)
    try:
        for name, prompt in found.items():
            done = mirror(registry, name, prompt)
            labels = " ".join(f"{k}={v}" for k, v in done.aliases.items())
            print(
                f"{name} -> MLflow prompt {done.name}: created versions {done.created or '-'}, "
                f"unchanged {done.unchanged or '-'}; aliases {labels}"
            )
    except PublishError as exc:
        raise CommandError(str(exc)) from None
    except RegistryError as exc:
        unreachable = "cannot be reached" in str(exc) or "cannot connect" in str(exc)
        raise CommandError(str(exc), EXIT_UNAVAILABLE if unreachable else 2) from None
    return 0
