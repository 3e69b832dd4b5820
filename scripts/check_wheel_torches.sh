#!/usr/bin/env bash
# One wheel, many torch versions: builds the CPU wheel once with the user's command (`pip wheel .`, isolated, no torch
# in the build), checks that its core links neither libtorch/libc10 nor an OpenMP runtime (readelf -d), installs it
# into one fresh venv per torch version (TORCHES; default 2.13.0, the CPU build, and 2.14.1, the CUDA 13 build, which
# imports on a CPU machine; both from the local wheel folders) and runs the op tests there, from outside the source
# tree so the installed wheel is what runs. The venvs are kept (.venv-torch<version>) and reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCHES=${TORCHES:-"2.13.0 2.14.1"}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
t0=$(date +%s)

rm -rf build/wheel
MOME_WITH_CUDA=OFF "$PYTHON" -m pip wheel --disable-pip-version-check -q --no-deps -C build-dir=build/cpu-wheel \
  -w build/wheel . 2>&1 | grep -v "is ignored: it is neither" || true
wheel=$(ls build/wheel/mome-*.whl)
echo "check_wheel_torches: built $wheel in $(( $(date +%s) - t0 )) s"

rm -rf build/wheel/unpacked && mkdir -p build/wheel/unpacked
"$PYTHON" -m zipfile -e "$wheel" build/wheel/unpacked
so=$(ls build/wheel/unpacked/mome/_C*.so)
needed=$(readelf -d "$so" | grep NEEDED)
echo "$needed"
if echo "$needed" | grep -Eq "libtorch|libc10|libgomp|libomp|libiomp"; then
  echo "check_wheel_torches: $so links torch or an OpenMP runtime"; exit 1
fi

for version in $TORCHES; do
  t=$(date +%s)
  venv=.venv-torch$version
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  PIP=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
  "${PIP[@]}" install "torch==$version" numpy pytest expecttest 2>&1 | grep -v "is ignored: it is neither" || true
  "${PIP[@]}" install --force-reinstall --no-deps "$wheel"
  "${PIP[@]}" install "$wheel" 2>&1 | grep -v "is ignored: it is neither" || true  # its other dependencies
  (cd /tmp && "$OLDPWD/$venv/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/tests/ops" --rootdir "$OLDPWD" \
     | tail -n 3)
  (cd /tmp && "$OLDPWD/$venv/bin/python" -c "import torch, mome.ops as o, sys; sys.exit(0 if o.backend('deform_attn', 'cpu') == 'cpu-kernel' and o.__file__.startswith('$OLDPWD/$venv') else 1)") \
    || { echo "check_wheel_torches: torch $version did not run the installed wheel's kernels"; exit 1; }
  echo "check_wheel_torches: torch $version: op tests passed on the wheel ($(( $(date +%s) - t )) s)"
done
echo "check_wheel_torches: done in $(( $(date +%s) - t0 )) s"
