"""`tandem cache replay LOG.jsonl`: the what-if before switching caching on (see gateway/cache/replay.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tandem.cli.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser("cache", help="Response cache tools")
    sub = cache.add_subparsers(dest="cache_command", metavar="COMMAND")
    rp = sub.add_parser(
        "replay", help="Replay a request log against cache policies: hit rate, wrong hits, $ saved"
    )
    rp.add_argument(
        "log", help="JSONL: one {tenant, model, endpoint, body, response, cost_usd?} per line"
    )
    rp.add_argument(
        "--config", help="routes YAML (its `cache:` section) or a YAML/JSON cache section"
    )
    rp.add_argument(
        "--thresholds",
        type=thresholds_list,
        default="0.85,0.9,0.95",
        help="static cosine thresholds to compare (comma-separated, each in 0-1)",
    )
    rp.add_argument(
        "--price-in", type=float, default=0.0, help="$ per million prompt tokens (when no cost_usd)"
    )
    rp.add_argument("--price-out", type=float, default=0.0, help="$ per million completion tokens")
    rp.add_argument("--output", choices=("table", "json"), default="table")
    rp.set_defaults(func=_replay)
    cache.set_defaults(func=lambda _a: cache.print_help() or 2)


def _replay(args: argparse.Namespace) -> int:
    from gateway.cache.replay import run

    log = Path(args.log)
    check_log(log)  # every line a JSON object with body and response, or exit 2 naming the line
    config = cache_section(Path(args.config)) if args.config else {}
    results = run(log, config, args.thresholds, args.price_in, args.price_out)
    if args.output == "json":
        print(json.dumps({"log": args.log, "results": results}))
        return 0
    print(
        f"{'variant':<18}{'hit rate':>9}{'exact':>7}{'semantic':>9}{'wrong':>7}{'$ saved':>12}{'$ total':>12}"
    )
    for r in results:
        print(
            f"{r['variant']:<18}{r['hit_rate']:>9.1%}{r['exact_hits']:>7}{r['semantic_hits']:>9}"
            f"{r['estimated_wrong_hits']:>7}{r['dollars_saved']:>12.4f}{r['dollars_total']:>12.4f}"
        )
    for line in skipped_lines(results):
        print(line)
    return 0


def skipped_lines(results: list[dict]) -> list[str]:
    """Say which rows the cache never looked up or never stored, and why: a log of unstorable
    answers (no finish_reason) or sampled requests (no temperature) otherwise replays as 0 %
    without a word. Counts are the most any variant saw (a hit is not stored, so they differ)."""
    requests = results[0]["requests"] if results else 0
    lines = []
    for key, verb in (("not_looked_up", "not looked up"), ("not_stored", "not stored")):
        worst: dict[str, int] = {}
        for r in results:
            for reason, n in r.get(key, {}).items():
                worst[reason] = max(worst.get(reason, 0), n)
        lines += [f"{n} of {requests} rows {verb}: {why}" for why, n in sorted(worst.items())]
    return lines


def thresholds_list(text: str) -> list[float]:
    """`0.85,0.9` -> [0.85, 0.9] (argparse type)."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give numbers between 0 and 1, comma-separated, e.g. 0.85,0.9"
        ) from None
    if not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each threshold is a cosine between 0 and 1")
    return values


def check_log(path: Path) -> None:
    """Fail on the first line that is not a replayable request, naming the file and line."""
    from vocabulary.yamlfile import read_text

    hint = "each line is one JSON object {tenant, model, endpoint, body, response, cost_usd?}"
    rows = 0
    for n, line in enumerate(read_text(path, "request log").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"not JSON ({exc.msg}, column {exc.colno})"
            raise CommandError(f"{path}:{n}: {problem}; {hint}") from None
        if not isinstance(row, dict):
            raise CommandError(f"{path}:{n}: a {type(row).__name__}, not an object; {hint}")
        missing = [k for k in ("body", "response") if not isinstance(row.get(k), dict)]
        if missing:
            raise CommandError(
                f"{path}:{n}: {' and '.join(f'`{k}`' for k in missing)} missing or not an "
                f"object; each line needs a `body` and a `response` object ({hint})"
            )
        rows += 1
    if not rows:
        raise CommandError(f"{path}: no requests in the log; {hint}")


def cache_section(path: Path) -> dict[str, Any]:
    """The `cache:` section of a routes file, or a file that is only a cache section."""
    from vocabulary.cache import parse_cache_section
    from vocabulary.errors import ConfigError
    from vocabulary.yamlfile import load_yaml

    data = load_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise CommandError(f"{path}: expected a routes file or a cache section (a mapping)")
    if "cache" in data:
        section, where = data["cache"] or {}, "cache"
    elif {"routes", "backends"} & set(data):
        raise CommandError(
            f"{path}: this routes file has no `cache:` section, so there is nothing to replay; "
            "add one (e.g. `cache: {mode: semantic}`, docs/semantic-cache.md) or pass a file "
            "holding only the cache section"
        )
    else:
        section, where = data, f"{path}"
    if not isinstance(section, dict):
        raise CommandError(f"{path}: `cache:` must be a mapping (e.g. `cache: {{mode: semantic}}`)")
    try:
        parse_cache_section(section, where)
    except ConfigError as exc:  # name the file too: exit 2
        raise ConfigError(exc.errors, f"cache section of {path}") from None
    return section
