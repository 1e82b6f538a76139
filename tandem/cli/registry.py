"""`tandem registry resolve --stack NAME --registry URL`: record what each registry reference of a
stack's use cases names today (alias -> version, and each version's source) in the stack's
resolution file, `stacks/registry/NAME.yaml`, which `tandem plan` and `pulumi up` read offline.

Exit codes: 0 recorded; 2 bad input (stack, a reference the registry does not know); 3 the
registry cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import time

from tandem.cli.errors import EXIT_UNAVAILABLE, CommandError, http_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="record what the stack's registry references resolve to")
    ops = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    r = ops.add_parser("resolve", help="write stacks/registry/<stack>.yaml from the live registry")
    r.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
    r.add_argument(
        "--registry",
        type=http_url,
        default=os.environ.get("TANDEM_REGISTRY_URL"),
        help="MLflow tracking server URL (default $TANDEM_REGISTRY_URL)",
    )
    r.add_argument(
        "--artifacts-destination",
        default=os.environ.get("TANDEM_REGISTRY_ARTIFACTS"),
        help="the server's --artifacts-destination (maps proxied sources to s3://...)",
    )
    r.set_defaults(func=resolve)


def resolve(args: argparse.Namespace) -> int:
    from lifecycle.registry import Registry, RegistryError, serving_source
    from tandem.stack import REPO_ROOT, read_stack_file
    from tandem.stack import load_use_cases as stack_use_cases
    from vocabulary.config import namespace_config, parse_config
    from vocabulary.registry import load_resolutions, resolution_path, save_resolutions

    if not args.registry:
        raise CommandError("no registry: give --registry URL or set TANDEM_REGISTRY_URL")
    config = parse_config(namespace_config(read_stack_file(args.stack)), f"stack {args.stack}")
    path = resolution_path(REPO_ROOT, args.stack)
    resolutions = load_resolutions(path)
    registry = Registry(args.registry)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    count = 0
    try:
        for uc in stack_use_cases(config):
            for d in uc.deployments:
                ref = d.registry
                if ref is None:
                    continue
                if ref.alias is not None:
                    mv = registry.alias(ref.name, ref.alias)
                    if mv is None:
                        raise CommandError(
                            f"use case {uc.name!r}: {ref.pointer}: the registry has no such alias"
                        )
                else:
                    mv = registry.get_version(ref.name, str(ref.version))
                source = serving_source(mv.source, args.artifacts_destination)
                resolutions.record(ref.name, mv.version, source, when, ref.alias)
                print(f"{uc.name}/{d.name}: {ref.pointer} -> version {mv.version} ({source})")
                count += 1
    except RegistryError as exc:
        unreachable = "cannot be reached" in str(exc) or "cannot connect" in str(exc)
        raise CommandError(str(exc), EXIT_UNAVAILABLE if unreachable else 2) from None
    save_resolutions(path, args.stack, resolutions)
    print(f"recorded {count} reference(s) in {path}; commit it")
    return 0
