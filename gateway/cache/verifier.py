"""The semantic hit decision: a small learned verifier over a (query, cached question) pair.

A single cosine threshold cannot tell "How do I learn Python?" from "How do I learn Python 3 in
a week?": the sentence vectors are close, the questions are not the same. The verifier looks at
what a threshold ignores: how well every token of one question is matched by some token of the
other (contextual token vectors from the same MiniLM forward pass), weighted by how rare the token
is (IDF from the training questions, shipped with the weights), numbers and capitalised names
that differ, negations, the question word, lengths and word overlap; and at what the pair is
about (the sum of the two sentence vectors), because how much a small difference matters depends
on the topic. Gradient-boosted trees over those inputs, trained on part of the Quora duplicate
pairs (benchmarks/train_cache_verifier.py, reproducible) and evaluated here in numpy
(gateway/cache/trees.py), output the probability that the cached answer answers the new question.
The cache serves the best of its top-k candidates only when that probability clears the
operating point: the lowest cut whose calibrated precision on the validation pairs reaches the
target (95 %).

The default decision (`evidence`) adds what the cache around the query says: a second tree
ensemble reads the same pair inputs plus the neighbourhood's evidence (gateway/cache/decision.py,
CONTEXT_NAMES: how many neighbours share the candidate's answer, how near the nearest other
answer is, whether a near-identical cached question has another answer). It is trained on
lookups replayed through simulated caches of three kinds of traffic (Quora questions, support
utterances, reworded documentation statements; benchmarks/train_cache_verifier.py), and decides
whenever the scope has two or more entries; a lone entry has no neighbourhood, and the pair
verifier decides it as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding.minilm import TokenEmbeddings
from gateway.cache.decision import answer_unambiguous, context_features
from gateway.cache.trees import Trees

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


def pair_inputs(q: Probe, c: Probe, idf: dict[str, float], default_idf: float) -> np.ndarray:
    """One row of the trees' input: the pair features, then the two sentence vectors summed.

    The sum says what the pair is about, and whether a small difference matters depends on that:
    on the held-out Quora pairs it takes precision at recall 0.30 from 0.89 (features alone) to
    0.95; the product and difference of the vectors, tried beside it, add nothing.
    """
    features = pair_features(q, c, idf, default_idf)
    return np.concatenate([features, q.vector + c.vector]).astype(np.float32)


class Verifier:
    """The trained trees and their inputs; weights from the .npz the training script writes.

    Inputs per pair (`inputs`): the 30 pair features (FEATURE_NAMES), then the query's and the
    candidate's sentence vectors summed. About 1.4 ms for a batch of four candidates on one core
    (features 0.3 ms, the tree walk 1 ms).
    """

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        w = {k: np.asarray(v) for k, v in weights.items()}
        self.trees = Trees.from_arrays(w)
        self.operating_point = float(w["operating_point"])
        # the evidence model (None in weights trained before it existed)
        self.evidence = Trees.from_arrays(w, "evidence_") if "evidence_depth" in w else None
        self.evidence_cut = float(w["evidence_cut"]) if self.evidence is not None else 1.0
        self.evidence_ratio = float(w["evidence_ratio"]) if self.evidence is not None else 1.0
        self.idf = dict(
            zip(w["idf_tokens"].tolist(), w["idf_values"].astype(float).tolist(), strict=True)
        )
        self.default_idf = float(w["idf_default"])

    @classmethod
    def load(cls, path: str | Path | None = None) -> Verifier:
        with np.load(Path(path) if path else DEFAULT_WEIGHTS) as data:
            return cls({k: data[k] for k in data.files})

    def inputs(self, q: Probe, c: Probe) -> np.ndarray:
        return pair_inputs(q, c, self.idf, self.default_idf)

    def probabilities(self, query: Probe, candidates: list[Probe]) -> np.ndarray:
        if not candidates:
            return np.zeros(0)
        return self.trees.probability(np.stack([self.inputs(query, c) for c in candidates]))

    def probability(self, q: Probe, c: Probe) -> float:
        return float(self.probabilities(q, [c])[0])

    def decide(
        self,
        query: Probe,
        neighbours: list[Candidate],
        floor: float,
        min_probability: float | None = None,
        evidence: bool = True,
    ) -> tuple[int | None, float]:
        """(index of the neighbour to serve or None, its probability).

        `neighbours` are the scope's top-k by descending cosine, each with its answer; those
        under `floor` are never served (they still count as evidence). With `evidence` and two or
        more neighbours the evidence model decides first: the most probable candidate is served
        if it clears `evidence_cut` and its answer passes the ratio test against every other
        answer. Otherwise (or if it declines) the pair verifier decides alone, at its operating
        point. `min_probability` replaces both cuts.
        """
        found = [i for i, n in enumerate(neighbours) if n.similarity >= floor]
        if not found:
            return None, 0.0
        rows = np.stack([self.inputs(query, neighbours[i].probe) for i in found])
        if evidence and self.evidence is not None and len(neighbours) >= 2:
            sims = [n.similarity for n in neighbours]
            answers = [n.answer for n in neighbours]
            vectors = [n.probe.vector for n in neighbours]
            context = np.array(
                [context_features(sims, answers, vectors, i) for i in found], dtype=np.float32
            )
            p = self.evidence.probability(np.concatenate([rows, context], axis=1))
            best = int(np.argmax(p))
            cut = self.evidence_cut if min_probability is None else min_probability
            if p[best] >= cut and answer_unambiguous(
                sims, answers, found[best], self.evidence_ratio
            ):
                return found[best], float(p[best])
        p = self.trees.probability(rows)
        best = int(np.argmax(p))
        cut = self.operating_point if min_probability is None else min_probability
        return (found[best], float(p[best])) if p[best] >= cut else (None, float(p[best]))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One neighbour of a lookup: the cached question, its cosine to the query, its answer."""

    probe: Probe
    similarity: float
    answer: str
