#!/usr/bin/env bash
# GPU tier: Tandem's Serve + vLLM path vs bare vLLM on the same GPU, random-init 1B Llama.
# Needs an NVIDIA GPU. Uses $GPU_VENV when it already has vllm + ray[serve]; otherwise builds
# .venv-gpu (needs PyPI). Results: out/gpu_serving.json (+ table on stdout); record them in
# docs/benchmarks.md under "## serving".
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
VENV="${GPU_VENV:-.venv-gpu}"
if ! "$VENV/bin/python" -c "import vllm, ray.serve.llm, httpx, transformers" 2>/dev/null; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q "vllm==0.33.0" "ray[serve]==2.60.0" pyarrow httpx pyyaml "pydantic>=2.7"
fi
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" benchmarks/gpu_serving.py "$@"
