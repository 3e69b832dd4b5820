"""The CPU kernels give today's bits: every output and gradient of tests/ops/golden_cpu.safetensors (made by
tools/ops_golden.py with the TORCH_LIBRARY build of commit 3178211) is reproduced exactly (torch.equal), with torch
on one thread and on golden.THREADS (the BLAS GEMMs of the grouped adapter depend on torch's thread count; our
kernels do not)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mome import ops

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ops_golden", ROOT / "tools" / "ops_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


@pytest.fixture(scope="module")
def stored():
    return load_file(ROOT / "tests" / "ops" / "golden_cpu.safetensors")


@pytest.mark.parametrize("threads", [1, golden.THREADS])
def test_cpu_kernels_are_bit_identical_to_the_golden_file(stored, threads):
    assert all(ops.backend(op, "cpu", torch.float64) == "cpu-kernel" for op in ops.OPS)
    inputs = golden.load_inputs(stored)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, results = golden.compute(inputs)
    finally:
        torch.set_num_threads(before)
    assert len(results) == sum(k.startswith("result.") for k in stored)
    differ = [k for k, v in results.items() if not torch.equal(v, stored[f"result.{k}"])]
    assert not differ, f"not bit-identical to the golden file: {differ}"
