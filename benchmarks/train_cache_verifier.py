"""Train the semantic cache's hit verifier and write gateway/cache/verifier.npz (reproducible).

    make dev   # once: the main environment, which includes LightGBM (the `train` extra)
    .venv/bin/python benchmarks/train_cache_verifier.py [--pairs .../qqp_pairs_dev.jsonl]

The model (docs/semantic-cache.md): gradient-boosted trees (LightGBM) over the 30 hand-made pair
features (cosine, token alignment, IDF-weighted alignment, numbers, names, negation, question
word, lengths; gateway/cache/verifier.py) and the sum of the pair's two MiniLM sentence vectors
(what the pair is about). Each pair is used in both orders, so the verifier does not care which
side is the cached question. Two seeds, their trees averaged into one ensemble.

The gateway never imports LightGBM: the trees are written as flat arrays and walked in numpy by
gateway/cache/trees.py; this script checks that the numpy walk gives LightGBM's probabilities.

Split (fixed seed, by pair): 25,000 pairs train, 5,000 stop the boosting early and choose the
operating point (the lowest probability cut whose calibrated precision on them reaches
--target-precision, 0.95; see `operating_point`); the remaining 10,000 are never seen here: benchmarks/semantic_cache.py evaluates on them.
Encodings (MiniLM sentence and token vectors) are cached in --encodings (about 10 minutes to build
on one core, seconds to reuse). About 5 minutes on two cores with the encodings cached.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding.minilm import Embedder, TokenEmbeddings  # noqa: E402
from gateway.cache.trees import Trees, from_lightgbm  # noqa: E402
from gateway.cache.verifier import (  # noqa: E402
    DEFAULT_WEIGHTS,
    FEATURE_NAMES,
    Probe,
    Verifier,
    pair_inputs,
)

SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
DEFAULT_PAIRS = SHARED / "data" / "semcache" / "qqp_pairs_dev.jsonl"
SPLIT_SEED = 20240611
N_TRAIN, N_VALID = 25_000, 5_000
# LightGBM; compared by 5-fold cross-validation on the training and validation pairs
# (docs/semantic-cache.md, Training)
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.15,  # 414 inputs, most of them the summed vector: sample few per tree
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


def load_pairs(path: Path) -> list[dict]:
    if not path.exists():
        sys.exit(
            f"{path}: not found; the QQP pairs live in ../shared/data/semcache/ (or set TANDEM_SHARED_DIR)"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def extra_pairs(path: Path) -> list[dict]:
    """Labelled pairs to add to the training split only, so the held-out numbers stay comparable:
    the gateway's re-check log (`recheck.pairs_log`) is in this format."""
    rows = [p for p in load_pairs(path) if p.get("text_a") and p.get("text_b")]
    print(f"{path}: {len(rows)} extra training pairs", file=sys.stderr)
    return [{"text_a": p["text_a"], "text_b": p["text_b"], "label": int(p["label"])} for p in rows]


def split(pairs: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, valid, eval): disjoint by pair, the same for every run."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
    shuffled = [pairs[i] for i in order]
    return shuffled[:N_TRAIN], shuffled[N_TRAIN : N_TRAIN + N_VALID], shuffled[N_TRAIN + N_VALID :]


def encode_texts(texts: list[str], embedder: Embedder, cache_path: Path | None) -> dict[str, Probe]:
    """Probes for `texts`, reusing a pickle of earlier encodings when given."""
    known: dict = {}
    if cache_path and cache_path.exists():
        known = pickle.loads(cache_path.read_bytes())
    todo = sorted({t for t in texts if t not in known})
    t0 = time.time()
    for start in range(0, len(todo), 512):
        chunk = todo[start : start + 512]
        vecs, toks = embedder.encode_full(chunk)
        for text, v, tk in zip(chunk, vecs, toks, strict=True):
            known[text] = (v, tk.tokens, tk.vectors.astype(np.float16))
        print(
            f"  encoded {start + len(chunk)}/{len(todo)} in {time.time() - t0:.0f}s",
            file=sys.stderr,
        )
    if todo and cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(pickle.dumps(known, protocol=5))
    return {
        t: Probe(t, known[t][0], TokenEmbeddings(known[t][1], known[t][2].astype(np.float32)))
        for t in set(texts)
    }


