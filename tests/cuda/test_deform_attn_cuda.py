"""mome.ops.deform_attn's CUDA kernels against the PyTorch reference: float64 parity and gradcheck, a low-precision
error budget, awkward shapes, head dims 96/128/176, opcheck, CUDA-graph capture, determinism, guarded reads, bad input.

Skipped (tests/cuda/conftest.py) without a GPU or without a CUDA build.
"""

import pytest
import torch

from mome import ops
from mome.ops import reference
from tests.ops.cases import deform_inputs, smooth_locations

DEV = "cuda"
LOW = (torch.float16, torch.bfloat16)

# Awkward layouts (as in tests/ops): prime maps, 1×N and N×1 maps, several levels, one query, 1–4 points, locations
# mostly outside the map; odd head dims take the scalar path, 96/128/176 the 16-byte-pack path.
CASES = [
    dict(shapes=[(16, 16)], B=2, Q=9, H=8, D=4, P=4),
    dict(shapes=[(7, 11)], B=1, Q=1, H=1, D=3, P=1),
    dict(shapes=[(1, 13)], B=2, Q=4, H=2, D=5, P=2),
    dict(shapes=[(13, 1)], B=2, Q=4, H=2, D=5, P=3),
    dict(shapes=[(5, 7), (3, 2), (1, 1)], B=2, Q=6, H=3, D=6, P=4),
    dict(shapes=[(35, 58)], B=1, Q=7, H=2, D=7, P=4),
    dict(shapes=[(4, 4)], B=2, Q=5, H=2, D=4, P=2, loc_range=(-1.5, 2.5)),
    dict(shapes=[(16, 16)], B=2, Q=17, H=3, D=176, P=4),
    dict(shapes=[(37, 37)], B=2, Q=17, H=2, D=128, P=4),
    dict(shapes=[(35, 58), (32, 32)], B=1, Q=23, H=2, D=96, P=3),
    dict(shapes=[(3, 3)], B=1, Q=200, H=1, D=66, P=4),  # many corners per grad_value row; 33 float64 packs > 32 lanes
]


def _case_id(c):
    return "x".join(f"{h}_{w}" for h, w in c["shapes"]) + f"-D{c['D']}"


def _grads(out, inputs, g, retain_graph=False):
    return torch.autograd.grad(out, [inputs[0], inputs[3], inputs[4]], g, retain_graph=retain_graph)


def _snap(loc):
    """Round locations to multiples of 2^-12 so that loc·w is exact in float32: the kernel's float32 pixel coordinate
    then equals the float64 truth's, and no point lands on the other side of a pixel line (where the bilinear
    gradient jumps) by rounding alone."""
    with torch.no_grad():
        loc.copy_((loc.double() * 4096).round() / 4096)
    return loc


def _rel(x, truth):
    """‖x − truth‖ / ‖truth‖ in float64 (norms, not max: a point on a pixel line may take the other one-sided slope)."""
    truth = truth.double()
    return ((x.double() - truth).norm() / truth.norm().clamp_min(1e-300)).item()


def test_kernels_are_used():
    # Guards every test below: they must run the CUDA kernels, not the reference against itself.
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert ops.backend("deform_attn", DEV, dtype) == "cuda-kernel", dtype


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference_fp64(case):
    inputs = deform_inputs(**case, device=DEV, requires_grad=True)
    out = ops.deform_attn(*inputs)
    expected = reference.deform_attn(*inputs)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), _grads(out, inputs, g),
                          _grads(expected, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_float32_locations_with_float64_values():
    value, shapes, starts, loc, attn = deform_inputs([(9, 13), (4, 5)], B=2, Q=11, H=4, D=24, P=4, device=DEV,
                                                     loc_dtype=torch.float32, requires_grad=True)
    out = ops.deform_attn(value, shapes, starts, loc, attn)
    loc64, attn64 = (loc.detach().double().requires_grad_(), attn.detach().double().requires_grad_())
    expected = reference.deform_attn(value, shapes, starts, loc64, attn64)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (value, loc, attn), g)
    want = torch.autograd.grad(expected, (value, loc64, attn64), g)
    assert got[1].dtype == got[2].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)


