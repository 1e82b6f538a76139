"""The shared semantic-cache data, its fixed splits, and request logs built from it.

One module says which rows the verifier may learn from and which rows measure it, so the
training script, the benchmarks and the tests can never disagree about it. The data itself
stays in `$TANDEM_SHARED_DIR/data/semcache/` (never copied into the repository).

Splits (fixed seeds; every split is disjoint):
- QQP pairs (`qqp_pairs_dev.jsonl`, 40,000): by pair, 25,000 train / 5,000 valid / 10,000 held
  out. Quora repeats popular questions, so a fifth of the held-out pairs share a question with a
  training pair ("seen"); the Zipf traces keep only held-out questions no training pair has.
- Banking77 (`banking77_train.csv`, 10,003 utterances, 77 intents): by utterance, within each
  intent (so every intent is in every part): 60 % train / 10 % valid / 30 % held out. The support
  trace is the held-out 30 %: no utterance in it was seen in training, but the model has seen
  other wordings of the same 77 intents (as a route's own re-check log would show it).
- GPTCache mock data (`gptcache_mock_data.json`, 999 rows, 964 distinct origins): by origin,
  half trained on (the evidence model), half held out (`mock_split`).

Request logs are in the `tandem cache replay` format (gateway/cache/replay.py); each answer is
fixed by what it answers (an intent, a QQP duplicate component), so "the served answer differs
from the one logged" is an exact test of a wrong hit. The generators' assumptions are documented
with their numbers in docs/benchmarks.md ("Cache savings").
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data" / "semcache"
QQP = DATA / "qqp_pairs_dev.jsonl"
BANKING = DATA / "banking77_train.csv"
MOCK = DATA / "gptcache_mock_data.json"

SPLIT_SEED = 20240611
N_TRAIN, N_VALID = 25_000, 5_000
BANKING_SEED = 77
BANKING_PARTS = (0.6, 0.1)  # train, valid; the rest (30 %) is held out
SYSTEM_PROMPT = "You are the support assistant of a bank. Answer in two sentences."


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(
            f"{path}: not found; the semantic-cache data lives in ../shared/data/semcache/ "
            "(or set TANDEM_SHARED_DIR)"
        )
    return path


def load_pairs(path: Path = QQP) -> list[dict]:
    return [json.loads(line) for line in require(path).read_text().splitlines() if line.strip()]


def split(pairs: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """QQP (train, valid, held out): disjoint by pair, the same for every run."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
    shuffled = [pairs[i] for i in order]
    return shuffled[:N_TRAIN], shuffled[N_TRAIN : N_TRAIN + N_VALID], shuffled[N_TRAIN + N_VALID :]


def load_banking(path: Path = BANKING) -> list[dict]:
    with require(path).open(newline="") as f:
        return [{"text": r["text"], "intent": r["category"]} for r in csv.DictReader(f)]


def banking_split(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Banking77 (train, valid, held out) by utterance, the same shares within every intent."""
    by_intent: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_intent[r["intent"]].append(r)
    rng = np.random.default_rng(BANKING_SEED)
    parts: tuple[list[dict], list[dict], list[dict]] = ([], [], [])
    for intent in sorted(by_intent):
        group = by_intent[intent]
        order = rng.permutation(len(group))
        n_train = round(BANKING_PARTS[0] * len(group))
        n_valid = round(BANKING_PARTS[1] * len(group))
        for rank, i in enumerate(order):
            part = 0 if rank < n_train else 1 if rank < n_train + n_valid else 2
            parts[part].append(group[i])
    return parts


def load_mock(path: Path = MOCK) -> list[dict]:
    return json.loads(require(path).read_text())


def components(pairs: list[dict], keep: set[str] | None = None) -> dict[str, int]:
    """Question -> id of its QQP duplicate component (union of the label-1 pairs; a question in
    no positive pair is its own component). With `keep`, only those questions take part."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        for t in (p["text_a"], p["text_b"]):
            if keep is None or t in keep:
                parent.setdefault(t, t)
    for p in pairs:
        a, b = p["text_a"], p["text_b"]
        if p["label"] and a in parent and b in parent:
            parent[find(a)] = find(b)
    roots: dict[str, int] = {}
    return {t: roots.setdefault(find(t), len(roots)) for t in parent}


# -- request logs ---------------------------------------------------------------------------------


def _tokens(text: str) -> int:
    """A token count for the usage block: about 4/3 tokens per English word."""
    return max(1, round(len(text.split()) * 4 / 3))


def log_row(
    question: str, answer: str, *, tenant: str, model: str, system: str | None = None
) -> dict[str, Any]:
    """One line of a replay log: a deterministic chat request and the upstream's complete answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    prompt = _tokens(question) + (_tokens(system) + 8 if system else 4)
    completion = _tokens(answer)
    return {
        "tenant": tenant,
        "model": model,
        "endpoint": "chat.completions",
        "body": {"model": model, "temperature": 0, "messages": messages},
        "response": {
            "id": "chatcmpl-trace",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
    }


def intent_answer(intent: str) -> str:
    """The one answer a support bot gives for an intent (distinct per intent, fixed within it)."""
    words = intent.replace("_", " ")
    return (
        f"Thanks for asking about {words}. Here is what to do about {words}: open the app, "
        f"go to Help, choose '{words}' and follow the steps; we reply within a day. [{intent}]"
    )


def support_trace(rows: list[dict], seed: int = 0) -> list[dict[str, Any]]:
    """Support traffic: every utterance once, shuffled, one fixed answer per intent."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return [
        log_row(
            rows[i]["text"],
            intent_answer(rows[i]["intent"]),
            tenant="support",
            model="support-bot",
            system=SYSTEM_PROMPT,
        )
        for i in order
    ]


def unseen_components(pairs: list[dict]) -> dict[str, int]:
    """The duplicate components of the held-out QQP pairs, over questions no train or valid pair
    has (what the Zipf traces draw from: nothing in them was trained on)."""
    train, valid, held = split(pairs)
    seen = {p[k] for p in train + valid for k in ("text_a", "text_b")}
    held_texts = {p[k] for p in held for k in ("text_a", "text_b")}
    return components(held, held_texts - seen)


def component_answer(component: int) -> str:
    return f"This is the answer to the questions of QQP duplicate group {component}."


def zipf_trace(
    comp: dict[str, int], s: float, requests: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Question traffic: duplicate components drawn with Zipf popularity (rank r has weight
    1 / r**s, ranks in a seeded random order), a uniformly drawn question of the component asked,
    one answer per component."""
    members: dict[int, list[str]] = defaultdict(list)
    for text in sorted(comp):
        members[comp[text]].append(text)
    ids = sorted(members)
    rng = np.random.default_rng(seed)
    ranked = [ids[i] for i in rng.permutation(len(ids))]
    weights = 1.0 / np.arange(1, len(ranked) + 1) ** s
    drawn = rng.choice(len(ranked), size=requests, p=weights / weights.sum())
    rows = []
    for r in drawn:
        group = members[ranked[r]]
        question = group[int(rng.integers(len(group)))]
        rows.append(log_row(question, component_answer(ranked[r]), tenant="search", model="qa-bot"))
    return rows


MOCK_SEED = 5


def mock_split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """GPTCache mock rows (train, held out), by origin question: half the origins each."""
    origins = sorted({r["origin"] for r in rows})
    order = np.random.default_rng(MOCK_SEED).permutation(len(origins))
    train = {origins[i] for i in order[: len(origins) // 2]}
    return [r for r in rows if r["origin"] in train], [r for r in rows if r["origin"] not in train]
