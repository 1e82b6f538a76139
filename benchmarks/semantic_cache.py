"""Semantic cache benchmark: mock-data hits (vs GPTCache), QQP precision/recall (vs a static
cosine threshold), and embedding + lookup latency at 1k / 10k / 100k entries on one core, for
the default decision (evidence) and the per-route ones (verifier, neighbourhood;
docs/semantic-cache.md).

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

import semcache_data as data  # noqa: E402
import train_cache_verifier as training  # noqa: E402

from embedding.minilm import Embedder  # noqa: E402
from gateway.cache.decision import neighbourhood_pick  # noqa: E402
from gateway.cache.index import ScopeIndex  # noqa: E402
from gateway.cache.policy import Policy  # noqa: E402
from gateway.cache.verifier import Candidate, Probe, Verifier  # noqa: E402

DEFAULT_MOCK = training.SHARED / "data" / "semcache" / "gptcache_mock_data.json"
STATIC_THRESHOLDS = (0.85, 0.90, 0.95, 0.97, 0.98)
NEIGHBOURHOOD_RATIOS = (0.7, 0.75, 0.8, 0.85, 0.9)
TOP_K = 4


def probes(embedder: Embedder, texts: list[str]) -> list[Probe]:
    """What the cache holds per question: its vector and token vectors."""
    vecs, toks = embedder.encode_full(texts)
    return [Probe(t, v, tk) for t, v, tk in zip(texts, vecs, toks, strict=True)]


def mock_eval(rows: list[dict], embedder: Embedder, verifier: Verifier) -> dict:
    """Cache every distinct origin, query every similar; count correct / wrong / miss per decision.

    The cache keys entries by question, so the 48 origins the file repeats verbatim are one entry,
    and a hit is correct when it serves the query's own origin question. Each decision sees what
    the gateway sees: the top-k neighbours by cosine (same index code), then its own rule.
    """
    origins = sorted({r["origin"] for r in rows})
    position = {o: i for i, o in enumerate(origins)}
    cached = probes(embedder, origins)
    queries = probes(embedder, [r["similar"] for r in rows])
    index = ScopeIndex(embedder.dimension)
    for i, p in enumerate(cached):
        index.add(i, p.vector)
    policy = Policy()
    static = {t: {"correct": 0, "wrong": 0, "miss": 0} for t in STATIC_THRESHOLDS}
    verified = {"correct": 0, "wrong": 0, "miss": 0}
    # the default decision, by the half of the file its training saw (by origin)
    trained_on = {r["origin"] for r in data.mock_split(rows)[0]}
    evidence = {
        part: {"correct": 0, "wrong": 0, "miss": 0} for part in ("all", "held_out", "trained_on")
    }
    # (nearest, runner-up, nearest is right) per query: the neighbourhood rule at any ratio
    near: list[tuple[float, float, bool]] = []
    for row, q in zip(rows, queries, strict=True):
        found = index.search(q.vector, TOP_K)
        truth = position[row["origin"]]
        (top, sim), runner_up = found[0], found[1][1]
        near.append((sim, runner_up, top == truth))
        for t in STATIC_THRESHOLDS:
            static[t]["miss" if sim < t else "correct" if top == truth else "wrong"] += 1
        neighbours = [Candidate(cached[j], s, origins[j]) for j, s in found]
        for decision, counts in (("verifier", [verified]), ("evidence", [])):
            pick, _ = verifier.decide(
                q, neighbours, policy.min_similarity, evidence=decision == "evidence"
            )
            if decision == "evidence":
                part = "trained_on" if row["origin"] in trained_on else "held_out"
                counts = [evidence["all"], evidence[part]]
            outcome = "miss" if pick is None else "correct" if found[pick][0] == truth else "wrong"
            for c in counts:
                c[outcome] += 1

    def neighbourhood(ratio: float, part: slice = slice(None)) -> dict:
        out = {"correct": 0, "wrong": 0, "miss": 0}
        for sim, runner_up, right in near[part]:
            pick = neighbourhood_pick([sim, runner_up], policy.min_similarity, ratio)
            out["miss" if pick is None else "correct" if right else "wrong"] += 1
        return out

    half = len(rows) // 2
    return {
        **evidence["all"],
        "decision": "evidence (the default)",
        "by_training": {
            "held_out": {**evidence["held_out"], "queries": sum(evidence["held_out"].values())},
            "trained_on": {
                **evidence["trained_on"],
                "queries": sum(evidence["trained_on"].values()),
            },
        },
        "cached_questions": len(origins),
        "queries": len(rows),
        "verifier": verified,
        "neighbourhood": neighbourhood(policy.ambiguity_ratio),
        "neighbourhood_curve": [
            {
                "ambiguity_ratio": r,
                "all": neighbourhood(r),
                "first_half": neighbourhood(r, slice(None, half)),
                "second_half": neighbourhood(r, slice(half, None)),
            }
            for r in NEIGHBOURHOOD_RATIOS
        ],
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
) -> tuple[dict, dict[str, np.ndarray]]:
    pairs = training.load_pairs(path)
    held_out = (
        path.resolve() == training.DEFAULT_PAIRS.resolve()
        or path.name == training.DEFAULT_PAIRS.name
    )
    train: list[dict] = []
    if held_out:
        train, _, pairs = training.split(pairs)
    texts = [p[k] for p in pairs for k in ("text_a", "text_b")]
    pr = training.encode_texts(texts, embedder, encodings)
    y = np.array([int(p["label"]) for p in pairs], dtype=np.float64)
    prob = np.array([verifier.probability(pr[p["text_a"]], pr[p["text_b"]]) for p in pairs])
    cosine = np.array([float(pr[p["text_a"]].vector @ pr[p["text_b"]].vector) for p in pairs])
    precision, recall, _ = pr_at(prob, y, verifier.operating_point)
    # the static threshold with at least the verifier's precision, for a like-for-like recall
    static_same = next(
        (
            {
                "threshold": round(float(t), 3),
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
            }
            for t in np.arange(0.80, 1.0, 0.005)
            if (p := pr_at(cosine, y, t)[0]) >= precision
            for r in [pr_at(cosine, y, t)[1]]
        ),
        None,
    )
    result = {
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
        "neighbourhood_in_cache": neighbourhood_in_cache(pairs, pr),
    }
    if held_out:
        result["by_question_overlap"] = question_overlap(train, pairs, prob, y, verifier)
    # every question of the evaluated pairs, in file order: the latency run's cache and queries
    return result, {t: pr[t].vector for p in pairs for t in (p["text_a"], p["text_b"])}


def question_overlap(
    train: list[dict], pairs: list[dict], prob: np.ndarray, y: np.ndarray, verifier: Verifier
) -> dict:
    """Precision and recall at the operating point, split by whether either question of the pair
    also appears in a training pair. The split is by pair, and Quora repeats popular questions, so
    about a fifth of the held-out pairs share a question with training; the model does better
    there, and a deployment's traffic repeats its own popular questions the same way. `unseen` is
    what the verifier does on questions it has never seen."""
    known = {p[k] for p in train for k in ("text_a", "text_b")}
    seen = np.array([p["text_a"] in known or p["text_b"] in known for p in pairs])
    out = {}
    for name, mask in (("seen", seen), ("unseen", ~seen)):
        precision, recall, _ = pr_at(prob[mask], y[mask], verifier.operating_point)
        out[name] = {
            "n": int(mask.sum()),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
        }
    return out


def neighbourhood_in_cache(pairs: list[dict], pr: dict[str, Probe]) -> dict:
    """Why the neighbourhood decision is not the default for question traffic: cache every
    distinct `text_a`, ask every `text_b`. A hit on its own `text_a` counts by the label, a hit on
    any other cached question counts as wrong (it was not the pair's question)."""
    policy = Policy()
    cached = list(dict.fromkeys(p["text_a"] for p in pairs))
    position = {t: i for i, t in enumerate(cached)}
    matrix = np.stack([pr[t].vector for t in cached])
    right = wrong = 0
    for p in pairs:
        sims = matrix @ pr[p["text_b"]].vector
        top = np.argpartition(-sims, 1)[:2]
        top = top[np.argsort(-sims[top])]
        pick = neighbourhood_pick(
            [float(sims[top[0]]), float(sims[top[1]])],
            policy.min_similarity,
            policy.ambiguity_ratio,
        )
        if pick is None:
            continue
        if top[0] == position[p["text_a"]] and p["label"]:
            right += 1
        else:
            wrong += 1
    positives = sum(int(p["label"]) for p in pairs)
    return {
        "cached_questions": len(cached),
        "precision": round(right / max(right + wrong, 1), 4),
        "recall": round(right / max(positives, 1), 4),
    }


def latency(
    embedder: Embedder, verifier: Verifier, base: np.ndarray, sizes: list[int], queries: list[str]
) -> dict:
    """One short query at a time, as the gateway's lookup runs it, for each decision:

    - neighbourhood: embed + top-k neighbours + the ratio test;
    - evidence (the default): embed + top-k + the evidence model and then the pair verifier on
      k = 4 candidates (the most it ever verifies, and both models: the worst case, when the
      evidence model declines; cached candidates already hold their token vectors, as entries
      do; four distinct answers).
    """
    rng = np.random.default_rng(0)
    cand = probes(embedder, queries[-TOP_K:])
    policy = Policy()
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
        plain, verified, search_times = [], [], []
        for q in queries:
            t0 = time.perf_counter()
            vector = embedder.encode([q])[0]
            t1 = time.perf_counter()
            found = index.search(vector, TOP_K)
            search_times.append(time.perf_counter() - t1)
            neighbourhood_pick([s for _, s in found], policy.min_similarity, policy.ambiguity_ratio)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            (probe,) = probes(embedder, [q])
            index.search(probe.vector, TOP_K)
            neighbours = sorted(
                (Candidate(c, 1.0, c.text) for c in cand),  # 1.0: every one is verified
                key=lambda c: -float(c.probe.vector @ probe.vector),
            )
            verifier.decide(probe, neighbours, policy.min_similarity, min_probability=1.01)
            verified.append(time.perf_counter() - t0)
        ms, vms = np.array(plain) * 1000, np.array(verified) * 1000
        result[str(size)] = {
            "p50": round(float(np.percentile(vms, 50)), 2),
            "p99": round(float(np.percentile(vms, 99)), 2),
            "decision": "evidence",
            "neighbourhood": {
                "p50": round(float(np.percentile(ms, 50)), 2),
                "p99": round(float(np.percentile(ms, 99)), 2),
            },
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
    pairs, questions = pairs_eval(args.pairs, embedder, verifier, args.encodings)
    # the cache holds, and is asked, short questions: the evaluated pairs' own (a Quora question
    # is ~14 word pieces)
    base = np.stack(list(questions.values()))
    sizes = [int(s) for s in args.sizes.split(",")]
    lat = latency(embedder, verifier, base, sizes, list(questions)[:200])
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
    print(
        f"mock ({mock['queries']} queries, {mock['cached_questions']} distinct cached questions)"
        "   correct  wrong  miss"
    )
    row = "  {:<40} {:7d} {:6d} {:5d}"
    print(row.format(f"tandem {mock['decision']}", mock["correct"], mock["wrong"], mock["miss"]))
    for part, c in mock["by_training"].items():
        print(
            row.format(f"  its {part} half ({c['queries']})", c["correct"], c["wrong"], c["miss"])
        )
    n = mock["neighbourhood"]
    print(row.format("tandem neighbourhood (0.8)", n["correct"], n["wrong"], n["miss"]))
    v = mock["verifier"]
    print(row.format("tandem verifier (QQP operating point)", v["correct"], v["wrong"], v["miss"]))
    for t, c in mock["baseline_static"].items():
        print(row.format(f"static cosine {t}", c["correct"], c["wrong"], c["miss"]))
    if "error" in g:
        print(f"  gptcache: {g['error']}")
    else:
        q = g["scored_by_question"]
        name = f"gptcache (default {g['similarity_threshold']}, by question)"
        print(row.format(name, q["correct"], q["wrong"], q["miss"]))
    print(
        f"QQP {pairs['split']} (n={pairs['n']}): precision {pairs['precision']:.3f} recall {pairs['recall']:.3f}"
    )
    print(f"  static at same precision: {pairs['baseline_static']['at_same_precision']}")
    for name, part in pairs.get("by_question_overlap", {}).items():
        print(
            f"  {name:6} questions (n={part['n']}): precision {part['precision']:.3f}"
            f" recall {part['recall']:.3f}"
        )
    nb = pairs["neighbourhood_in_cache"]
    print(
        f"  neighbourhood decision, every text_a cached: precision {nb['precision']:.3f}"
        f" recall {nb['recall']:.3f}"
    )
    print("latency (one short query)   evidence p50 / p99     neighbourhood p50 / p99   search")
    for size, v in lat.items():
        n = v["neighbourhood"]
        print(
            f"  {size:>7} entries        {v['p50']:6.2f} / {v['p99']:6.2f} ms"
            f"     {n['p50']:6.2f} / {n['p99']:6.2f} ms       {v['search_p50']} ms ({v['index']})"
        )


if __name__ == "__main__":
    main()