def idf_table(pairs: list[dict], probes: dict[str, Probe]) -> tuple[dict[str, float], float]:
    """Smoothed IDF of every word piece over the distinct training questions."""
    texts = {p[k] for p in pairs for k in ("text_a", "text_b")}
    df: Counter[str] = Counter()
    for t in texts:
        df.update(set(probes[t].tokens.tokens))
    n = len(texts)
    return {tok: math.log((n + 1) / (c + 1)) + 1 for tok, c in df.items()}, math.log(n + 1) + 1


def inputs(
    pairs: list[dict],
    probes: dict[str, Probe],
    idf: dict[str, float],
    default_idf: float,
    both_orders: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The verifier's input rows (Verifier.inputs) and labels; with `both_orders` each pair twice."""
    rows, labels = [], []
    for p in pairs:
        a, b = probes[p["text_a"]], probes[p["text_b"]]
        for q, c in ((a, b), (b, a)) if both_orders else ((a, b),):
            rows.append(pair_inputs(q, c, idf, default_idf))
            labels.append(int(p["label"]))
    return np.stack(rows), np.array(labels, dtype=np.float64)


def _logit(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-9, 1 - 1e-9) / np.clip(1 - probs, 1e-9, 1))


def calibrate(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (a, b) with P(duplicate) = sigmoid(a * logit(p) + b), by Newton's method."""
    z = _logit(probs)
    ab = np.array([1.0, 0.0])
    for _ in range(50):
        q = 1 / (1 + np.exp(-(ab[0] * z + ab[1])))
        w = q * (1 - q)
        grad = np.array([((q - labels) * z).sum(), (q - labels).sum()])
        hess = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]])
        ab = ab - np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
    return float(ab[0]), float(ab[1])


