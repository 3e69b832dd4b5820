"""mome's PEP 517 build backend: scikit-build-core, plus CUTLASS as a build requirement when CUDA will be built.

pyproject.toml points here (`backend-path`). Every hook is scikit-build-core's; the two `get_requires_*` hooks add the
pinned `nvidia-cutlass` wheel (the CUTLASS headers of the grouped-adapter GEMMs) to the isolated build environment
only when the CUDA kernels will be compiled and no MOME_CUTLASS_DIR is given, so a CPU build downloads nothing.

Whether CUDA is built (MOME_WITH_CUDA, an environment variable or `-C cmake.define.MOME_WITH_CUDA=...`):
  ON    always (nvcc required);  OFF  never;
  AUTO  (default) when nvcc is found (PATH, $CUDA_HOME/bin, $CUDA_PATH/bin, /usr/local/cuda/bin) AND `nvidia-smi -L`
        lists a GPU. A machine with the toolkit but no GPU builds the CPU kernels only.
cmake/MomeCuda.cmake applies the same rule inside CMake.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from scikit_build_core import build as _backend
from scikit_build_core.build import *  # noqa: F401,F403  (build_wheel, build_sdist, build_editable, prepare_*)

CUTLASS = "nvidia-cutlass==4.2.0.0"  # the CUTLASS 2.x grouped-GEMM API of cpp/grouped_adapter is tested with it


def _setting(name: str, config_settings: dict | None) -> str:
    value = (config_settings or {}).get(f"cmake.define.{name}")
    return str(value if value is not None else os.environ.get(name, ""))


def _nvcc() -> str | None:
    hints = [os.path.join(os.environ[v], "bin") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    return shutil.which("nvcc") or shutil.which("nvcc", path=os.pathsep.join(hints + ["/usr/local/cuda/bin"]))


def _gpu_visible() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU " in out.stdout


def builds_cuda(config_settings: dict | None = None) -> bool:
    mode = (_setting("MOME_WITH_CUDA", config_settings) or "AUTO").upper()
    if mode == "OFF":
        return False
    if mode == "ON":
        return True
    return _nvcc() is not None and _gpu_visible()


def _extra(config_settings: dict | None) -> list[str]:
    return [CUTLASS] if builds_cuda(config_settings) and not _setting("MOME_CUTLASS_DIR", config_settings) else []


def get_requires_for_build_wheel(config_settings=None):
    return _backend.get_requires_for_build_wheel(config_settings) + _extra(config_settings)


def get_requires_for_build_editable(config_settings=None):
    return _backend.get_requires_for_build_editable(config_settings) + _extra(config_settings)
