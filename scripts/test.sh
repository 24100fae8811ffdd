#!/usr/bin/env bash
# The whole suite: ruff, then pytest. Helpers that need other environments (mimic) set them up here.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in scripts/setup-*.sh; do
    [ -e "$s" ] && bash "$s"
done
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
