"""GPU tier: runs where an NVIDIA GPU is lent (`make gpu`), never in CI.

No GPU is a failure with the reason, not a skip: a run that measured nothing must not look green.
The measurements go to $TANDEM_GPU_REPORT (JSON) when it is set, for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def torch_cuda():
    """torch, with a CUDA device present."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"gpu tier needs torch and transformers ({exc}); run it with `make gpu`")
    if not torch.cuda.is_available():
        pytest.fail("gpu tier: torch sees no CUDA device; run it where an NVIDIA GPU is lent")
    return torch


@pytest.fixture(scope="session")
def report() -> Iterator[dict]:
    """Measurements by section; written to $TANDEM_GPU_REPORT at the end of the session."""
    data: dict = {}
    yield data
    target = os.environ.get("TANDEM_GPU_REPORT")
    if target:
        Path(target).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