def operating_point(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The lowest cut whose expected precision on these pairs reaches `target`.

    Expected, not counted: each pair above the cut contributes its calibrated probability
    (`calibrate`, two parameters fitted on the same pairs), not its 0/1 label. The counted
    precision runs flat near 95 % and its noise decides where it last crosses the target: on the
    5,000 validation pairs the last crossing sat at recall 0.33-0.37, where the held-out
    precision was 0.941-0.947. The expected precision falls monotonically and crosses once.
    """
    a, b = calibrate(probs, labels)
    order = np.argsort(-probs)
    calibrated = 1 / (1 + np.exp(-(a * _logit(probs[order]) + b)))
    expected = np.cumsum(calibrated) / np.arange(1, len(order) + 1)
    ok = np.nonzero(expected >= target)[0]
    return float(probs[order][ok[-1]]) if len(ok) else 1.0


def train(
    x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, seeds: int, threads: int
) -> Trees:
    """Boost one model per seed (early-stopped on the validation pairs); average their logits by
    concatenating the trees with leaves scaled by 1/seeds: one ensemble, one walk at runtime."""
    import lightgbm as lgb

    parts = []
    for seed in range(seeds):
        t0 = time.time()
        booster = lgb.train(
            PARAMS | {"seed": seed, "num_threads": threads},
            lgb.Dataset(x, y),
            num_boost_round=4000,
            valid_sets=[lgb.Dataset(vx, vy)],
            callbacks=[lgb.early_stopping(150, verbose=False)],
        )
        trees = from_lightgbm(booster.dump_model(num_iteration=booster.best_iteration))
        # the numpy walk must be LightGBM's model, bit for bit up to float rounding
        gap = np.abs(
            trees.probability(vx) - booster.predict(vx, num_iteration=booster.best_iteration)
        )
        if gap.max() > 1e-9:
            sys.exit(f"numpy trees differ from LightGBM by {gap.max():.2e}")
        print(
            f"seed {seed}: {booster.best_iteration} trees, depth {trees.depth}, "
            f"{time.time() - t0:.0f}s",
            file=sys.stderr,
        )
        parts.append(trees)
    return merge(parts)


def merge(parts: list[Trees]) -> Trees:
    nodes = max(t.feature.shape[1] for t in parts)
    leaves = max(t.leaf.shape[1] for t in parts)

    def pad(a: np.ndarray, width: int, fill: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)

    return Trees(
        np.concatenate([pad(t.feature, nodes, 0) for t in parts]),
        np.concatenate([pad(t.threshold, nodes, np.inf) for t in parts]),
        np.concatenate([pad(t.left, nodes, -1) for t in parts]),
        np.concatenate([pad(t.right, nodes, -1) for t in parts]),
        np.concatenate([pad(t.leaf, leaves, 0.0) for t in parts]) / len(parts),
        max(t.depth for t in parts),
    )


def export(trees: Trees, idf: dict[str, float], default_idf: float, cut: float, path: Path) -> None:
    tokens = sorted(idf)
    np.savez_compressed(
        path,
        **trees.to_arrays(),
        operating_point=np.array(cut),
        idf_tokens=np.array(tokens),
        idf_values=np.array([idf[t] for t in tokens], np.float32),
        idf_default=np.array(default_idf),
        feature_names=np.array(FEATURE_NAMES),
        split_seed=np.array(SPLIT_SEED),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument(
        "--extra-pairs",
        type=Path,
        action="append",
        default=[],
        help="more labelled pairs for training only (e.g. a gateway's recheck.pairs_log)",
    )
    ap.add_argument(
        "--encodings", type=Path, default=Path.home() / ".cache" / "tandem" / "qqp_encodings.pkl"
    )
    ap.add_argument("--output", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument(
        "--target-precision", type=float, default=0.95, help="sets the shipped operating point"
    )
    ap.add_argument("--seeds", type=int, default=2, help="models averaged into the ensemble")
    ap.add_argument(
        "--limit", type=int, default=None, help="use only this many train/valid pairs (smoke test)"
    )
    args = ap.parse_args()
    threads = int(os.environ.get("TRAIN_THREADS", "2"))
    train_pairs, valid_pairs, _ = split(load_pairs(args.pairs))
    if args.limit:
        train_pairs, valid_pairs = train_pairs[: args.limit], valid_pairs[: args.limit]
    for path in args.extra_pairs:
        train_pairs += extra_pairs(path)
    texts = [p[k] for p in train_pairs + valid_pairs for k in ("text_a", "text_b")]
    probes = encode_texts(texts, Embedder(), args.encodings)
    idf, default_idf = idf_table(train_pairs, probes)
    x, y = inputs(train_pairs, probes, idf, default_idf, both_orders=True)
    vx, vy = inputs(valid_pairs, probes, idf, default_idf, both_orders=False)
    print(
        f"{len(x)} training rows, {len(vx)} validation pairs, {x.shape[1]} inputs", file=sys.stderr
    )
    trees = train(x, y, vx, vy, args.seeds, threads)
    vp = trees.probability(vx)
    cut = operating_point(vp, vy, args.target_precision)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    export(trees, idf, default_idf, cut, args.output)
    shipped = Verifier.load(args.output)
    assert np.allclose(shipped.trees.probability(vx), vp), "the written weights differ"
    summary = {
        "output": str(args.output),
        "trees": len(trees.feature),
        "depth": trees.depth,
        "operating_point": round(cut, 4),
        "valid_precision": round(float(vy[vp >= cut].mean()), 4),
        "valid_recall": round(float(vy[vp >= cut].sum() / vy.sum()), 4),
        "bytes": args.output.stat().st_size,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
