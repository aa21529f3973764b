#!/usr/bin/env bash
# The README's test command: install torch (CPU, pinned), the project and its test extra, then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
python -m pytest -q tests "$@"
