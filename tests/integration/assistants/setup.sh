#!/usr/bin/env bash
# The real assistant clients for tests/integration/test_assistant_clients.py, pinned by
# package-lock.json, installed here (node_modules/, git-ignored) once per lock: `make
# assistant-clients` runs this and a second run with the same lock does nothing.
# Claude Code ships its native binary in a per-platform package; install scripts are not needed
# (--ignore-scripts), the test runs that binary directly.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm not found: install Node.js 20+ (CI has it)" >&2; exit 1; }
stamp=node_modules/.tandem-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
