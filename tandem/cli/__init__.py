"""The `tandem` command line.

Each area owns its sub-commands in `<area>/cli.py` with a `register(subparsers)` function; this
module only wires them together. Registration must stay cheap (no pulumi, ray or torch imports):
the heavy imports happen inside each command's handler, so `tandem --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module path -> what it adds. A module missing from an install without its extra is skipped,
# so `pip install tandem[gateway]` still gets a working `tandem gateway`.
COMMAND_MODULES = (
    "tandem.cli.plan",  # plan
    "tandem.cli.policies",  # gate
    "tandem.cli.serve",  # serve
    "tandem.cli.gateway",  # gateway serve
    "tandem.cli.cache",  # cache replay
    "tandem.cli.finops",  # finops report / demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem", description="Tandem: AI infrastructure platform as code."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that area is not part of this install
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
