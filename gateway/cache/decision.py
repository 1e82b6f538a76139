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
