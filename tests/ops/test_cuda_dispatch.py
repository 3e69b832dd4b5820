"""Dispatch on CUDA without a GPU: sizes beyond a CUDA kernel's limits must run the reference, not reach the kernel's
`TORCH_CHECK` (the Python side mirrors each limit of the .cu files). Fake CUDA tensors (FakeTensorMode) carry the
real sizes, up to 2^31 rows, at no cost; the CUDA kernel is pretended registered, and the kernel op and the reference
are replaced by spies that record which one was called.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mome.ops import _library, reference
import mome.ops as ops

BIG = 2**31


@pytest.fixture
def dispatch(monkeypatch):
    """Runs `call()` on fake CUDA tensors; returns 'kernel' or 'reference' (what the op dispatched to)."""
    monkeypatch.setattr(_library, "_KERNELS", {(op, "cuda") for op in ops.OPS} | _library._KERNELS)
    calls = []

    def spy(path, op):
        def fn(*args, **kwargs):
            calls.append(path)
            out = args[0].new_empty(0)
            return (out, out) if path == "kernel" and op.startswith("grouped_adapter") else out  # (y, hidden)
        return fn

    for op in ops.OPS:
        monkeypatch.setattr(reference, op, spy("reference", op))
        monkeypatch.setattr(torch.ops.mome, op, spy("kernel", op))

    def run(make, requires_grad=True):
        with FakeTensorMode():
            args, kwargs = make()
            if requires_grad:
                for t in args:
                    if isinstance(t, torch.Tensor) and t.is_floating_point():
                        t.requires_grad_()
            op = kwargs.pop("op")
            getattr(ops, op)(*args, **kwargs)
        assert len(calls) == 1, calls
        return calls[0]

    return run


def _adapter(T, D, R, K, dtype=torch.bfloat16, sorted_rows=False):
    def make():
        cuda = dict(device="cuda", dtype=dtype)
        x = torch.empty(T, D, **cuda)
        routing = torch.zeros(K + 1 if sorted_rows else T, dtype=torch.int64, device="cuda")
        params = [torch.empty(K, D, R, **cuda), torch.empty(K, R, **cuda), torch.empty(K, R, D, **cuda),
                  torch.empty(K, D, **cuda), torch.empty(K, **cuda)]
        return [x, routing, *params], dict(op="grouped_adapter_sorted" if sorted_rows else "grouped_adapter")
    return make


@pytest.mark.parametrize("sorted_rows", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("sizes,dtype,expected", [
    ((16, 64, 16, 4095), torch.bfloat16, "kernel"),
    ((16, 64, 16, 4096), torch.bfloat16, "reference"),  # K < 4096
    ((16, 64, 16, 4096), torch.float32, "reference"),
    ((BIG - 1, 8, 8, 2), torch.bfloat16, "kernel"),
    ((BIG, 8, 8, 2), torch.bfloat16, "reference"),  # T < 2^31
    ((16, 12, 16, 4), torch.bfloat16, "reference"),  # D % 8
    ((16, 64, 6, 4), torch.float16, "reference"),  # R % 8
    ((16, 12, 6, 4), torch.float32, "kernel"),  # float32: any D, R
    ((16, 64, 0, 4), torch.bfloat16, "kernel"),  # R = 0 is supported (an empty bottleneck)
], ids=str)
def test_grouped_adapter_limits(dispatch, sorted_rows, sizes, dtype, expected):
    assert dispatch(_adapter(*sizes, dtype=dtype, sorted_rows=sorted_rows)) == expected


def _deform(B, S, H, Q, Lv, P):
    def make():
        value = torch.empty(B, S, H, 8, device="cuda", dtype=torch.bfloat16)
        shapes = torch.ones(Lv, 2, dtype=torch.int64, device="cuda")
        starts = torch.zeros(Lv, dtype=torch.int64, device="cuda")
        loc = torch.empty(B, Q, H, Lv, P, 2, device="cuda")
        attn = torch.empty(B, Q, H, Lv, P, device="cuda")
        return [value, shapes, starts, loc, attn], dict(op="deform_attn")
    return make


@pytest.mark.parametrize("sizes,requires_grad,expected", [
    ((2, 64, 8, 16, 1, 4), True, "kernel"),
    ((1, 2**29, 8, 16, 1, 4), True, "reference"),  # B·S·H = 2^32 > the backward's 32-bit sort keys
    ((1, 2**29, 8, 16, 1, 4), False, "kernel"),  # the forward alone has no such limit
    ((1, 2**29 - 1, 8, 16, 1, 4), True, "kernel"),
    ((1, 64, 8, 2**24, 1, 4), True, "reference"),  # 4·B·Q·H·Lv·P = 2^31 corner ids
    ((1, 64, 8, 2**24, 1, 4), False, "kernel"),
    ((1, 64, 8, 2**24 - 1, 1, 4), True, "kernel"),
], ids=str)
def test_deform_attn_limits(dispatch, sizes, requires_grad, expected):
    assert dispatch(_deform(*sizes), requires_grad=requires_grad) == expected


def _router(N, B, L, D):
    def make():
        return [torch.empty(N, B, L, D, device="cuda"), torch.empty(B, N, device="cuda")], dict(op="router_mix")
    return make


@pytest.mark.parametrize("sizes,requires_grad,expected", [
    ((3, 65535, 4, 8), True, "kernel"),
    ((3, 65536, 4, 8), True, "reference"),  # the backward's grid has one row per sample
    ((3, 65536, 4, 8), False, "kernel"),
], ids=str)
def test_router_mix_limits(dispatch, sizes, requires_grad, expected):
    assert dispatch(_router(*sizes), requires_grad=requires_grad) == expected
