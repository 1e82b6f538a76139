"""Train the semantic cache's hit verifier and write gateway/cache/verifier.npz (reproducible).

    bash benchmarks/setup-train-verifier.sh      # once: a venv with CPU torch (training only)
    .venv-train/bin/python benchmarks/train_cache_verifier.py [--pairs .../qqp_pairs_dev.jsonl]

The gateway never imports torch: the trained network is written as plain arrays and run by
gateway/cache/verifier.py in numpy. Split (fixed seed, by pair): 25,000 pairs train, 5,000 choose
the operating point (the lowest probability cut whose precision on them reaches
--target-precision, 0.95) and select the epoch (recall at --select-precision, 0.96); the remaining
10,000 are never seen here: benchmarks/semantic_cache.py evaluates on them. Encodings (MiniLM token vectors) are cached in
--encodings (about 10 minutes to build on one core, seconds to reuse).

The network (see docs/semantic-cache.md): MiniLM's top two layers, fine-tuned, continue from the
hidden states after layer 4 (computed once, cached in --tapped); then an ESIM-style aligner:
project tokens, soft-align each token of one question with the other question, compare each token
with its aligned counterpart, pool, combine both directions symmetrically, and add the 30
hand-made pair features (cosine, IDF-weighted alignment, numbers, names, negation, question word).
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
MAX_TOKENS = 48


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


def tapped_states(
    texts: list[str], embedder: Embedder, tap: int, cache_path: Path | None
) -> dict[str, np.ndarray]:
    """Hidden states after layer `tap` ([CLS]/[SEP] included), float16, cached like the encodings."""
    known: dict = {}
    if cache_path and cache_path.exists():
        known = pickle.loads(cache_path.read_bytes())
    todo = sorted({t for t in texts if t not in known})
    for start in range(0, len(todo), 512):
        chunk = todo[start : start + 512]
        _, toks = embedder.encode_full(chunk, tap=tap)
        for text, tk in zip(chunk, toks, strict=True):
            known[text] = tk.hidden.astype(np.float16)
        print(f"  tapped {start + len(chunk)}/{len(todo)}", file=sys.stderr)
    if todo and cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(pickle.dumps(known, protocol=5))
    return {t: known[t].astype(np.float32) for t in set(texts)}


def _with_hidden(probe: Probe, hidden: np.ndarray) -> Probe:
    return Probe(
        probe.text, probe.vector, TokenEmbeddings(probe.tokens.tokens, probe.tokens.vectors, hidden)
    )


def idf_table(pairs: list[dict], probes: dict[str, Probe]) -> tuple[dict[str, float], float]:
    """Smoothed IDF of every word piece over the distinct training questions."""
    texts = {p[k] for p in pairs for k in ("text_a", "text_b")}
    df: Counter[str] = Counter()
    for t in texts:
        df.update(set(probes[t].tokens.tokens))
    n = len(texts)
    return {tok: math.log((n + 1) / (c + 1)) + 1 for tok, c in df.items()}, math.log(n + 1) + 1


def tensors(
    pairs: list[dict],
    probes: dict[str, Probe],
    idf: dict[str, float],
    default_idf: float,
    tapped: dict[str, np.ndarray],
):
    """Padded layer-TAP hidden states, masks, hand features and labels for a list of pairs."""
    import torch

    def pad(side: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.zeros((len(pairs), MAX_TOKENS + 2, 384), np.float32)
        m = np.zeros((len(pairs), MAX_TOKENS + 2), np.float32)
        for i, p in enumerate(pairs):
            v = tapped[p[side]][: MAX_TOKENS + 2]
            x[i, : len(v)] = v
            m[i, : len(v)] = 1.0
        return torch.from_numpy(x), torch.from_numpy(m)

    a, ma = pad("text_a")
    b, mb = pad("text_b")
    f = np.stack(
        [pair_features(probes[p["text_a"]], probes[p["text_b"]], idf, default_idf) for p in pairs]
    )
    y = np.array([float(p["label"]) for p in pairs], np.float32)
    return a, ma, b, mb, torch.from_numpy(f), torch.from_numpy(y)


def bert_layer_class():
    import torch
    from torch import nn

    class BertLayer(nn.Module):
        """One BERT encoder layer with Hugging Face parameter names (mirrors tandem.embedding.run_layers)."""

        def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
            super().__init__()
            self.names = {}
            for name in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            ]:
                weight = torch.from_numpy(np.array(w[prefix + name + ".weight"], np.float32))
                lin = nn.Linear(weight.shape[1], weight.shape[0])
                lin.weight.data.copy_(weight)
                lin.bias.data.copy_(
                    torch.from_numpy(np.array(w[prefix + name + ".bias"], np.float32))
                )
                self.add_module(name.replace(".", "_"), lin)
                self.names[name] = lin
            for name in ["attention.output.LayerNorm", "output.LayerNorm"]:
                ln = nn.LayerNorm(384, eps=1e-12)
                ln.weight.data.copy_(
                    torch.from_numpy(np.array(w[prefix + name + ".weight"], np.float32))
                )
                ln.bias.data.copy_(
                    torch.from_numpy(np.array(w[prefix + name + ".bias"], np.float32))
                )
                self.add_module(name.replace(".", "_"), ln)
                self.names[name] = ln

        def forward(self, x, mask):
            n = self.names
            b, t, _ = x.shape
            heads = 12

            def split(y):
                return y.view(b, t, heads, 32).transpose(1, 2)

            q, k, v = (split(n[f"attention.self.{c}"](x)) for c in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(32) + (1 - mask)[:, None, None, :] * -1e9
            ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, 384)
            x = n["attention.output.LayerNorm"](n["attention.output.dense"](ctx) + x)
            h = torch.nn.functional.gelu(n["intermediate.dense"](x))
            return n["output.LayerNorm"](n["output.dense"](h) + x)

        def export(self, prefix: str) -> dict[str, np.ndarray]:
            out = {}
            for name, mod in self.names.items():
                out[prefix + name + ".weight"] = mod.weight.detach().numpy().astype(np.float16)
                out[prefix + name + ".bias"] = mod.bias.detach().numpy().astype(np.float16)
            return out

    return BertLayer


def build_model(
    n_features: int,
    dim: int,
    hidden: int,
    mean: np.ndarray,
    scale: np.ndarray,
    base: dict[str, np.ndarray],
    tap: int,
    n_layers: int,
):
    import torch
    from torch import nn

    BertLayer = bert_layer_class()

    class Aligner(nn.Module):
        """Mirrors gateway.cache.verifier.Verifier.predict_pair (numpy) exactly."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                [BertLayer(base, f"encoder.layer.{i}.") for i in range(tap, n_layers)]
            )
            self.proj = nn.Linear(384, dim)
            self.compare = nn.Linear(4 * dim, dim)
            self.hidden = nn.Linear(4 * dim + n_features, hidden)
            self.out = nn.Linear(hidden, 1)
            self.drop = nn.Dropout(0.1)
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("scale", torch.from_numpy(scale))

        def side(self, h, ctx, mask):
            m = torch.relu(self.compare(torch.cat([h, ctx, h - ctx, h * ctx], -1)))
            m = self.drop(m)
            mx = (m - (1 - mask[..., None]) * 1e4).max(1).values
            mean = (m * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return torch.cat([mx, mean], -1)

        def tokens(self, x, mask):
            """Tuned token vectors: the top layers, then [CLS]/[SEP] masked out and unit length."""
            for layer in self.layers:
                x = layer(x, mask)
            content = mask.clone()
            content[:, 0] = 0
            content[torch.arange(len(mask)), mask.sum(1).long() - 1] = 0
            return torch.nn.functional.normalize(x, dim=-1), content

        def forward(self, a, ma, b, mb, f):
            a, ma = self.tokens(a, ma)
            b, mb = self.tokens(b, mb)
            ha, hb = torch.tanh(self.proj(a)), torch.tanh(self.proj(b))
            e = ha @ hb.transpose(1, 2)
            wa = torch.softmax(e - (1 - mb[:, None, :]) * 1e4, -1)
            wb = torch.softmax(e.transpose(1, 2) - (1 - ma[:, None, :]) * 1e4, -1)
            va, vb = self.side(ha, wa @ hb, ma), self.side(hb, wb @ ha, mb)
            fs = (f - self.mean) / self.scale
            z = torch.cat([va + vb, (va - vb).abs(), fs], -1)
            return self.out(self.drop(torch.relu(self.hidden(z))))[:, 0]

    return Aligner()


def recall_at(probs: np.ndarray, labels: np.ndarray, target: float) -> tuple[float, float]:
    """(cut, recall) of the lowest cut whose precision is at least `target` (ignoring the first 50)."""
    order = np.argsort(-probs)
    tp = np.cumsum(labels[order])
    precision = tp / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= target)[0]
    ok = ok[ok >= 50]
    if not len(ok):
        return 1.0, 0.0
    return float(probs[order][ok[-1]]), float(tp[ok[-1]] / labels.sum())