def test_gradcheck_over_seeds():
    # Locations in the smooth region (tests.ops.cases.smooth_locations): clamping them to (-0.1, 1.1) put points exactly
    # on the support's edge of the 5-wide map, where central differences give half the slope (~65 % of seeds failed).
    shapes = torch.tensor([[3, 5], [2, 2]], device=DEV)
    starts = torch.tensor([0, 15], device=DEV)
    for seed in range(20):
        torch.manual_seed(seed)
        value = torch.randn(1, 19, 2, 9, dtype=torch.float64, device=DEV, requires_grad=True)
        loc = smooth_locations(shapes, B=1, Q=2, H=2, P=2, device=DEV).requires_grad_()
        attn = torch.rand(1, 2, 2, 2, 2, dtype=torch.float64, device=DEV, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda v, l, a: ops.deform_attn(v, shapes, starts, l, a), (value, loc, attn), eps=1e-6, atol=1e-6
        ), seed


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("loc_dtype", ["same", torch.float32], ids=str)
@pytest.mark.parametrize(
    "shapes,D", [([(16, 16)], 176), ([(16, 16)], 128), ([(37, 37)], 128), ([(32, 32)], 96), ([(35, 58)], 96),
                 ([(20, 20), (10, 10), (5, 5)], 64)],
    ids=lambda x: str(x) if isinstance(x, int) else "x".join(f"{h}_{w}" for h, w in x),
)
def test_low_precision_error_budget(dtype, loc_dtype, shapes, D):
    # The kernel's error against a float64 truth (computed from the same rounded inputs) must be at most 2× the error
    # of the PyTorch reference run in the same low precision, for the output and every gradient.
    loc_dtype = dtype if loc_dtype == "same" else loc_dtype
    value, shapes_t, starts, loc, attn = deform_inputs(shapes, B=2, Q=64, H=8, D=D, P=4, device=DEV, dtype=dtype,
                                                       loc_dtype=loc_dtype)
    _snap(loc)
    g = torch.randn(2, 64, 8 * D, device=DEV, dtype=dtype)

    def run(fn, cast):
        leaves = [cast(t).detach().requires_grad_() for t in (value, loc, attn)]
        out = fn(leaves[0], shapes_t, starts, leaves[1], leaves[2])
        return (out, *torch.autograd.grad(out, leaves, cast(g)))

    truth = run(reference.deform_attn, lambda t: t.double())
    kernel = run(ops.deform_attn, lambda t: t)
    ref_lp = run(reference.deform_attn, lambda t: t)
    for name, k, r, t in zip(("output", "grad_value", "grad_loc", "grad_attn"), kernel, ref_lp, truth):
        assert k.dtype == r.dtype
        err_k, err_r = _rel(k, t), _rel(r, t)
        assert err_k <= 2 * err_r + 1e-6, f"{name}: kernel error {err_k:.3e} > 2 × reference error {err_r:.3e}"


@pytest.mark.parametrize("D", [96, 128, 176])
def test_head_dims_float32(D):
    inputs = deform_inputs([(16, 16), (7, 9)], B=2, Q=40, H=8, D=D, P=4, device=DEV, dtype=torch.float32)
    _snap(inputs[3])
    for t in (inputs[0], inputs[3], inputs[4]):
        t.requires_grad_()
    inputs64 = [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out = ops.deform_attn(*inputs)
    truth = reference.deform_attn(*inputs64)
    assert _rel(out, truth) < 1e-6
    g = torch.randn_like(out)
    for a, b in zip(_grads(out, inputs, g), _grads(truth, inputs64, g.double())):
        assert _rel(a, b) < 1e-5


def test_misaligned_value_takes_scalar_path():
    # A value 2 bytes off a 16-byte boundary runs the scalar path. The output and grad_value sum each channel in the
    # same order on both paths: bit-identical. grad_loc and grad_attn reduce a dot product over D across the lanes of
    # a group, whose split depends on the pack width (float32 sums in another order): equal within float32 rounding.
    value, shapes, starts, loc, attn = deform_inputs([(16, 16)], B=2, Q=30, H=4, D=128, P=4, device=DEV,
                                                     dtype=torch.bfloat16, loc_dtype=torch.float32)
    flat = torch.empty(value.numel() + 1, device=DEV, dtype=value.dtype)
    shifted = flat[1:].view_as(value)  # contiguous, but 2 bytes off a 16-byte boundary
    shifted.copy_(value)
    assert shifted.is_contiguous() and shifted.data_ptr() % 16 != 0
    out = torch.ops.mome.deform_attn(value, shapes, starts, loc, attn)
    out_shifted = torch.ops.mome.deform_attn(shifted, shapes, starts, loc, attn)
    assert torch.equal(out, out_shifted)
    g = torch.randn_like(out)
    gv, gl, ga = torch.ops.mome.deform_attn_backward(g, value, shapes, starts, loc, attn)
    gv_s, gl_s, ga_s = torch.ops.mome.deform_attn_backward(g, shifted, shapes, starts, loc, attn)
    assert torch.equal(gv, gv_s)
    for name, a, b in (("grad_loc", gl, gl_s), ("grad_attn", ga, ga_s)):
        assert a.dtype == torch.float32
        assert _rel(b, a) < 1e-5, (name, _rel(b, a))


def test_non_contiguous_inputs():
    value, shapes, starts, loc, attn = deform_inputs([(5, 6)], B=2, Q=4, H=2, D=8, P=2, device=DEV)
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)
    loc_nc = loc.transpose(1, 2).contiguous().transpose(1, 2)
    assert not value_nc.is_contiguous() and not loc_nc.is_contiguous()
    torch.testing.assert_close(
        ops.deform_attn(value_nc, shapes, starts, loc_nc, attn), reference.deform_attn(value, shapes, starts, loc, attn)
    )


