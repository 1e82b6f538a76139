"""The `tandem` command line: one module per command in this package, each with a
`register(subparsers)` function; this module only wires them together.

Registration stays cheap (no pulumi, ray, torch or aiohttp imports): each command imports its
domain package inside its handler, so `tandem --help` is instant and an install without an extra
still runs every other command. A command whose extra is missing says which one to install.

Every failure goes through `main`'s one handler (the contract and the exit codes are in
tandem/cli/errors.py): a user mistake is one line naming the thing and what to do, never a
traceback unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from tandem.cli.errors import EXIT_BUG, EXIT_INPUT, EXIT_UNAVAILABLE, CommandError

# Command module -> the extra its handlers need (pyproject.toml's optional-dependencies).
COMMAND_MODULES = {
    "tandem.cli.plan": "infra",  # plan
    "tandem.cli.rehearse": "infra",  # rehearse (the first `pulumi up`, step by step)
    "tandem.cli.policies": "infra",  # policies, gate
    "tandem.cli.serve": "serving",  # serve
    "tandem.cli.gateway": "gateway",  # gateway serve / hash-key
    "tandem.cli.cache": "gateway",  # cache replay
    "tandem.cli.batch": "pipelines",  # batch worker / submit
    "tandem.cli.finops": "finops",  # finops report / demo
    "tandem.cli.deploy": "lifecycle",  # deploy
    "tandem.cli.rollout": "lifecycle",  # rollout status / pause / resume / abort / controller
    "tandem.cli.registry": "lifecycle",  # registry resolve
    "tandem.cli.assistants": "finops",  # assistants report
    "tandem.cli.drift": "drift",  # drift serve / report / pin
    "tandem.cli.prompts": "gateway",  # prompts list / diff / render / split
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Tandem: AI infrastructure platform as code.",
        epilog="Exit codes: 0 done, 1 a check failed (plan, gate), 2 bad input, 3 the environment "
        "(port in use, server unreachable, missing package), 70 a bug in Tandem.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (also after COMMAND)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, extra in COMMAND_MODULES.items():
        before = set(sub.choices)
        importlib.import_module(module_name).register(sub)
        for command in set(sub.choices) - before:
            sub.choices[command].set_defaults(extra=extra)
    for command_parser in _all_subparsers(parser):
        # SUPPRESS: a subcommand's default must not overwrite `tandem --debug COMMAND`
        command_parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _all_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_all_subparsers(child)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (argparse printed usage and the error)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - the one place that classifies every failure
        message, code = _classify(exc, args)
        if args.debug and not isinstance(exc, SystemExit):
            traceback.print_exc()
        if message:
            print(f"{_name(args)}: {message}", file=sys.stderr)
        return code


def _classify(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """(one-line message, exit code) for anything a command raised."""
    from vocabulary.errors import InputError, UnavailableError

    if isinstance(exc, CommandError):
        return exc.message, exc.code
    if isinstance(exc, InputError):
        return str(exc), EXIT_INPUT
    if isinstance(exc, UnavailableError):
        return str(exc), EXIT_UNAVAILABLE
    if isinstance(exc, SystemExit):
        return "", int(exc.code) if isinstance(exc.code, int) else EXIT_INPUT
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, ModuleNotFoundError) and not (
        exc.name and exc.name.split(".")[0] in _TANDEM_PACKAGES
    ):
        extra = getattr(args, "extra", None)
        return (
            f"needs the Python package {exc.name!r}, which this install lacks: "
            f"pip install 'tandem[{extra}]'",
            EXIT_UNAVAILABLE,
        )
    if isinstance(exc, OSError) and exc.filename:
        # a file the handler did not check first: still the user's path, said plainly
        return f"{exc.filename}: {exc.strerror or exc}", EXIT_INPUT
    hint = "" if args.debug else "; rerun with --debug for the traceback"
    return (
        f"internal error (a bug in Tandem, please report it): {type(exc).__name__}: {exc}{hint}",
        EXIT_BUG,
    )


def _name(args: argparse.Namespace) -> str:
    words = ["tandem", args.command]
    sub = getattr(args, f"{args.command}_command", None)
    return " ".join(words + ([sub] if isinstance(sub, str) else []))


_TANDEM_PACKAGES = {
    "tandem",
    "components",
    "policies",
    "gateway",
    "pipelines",
    "serving",
    "finops",
    "observability",
    "gpu_pools",
    "embedding",
    "lifecycle",
    "features",
    "vocabulary",
}


if __name__ == "__main__":
    sys.exit(main())
