#!/usr/bin/env bash
# Create .venv (if missing) and install peace with everything its tests, service and reports use.
# torch==2.13.0 goes first: it is a CPU build, and a plain `torch` requirement could pull a CUDA
# build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import peace, fastapi, prometheus_client, pytest, xdist, sklearn, torch_geometric" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[serve,report,dev]"
fi
