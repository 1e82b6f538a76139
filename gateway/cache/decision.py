"""The neighbourhood hit decision: serve the nearest cached question only when it is unambiguous.

Why a second decision beside the verifier: the two kinds of repetition a cache sees fail in
opposite ways. Questions users type (Quora-like traffic) come with near-misses that share almost
every word ("...in Python?" / "...in Python 3?"): only a pair verifier catches those, and it must
be strict. Reworded requests for the same canonical content (an assistant over one product's
docs, GPT-style paraphrases) share few words with the cached question, so a verifier strict
enough for the first kind rejects almost all of them, and a static cosine threshold low enough to
accept them also serves the cached *neighbour* whenever two cached questions are close to each
other. What tells a true rewording from a neighbour is the neighbourhood itself: the right entry
is clearly nearer than every other entry; a query that sits between two entries is ambiguous.

That is Lowe's ratio test (SIFT matching) on cosine distance: serve the nearest entry only if its
distance is at most `ratio` times the distance to the runner-up. It is a per-entry threshold that
adapts to how crowded the cache is around each entry: an isolated entry accepts loose rewordings,
an entry with a close twin demands a query that is clearly on its side. With no runner-up (a
scope with one entry) there is no neighbourhood to read, and the caller falls back to the
verifier. Measured on GPTCache's mock data and on QQP: docs/semantic-cache.md.
"""

from __future__ import annotations


def unambiguous(best: float, runner_up: float, ratio: float) -> bool:
    """True when the nearest entry (cosine `best`) is clearly nearer than the next (`runner_up`)."""
    return (1.0 - best) <= ratio * (1.0 - runner_up)


def neighbourhood_pick(sims: list[float], floor: float, ratio: float) -> int | None:
    """Index of the entry to serve among neighbours sorted by descending cosine, or None.

    `sims` must include the runner-up even when it is below `floor`: a far runner-up is exactly
    the evidence that the nearest entry is unambiguous.
    """
    if len(sims) < 2 or sims[0] < floor:
        return None
    return 0 if unambiguous(sims[0], sims[1], ratio) else None


# -- the evidence decision (the default) ----------------------------------------------------------
#
# What the neighbourhood says about one candidate, as numbers the evidence model reads beside the
# pair's own inputs. Entries are grouped by their answer (equal answer text = one group): on
# support traffic one answer serves an intent, and several entries of the same answer around the
# query are strong evidence; a near-identical cached question with a *different* answer (a twin)
# is strong evidence against. All from the top-k neighbours' cosines, answers and vectors.
CONTEXT_NAMES = (
    "rank",  # the candidate's place among the neighbours (0 = nearest)
    "same_answer",  # other neighbours with the candidate's answer
    "same_answer_best",  # the nearest of those (cosine to the query; 0 if none)
    "same_answer_sum",  # their cosines summed
    "other_answer_best",  # the nearest neighbour with another answer (0 if none)
    "margin",  # candidate cosine - other_answer_best
    "distance_ratio",  # (1 - cosine) / (1 - other_answer_best): Lowe's ratio (0 if no other)
    "neighbours",  # how many neighbours the scope gave (1 = a lone entry)
    "answers",  # distinct answers among them
    "twin",  # cosine between the candidate and its nearest other-answer neighbour
    "sibling",  # cosine between the candidate and its nearest same-answer neighbour
)


def context_features(sims: list[float], answers: list[str], vectors: list, i: int) -> list[float]:
    """CONTEXT_NAMES for neighbour `i` of a lookup (neighbours sorted by descending cosine)."""
    mine = answers[i]
    same = [j for j in range(len(sims)) if j != i and answers[j] == mine]
    other = [j for j in range(len(sims)) if answers[j] != mine]
    other_best = max((sims[j] for j in other), default=0.0)
    return [
        float(i),
        float(len(same)),
        max((sims[j] for j in same), default=0.0),
        float(sum(sims[j] for j in same)),
        other_best,
        sims[i] - other_best,
        (1.0 - sims[i]) / max(1.0 - other_best, 1e-6) if other else 0.0,
        float(len(sims)),
        float(len(set(answers))),
        max((float(vectors[i] @ vectors[j]) for j in other), default=0.0),
        max((float(vectors[i] @ vectors[j]) for j in same), default=0.0),
    ]


def answer_unambiguous(sims: list[float], answers: list[str], i: int, ratio: float) -> bool:
    """The ratio test between answers instead of entries: the nearest entry with candidate `i`'s
    answer is clearly nearer than the nearest entry with any other answer (none: unambiguous)."""
    best = max(s for s, a in zip(sims, answers, strict=True) if a == answers[i])
    other = [s for s, a in zip(sims, answers, strict=True) if a != answers[i]]
    return not other or unambiguous(best, max(other), ratio)
