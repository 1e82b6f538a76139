"""What the response cache saves on a request log, and how many wrong answers it serves for it.

    python benchmarks/cache_traces.py support                      # or: zipf --s 1.0
    python benchmarks/cache_savings.py --log out/traces/support.jsonl --output json

Every variant replays the log in order into an empty cache through `tandem cache replay`'s code
path (gateway/cache/replay.py): a hit answers from the cache, a miss stores the logged answer.
Variants: no cache, exact only, static cosine thresholds, GPTCache (where its venv exists:
bash benchmarks/setup-gptcache.sh), Tandem's default decision (`default`), and the per-route
decisions (`verifier`, `neighbourhood`) for comparison.

Any log in the replay format works whose answers are the same within an intent (or any group of
questions one answer serves) and differ between intents: a served answer that differs from the
one logged for that request, compared exactly, is a wrong answer. A wrong answer is not counted
as an avoided call or as saved dollars (the caller has to ask again). Costs: `cost_usd` when a
row has one, else its usage at --price-in / --price-out dollars per million tokens.

JSON (`--output json`): `variants[]` with `variant`, `requests`, `calls_avoided_share`,
`wrong_answer_share`, `dollars_saved_share` (and hits by layer, wrong answers, rows not looked
up or not stored and why, seconds).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for the model, as in semantic_cache.py
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.cache.replay import Outcome, cost, read_log, replay_variant  # noqa: E402

THRESHOLDS = (0.85, 0.90, 0.95)
PRICE_IN, PRICE_OUT = 0.15, 0.60  # $ per million tokens (a small hosted model's list price)


def configs(thresholds: tuple[float, ...]) -> dict[str, dict[str, Any] | None]:
    """Variant name -> cache section (None: no cache)."""
    out: dict[str, dict[str, Any] | None] = {"no_cache": None, "exact": {"mode": "exact"}}
    for t in thresholds:
        out[f"threshold={t:g}"] = {"mode": "semantic", "decision": "threshold", "threshold": t}
    out["default"] = {"mode": "semantic"}  # no decision set: evidence
    out["verifier"] = {"mode": "semantic", "decision": "verifier"}
    out["neighbourhood"] = {"mode": "semantic", "decision": "neighbourhood"}
    return out


def shares(
    name: str,
    requests: int,
    hits: int,
    wrong: int,
    saved: float,
    total: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "variant": name,
        "requests": requests,
        "calls_avoided_share": round((hits - wrong) / requests, 4) if requests else 0.0,
        "wrong_answer_share": round(wrong / requests, 4) if requests else 0.0,
        "dollars_saved_share": round(saved / total, 4) if total else 0.0,
        "hits": hits,
        "wrong_answers": wrong,
        **extra,
    }


def from_outcome(out: Outcome, seconds: float) -> dict[str, Any]:
    return shares(
        out.variant,
        out.requests,
        out.hits,
        out.wrong_hits,
        out.dollars_saved - out.wrong_cost,
        out.dollars_total,
        {
            "exact_hits": out.exact_hits,
            "semantic_hits": out.semantic_hits,
            "not_looked_up": dict(out.not_looked_up),
            "not_stored": dict(out.not_stored),
            "seconds": round(seconds, 1),
        },
    )


def gptcache(log: Path, python: Path, rows: list[dict], price_in: float, price_out: float) -> dict:
    """GPTCache 0.1.44 replaying the same log in its own venv (benchmarks/gptcache_baseline.py)."""
    if not python.exists():
        return {
            "variant": "gptcache",
            "error": f"{python} not found: bash benchmarks/setup-gptcache.sh",
        }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "gptcache_baseline.py"), "--log", str(log)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=3600,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"variant": "gptcache", "error": tail[0]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    costs = [cost(r, price_in, price_out) for r in rows]
    hit, wrong = set(result["hits"]), set(result["wrong"])
    saved = sum(c for i, c in enumerate(costs) if i in hit and i not in wrong)
    return shares(
        "gptcache",
        len(rows),
        len(hit),
        len(wrong),
        saved,
        sum(costs),
        {
            "similarity_threshold": result["similarity_threshold"],
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_log(args.log)
    costs = [cost(r, args.price_in, args.price_out) for r in rows]
    results = []
    for name, config in configs(tuple(args.thresholds)).items():
        if args.variants and name not in args.variants:
            continue
        if config is None:
            results.append(shares(name, len(rows), 0, 0, 0.0, sum(costs), {}))
            continue
        t0 = time.perf_counter()
        out = await replay_variant(
            rows, name, config, args.price_in, args.price_out, comparison="exact"
        )
        results.append(from_outcome(out, time.perf_counter() - t0))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        if name == "exact" and (not args.variants or "gptcache" in args.variants):
            results.append(
                gptcache(args.log, args.gptcache_python, rows, args.price_in, args.price_out)
            )
    return {
        "log": str(args.log),
        "requests": len(rows),
        "prices_per_mtok": {"input": args.price_in, "output": args.price_out},
        "comparison": "exact answer text",
        "variants": results,
        "machine": {"cores": os.cpu_count(), "load_average": list(os.getloadavg())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, required=True, help="JSONL in the replay format")
    ap.add_argument("--output", choices=("table", "json"), default="table")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    ap.add_argument("--price-in", type=float, default=PRICE_IN)
    ap.add_argument("--price-out", type=float, default=PRICE_OUT)
    ap.add_argument("--variants", nargs="+", default=None, help="only these variants")
    ap.add_argument(
        "--gptcache-python", type=Path, default=ROOT / ".venv-gptcache" / "bin" / "python"
    )
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if not args.log.exists():
        sys.exit(f"{args.log}: not found (make one with benchmarks/cache_traces.py)")
    try:
        result = asyncio.run(run(args))
    except ValueError as exc:
        sys.exit(f"cache_savings: {exc}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2))
    if args.output == "json":
        print(json.dumps(result))
        return
    print(f"{result['log']}: {result['requests']} requests")
    print(f"{'variant':<16}{'calls avoided':>14}{'wrong answers':>15}{'$ saved':>9}{'hits':>7}")
    for v in result["variants"]:
        if "error" in v:
            print(f"{v['variant']:<16}  {v['error']}")
            continue
        print(
            f"{v['variant']:<16}{v['calls_avoided_share']:>14.1%}{v['wrong_answer_share']:>15.2%}"
            f"{v['dollars_saved_share']:>9.1%}{v['hits']:>7}"
        )


if __name__ == "__main__":
    main()
