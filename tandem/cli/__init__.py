"""The `tandem` command line: one module per command in this package, each with a
`register(subparsers)` function; this module only wires them together.

Registration stays cheap (no pulumi, ray, torch or aiohttp imports): each command imports its
domain package inside its handler, so `tandem --help` is instant and an install without an extra
still runs every other command. A command whose extra is missing says which one to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command module -> the extra its handlers need (pyproject.toml's optional-dependencies).
COMMAND_MODULES = {
    "tandem.cli.plan": "infra",  # plan
    "tandem.cli.rehearse": "infra",  # rehearse (the first `pulumi up`, step by step)
    "tandem.cli.policies": "infra",  # policies, gate
    "tandem.cli.serve": "serving",  # serve
    "tandem.cli.gateway": "gateway",  # gateway serve / hash-key
    "tandem.cli.cache": "gateway",  # cache replay
    "tandem.cli.finops": "finops",  # finops report / demo
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem", description="Tandem: AI infrastructure platform as code."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, extra in COMMAND_MODULES.items():
        before = set(sub.choices)
        importlib.import_module(module_name).register(sub)
        for command in set(sub.choices) - before:
            sub.choices[command].set_defaults(extra=extra)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in _TANDEM_PACKAGES:
            raise  # a broken install of Tandem itself, not a missing extra
        extra = getattr(args, "extra", None)
        print(
            f"tandem {args.command}: needs the Python package {exc.name!r}, which this install "
            f"lacks: pip install 'tandem[{extra}]'",
            file=sys.stderr,
        )
        return 2


_TANDEM_PACKAGES = {
    "tandem",
    "components",
    "policies",
    "gateway",
    "serving",
    "finops",
    "observability",
    "gpu_pools",
    "embedding",
    "vocabulary",
}


if __name__ == "__main__":
    sys.exit(main())
