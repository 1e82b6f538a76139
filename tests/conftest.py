"""Shared fixtures: the offline engine, the shipped stacks, and the CRD directory.

Stack runs are session-scoped: the dev and prod programs are run once under mocks and every
test that inspects them reads the same recorded resources.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED_STACKS = ("dev", "prod")


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The upstream CRD schemas. Unset is a failure, never a skip (CI sets ../shared/crds)."""
    from tandem.manifests import crd_dir as resolve

    try:
        return resolve()
    except RuntimeError as exc:
        pytest.fail(f"{exc}; run the tests through `make test` or .ci/run", pytrace=False)


@pytest.fixture
def run_program() -> Callable:
    """Run any program (a callable that creates resources) under the mock engine."""
    from tandem.engine import run_under_mocks

    return run_under_mocks


@pytest.fixture(scope="session")
def stack_resources() -> dict:
    """stack name -> every resource its program registers (run once per session)."""
    from tandem.engine import Resources
    from tandem.plan import run_stack

    return {stack: Resources(items=run_stack(stack)) for stack in SHIPPED_STACKS}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (or $TANDEM_SHARED_DIR): evaluation data, CRDs."""
    path = Path(os.environ.get("TANDEM_SHARED_DIR", REPO.parent / "shared"))
    if not path.is_dir():
        pytest.fail(f"shared material not found at {path}; set TANDEM_SHARED_DIR", pytrace=False)
    return path
