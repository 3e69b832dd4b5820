#!/usr/bin/env bash
# Creates .venv and installs mome from source with everything the main job and the tests need, the way a user does:
# torch first, then `pip install -e .` (an isolated build: the core needs no torch to build; on a machine with nvcc and
# a GPU the CUDA kernels are built too, see README "Install").
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
"${PIP[@]}" install -e ".[test,model,train,analysis,onnx,demo]"
"$VENV/bin/python" -m mome.info
