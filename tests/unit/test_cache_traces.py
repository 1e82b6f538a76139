"""The request logs of the cache-savings benchmark: what the generators promise, on the shared
data (benchmarks/semcache_data.py, benchmarks/cache_traces.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))


@pytest.fixture(scope="module")
def data() -> ModuleType:
    if not (SHARED / "data" / "semcache").exists():
        pytest.fail(f"{SHARED}/data/semcache is missing: set TANDEM_SHARED_DIR")
    spec = importlib.util.spec_from_file_location(
        "semcache_data", ROOT / "benchmarks" / "semcache_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("semcache_data", module)
    spec.loader.exec_module(module)
    return module


def test_banking_split_is_by_utterance_and_keeps_every_intent(data: ModuleType) -> None:
    rows = data.load_banking()
    train, valid, held = data.banking_split(rows)
    texts = [{r["text"] for r in part} for part in (train, valid, held)]
    assert sum(map(len, texts)) == len(rows) and not (texts[0] & texts[2] or texts[1] & texts[2])
    assert {r["intent"] for r in held} == {r["intent"] for r in rows}  # all 77 in the trace
    assert data.banking_split(rows) == (train, valid, held)  # fixed seed


def test_support_trace_asks_every_utterance_once_with_one_answer_per_intent(
    data: ModuleType,
) -> None:
    held = data.banking_split(data.load_banking())[2]
    trace = data.support_trace(held)
    asked = [r["body"]["messages"][-1]["content"] for r in trace]
    assert sorted(asked) == sorted(r["text"] for r in held)  # each once
    answers: dict[str, set[str]] = defaultdict(set)
    intent = {r["text"]: r["intent"] for r in held}
    for q, r in zip(asked, trace, strict=True):
        answers[intent[q]].add(r["response"]["choices"][0]["message"]["content"])
        assert r["body"]["temperature"] == 0 and r["response"]["choices"][0]["finish_reason"]
    assert all(len(a) == 1 for a in answers.values())  # fixed within an intent
    assert len({next(iter(a)) for a in answers.values()}) == len(answers)  # distinct between


def test_zipf_trace_draws_unseen_components_with_zipf_popularity(data: ModuleType) -> None:
    pairs = data.load_pairs()
    comp = data.unseen_components(pairs)
    train, valid, _ = data.split(pairs)
    seen = {p[k] for p in train + valid for k in ("text_a", "text_b")}
    assert not seen & set(comp)  # nothing in the trace was trained on
    flat, steep = (data.zipf_trace(comp, s, 3000) for s in (0.8, 1.2))
    distinct = [len({r["body"]["messages"][-1]["content"] for r in t}) for t in (flat, steep)]
    assert distinct[0] > distinct[1]  # a steeper Zipf repeats more
    answer_of: dict[str, str] = {}
    for r in flat:  # one answer per component: a question always gets the same answer
        q = r["body"]["messages"][-1]["content"]
        a = r["response"]["choices"][0]["message"]["content"]
        assert answer_of.setdefault(q, a) == a
