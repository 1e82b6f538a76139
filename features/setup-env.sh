#!/usr/bin/env bash
# Build the Feast environment, .venv-feast (FEAST_VENV overrides): Feast with its Redis online
# store, pinned by features/feast-constraints.txt. It lives apart from the main .venv because
# Feast 0.66 pins prometheus-client <0.25, redis <8 and tenacity <9, below Tandem's own pins.
# `tandem plan` runs Feast's plan of stacks/features/<project>/ in it (features/repo.py), and the
# feature-store tests and benchmark run Feast's CLI, SDK and feature server from it. The gateway
# never needs it: it reads Feast's Redis format itself (features/redis_format.py).
# Usage: make feast-env   (part of make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FEAST_VENV:-.venv-feast}"
PY="${PYTHON:-python3.11}"
FEAST=0.66.0  # vocabulary/pins.py FEAST_VERSION; tests/unit/test_pins.py reads this line
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "from importlib.metadata import version; assert version('feast') == '$FEAST'; import feast.infra.online_stores.redis" 2>/dev/null; then
  echo "feast env ready ($VENV): feast $FEAST (already built)"
  exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -c features/feast-constraints.txt "feast[redis]==$FEAST"
"$VENV/bin/python" -c "import feast; print('feast env ready ($VENV): feast', feast.__version__)"
