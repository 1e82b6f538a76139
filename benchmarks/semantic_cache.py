"""Semantic cache benchmark: mock-data hits (vs GPTCache), QQP precision/recall (vs a static
cosine threshold), and embedding + lookup latency at 1k / 10k / 100k entries on one core.

    bash benchmarks/setup-gptcache.sh            # once: GPTCache's own venv (.venv-gptcache)
    python benchmarks/semantic_cache.py --pairs ../shared/data/semcache/qqp_pairs_dev.jsonl \
        --mock ../shared/data/semcache/gptcache_mock_data.json --output json

With the dev pairs file it evaluates on the 10,000 pairs the training script never saw; with any
other file in that format it evaluates on all of it, with the shipped weights and no retraining.
Results are written to --json-out (default out/semantic_cache.json) as well.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the targets are stated
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_cache_verifier as training  # noqa: E402

from gateway.cache.index import ScopeIndex  # noqa: E402
from gateway.cache.verifier import Probe, Verifier  # noqa: E402
from tandem.embedding import Embedder  # noqa: E402

DEFAULT_MOCK = training.SHARED / "data" / "semcache" / "gptcache_mock_data.json"
STATIC_THRESHOLDS = (0.85, 0.90, 0.95, 0.97, 0.98)
TOP_K = 4


def probes(embedder: Embedder, verifier: Verifier, texts: list[str]) -> list[Probe]:
    """What the cache holds per question: vector, token vectors, the verifier's tuned tokens."""
    vecs, toks = embedder.encode_full(texts, tap=verifier.tap_layer)
    return [Probe(t, v, tk, verifier.tune(tk)) for t, v, tk in zip(texts, vecs, toks, strict=True)]


def mock_eval(rows: list[dict], embedder: Embedder, verifier: Verifier) -> dict:
    """Cache every origin, query every similar: top-k by cosine, the verifier picks one or none."""
    origins = probes(embedder, verifier, [r["origin"] for r in rows])
    queries = probes(embedder, verifier, [r["similar"] for r in rows])
    matrix = np.stack([p.vector for p in origins])
    sims = np.stack([q.vector for q in queries]) @ matrix.T
    counts = {"correct": 0, "wrong": 0, "miss": 0}
    same_question = {"correct": 0, "wrong": 0, "miss": 0}
    picks: list[tuple[float, bool]] = []  # (best probability, right question) per query
    static = {t: {"correct": 0, "wrong": 0, "miss": 0} for t in STATIC_THRESHOLDS}
    for i, q in enumerate(queries):
        top = np.argsort(-sims[i])[:TOP_K]
        for t in STATIC_THRESHOLDS:
            static[t]["miss" if sims[i, top[0]] < t else "correct" if top[0] == i else "wrong"] += 1
        probs = verifier.probabilities(q, [origins[j] for j in top])
        best = int(np.argmax(probs))
        picks.append((float(probs[best]), rows[top[best]]["origin"] == rows[i]["origin"]))
        if probs[best] < verifier.operating_point:
            counts["miss"] += 1
            same_question["miss"] += 1
            continue
        counts["correct" if top[best] == i else "wrong"] += 1
        # the mock data repeats 48 origins verbatim: an identical cached question is a right answer
        same_question["correct" if rows[top[best]]["origin"] == rows[i]["origin"] else "wrong"] += 1
    curve = []
    for cut in (0.1, 0.3, 0.5, 0.7, 0.8):  # min_probability lowered for paraphrase-heavy traffic
        right = sum(1 for p, ok in picks if p >= cut and ok)
        wrong = sum(1 for p, ok in picks if p >= cut and not ok)
        curve.append(
            {
                "min_probability": cut,
                "correct": right,
                "wrong": wrong,
                "miss": len(picks) - right - wrong,
            }
        )
    return {
        **counts,
        "scored_by_question": same_question,
        "verifier_curve_by_question": curve,
        "baseline_static": {str(t): v for t, v in static.items()},
    }


def gptcache_eval(mock: Path, python: Path) -> dict:
    if not python.exists():
        return {"error": f"{python} not found: run `bash benchmarks/setup-gptcache.sh` first"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "gptcache_baseline.py"), str(mock)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pr_at(scores: np.ndarray, labels: np.ndarray, cut: float) -> tuple[float, float, int]:
    hit = scores >= cut
    tp = float(labels[hit].sum())
    return (tp / hit.sum() if hit.any() else 0.0), tp / max(labels.sum(), 1), int(hit.sum())


def curve(scores: np.ndarray, labels: np.ndarray, cuts: list[float]) -> list[dict]:
    out = []
    for c in cuts:
        p, r, n = pr_at(scores, labels, c)
        out.append(
            {"cut": round(float(c), 4), "precision": round(p, 4), "recall": round(r, 4), "hits": n}
        )
    return out


