#!/usr/bin/env bash
# Regenerates tests/fixtures/parity/ with the pinned timm (run setup.sh first).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${EXVIT_PARITY_VENV:-$HOME/.cache/exvit/parity-venv}
exec "$venv/bin/python" "$here/make_fixtures.py" --out "$here/../../tests/fixtures/parity" "$@"
