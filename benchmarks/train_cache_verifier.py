"""Train the semantic cache's hit verifier and write gateway/cache/verifier.npz (reproducible).

    python benchmarks/train_cache_verifier.py [--pairs ../shared/data/semcache/qqp_pairs_dev.jsonl]

Split (fixed seed, by pair): 25,000 pairs train the network, 5,000 choose the operating point (the
lowest probability cut whose precision on them reaches --target-precision), and the remaining
10,000 are never seen here: benchmarks/semantic_cache.py evaluates on them. Encodings are cached
in --encodings (a pickle; about 10 minutes to build on one core, seconds to reuse).
The network: inputs = gateway.cache.verifier.pair_features (30 pair features, nine of them weighted
by word-piece IDF computed here from the training questions and shipped in the weights file), one
hidden ReLU layer, logistic output, Adam on cross-entropy with L2, early stopping on the
operating-point split. Pure numpy, seeded.
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

from gateway.cache.verifier import DEFAULT_WEIGHTS, FEATURE_NAMES, Probe, pair_features  # noqa: E402
from tandem.embedding import Embedder, TokenEmbeddings  # noqa: E402

SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
DEFAULT_PAIRS = SHARED / "data" / "semcache" / "qqp_pairs_dev.jsonl"
SPLIT_SEED = 20240611
N_TRAIN, N_VALID = 25_000, 5_000


def load_pairs(path: Path) -> list[dict]:
    if not path.exists():
        sys.exit(
            f"{path}: not found; the QQP pairs live in ../shared/data/semcache/ (or set TANDEM_SHARED_DIR)"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def pair_matrix(
    pairs: list[dict], probes: dict[str, Probe], idf: dict[str, float], default_idf: float
) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack(
        [pair_features(probes[p["text_a"]], probes[p["text_b"]], idf, default_idf) for p in pairs]
    )
    y = np.array([int(p["label"]) for p in pairs], dtype=np.float32)
    return x, y


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 1e-3,
    l2: float = 1e-3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    xs, xvs = (x - mean) / scale, (xv - mean) / scale
    params = {
        "w1": rng.normal(0, np.sqrt(2 / x.shape[1]), (x.shape[1], hidden)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": rng.normal(0, np.sqrt(1 / hidden), (hidden, 1)).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(val) for k, val in params.items()}
    step, best, best_loss, patience = 0, None, np.inf, 0

    def forward(inp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(inp @ params["w1"] + params["b1"], 0)
        return h, 1 / (1 + np.exp(-np.clip(h @ params["w2"] + params["b2"], -30, 30)))

    for epoch in range(epochs):
        for idx in np.array_split(rng.permutation(len(xs)), len(xs) // 256):
            h, p = forward(xs[idx])
            g = (p[:, 0] - y[idx])[:, None] / len(idx)
            grads = {"w2": h.T @ g + l2 * params["w2"], "b2": g.sum(0)}
            gh = (g @ params["w2"].T) * (h > 0)
            grads["w1"] = xs[idx].T @ gh + l2 * params["w1"]
            grads["b1"] = gh.sum(0)
            step += 1
            for k in params:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mh, vh = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
                params[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        pv = np.clip(forward(xvs)[1][:, 0], 1e-7, 1 - 1e-7)
        loss = float(-np.mean(yv * np.log(pv) + (1 - yv) * np.log(1 - pv)))
        print(f"  epoch {epoch + 1}: valid loss {loss:.4f}", file=sys.stderr)
        if loss < best_loss - 1e-4:
            best_loss, best, patience = loss, {k: val.copy() for k, val in params.items()}, 0
        else:
            patience += 1
            if patience >= 4:
                break
    assert best is not None
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32), **best}


def operating_point(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The lowest cut whose precision (on these pairs) is at least `target`, for the most recall."""
    order = np.argsort(-probs)
    tp = np.cumsum(labels[order])
    precision = tp / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= target)[0]
    # the last rank still at the target, ignoring the noisy first fifty
    ok = ok[ok >= 50]
    return float(probs[order][ok[-1]]) if len(ok) else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument(
        "--encodings", type=Path, default=Path.home() / ".cache" / "tandem" / "qqp_encodings.pkl"
    )
    ap.add_argument("--output", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--target-precision", type=float, default=0.95)
    ap.add_argument("--hidden", type=int, default=32)
    args = ap.parse_args()

    train, valid, _ = split(load_pairs(args.pairs))
    texts = [p[k] for p in train + valid for k in ("text_a", "text_b")]
    probes = encode_texts(texts, Embedder(), args.encodings)
    idf, default_idf = idf_table(train, probes)
    x, y = pair_matrix(train, probes, idf, default_idf)
    xv, yv = pair_matrix(valid, probes, idf, default_idf)
    weights = train_mlp(x, y, xv, yv, hidden=args.hidden)
    weights |= {"idf_tokens": np.array(sorted(idf)), "idf_default": np.array(default_idf)}
    weights["idf_values"] = np.array([idf[t] for t in weights["idf_tokens"]], dtype=np.float32)
    from gateway.cache.verifier import Verifier

    verifier = Verifier({**weights, "operating_point": np.array(0.5)})
    pv = verifier.predict(xv)
    cut = operating_point(pv, yv, args.target_precision)
    chosen = pv >= cut
    precision = float(yv[chosen].mean()) if chosen.any() else 0.0
    recall = float(yv[chosen].sum() / yv.sum())
    np.savez(
        args.output,
        **weights,
        operating_point=np.array(cut),
        feature_names=np.array(FEATURE_NAMES),
        split_seed=np.array(SPLIT_SEED),
    )
    print(
        json.dumps(
            {
                "output": str(args.output),
                "operating_point": cut,
                "valid_precision": precision,
                "valid_recall": recall,
                "n_train": len(train),
                "n_valid": len(valid),
            }
        )
    )


if __name__ == "__main__":
    main()