def test_nonfinite_locations_read_zero():
    value, shapes, starts, loc, attn = deform_inputs([(4, 4)], B=1, Q=3, H=1, D=2, P=1, device=DEV)
    loc[0, 0] = float("nan")
    loc[0, 1] = float("inf")
    loc[0, 2] = 1e30
    out = ops.deform_attn(value, shapes, starts, loc, attn)
    assert torch.equal(out, torch.zeros_like(out))
    grads = torch.ops.mome.deform_attn_backward(torch.ones_like(out), value, shapes, starts, loc, attn)
    for g in grads:
        assert torch.equal(g, torch.zeros_like(g))


def test_empty_inputs():
    for kw in (dict(Q=0), dict(P=0)):
        value, shapes, starts, loc, attn = deform_inputs([(4, 4)], B=2, H=2, D=8, device=DEV, **{"Q": 3, "P": 2, **kw})
        out = torch.ops.mome.deform_attn(value, shapes, starts, loc, attn)
        assert torch.equal(out, torch.zeros_like(out))
        gv, gl, ga = torch.ops.mome.deform_attn_backward(torch.randn_like(out), value, shapes, starts, loc, attn)
        assert torch.equal(gv, torch.zeros_like(value)) and gl.shape == loc.shape and ga.shape == attn.shape


def test_inconsistent_layout_never_reads_out_of_bounds():
    # The kernels cannot check spatial_shapes / level_start_index against S without a host sync; they guard every read
    # instead. A 4×8 map declared over 16 positions: rows 2–3 lie past the end of value and must read zero, i.e. behave
    # like the reference on value padded with zeros. (compute-sanitizer memcheck over this test proves no stray read.)
    value, _, _, loc, attn = deform_inputs([(4, 4)], B=2, Q=9, H=2, D=8, P=4, device=DEV)
    shapes = torch.tensor([[4, 8]], device=DEV)
    starts = torch.zeros(1, dtype=torch.int64, device=DEV)
    padded = torch.cat([value, torch.zeros_like(value)], 1).requires_grad_()
    leaves = [t.detach().clone().requires_grad_() for t in (loc, attn)]
    expected = reference.deform_attn(padded, shapes, starts, *leaves)
    out = torch.ops.mome.deform_attn(value, shapes, starts, loc, attn)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    want = torch.autograd.grad(expected, [padded, *leaves], g)
    got = torch.ops.mome.deform_attn_backward(g, value, shapes, starts, loc, attn)
    torch.testing.assert_close(got[0], want[0][:, :16], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[2], want[2], rtol=1e-10, atol=1e-10)
    # Levels that cannot lie inside value read zeros: oversized, empty, negative start, start past S.
    for hw, start in (((100, 100), 0), ((0, 4), 0), ((4, 4), -3), ((4, 4), 17)):
        shapes = torch.tensor([hw], device=DEV)
        starts = torch.tensor([start], device=DEV)
        out = torch.ops.mome.deform_attn(value, shapes, starts, loc, attn)
        assert torch.equal(out, torch.zeros_like(out)), (hw, start)
        for grad in torch.ops.mome.deform_attn_backward(g, value, shapes, starts, loc, attn):
            assert torch.equal(grad, torch.zeros_like(grad)), (hw, start)
    torch.cuda.synchronize()


