"""The verifier's training script runs end to end on a small slice and writes weights the
gateway loads (the full run is ~1 minute plus the encodings; docs/semantic-cache.md, Training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedding.minilm import Embedder
from gateway.cache.verifier import Probe, Verifier

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
