"""mome.ops.grouped_adapter / grouped_adapter_sorted on CUDA (CUTLASS grouped GEMMs) against the PyTorch reference:
float32 parity and gradcheck, the float16/bfloat16 error budget (kernel error vs float64 ≤ 2× the PyTorch
low-precision reference's), uneven and empty groups, T = 1, K = 1 and K = 8, sorted = unsorted, the residual
(accumulate) option, determinism, CUDA-graph capture without host synchronisation, alignment fallbacks, bad input.

Tests named `test_small_*` use tiny shapes and are the list tools/gpu_check.sh runs under compute-sanitizer
(memcheck, racecheck). Skipped without a GPU or a CUDA build with CUTLASS.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mome import ops
from mome.ops import reference
from tests.ops.cases import adapter_inputs

DEV = "cuda"
LOW = (torch.float16, torch.bfloat16)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and ops.has_kernel("grouped_adapter", "cuda")),
    reason="no CUDA device, or this mome build has no CUDA grouped_adapter kernel (needs CUTLASS headers at build time)",
)


def _inputs(T, D, R, K, counts=None, gate=True, dtype=torch.float32, requires_grad=False):
    """adapter_inputs drawn in float64 on the CPU (the same draw for every dtype), moved to the GPU in `dtype`."""
    x, ids, *params = adapter_inputs(T, D, R, K, counts=counts, gate=gate)
    out = [x, ids] + params
    out = [t if t is None else t.to(DEV, dtype if t.is_floating_point() else t.dtype) for t in out]
    if requires_grad:
        for t in out:
            if t is not None and t.is_floating_point():
                t.requires_grad_()
    return out


def _sorted(inputs):
    x, ids, wd, bd, wu, bu, s, g = inputs
    K = wd.shape[0]
    perm = torch.argsort(ids, stable=True)
    offsets = F.pad(torch.bincount(ids, minlength=K).cumsum(0), (1, 0))
    return [x[perm], offsets, wd, bd, wu, bu, s, None if g is None else g[perm]], perm


def _diff(inputs):
    x, _, wd, bd, wu, bu, s, g = inputs
    return [t for t in (x, wd, bd, wu, bu, s, g) if t is not None]


def _rel(a, truth):
    a, truth = a.double(), truth.double()
    return ((a - truth).norm() / truth.norm().clamp_min(1e-30)).item()


def _fwd_bwd(fn, inputs, g):
    out = fn(*inputs)
    return [out, *torch.autograd.grad(out, _diff(inputs), g)]


CASES = [
    dict(T=37, D=16, R=8, K=3),
    dict(T=1, D=64, R=16, K=1),  # one token, one expert
    dict(T=1, D=64, R=16, K=4),  # one token, three empty experts
    dict(T=300, D=128, R=64, K=4, counts=[0, 280, 0, 20]),  # empty and very uneven groups
    dict(T=257, D=72, R=24, K=8, counts=[200, 0, 1, 0, 50, 0, 0, 6]),  # K = 8, a one-row group
    dict(T=64, D=40, R=8, K=2, gate=False),
    dict(T=0, D=16, R=8, K=2),  # no rows at all
]
CASE_IDS = ["-".join(f"{k}{v}" for k, v in c.items()) for c in CASES]


def test_kernels_are_used():
    for op in ("grouped_adapter", "grouped_adapter_sorted"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            assert ops.backend(op, DEV, dtype) == "cuda-kernel", (op, dtype)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_float32_matches_float64(case, entry):
    """float32 runs exact-fp32 SIMT GEMMs: forward and every gradient within float32 rounding of the float64 truth."""
    inputs32 = _inputs(**case, requires_grad=True)
    inputs64 = [t if t is None or not t.is_floating_point() else t.detach().double().requires_grad_() for t in inputs32]
    fn, ref = ops.grouped_adapter, reference.grouped_adapter
    if entry == "sorted":
        (inputs32, _), (inputs64, _) = _sorted(inputs32), _sorted(inputs64)
        fn, ref = ops.grouped_adapter_sorted, reference.grouped_adapter_sorted
    g = torch.randn(case["T"], case["D"], device=DEV, dtype=torch.float64)
    got = _fwd_bwd(fn, inputs32, g.float())
    want = [torch.zeros_like(w) if w is None else w for w in _fwd_bwd_ref(ref, inputs64, g)]
    for name, a, b in zip(("y", "x", "w_down", "b_down", "w_up", "b_up", "scale", "gate"), got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        if b.numel():
            assert _rel(a, b) < 2e-5, (name, _rel(a, b))


def _fwd_bwd_ref(ref, inputs, g):
    out = ref(*inputs)
    return [out, *torch.autograd.grad(out, _diff(inputs), g, allow_unused=True)]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("counts", [None, [1000, 0, 24, 0]], ids=["uniform", "skewed"])
@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_low_precision_error_budget(dtype, counts, entry):
    """kernel error vs float64 ≤ 2× the error of the same PyTorch reference run in `dtype`, output and every gradient."""
    T, D, R, K = 1024, 256, 64, 4
    inputs64 = _inputs(T, D, R, K, counts=counts, dtype=torch.float64, requires_grad=True)
    lowp = [t if t is None or not t.is_floating_point() else t.detach().to(dtype).requires_grad_() for t in inputs64]
    fn, ref = ops.grouped_adapter, reference.grouped_adapter
    if entry == "sorted":
        (inputs64, _), (lowp, _) = _sorted(inputs64), _sorted(lowp)
        fn, ref = ops.grouped_adapter_sorted, reference.grouped_adapter_sorted
    g = torch.randn(T, D, device=DEV, dtype=torch.float64)
    truth = _fwd_bwd_ref(ref, inputs64, g)
    kernel = _fwd_bwd(fn, lowp, g.to(dtype))
    baseline = _fwd_bwd_ref(ref, lowp, g.to(dtype))
    for name, k, b, t in zip(("y", "x", "w_down", "b_down", "w_up", "b_up", "scale", "gate"), kernel, baseline, truth):
        t = torch.zeros_like(k, dtype=torch.float64) if t is None else t
        b = torch.zeros_like(k) if b is None else b
        assert k.dtype == dtype and torch.isfinite(k).all(), name
        err_k, err_b = _rel(k, t), _rel(b, t)
        assert err_k <= 2 * err_b + 1e-6, f"{name}: kernel {err_k:.3g} vs PyTorch {dtype} {err_b:.3g}"


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_small_sorted_equals_unsorted(dtype, case):
    """Same per-expert row order (stable sort) and the same GEMMs: bitwise equal outputs and gradients."""
    if dtype != torch.float32 and (case["D"] % 8 or case["R"] % 8):
        pytest.skip("needs D, R multiples of 8")
    inputs = _inputs(**case, dtype=dtype, requires_grad=True)
    sorted_inputs, perm = _sorted(inputs)
    g = torch.randn(case["T"], case["D"], device=DEV, dtype=dtype)
    y, *grads = _fwd_bwd(ops.grouped_adapter, inputs, g)
    ys, *grads_s = _fwd_bwd(ops.grouped_adapter_sorted, sorted_inputs, g[perm])
    assert torch.equal(ys, y[perm])
    assert torch.equal(grads_s[0], grads[0][perm])  # dx of the sorted rows
    for a, b in zip(grads_s[1:6], grads[1:6]):  # weights, biases, scale: same reduction order
        assert torch.equal(a, b)
    if case.get("gate", True):
        assert torch.equal(grads_s[6], grads[6][perm])


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_small_residual_accumulates(dtype, entry):
    inputs = _inputs(T=96, D=64, R=16, K=4, counts=[40, 0, 50, 6], dtype=dtype, requires_grad=True)
    fn = ops.grouped_adapter
    if entry == "sorted":
        inputs, _ = _sorted(inputs)
        fn = ops.grouped_adapter_sorted
    residual = torch.randn_like(inputs[0]).requires_grad_()
    out = fn(*inputs, residual=residual)
    plain = fn(*inputs)
    # the unsorted path adds the residual in float32 after rounding y, as the expectation does; the sorted path adds it
    # to the unrounded accumulator in the GEMM epilogue (one rounding less), so it matches within bf16 rounding
    tol = {} if dtype == torch.bfloat16 and entry == "sorted" else dict(rtol=0, atol=0)
    torch.testing.assert_close(out, (residual.float() + plain.float()).to(dtype), **tol)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [residual, *_diff(inputs)], g)
    assert torch.equal(grads[0], g)
    for a, b in zip(grads[1:], torch.autograd.grad(plain, _diff(inputs), g)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("gate", [True, False])
def test_small_gradcheck_float32(gate):
    """gradcheck on the float32 path (exact fp32 GEMMs); finite differences in float32 need loose tolerances."""
    x, ids, *params = _inputs(T=9, D=5, R=3, K=3, counts=[4, 0, 5], gate=gate)
    with torch.no_grad():
        params[1].add_(torch.sign(params[1]) * 0.5)  # keep pre-activations off the ReLU kink
    if not gate:
        params = params[:-1]
    args = [t.detach().requires_grad_() for t in (x, *params)]
    assert torch.autograd.gradcheck(
        lambda x, *p: ops.grouped_adapter(x, ids, *p), args, eps=1e-3, atol=5e-3, rtol=5e-3
    )
    (xs, offsets, *_), perm = _sorted([x, ids, *params, *([None] if not gate else [])])
    args_s = [xs.detach().requires_grad_(), *args[1:]]
    if gate:
        args_s[-1] = args[-1].detach()[perm].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, *p: ops.grouped_adapter_sorted(x, offsets, *p), args_s, eps=1e-3, atol=5e-3, rtol=5e-3
    )


@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_deterministic(entry):
    """No atomics, no split-K: 50 runs give bitwise identical outputs and gradients."""
    inputs = _inputs(T=4096, D=256, R=64, K=8, dtype=torch.bfloat16, requires_grad=True)
    fn = ops.grouped_adapter
    if entry == "sorted":
        inputs, _ = _sorted(inputs)
        inputs = [t if t is None or not t.is_floating_point() else t.detach().requires_grad_() for t in inputs]
        fn = ops.grouped_adapter_sorted
    g = torch.randn(4096, 256, device=DEV, dtype=torch.bfloat16)
    first = _fwd_bwd(fn, inputs, g)
    for _ in range(50):
        for a, b in zip(first, _fwd_bwd(fn, inputs, g)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_no_host_sync_and_graph_capture(entry):
    """Forward + backward run without a host synchronisation and replay from a CUDA graph on new data."""
    T, D, R, K = 512, 128, 64, 4
    inputs = _inputs(T, D, R, K, counts=[100, 0, 400, 12], dtype=torch.bfloat16, requires_grad=True)
    fn = ops.grouped_adapter
    if entry == "sorted":
        inputs, _ = _sorted(inputs)
        fn = ops.grouped_adapter_sorted
    inputs = [t if t is None or not t.is_floating_point() else t.detach().requires_grad_() for t in inputs]
    g = torch.randn(T, D, device=DEV, dtype=torch.bfloat16)

    def step():
        out = fn(*inputs)
        return [out, *torch.autograd.grad(out, _diff(inputs), g)]

    step()  # warm-up: per-device kernel attributes are set on the first call
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        for t in (inputs[0], g, inputs[2]):
            t.copy_(torch.randn_like(t))
        if entry == "unsorted":
            inputs[1].copy_(torch.randint(0, K, (T,), device=DEV))
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)


def _odd(t):
    """The values of t in a view 2 bytes (float16) past a 16-byte boundary: contiguous, misaligned."""
    flat = torch.empty(t.numel() + 1, device=t.device, dtype=t.dtype)
    out = flat[1:].view_as(t)
    out.copy_(t)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out


@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_small_unaligned_storage(entry):
    """x and grad_output in misaligned views (the unsorted path gathers them with vector loads that must fit their
    address) give the same bits as fresh tensors, forward and backward."""
    inputs = _inputs(T=33, D=64, R=16, K=3, dtype=torch.float16)
    if entry == "sorted":
        inputs, _ = _sorted(inputs)
    x, routing, *params = inputs
    name = "grouped_adapter" if entry == "unsorted" else "grouped_adapter_sorted"
    raw, backward = getattr(torch.ops.mome, name), getattr(torch.ops.mome, f"{name}_backward")
    y, h = raw(x, routing, *params)
    y_odd, h_odd = raw(_odd(x), routing, *params)
    assert torch.equal(y_odd, y) and torch.equal(h_odd, h)
    g = torch.randn_like(y)
    want = backward(g, x, routing, h, *params)
    got = backward(_odd(g), _odd(x), routing, _odd(h), *params)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    torch.cuda.synchronize()  # a misaligned access would surface here (and poison every later test)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_small_rank_zero(dtype, entry):
    """R = 0 (an empty bottleneck): y = gate·scale·b_up, the empty weights get empty gradients (no zero-block launch)."""
    inputs = _inputs(T=40, D=16, R=0, K=3, counts=[10, 0, 30], dtype=dtype, requires_grad=True)
    fn, ref = ops.grouped_adapter, reference.grouped_adapter
    if entry == "sorted":
        inputs, _ = _sorted(inputs)
        fn, ref = ops.grouped_adapter_sorted, reference.grouped_adapter_sorted
    assert ops.backend(fn.__name__, DEV, dtype) == "cuda-kernel"
    g = torch.randn(40, 16, device=DEV, dtype=dtype)
    got = _fwd_bwd(fn, inputs, g)
    want = _fwd_bwd_ref(ref, inputs, g)
    torch.cuda.synchronize()
    for name, a, b in zip(("y", "x", "w_down", "b_down", "w_up", "b_up", "scale", "gate"), got, want):
        b = torch.zeros_like(a) if b is None else b
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


_GRID_CAP = """
import sys, torch
from mome import ops
from tests.ops.cases import adapter_inputs
torch.manual_seed(0)
x, ids, *p = adapter_inputs(T=3001, D=64, R=16, K=4, counts=[1000, 0, 1990, 11])
leaves = [t.to("cuda", torch.bfloat16).requires_grad_() for t in (x, *p)]
ids = ids.cuda()
y = ops.grouped_adapter(leaves[0], ids, *leaves[1:])
grads = torch.autograd.grad(y, leaves, torch.ones_like(y))
torch.save([t.cpu() for t in (y, *grads)], sys.argv[1])
"""


def test_small_grid_stride_loops_under_a_small_grid_cap(tmp_path):
    """The row kernels are grid-stride loops under a capped grid (65535·8 blocks; past 4,194,240 rows the backward row
    kernel used to leave rows unwritten). MOME_CUDA_MAX_BLOCKS=1 and 3 make every loop stride many times over 3001
    rows: the results must be the bits of the uncapped run."""
    results = {}
    for cap in ("", "1", "3"):
        path = tmp_path / f"cap{cap or 'none'}.pt"
        env = {**os.environ, "MOME_CUDA_MAX_BLOCKS": cap, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.run([sys.executable, "-c", _GRID_CAP, str(path)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        results[cap] = torch.load(path)
    for cap in ("1", "3"):
        for a, b in zip(results[cap], results[""]):
            assert torch.equal(a, b), cap


def test_small_expert_limit_falls_back():
    """K ≥ 4096 is beyond the kernel (checked there with a message); mome.ops runs the reference instead."""
    x, ids, *p = _inputs(T=24, D=16, R=8, K=4096, dtype=torch.bfloat16)
    torch.testing.assert_close(ops.grouped_adapter(x, ids, *p), reference.grouped_adapter(x, ids, *p))
    with pytest.raises(ValueError, match="4096 experts"):
        torch.ops.mome.grouped_adapter(x, ids, *p)


def test_small_misaligned_sizes_fall_back_or_raise():
    """float16/bfloat16 need D, R multiples of 8: mome.ops runs the reference; the raw op names the argument."""
    x, ids, wd, bd, wu, bu, s, g = _inputs(T=20, D=12, R=8, K=2, dtype=torch.bfloat16)
    torch.testing.assert_close(ops.grouped_adapter(x, ids, wd, bd, wu, bu, s, g),
                               reference.grouped_adapter(x, ids, wd, bd, wu, bu, s, g))
    with pytest.raises(ValueError, match=r"x\.size\(1\)"):
        torch.ops.mome.grouped_adapter(x, ids, wd, bd, wu, bu, s, g)
    x, ids, wd, bd, wu, bu, s, g = _inputs(T=20, D=16, R=6, K=2, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"w_down\.size\(2\)"):
        torch.ops.mome.grouped_adapter(x, ids, wd, bd, wu, bu, s, g)
    # float64 on CUDA runs the reference
    x, ids, *p = _inputs(T=20, D=12, R=5, K=2, dtype=torch.float64)
    assert ops.backend("grouped_adapter", DEV, torch.float64) in ("cuda-kernel", "reference")
    torch.testing.assert_close(ops.grouped_adapter(x, ids, *p), reference.grouped_adapter(x, ids, *p))


def test_small_opcheck():
    inputs = _inputs(T=40, D=16, R=8, K=3, counts=[10, 0, 30], requires_grad=True)
    x, ids, wd, bd, wu, bu, s, g = inputs
    torch.library.opcheck(torch.ops.mome.grouped_adapter.default, (x, ids, wd, bd, wu, bu, s, g))
    (xs, off, *rest), _ = _sorted(inputs)
    xs = xs.detach().requires_grad_()
    torch.library.opcheck(torch.ops.mome.grouped_adapter_sorted.default, (xs, off, *rest[:-1], None, torch.randn_like(xs)))
    y, h = torch.ops.mome.grouped_adapter(x, ids, wd, bd, wu, bu, s, g)
    detached = [t.detach() for t in (x, ids, h, wd, bd, wu, bu, s, g)]
    torch.library.opcheck(torch.ops.mome.grouped_adapter_backward.default, (torch.randn_like(y.detach()), *detached))


_BAD_IDS = """
import torch
from mome import ops
x = torch.randn(64, 16, device="cuda")
ids = torch.zeros(64, dtype=torch.int64, device="cuda"); ids[5] = 7
p = [torch.randn(2, 16, 8), torch.randn(2, 8), torch.randn(2, 8, 16), torch.randn(2, 16), torch.ones(2)]
y = ops.grouped_adapter(x, ids, *[t.cuda() for t in p])
torch.cuda.synchronize()
print("NO ERROR", torch.isnan(y[5]).all().item())
"""


def test_out_of_range_expert_id_trips_device_assert():
    """Ids are not read on the host (no sync); an id outside [0, K) trips a device-side assertion (in a subprocess:
    it poisons the CUDA context). Builds with assertions compiled out give NaN rows instead."""
    proc = subprocess.run([sys.executable, "-c", _BAD_IDS], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and ("assert" in text.lower()), text[-2000:]