def predict(model, tensors_, batch: int = 256) -> np.ndarray:
    """Probabilities in length-sorted, trimmed batches (padding to the longest pair is slow)."""
    import torch

    a, ma, b, mb, f = tensors_[:5]
    lengths = torch.maximum(ma.sum(1), mb.sum(1)).numpy()
    out = np.zeros(len(a), np.float32)
    order = np.argsort(lengths)
    with torch.no_grad():
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i : i + batch])
            w = int(lengths[idx.numpy()].max())
            out[idx.numpy()] = torch.sigmoid(
                model(a[idx, :w], ma[idx, :w], b[idx, :w], mb[idx, :w], f[idx])
            ).numpy()
    return out


def train(data, valid, n_features: int, args: argparse.Namespace, base: dict[str, np.ndarray]):
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    f = data[4].numpy()
    model = build_model(
        n_features, args.dim, args.hidden, f.mean(0), f.std(0) + 1e-6, base, args.tap, 6
    )
    bert = [p for n_, p in model.named_parameters() if n_.startswith("layers.")]
    head = [p for n_, p in model.named_parameters() if not n_.startswith("layers.")]
    opt = torch.optim.AdamW(
        [{"params": bert, "lr": args.bert_lr}, {"params": head, "lr": args.lr}], weight_decay=1e-4
    )
    # pos_weight < 1 weighs false positives more: the decision lives at the high-precision end
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(args.pos_weight))
    n = len(data[5])
    best, best_score, stale = None, -1.0, 0
    yv = valid[5].numpy()
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        # length buckets: pairs of similar length share a batch, trimmed to that length
        lengths = torch.maximum(data[1].sum(1), data[3].sum(1)).numpy() + np.random.rand(n)
        order = np.argsort(lengths)
        batches = [order[i : i + args.batch] for i in range(0, n, args.batch)]
        np.random.shuffle(batches)
        for idx in batches:
            idx = torch.from_numpy(idx)
            a, ma, b, mb, ff, y = (t[idx] for t in data)
            width = int(max(ma.sum(1).max(), mb.sum(1).max()))
            a, ma, b, mb = a[:, :width], ma[:, :width], b[:, :width], mb[:, :width]
            if torch.rand(()) < 0.5:  # the relation is symmetric: show both orders
                a, ma, b, mb = b, mb, a, ma
            opt.zero_grad()
            loss = loss_fn(model(a, ma, b, mb, ff), y)
            loss.backward()
            opt.step()
        model.eval()
        pv = predict(model, valid)
        cut, rec = recall_at(pv, yv, args.select_precision)
        vloss = float(-np.mean(yv * np.log(pv + 1e-7) + (1 - yv) * np.log(1 - pv + 1e-7)))
        print(
            f"  epoch {epoch + 1}: valid loss {vloss:.4f}, recall {rec:.3f} at precision "
            f"{args.select_precision} (cut {cut:.3f}), {time.time() - t0:.0f}s",
            file=sys.stderr,
        )
        score = rec - vloss * 0.01
        if score > best_score:
            best_score, best, stale = (
                score,
                {k: v.clone() for k, v in model.state_dict().items()},
                0,
            )
        else:
            stale += 1
            if stale >= args.patience:
                break
    model.load_state_dict(best)
    model.eval()
    with torch.no_grad():  # the shipped layers are float16: choose the cut with what ships
        for layer in model.layers:
            for p in layer.parameters():
                p.copy_(p.half().float())
    return model


