#!/usr/bin/env bash
# The LiteLLM proxy baseline for benchmarks/gateway_overhead.py, in its own environment (its
# dependency pins clash with the gateway's; ~750 MB). Nothing here talks to the network at run
# time: gateway_overhead.py sets LiteLLM's local-only environment variables when it starts it.
# Usage: bash benchmarks/setup-litellm.sh [VENV_DIR]   (default .venv-litellm; 1-3 min)
set -euo pipefail
VENV="${1:-.venv-litellm}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "litellm[proxy]==${LITELLM_VERSION:-1.108.7}"
"$VENV/bin/python" -c "import importlib.metadata as m; print('litellm', m.version('litellm'))"
