"""`tandem cache replay LOG.jsonl`: the what-if before switching caching on (see gateway/cache/replay.py)."""

from __future__ import annotations

import argparse
import json
import sys


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
        "--thresholds", default="0.85,0.9,0.95", help="static cosine thresholds to compare"
    )
    rp.add_argument(
        "--price-in", type=float, default=0.0, help="$ per million prompt tokens (when no cost_usd)"
    )
    rp.add_argument("--price-out", type=float, default=0.0, help="$ per million completion tokens")
    rp.add_argument("--output", choices=("table", "json"), default="table")
    rp.set_defaults(func=_replay)
    cache.set_defaults(func=lambda _a: cache.print_help() or 2)


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from gateway.cache.replay import run

    config: dict = {}
    if args.config:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
        config = data.get("cache", data) if isinstance(data, dict) else {}
        config = config or {}
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        results = run(Path(args.log), config, thresholds, args.price_in, args.price_out)
    except (OSError, ValueError) as exc:
        print(f"tandem cache replay: {exc}", file=sys.stderr)
        return 2
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