def test_opcheck():
    value, shapes, starts, loc, attn = deform_inputs([(4, 5), (2, 3)], B=2, Q=3, H=2, D=8, P=2, device=DEV,
                                                     requires_grad=True)
    torch.library.opcheck(torch.ops.mome.deform_attn.default, (value, shapes, starts, loc, attn))
    grad = torch.randn(2, 3, 16, dtype=torch.float64, device=DEV)
    torch.library.opcheck(torch.ops.mome.deform_attn_backward.default,
                          (grad, value.detach(), shapes, starts, loc.detach(), attn.detach()))
    # bf16 values with float32 locations and weights
    v16, shapes, starts, l32, a32 = deform_inputs([(6, 6)], B=1, Q=4, H=2, D=16, P=2, device=DEV,
                                                  dtype=torch.bfloat16, loc_dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.mome.deform_attn.default, (v16, shapes, starts, l32, a32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_is_deterministic(dtype):
    # A small map and many queries: each grad_value row gathers hundreds of corners, the case where atomics would
    # give different bits from run to run.
    inputs = deform_inputs([(8, 8), (3, 5)], B=2, Q=300, H=8, D=128, P=4, device=DEV, dtype=dtype,
                           loc_dtype=torch.float32, requires_grad=True)
    out = ops.deform_attn(*inputs)
    g = torch.randn_like(out)
    first = _grads(out, inputs, g, retain_graph=True)
    for _ in range(50):
        again = _grads(out, inputs, g, retain_graph=True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_deterministic_algorithms_mode_runs():
    # The backward has no atomics, so the deterministic mode must not raise or change anything.
    inputs = deform_inputs([(6, 6)], B=1, Q=20, H=2, D=32, P=4, device=DEV, dtype=torch.float32, requires_grad=True)
    out = ops.deform_attn(*inputs)
    g = torch.randn_like(out)
    free = _grads(out, inputs, g)
    mode = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        strict = _grads(ops.deform_attn(*inputs), inputs, g)
    finally:
        torch.use_deterministic_algorithms(mode)
    for a, b in zip(free, strict):
        assert torch.equal(a, b)


@pytest.mark.parametrize("through", ["raw_ops", "autograd"])
def test_cuda_graph_capture_matches_eager(through):
    value, shapes, starts, loc, attn = deform_inputs([(16, 16), (8, 8)], B=2, Q=32, H=4, D=96, P=4, device=DEV,
                                                     dtype=torch.bfloat16, loc_dtype=torch.float32,
                                                     requires_grad=(through == "autograd"))
    g = torch.randn(2, 32, 4 * 96, device=DEV, dtype=torch.bfloat16)

    def step():
        if through == "raw_ops":
            out = torch.ops.mome.deform_attn(value, shapes, starts, loc, attn)
            return (out, *torch.ops.mome.deform_attn_backward(g, value, shapes, starts, loc, attn))
        out = ops.deform_attn(value, shapes, starts, loc, attn)
        return (out.detach(), *torch.autograd.grad(out, (value, loc, attn), g))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    # Fresh data in the captured input buffers: the replay must read it.
    fresh = deform_inputs([(16, 16), (8, 8)], B=2, Q=32, H=4, D=96, P=4, device=DEV, dtype=torch.bfloat16,
                          loc_dtype=torch.float32)
    with torch.no_grad():
        for t, new in ((value, fresh[0]), (loc, fresh[3]), (attn, fresh[4]), (g, torch.randn_like(g))):
            t.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_attn"), static, eager):
        assert torch.equal(a, b), name


def test_bad_input_names_the_argument():
    value, shapes, starts, loc, attn = deform_inputs([(4, 4)], B=1, Q=2, H=2, D=8, P=2, device=DEV,
                                                     dtype=torch.float32)
    raw = torch.ops.mome.deform_attn
    with pytest.raises((TypeError, RuntimeError), match="sampling_locations"):
        raw(value, shapes, starts, loc.half(), attn.half())  # half locations with float32 values
    with pytest.raises((ValueError, RuntimeError), match="sampling_locations"):
        raw(value, shapes, starts, loc.cpu(), attn)
    with pytest.raises((ValueError, RuntimeError), match="spatial_shapes"):
        raw(value, shapes.cpu(), starts, loc, attn)
    with pytest.raises((TypeError, RuntimeError), match="value"):
        raw(value.int(), shapes, starts, loc, attn)
    out = raw(value, shapes, starts, loc, attn)
    with pytest.raises((TypeError, RuntimeError), match="grad_output"):
        torch.ops.mome.deform_attn_backward(out.double(), value, shapes, starts, loc, attn)
    with pytest.raises((ValueError, RuntimeError), match="grad_output"):
        torch.ops.mome.deform_attn_backward(out[:, :1], value, shapes, starts, loc, attn)
    with pytest.raises((ValueError, RuntimeError), match="grad_output"):
        torch.ops.mome.deform_attn_backward(out.cpu(), value, shapes, starts, loc, attn)