def export(model, idf: dict[str, float], default_idf: float, cut: float, path: Path) -> None:
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    tokens = sorted(idf)
    layers = {}
    for i, layer in enumerate(model.layers):
        layers |= layer.export(f"ft{i}.")
    np.savez(
        path,
        **layers,
        tap_layer=np.array(len(model.layers) and 6 - len(model.layers)),
        tuned_layers=np.array(len(model.layers)),
        proj_w=sd["proj.weight"].T.copy(),
        proj_b=sd["proj.bias"],
        cmp_w=sd["compare.weight"].T.copy(),
        cmp_b=sd["compare.bias"],
        hid_w=sd["hidden.weight"].T.copy(),
        hid_b=sd["hidden.bias"],
        out_w=sd["out.weight"].T.copy(),
        out_b=sd["out.bias"],
        mean=sd["mean"],
        scale=sd["scale"],
        operating_point=np.array(cut),
        idf_tokens=np.array(tokens),
        idf_values=np.array([idf[t] for t in tokens], np.float32),
        idf_default=np.array(default_idf),
        feature_names=np.array(FEATURE_NAMES),
        split_seed=np.array(SPLIT_SEED),
        max_tokens=np.array(MAX_TOKENS),
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
    ap.add_argument(
        "--select-precision",
        type=float,
        default=0.96,
        help="epoch selection: recall at this precision",
    )
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pos-weight", type=float, default=1.0, help="loss weight of duplicates vs non-duplicates"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="use only this many train/valid pairs (smoke test)"
    )
    ap.add_argument("--tap", type=int, default=4, help="fine-tune the layers above this one")
    ap.add_argument("--bert-lr", type=float, default=3e-5)
    ap.add_argument(
        "--tapped", type=Path, default=Path.home() / ".cache" / "tandem" / "qqp_tap4.pkl"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    train_pairs, valid_pairs, _ = split(load_pairs(args.pairs))
    if args.limit:
        train_pairs, valid_pairs = train_pairs[: args.limit], valid_pairs[: args.limit]
    for path in args.extra_pairs:
        train_pairs += extra_pairs(path)
    texts = [p[k] for p in train_pairs + valid_pairs for k in ("text_a", "text_b")]
    embedder = Embedder()
    probes = encode_texts(texts, embedder, args.encodings)
    tapped = tapped_states(texts, embedder, args.tap, args.tapped)
    idf, default_idf = idf_table(train_pairs, probes)
    data = tensors(train_pairs, probes, idf, default_idf, tapped)
    valid = tensors(valid_pairs, probes, idf, default_idf, tapped)
    from safetensors.numpy import load_file

    from tandem.embedding import default_model_path

    base = load_file(str(default_model_path() / "model.safetensors"))
    model = train(data, valid, len(FEATURE_NAMES), args, base)
    pv = predict(model, valid)
    cut, rec = recall_at(pv, valid[5].numpy(), args.target_precision)
    export(model, idf, default_idf, cut, args.output)
    # the numpy port must agree with torch, or the shipped weights would mean something else
    from gateway.cache.verifier import Verifier

    port = Verifier.load(args.output)
    for i in range(20):
        p = valid_pairs[i]
        qa, qb = (_with_hidden(probes[p[k]], tapped[p[k]]) for k in ("text_a", "text_b"))
        got = port.probabilities(qa, [qb])[0]
        assert abs(got - pv[i]) < 1e-3, (i, got, pv[i])
    print(
        json.dumps(
            {
                "output": str(args.output),
                "operating_point": cut,
                "valid_recall": rec,
                "target_precision": args.target_precision,
                "n_train": len(train_pairs),
                "n_valid": len(valid_pairs),
            }
        )
    )


if __name__ == "__main__":
    main()
