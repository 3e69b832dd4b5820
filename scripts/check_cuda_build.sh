#!/usr/bin/env bash
# Compile-only check of the CUDA build (no GPU needed), exactly as a user's isolated build runs it:
#
#   MOME_WITH_CUDA=ON MOME_CUDA_ARCHS=9.0 pip wheel .
#
# in a venv with no torch at all. pip builds in an isolated environment whose requirements come from
# build_backend/mome_build.py: scikit-build-core, pybind11, CMake, ninja and, because CUDA is built, the pinned
# nvidia-cutlass wheel (its headers). The wheel must contain the CUDA launchers (deformable attention, router mix and
# the CUTLASS grouped GEMMs) and link neither libtorch/libc10 nor a shared cudart (cudart is static).
# When the venv of scripts/check_wheel_torches.sh with the CUDA 13 torch exists (VENV_TORCH, default
# .venv-torch2.14.1), the wheel is installed there, imported and the op tests run (its CPU kernels; no GPU here).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_CUDA:-.venv-cuda}
VENV_TORCH=${VENV_TORCH:-.venv-torch2.14.1}
ARCHS=${MOME_CUDA_ARCHS:-9.0}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}  # each CUTLASS TU takes ~1.8 GB and a core
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
command -v nvcc >/dev/null || { echo "check_cuda_build: nvcc not found (install the CUDA toolkit)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "check_cuda_build: $VENV must not contain torch"; exit 1; }

rm -rf build/cuda-wheel
start=$(date +%s)
MOME_WITH_CUDA=ON MOME_CUDA_ARCHS="$ARCHS" "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps \
  -C build-dir=build/cuda-ci -w build/cuda-wheel . 2>&1 | grep -v "is ignored: it is neither" | tail -n 20
echo "check_cuda_build: isolated CUDA wheel build for archs $ARCHS took $(( $(date +%s) - start )) s"

wheel=$(ls build/cuda-wheel/mome-*.whl)
rm -rf build/cuda-wheel/unpacked && mkdir -p build/cuda-wheel/unpacked
"$VENV/bin/python" -m zipfile -e "$wheel" build/cuda-wheel/unpacked
so=$(ls build/cuda-wheel/unpacked/mome/_C*.so)
needed=$(readelf -d "$so" | grep NEEDED)
echo "$needed"
if echo "$needed" | grep -Eq "libtorch|libc10|libcudart"; then
  echo "check_cuda_build: $so links torch or a shared cudart"; exit 1
fi
# Import the core alone, in the venv without torch: no unresolved symbol (the CUTLASS TUs are linked in), no torch.
"$VENV/bin/python" - "$(dirname "$so")" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import _C  # mome/_C*.so as a top-level module: it needs nothing from the mome package
info = _C.build_info()
assert info["cuda"] and info["cutlass_version"], info
for name in ("deform_attn_backward_cuda", "router_mix_backward_cuda", "grouped_adapter_backward_cuda"):
    assert hasattr(_C, name), name
assert "torch" not in sys.modules
print("check_cuda_build: the core imports without torch:", info)
PY

if [ -x "$VENV_TORCH/bin/python" ]; then
  "$VENV_TORCH/bin/python" -m pip install --disable-pip-version-check -q --no-deps --force-reinstall "$wheel"
  # From outside the source tree, so the installed wheel (not python/mome) is imported.
  (cd /tmp && "$OLDPWD/$VENV_TORCH/bin/python" -c "
import mome.info
from mome import ops
assert ops.BUILD_INFO['cuda'] and ops.BUILD_INFO['cutlass_version'], ops.BUILD_INFO
print(mome.info.report())
")
  (cd /tmp && "$OLDPWD/$VENV_TORCH/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/tests/ops" --rootdir "$OLDPWD")
fi
