#!/usr/bin/env bash
# Regenerates tests/fixtures/parity/ with the pinned timm (run setup.sh first): the model
# fixtures (make_fixtures.py), the attention fixtures (make_attention_fixtures.py) and the
# MAC counts (make_macs_fixtures.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${EXVIT_PARITY_VENV:-$HOME/.cache/exvit/parity-venv}
"$venv/bin/python" "$here/make_fixtures.py" --out "$here/../../tests/fixtures/parity" "$@"
"$venv/bin/python" "$here/make_attention_fixtures.py" --out "$here/../../tests/fixtures/parity"
"$venv/bin/python" "$here/make_macs_fixtures.py" --out "$here/../../tests/fixtures/parity/macs.json"
