"""The training script runs end to end on a small slice and writes weights the gateway loads:
the pair verifier and the evidence model of the default decision (the full run is ~12 minutes
plus the encodings; docs/semantic-cache.md, Training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedding.minilm import Embedder
from gateway.cache.verifier import Candidate, Probe, Verifier

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
PAIRS = SHARED / "data" / "semcache" / "qqp_pairs_dev.jsonl"


def test_training_writes_weights_the_gateway_loads(tmp_path: Path) -> None:
    if not PAIRS.exists():
        pytest.fail(f"{PAIRS} is missing: the shared QQP pairs must sit beside the repo")
    out = tmp_path / "verifier.npz"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_cache_verifier.py"),
            "--limit=300",
            "--seeds=1",
            f"--output={out}",
            f"--encodings={tmp_path / 'encodings.pkl'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TRAIN_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["trees"] > 0 and 0 < summary["operating_point"] <= 1
    verifier = Verifier.load(out)
    texts = ["How do I learn Python quickly?", "What is the fastest way to learn Python?"]
    vecs, toks = Embedder().encode_full(texts)
    a, b = (Probe(t, v, k) for t, v, k in zip(texts, vecs, toks, strict=True))
    p = verifier.probabilities(a, [b, a])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    assert verifier.evidence is not None and summary["evidence_trees"] > 0
    pick, prob = verifier.decide(a, [Candidate(b, 0.9, "x"), Candidate(a, 0.8, "y")], 0.6)
    assert pick in (None, 0, 1) and 0 <= prob <= 1
