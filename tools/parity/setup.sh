#!/usr/bin/env bash
# Creates the Python environment that regenerates exvit's parity fixtures:
# torch, timm and safetensors from PyPI at the versions pinned in requirements.txt.
#   tools/parity/setup.sh            # venv in $EXVIT_PARITY_VENV (default ~/.cache/exvit/parity-venv)
#   tools/parity/make_fixtures.sh    # then regenerate tests/fixtures/parity/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${EXVIT_PARITY_VENV:-$HOME/.cache/exvit/parity-venv}
python3 -m venv "$venv"
"$venv/bin/pip" install -q -r "$here/requirements.txt"
"$venv/bin/python" -c "import torch, timm, safetensors; print('torch', torch.__version__, 'timm', timm.__version__)"