def pairs_eval(
    path: Path,
    embedder: Embedder,
    verifier: Verifier,
    encodings: Path | None,
    tapped_cache: Path | None,
) -> dict:
    pairs = training.load_pairs(path)
    held_out = (
        path.resolve() == training.DEFAULT_PAIRS.resolve()
        or path.name == training.DEFAULT_PAIRS.name
    )
    if held_out:
        pairs = training.split(pairs)[2]
    texts = [p[k] for p in pairs for k in ("text_a", "text_b")]
    pr = training.encode_texts(texts, embedder, encodings)
    if verifier.tap_layer is not None:
        tapped = training.tapped_states(texts, embedder, verifier.tap_layer, tapped_cache)
        pr = {t: training._with_hidden(p, tapped[t]) for t, p in pr.items()}
    y = np.array([int(p["label"]) for p in pairs], dtype=np.float64)
    prob = np.array([verifier.probability(pr[p["text_a"]], pr[p["text_b"]]) for p in pairs])
    cosine = np.array([float(pr[p["text_a"]].vector @ pr[p["text_b"]].vector) for p in pairs])
    precision, recall, _ = pr_at(prob, y, verifier.operating_point)
    # the static threshold with at least the verifier's precision, for a like-for-like recall
    static_same = next(
        (
            {"threshold": t, "precision": round(p, 4), "recall": round(r, 4)}
            for t in np.arange(0.80, 1.0, 0.005)
            if (p := pr_at(cosine, y, t)[0]) >= precision
            for r in [pr_at(cosine, y, t)[1]]
        ),
        None,
    )
    return {
        "n": len(pairs),
        "split": "held-out 10,000 of the dev pairs" if held_out else "whole file",
        "operating_point": verifier.operating_point,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "curve": curve(
            prob, y, [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, verifier.operating_point, 0.95, 0.97]
        ),
        "baseline_static": {
            "curve": curve(cosine, y, list(STATIC_THRESHOLDS)),
            "at_same_precision": static_same,
        },
    }


def latency(
    embedder: Embedder, verifier: Verifier, base: np.ndarray, sizes: list[int], queries: list[str]
) -> dict:
    """One short query at a time: embed (with token vectors) + nearest neighbours + verify top-k."""
    rng = np.random.default_rng(0)
    cand = probes(embedder, verifier, queries[:TOP_K])
    result = {}
    for size in sizes:
        reps = -(-size // len(base))
        vecs = np.concatenate([base] * reps)[:size].copy()
        if reps > 1:  # distinct copies: real vectors with a little noise, re-normalised
            vecs += rng.normal(0, 0.02, vecs.shape).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        index = ScopeIndex(embedder.dimension)
        for i, v in enumerate(vecs):
            index.add(i, v)
        times, search_times = [], []
        for q in queries:
            t0 = time.perf_counter()
            (probe,) = probes(embedder, verifier, [q])
            t1 = time.perf_counter()
            index.search(probe.vector, TOP_K)
            search_times.append(time.perf_counter() - t1)
            verifier.probabilities(probe, cand)
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1000
        result[str(size)] = {
            "p50": round(float(np.percentile(ms, 50)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2),
            "search_p50": round(float(np.median(search_times) * 1000), 3),
            "index": "hnsw (usearch)" if index.approximate else "exact (numpy)",
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=training.DEFAULT_PAIRS)
    ap.add_argument("--mock", type=Path, default=DEFAULT_MOCK)
    ap.add_argument("--output", choices=("table", "json"), default="table")
    ap.add_argument("--json-out", type=Path, default=ROOT / "out" / "semantic_cache.json")
    ap.add_argument(
        "--verifier", type=Path, default=None, help="weights (default: the shipped ones)"
    )
    ap.add_argument(
        "--encodings", type=Path, default=Path.home() / ".cache" / "tandem" / "qqp_encodings.pkl"
    )
    ap.add_argument(
        "--tapped", type=Path, default=Path.home() / ".cache" / "tandem" / "qqp_tap4.pkl"
    )
    ap.add_argument(
        "--gptcache-python", type=Path, default=ROOT / ".venv-gptcache" / "bin" / "python"
    )
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    for p in (args.pairs, args.mock):
        if not p.exists():
            sys.exit(
                f"{p}: not found (the data lives in ../shared/data/semcache/; set TANDEM_SHARED_DIR)"
            )

    embedder = Embedder()
    verifier = Verifier.load(args.verifier)
    rows = json.loads(args.mock.read_text())
    mock = mock_eval(rows, embedder, verifier)
    mock["gptcache"] = gptcache_eval(args.mock, args.gptcache_python)
    print(f"mock: {json.dumps(mock)}", file=sys.stderr)
    pairs = pairs_eval(args.pairs, embedder, verifier, args.encodings, args.tapped)
    base = embedder.encode([r["origin"] for r in rows] + [r["similar"] for r in rows])
    lat = latency(
        embedder,
        verifier,
        base,
        [int(s) for s in args.sizes.split(",")],
        [r["similar"] for r in rows[:200]],
    )
    result = {
        "mock": mock,
        "pairs": pairs,
        "latency_ms": lat,
        "machine": {"cores": os.cpu_count(), "threads": os.environ["OMP_NUM_THREADS"]},
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))
    if args.output == "json":
        print(json.dumps(result))
        return
    g = mock["gptcache"]
    print(f"mock ({len(rows)} queries)      correct  wrong  miss")
    print(f"  tandem verifier          {mock['correct']:7d} {mock['wrong']:6d} {mock['miss']:5d}")
    for t, c in mock["baseline_static"].items():
        print(f"  static cosine {t:<10} {c['correct']:7d} {c['wrong']:6d} {c['miss']:5d}")
    if "error" in g:
        print(f"  gptcache: {g['error']}")
    else:
        print(
            f"  gptcache (default {g['similarity_threshold']})  {g['correct']:7d} {g['wrong']:6d} {g['miss']:5d}"
        )
    print(
        f"QQP {pairs['split']} (n={pairs['n']}): precision {pairs['precision']:.3f} recall {pairs['recall']:.3f}"
    )
    print(f"  static at same precision: {pairs['baseline_static']['at_same_precision']}")
    for size, v in lat.items():
        print(
            f"latency {size:>7} entries: p50 {v['p50']} ms  p99 {v['p99']} ms  ({v['index']}, search {v['search_p50']} ms)"
        )


if __name__ == "__main__":
    main()
