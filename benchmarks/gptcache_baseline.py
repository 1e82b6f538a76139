"""GPTCache's own pipeline on the mock data (runs in .venv-gptcache: see setup-gptcache.sh).

sqlite + faiss + SearchDistanceEvaluation at GPTCache's default similarity threshold, with the same
local MiniLM model as Tandem (GPTCache's default ONNX embedder downloads from a model hub).
Cache every `origin` (its answer is its index), query every `similar`; print one JSON object.
    python benchmarks/gptcache_baseline.py MOCK.json

With --log, replay a request log (the `tandem cache replay` format) the way a gateway would use
GPTCache: the last user message is the key; a hit serves the cached answer (wrong when it differs
from the logged one), a miss stores the logged answer. Prints the hit and wrong row numbers
(benchmarks/cache_savings.py prices them).
    python benchmarks/gptcache_baseline.py --log requests.jsonl
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptcache import Cache  # noqa: E402
from gptcache.adapter.api import get, put  # noqa: E402
from gptcache.manager import CacheBase, VectorBase, get_data_manager  # noqa: E402
from gptcache.processor.pre import get_prompt  # noqa: E402
from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation  # noqa: E402

from embedding.minilm import Embedder  # noqa: E402


def new_cache(embedder: Embedder, tmp: str) -> Cache:
    cache = Cache()
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=lambda text, **_: embedder.encode([text])[0],
        data_manager=get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/cache.db"),
            VectorBase("faiss", dimension=embedder.dimension, index_path=f"{tmp}/faiss.index"),
        ),
        similarity_evaluation=SearchDistanceEvaluation(),
    )
    return cache


def replay_log(path: Path) -> None:
    embedder = Embedder()
    hits, wrong = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = new_cache(embedder, tmp)
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            question = row["body"]["messages"][-1]["content"]
            logged = row["response"]["choices"][0]["message"]["content"]
            answer = get(question, cache_obj=cache)
            if answer is None:
                put(question, logged, cache_obj=cache)
                continue
            hits.append(i)
            if answer != logged:
                wrong.append(i)
    threshold = cache.config.similarity_threshold
    print(json.dumps({"hits": hits, "wrong": wrong, "similarity_threshold": threshold}))


def main() -> None:
    if sys.argv[1] == "--log":
        replay_log(Path(sys.argv[2]))
        return
    rows = json.loads(Path(sys.argv[1]).read_text())
    embedder = Embedder()
    with tempfile.TemporaryDirectory() as tmp:
        cache = new_cache(embedder, tmp)
        for i, row in enumerate(rows):
            put(row["origin"], str(i), cache_obj=cache)
        correct = wrong = miss = wrong_question = 0
        t0 = time.perf_counter()
        for i, row in enumerate(rows):
            answer = get(row["similar"], cache_obj=cache)
            if answer is None:
                miss += 1
            elif answer == str(i):
                correct += 1
            else:
                wrong += 1
                wrong_question += rows[int(answer)]["origin"] != row["origin"]
        elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "correct": correct,
                "wrong": wrong,
                "miss": miss,
                # a hit on a verbatim copy of the query's own origin is the right question
                "scored_by_question": {
                    "correct": correct + wrong - wrong_question,
                    "wrong": wrong_question,
                    "miss": miss,
                },
                "similarity_threshold": cache.config.similarity_threshold,
                "query_ms_mean": 1000 * elapsed / len(rows),
            }
        )
    )


if __name__ == "__main__":
    main()
