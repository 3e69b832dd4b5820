#!/usr/bin/env bash
# Creates .venv and installs mome from source with everything the main job and the tests need.
#
#   TORCH_SPEC   which torch to install first (default: torch==2.13.0, a CPU build; on a GPU machine use e.g.
#                TORCH_SPEC=torch). It is installed before anything else so no dependency pulls another torch.
#   VENV         where to create the environment (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "$TORCH_SPEC" numpy
# Build tools in the env itself: mome builds with --no-build-isolation against the torch installed above.
"${PIP[@]}" install scikit-build-core pybind11 ninja "cmake>=3.26"
"${PIP[@]}" install --no-build-isolation -e ".[test,model,train,analysis,onnx,demo]"
"$VENV/bin/python" -m mome.info
