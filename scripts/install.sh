#!/usr/bin/env bash
# Create .venv and install flwbc with its dev tools, CPU-only torch first.
# A CPU wheel of torch 2.13.0 reachable through pip's find-links (as on the project machines)
# is used if there is one; otherwise torch comes from PyTorch's CPU index, never the
# multi-GB CUDA build that a plain `pip install torch` pulls on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-dev}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" >/dev/null 2>&1; then
  pip install -q --no-index "torch==2.13.0" 2>/dev/null \
    || pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    || pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
pip install -q -e ".[$EXTRAS]"
python -c "import torch, flwbc; print(f'flwbc {flwbc.__version__}, torch {torch.__version__}')"
