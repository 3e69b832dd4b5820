#!/usr/bin/env bash
# Compile-only check of the CUDA build (no GPU needed): a second env with the CUDA 13 torch wheel and the CUTLASS
# headers, a wheel built for sm_80 and sm_90 (plus sm_90 PTX, cmake/MomeTorch.cmake), installed, imported (catches
# unresolved kernel symbols) and reported by `python -m mome.info`; then the CPU op tests run against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_CUDA:-.venv-cuda}
ARCHS=${MOME_CUDA_ARCHS:-"8.0;9.0"}
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
command -v nvcc >/dev/null || { echo "check_cuda_build: nvcc not found (install the CUDA toolkit)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "torch==2.14.1" numpy scikit-build-core pybind11 ninja "cmake>=3.26" pytest expecttest
# --no-deps: the wheel's own dependencies would replace cuda-bindings; only its headers are used. Pinned: the CUTLASS
# 2.x grouped-GEMM API of cpp/grouped_adapter is tested with 4.2.0 (tools/gpu_check.sh --pack carries the same).
"${PIP[@]}" install --no-deps nvidia-cutlass==4.2.0.0

rm -rf build/cuda-wheel
start=$(date +%s)
MOME_WITH_CUDA=ON MOME_CUDA_ARCHS="$ARCHS" "$VENV/bin/python" -m pip wheel --no-build-isolation --no-deps \
  -C build-dir=build/cuda-ci -w build/cuda-wheel . 2>&1 | tail -n 40
echo "check_cuda_build: CUDA build for archs $ARCHS took $(( $(date +%s) - start )) s"
"${PIP[@]}" install --no-deps --force-reinstall build/cuda-wheel/mome-*.whl
# Run from outside the source tree so the installed wheel (not python/mome) is imported.
(cd /tmp && "$OLDPWD/$VENV/bin/python" -c "
import mome, mome.info
info = mome.ops.BUILD_INFO
assert info['cuda'], 'the CUDA build has no CUDA kernels registered'
print(mome.info.report())
")
(cd /tmp && "$OLDPWD/$VENV/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/tests/ops" --rootdir "$OLDPWD")
