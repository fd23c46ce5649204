#!/usr/bin/env bash
# Create .venv and install flwbc with its dev tools, CPU-only torch first.
# A CPU wheel of torch 2.13.0 that pip can find locally (through its find-links, as on the
# project machines) is installed as a file, its dependencies from the normal index. Otherwise
# torch comes from PyTorch's CPU index, never the multi-GB CUDA build that a plain
# `pip install torch` pulls on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-dev,flower}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" >/dev/null 2>&1; then
  wheels=$(mktemp -d)
  if pip download -q --no-deps --no-index "torch==2.13.0" -d "$wheels" >/dev/null 2>&1; then
    pip install -q "$wheels"/torch-*.whl
  else
    pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
  rm -rf "$wheels"
fi
pip install -q -e ".[$EXTRAS]"
python -c "import torch, flwbc; print(f'flwbc {flwbc.__version__}, torch {torch.__version__}')"
