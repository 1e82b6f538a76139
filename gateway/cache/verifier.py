"""The semantic hit decision: a small learned verifier over a (query, cached question) pair.

A single cosine threshold cannot tell "How do I learn Python?" from "How do I learn Python 3 in
a week?": the sentence vectors are close, the questions are not the same. The verifier looks at
what a threshold ignores: how well every token of one question is matched by some token of the
other (contextual token vectors from the same MiniLM forward pass), weighted by how rare the token
is (IDF from the training questions, shipped with the weights), numbers and capitalised names
that differ, negations, the question word, lengths and word overlap. (The element-wise product
and difference of the two sentence vectors were tried as inputs too and overfitted: see
docs/semantic-cache.md.) Those features feed, beside an ESIM-style soft alignment of the two
questions' token vectors, a small network trained on
part of the Quora duplicate pairs (benchmarks/train_cache_verifier.py, reproducible, pure numpy),
outputs the probability that the cached answer answers the new question. The cache serves the
best of its top-k candidates only when that probability clears the operating point, which is
chosen on held-out pairs for a target precision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem.embedding import TokenEmbeddings, load_layer, run_layers

DEFAULT_WEIGHTS = Path(__file__).with_name("verifier.npz")

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-zA-Z0-9]+")
_QUESTION_WORDS = tuple(
    "what why how when where who which whom whose is are can could should would will do does did was were have has".split()  # noqa: SIM905
)
_NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor without cannot can't don't doesn't didn't isn't aren't wasn't weren't won't wouldn't shouldn't couldn't haven't hasn't".split()  # noqa: SIM905
)
_STOP = frozenset(
    "a an the of to in on for and or is are was were be been do does did i you he she it we they my your me his her its our their this that these those what why how when where who which whom can could should would will shall may might must have has had with at by from as about into than then so if there here any some get best way ways good".split()  # noqa: SIM905
)


@dataclass(frozen=True, slots=True)
class Probe:
    """One side of a pair: the text, its sentence vector and its token vectors."""

    text: str
    vector: np.ndarray
    tokens: TokenEmbeddings
    tuned: np.ndarray | None = None  # Verifier.tune(tokens), when already computed


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _question_word(words: list[str]) -> str:
    for w in words[:4]:
        if w in _QUESTION_WORDS:
            return w
    return ""


def _alignment(a: TokenEmbeddings, b: TokenEmbeddings) -> tuple[float, float, float]:
    """For each content token of `a`, its best cosine to any token of `b`: (min, mean, 2nd smallest)."""
    keep = [i for i, t in enumerate(a.tokens) if t.isalnum() or t.startswith("##")]
    if not keep or len(b.tokens) == 0:
        return 0.0, 0.0, 0.0
    best = (a.vectors[keep] @ b.vectors.T).max(axis=1)
    srt = np.sort(best)
    return float(srt[0]), float(srt.mean()), float(srt[1] if len(srt) > 1 else srt[0])


FEATURE_NAMES = (
    "cosine",
    "align_min_ab",
    "align_mean_ab",
    "align_2nd_ab",
    "align_min_ba",
    "align_mean_ba",
    "align_2nd_ba",
    "align_min",
    "align_mean",
    "jaccard",
    "content_jaccard",
    "content_only_a",
    "content_only_b",
    "number_mismatch",
    "number_one_side",
    "capital_mismatch",
    "negation_mismatch",
    "question_word_mismatch",
    "len_ratio",
    "len_diff",
    "same_text",
    "idf_align_ab",
    "idf_unmatched_ab",
    "idf_unmatched_max_ab",
    "idf_missing_max_ab",
    "idf_align_ba",
    "idf_unmatched_ba",
    "idf_unmatched_max_ba",
    "idf_missing_max_ba",
    "idf_overlap",
)


def _idf_side(
    a: TokenEmbeddings, b: TokenEmbeddings, idf: dict[str, float], default: float
) -> list[float]:
    """How much rare-token weight of `a` finds no counterpart in `b`: a differing name, place or
    number is rare and decisive, a differing "the" is neither."""
    if not a.tokens or not b.tokens:
        return [0.0, 0.0, 0.0, 0.0]
    w = np.array([idf.get(t, default) for t in a.tokens], dtype=np.float32)
    best = (a.vectors @ b.vectors.T).max(axis=1)
    unmatched = w * (1.0 - best)
    present = set(b.tokens)
    missing = [wi for wi, t in zip(w, a.tokens, strict=True) if t not in present]
    return [
        float((w * best).sum() / w.sum()),
        float(unmatched.sum()),
        float(unmatched.max()),
        float(max(missing, default=0.0)),
    ]


def pair_features(q: Probe, c: Probe, idf: dict[str, float], default_idf: float) -> np.ndarray:
    """The features of one pair (order: FEATURE_NAMES); `idf` weighs word pieces by rarity."""
    wa, wb = _words(q.text), _words(c.text)
    sa, sb = set(wa), set(wb)
    ca, cb = sa - _STOP, sb - _STOP
    na, nb = set(_NUMBER.findall(q.text)), set(_NUMBER.findall(c.text))
    capa = {w.lower() for w in _CAPITALISED.findall(q.text)}
    capb = {w.lower() for w in _CAPITALISED.findall(c.text)}
    ab = _alignment(q.tokens, c.tokens)
    ba = _alignment(c.tokens, q.tokens)
    la, lb = max(len(wa), 1), max(len(wb), 1)
    return np.array(
        [
            float(np.dot(q.vector, c.vector)),
            *ab,
            *ba,
            min(ab[0], ba[0]),
            (ab[1] + ba[1]) / 2,
            len(sa & sb) / max(len(sa | sb), 1),
            len(ca & cb) / max(len(ca | cb), 1),
            float(len(ca - cb)),
            float(len(cb - ca)),
            float(bool(na or nb) and na != nb),
            float(bool(na) != bool(nb)),
            float(len(capa ^ capb)),
            float(len(sa & _NEGATIONS) % 2 != len(sb & _NEGATIONS) % 2),
            float(_question_word(wa) != _question_word(wb)),
            min(la, lb) / max(la, lb),
            abs(la - lb) / max(la, lb),
            float(" ".join(wa) == " ".join(wb)),
            *_idf_side(q.tokens, c.tokens, idf, default_idf),
            *_idf_side(c.tokens, q.tokens, idf, default_idf),
            _idf_overlap(q.tokens.tokens, c.tokens.tokens, idf, default_idf),
        ],
        dtype=np.float32,
    )


def _idf_overlap(a: list[str], b: list[str], idf: dict[str, float], default: float) -> float:
    sa, sb = set(a), set(b)
    union = sum(idf.get(t, default) for t in sa | sb)
    return sum(idf.get(t, default) for t in sa & sb) / union if union else 0.0


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Verifier:
    """The trained aligner in numpy; weights from the .npz written by the training script.

    Per pair: project both questions' token vectors, soft-align each token with the other
    question, compare every token with its aligned counterpart ([h, c, h-c, h*c] -> ReLU), pool
    (max and mean), combine the two directions symmetrically, append the standardised hand
    features, one hidden layer, logistic output. About 0.2 ms per pair.
    """

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        w = {k: np.asarray(v) for k, v in weights.items()}
        f32 = {k: v.astype(np.float32) for k, v in w.items() if v.dtype.kind == "f" and v.ndim > 0}
        self.proj_w, self.proj_b = f32["proj_w"], f32["proj_b"]
        self.cmp_w, self.cmp_b = f32["cmp_w"], f32["cmp_b"]
        self.hid_w, self.hid_b = f32["hid_w"], f32["hid_b"]
        self.out_w, self.out_b = f32["out_w"], f32["out_b"]
        self.mean, self.scale = f32["mean"], f32["scale"]
        self.max_tokens = int(w["max_tokens"])
        self.operating_point = float(w["operating_point"])
        self.idf = dict(
            zip(w["idf_tokens"].tolist(), w["idf_values"].astype(float).tolist(), strict=True)
        )
        self.default_idf = float(w["idf_default"])
        # top MiniLM layers fine-tuned for the pair decision, continuing from layer `tap_layer`
        self.tap_layer = int(w["tap_layer"]) if int(w.get("tuned_layers", 0)) else None
        self.layers = [load_layer(w, f"ft{i}.") for i in range(int(w.get("tuned_layers", 0)))]

    def tune(self, tokens: TokenEmbeddings) -> np.ndarray:
        """The verifier's own token vectors: its fine-tuned top layers over the tapped states."""
        if not self.layers:
            return tokens.vectors[: self.max_tokens]
        if tokens.hidden is None:
            raise ValueError("the verifier needs hidden states: encode with tap=verifier.tap_layer")
        h = tokens.hidden[: self.max_tokens + 2].astype(np.float32, copy=False)
        out = run_layers(h[None], np.ones((1, len(h)), np.float32), self.layers, 12)[0]
        content = out[1:-1]  # first and last kept position, as in training
        return np.ascontiguousarray(
            content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> Verifier:
        with np.load(Path(path) if path else DEFAULT_WEIGHTS) as data:
            return cls({k: data[k] for k in data.files})

    def features(self, q: Probe, c: Probe) -> np.ndarray:
        return pair_features(q, c, self.idf, self.default_idf)

    def _pooled(self, h: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        m = np.maximum(
            np.concatenate([h, ctx, h - ctx, h * ctx], axis=-1) @ self.cmp_w + self.cmp_b, 0.0
        )
        return np.concatenate([m.max(axis=0), m.mean(axis=0)])

    def probability(self, q: Probe, c: Probe) -> float:
        a = q.tuned if q.tuned is not None else self.tune(q.tokens)
        b = c.tuned if c.tuned is not None else self.tune(c.tokens)
        if len(a) == 0 or len(b) == 0:
            return 0.0
        ha = np.tanh(a @ self.proj_w + self.proj_b)
        hb = np.tanh(b @ self.proj_w + self.proj_b)
        e = ha @ hb.T
        va = self._pooled(ha, _softmax(e) @ hb)
        vb = self._pooled(hb, _softmax(e.T) @ ha)
        fs = (self.features(q, c) - self.mean) / self.scale
        z = np.concatenate([va + vb, np.abs(va - vb), fs])
        logit = float((np.maximum(z @ self.hid_w + self.hid_b, 0.0) @ self.out_w + self.out_b)[0])
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))

    def probabilities(self, query: Probe, candidates: list[Probe]) -> np.ndarray:
        return np.array([self.probability(query, c) for c in candidates], dtype=np.float64)
