"""Request logs for benchmarks/cache_savings.py, built from the shared semantic-cache data.

    python benchmarks/cache_traces.py support                  # out/traces/support.jsonl
    python benchmarks/cache_traces.py zipf --s 1.0             # out/traces/zipf-1.0.jsonl

`support`: customer-support traffic from Banking77. Every held-out utterance (30 % of the file,
split by utterance within each intent; training never saw them) asked once, in a seeded shuffle,
to one support bot with one system prompt; the answer is fixed per intent (a support bot's
canned answer), distinct between intents. No exact repeats: every hit is the semantic layer's.

`zipf`: question traffic from the QQP duplicate components of the held-out pairs (questions that
no training pair has; components are the union of the label-1 pairs, so two questions count as
the same only where annotators said so). A component is drawn with Zipf popularity (rank r has
weight 1 / r**s over a seeded random ranking), then one of its questions uniformly; one answer
per component. Repeats of a popular question are exact hits; another wording of the same
component is a semantic hit; a near-miss question (a label-0 partner) is its own component, and
serving its answer is wrong.

The logs hold text from ../shared/data/semcache: they are written under out/ (ignored by git)
and never committed. Assumptions and their effect on the numbers: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import semcache_data as data  # noqa: E402

PARTS = ("held-out", "valid", "train", "all")


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def support(part: str, seed: int) -> tuple[list[dict], dict]:
    rows = data.load_banking()
    train, valid, held = data.banking_split(rows)
    chosen = {"held-out": held, "valid": valid, "train": train, "all": rows}[part]
    trace = data.support_trace(chosen, seed)
    intents = Counter(r["intent"] for r in chosen)
    return trace, {
        "trace": "support",
        "part": part,
        "requests": len(trace),
        "intents": len(intents),
        "utterances_per_intent": [min(intents.values()), max(intents.values())],
    }


def zipf(s: float, requests: int, seed: int) -> tuple[list[dict], dict]:
    comp = data.unseen_components(data.load_pairs())
    trace = data.zipf_trace(comp, s, requests, seed)
    asked = Counter(r["body"]["messages"][-1]["content"] for r in trace)
    sizes = Counter(comp.values())
    return trace, {
        "trace": f"zipf s={s:g}",
        "requests": len(trace),
        "questions": len(comp),
        "components": len(sizes),
        "components_with_several_questions": sum(1 for n in sizes.values() if n > 1),
        "distinct_questions_asked": len(asked),
        "components_asked": len({comp[t] for t in asked}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="trace", required=True)
    sp = sub.add_parser("support", help="Banking77 utterances, each once, one answer per intent")
    sp.add_argument("--part", choices=PARTS, default="held-out")
    zp = sub.add_parser("zipf", help="QQP duplicate components with Zipf popularity")
    zp.add_argument("--s", type=float, default=1.0, help="Zipf exponent")
    zp.add_argument("--requests", type=int, default=20_000)
    for p in (sp, zp):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.trace == "support":
        rows, summary = support(args.part, args.seed)
        name = "support" if args.part == "held-out" else f"support-{args.part}"
    else:
        rows, summary = zipf(args.s, args.requests, args.seed)
        name = f"zipf-{args.s:g}"
    out = args.out or data.ROOT / "out" / "traces" / f"{name}.jsonl"
    write(rows, out)
    print(json.dumps({"log": str(out), **summary}))


if __name__ == "__main__":
    main()
