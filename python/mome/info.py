"""`python -m mome.info`: what this mome build contains and which backend each op uses here."""

from __future__ import annotations

import argparse
import platform
import sys

import torch

import mome
from mome import ops
from mome.cli import parse, run


def report() -> str:
    info = ops.BUILD_INFO
    lines = [
        f"mome {mome.__version__}",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), Python {platform.python_version()}",
    ]
    if ops.IMPORT_ERROR:
        lines.append(f"compiled core: NOT LOADED ({ops.IMPORT_ERROR}); every op runs its PyTorch reference")
    else:
        lines.append(f"compiled core: {ops._library._C.__file__}")
        lines.append(f"  built with gcc {info['compiler']}, no torch (one build serves every torch; this one runs "
                     f"torch {torch.__version__})")
        lines.append("  CPU kernels: yes (float32, float64; multi-threaded, "
                     f"{torch.get_num_threads()} threads here)")
        cuda = (f"yes, archs {info['cuda_archs']}, CUDA runtime {info['cuda_runtime']} (static)" if info["cuda"]
                else "no (MOME_WITH_CUDA=ON, or AUTO on a machine with nvcc and a GPU, builds them)")
        lines.append(f"  CUDA kernels: {cuda}")
        lines.append(f"  CUTLASS: {info['cutlass_version'] or 'no'}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        lines.append("GPU: none visible")
    lines.append("backend per op (float32 inputs):")
    for op in ops.OPS:
        per_device = ", ".join(f"{d}: {ops.backend(op, d, torch.float32)}" for d in devices)
        lines.append(f"  {op:24s} {per_device}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mome.info", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    parse(parser, argv)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.info"))
