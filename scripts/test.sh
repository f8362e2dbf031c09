#!/usr/bin/env bash
# Run the whole test suite; viewer tests run under Xvfb (pytest-xvfb starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
exec "$PY" -m pytest -q --durations=15 tests "$@"
