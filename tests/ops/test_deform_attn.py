"""mome.ops.deform_attn (CPU kernel) against its PyTorch reference, gradients, op registration, bad input."""

import pytest
import torch

from mome import ops
from mome.ops import reference
from tests.ops.cases import deform_inputs, smooth_locations

# Awkward layouts: prime maps, 1×N and N×1 maps, several levels, one query, one point, outside locations.
CASES = [
    dict(shapes=[(16, 16)], B=2, Q=9, H=8, D=4, P=4),
    dict(shapes=[(7, 11)], B=1, Q=1, H=1, D=3, P=1),
    dict(shapes=[(1, 13)], B=2, Q=4, H=2, D=5, P=2),
    dict(shapes=[(13, 1)], B=2, Q=4, H=2, D=5, P=3),
    dict(shapes=[(5, 7), (3, 2), (1, 1)], B=2, Q=6, H=3, D=6, P=4),
    dict(shapes=[(35, 58)], B=1, Q=7, H=2, D=7, P=4),
    dict(shapes=[(4, 4)], B=2, Q=5, H=2, D=4, P=2, loc_range=(-1.5, 2.5)),  # mostly outside the map
]


def test_kernel_is_compiled():
    # Guards every parity test below: they must exercise the C++ kernel, not the reference against itself.
    assert ops.IMPORT_ERROR is None, ops.IMPORT_ERROR
    assert ops.backend("deform_attn", "cpu", torch.float32) == "cpu-kernel"
    assert ops.backend("deform_attn", "cpu", torch.float64) == "cpu-kernel"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(f"{h}_{w}" for h, w in c["shapes"]))
def test_forward_backward_match_reference_fp64(case):
    inputs = deform_inputs(**case, requires_grad=True)
    out = ops.deform_attn(*inputs)
    expected = reference.deform_attn(*inputs)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    diff = [inputs[0], inputs[3], inputs[4]]
    got = torch.autograd.grad(out, diff, grad)
    want = torch.autograd.grad(expected, diff, grad)
    for name, g, w in zip(("value", "sampling_locations", "attention_weights"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_float32_within_budget():
    # float32 kernel vs float64 reference: the error must not exceed 2x that of the float32 reference
    # (plus a floor for sums that cancel), the budget used for every low-precision path.
    inputs64 = deform_inputs([(37, 37)], B=2, Q=64, H=8, D=32, P=4)
    inputs32 = [t.float() if t.is_floating_point() else t for t in inputs64]
    truth = reference.deform_attn(*inputs64)
    err_kernel = (ops.deform_attn(*inputs32).double() - truth).abs().max()
    err_ref = (reference.deform_attn(*inputs32).double() - truth).abs().max()
    assert err_kernel <= 2 * err_ref + 1e-6, (err_kernel, err_ref)


def test_gradcheck_over_seeds():
    # Locations in the smooth region (cases.smooth_locations), so gradcheck passes for every draw, not by seed luck:
    # clamping to (-0.1, 1.1) put x exactly on the edge u = -1 or u = w of the 5-wide map for ~65 % of seeds.
    shapes = torch.tensor([[3, 5], [2, 2]])
    starts = torch.tensor([0, 15])
    for seed in range(50):
        torch.manual_seed(seed)
        value = torch.randn(1, 19, 2, 2, dtype=torch.float64, requires_grad=True)
        loc = smooth_locations(shapes, B=1, Q=2, H=2, P=2).requires_grad_()
        attn = torch.rand(1, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda v, l, a: ops.deform_attn(v, shapes, starts, l, a), (value, loc, attn), eps=1e-6, atol=1e-6
        ), seed


def test_smooth_locations_cover_the_border():
    # The draw reaches the border cells that read one zero corner (-1 < u < 0 and w - 1 < u < w), never an edge or a
    # pixel line.
    shapes = torch.tensor([[3, 5], [2, 2]])
    loc = smooth_locations(shapes, B=4, Q=50, H=2, P=4)
    u = loc * shapes.flip(1).double()[:, None] - 0.5  # (..., Lv, P, 2) pixel coordinates
    w = shapes.flip(1).double()[:, None].expand_as(u)
    assert ((u > -1) & (u < w)).all()
    assert ((u - u.round()).abs() >= 0.05 - 1e-12).all()
    assert (u < 0).any() and (u > w - 1).any()


def test_opcheck():
    value, shapes, starts, loc, attn = deform_inputs([(4, 5), (2, 3)], B=2, Q=3, H=2, D=3, P=2, requires_grad=True)
    torch.library.opcheck(torch.ops.mome.deform_attn.default, (value, shapes, starts, loc, attn))
    grad = torch.randn(2, 3, 6, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.mome.deform_attn_backward.default,
        (grad, value.detach(), shapes, starts, loc.detach(), attn.detach()),
    )


def test_compile_matches_eager():
    inputs = deform_inputs([(6, 7)], B=2, Q=4, H=2, D=4, P=4, dtype=torch.float32, requires_grad=True)
    compiled = torch.compile(ops.deform_attn, backend="aot_eager", fullgraph=True)
    out_c = compiled(*inputs)
    out_e = ops.deform_attn(*inputs)
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0)
    g = torch.randn_like(out_e)
    diff = [inputs[0], inputs[3], inputs[4]]
    for a, b in zip(torch.autograd.grad(out_c, diff, g), torch.autograd.grad(out_e, diff, g)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_backward_is_deterministic_and_thread_independent():
    inputs = deform_inputs([(9, 9)], B=2, Q=50, H=4, D=8, P=4, dtype=torch.float32, requires_grad=True)
    diff = [inputs[0], inputs[3], inputs[4]]
    out = ops.deform_attn(*inputs)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, diff, g, retain_graph=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.autograd.grad(ops.deform_attn(*inputs), diff, g)
    finally:
        torch.set_num_threads(threads)
    for _ in range(5):
        again = torch.autograd.grad(out, diff, g, retain_graph=True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)
    for a, b in zip(first, single):
        assert torch.equal(a, b)


def test_non_contiguous_inputs():
    value, shapes, starts, loc, attn = deform_inputs([(5, 6)], B=2, Q=4, H=2, D=3, P=2)
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)
    loc_nc = loc.transpose(1, 2).contiguous().transpose(1, 2)
    assert not value_nc.is_contiguous() and not loc_nc.is_contiguous()
    torch.testing.assert_close(
        ops.deform_attn(value_nc, shapes, starts, loc_nc, attn), reference.deform_attn(value, shapes, starts, loc, attn)
    )


def test_nonfinite_locations_read_zero():
    value, shapes, starts, loc, attn = deform_inputs([(4, 4)], B=1, Q=3, H=1, D=2, P=1)
    loc[0, 0] = float("nan")
    loc[0, 1] = float("inf")
    loc[0, 2] = 1e30
    out = ops.deform_attn(value, shapes, starts, loc, attn)
    assert torch.equal(out, torch.zeros_like(out))


def test_low_precision_on_cpu_falls_back_to_reference():
    inputs = deform_inputs([(4, 4)], dtype=torch.bfloat16)
    assert ops.backend("deform_attn", "cpu", torch.bfloat16) == "reference"
    torch.testing.assert_close(ops.deform_attn(*inputs), reference.deform_attn(*inputs))


def test_int32_index_tensors_are_accepted():
    value, shapes, starts, loc, attn = deform_inputs([(3, 4), (2, 2)])
    torch.testing.assert_close(
        ops.deform_attn(value, shapes.int(), starts.int(), loc, attn), reference.deform_attn(value, shapes, starts, loc, attn)
    )


def _bad_cases():
    v, s, i, l, a = deform_inputs([(3, 4), (2, 2)], B=2, Q=3, H=2, D=4, P=2)
    return [
        ("value", (v[0], s, i, l, a), ValueError),
        ("value", (v.int(), s, i, l, a), TypeError),
        ("spatial_shapes", (v, s.double(), i, l, a), TypeError),
        ("spatial_shapes", (v, s[:, :1], i, l, a), ValueError),
        ("spatial_shapes", (v, s.flip(0), i, l, a), ValueError),  # inconsistent with S and starts
        ("level_start_index", (v, s, i.float(), l, a), TypeError),
        ("level_start_index", (v, s, i + 1, l, a), ValueError),
        ("level_start_index", (v, s, i[:1], l, a), ValueError),
        ("value.shape[1]", (v[:, :-1], s, i, l, a), ValueError),
        ("sampling_locations", (v, s, i, l[..., :1], a), ValueError),
        ("sampling_locations", (v, s, i, l[:1], a), ValueError),
        ("sampling_locations", (v, s, i, l[:, :, :1], a), ValueError),
        ("attention_weights", (v, s, i, l, a[..., :1]), ValueError),
        ("attention_weights", (v, s, i, l, a.float()), TypeError),
        ("value", ("not a tensor", s, i, l, a), TypeError),
    ]


@pytest.mark.parametrize("name,args,exc", _bad_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_names_the_argument(name, args, exc):
    with pytest.raises(exc, match=name.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        ops.deform_attn(*args)


@pytest.mark.parametrize("name,args,exc", _bad_cases()[:-1], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_to_raw_op_names_the_argument(name, args, exc):
    # The C++ binding checks too (for callers of torch.ops.mome.* directly); int32 indices are not converted there.
    pattern = name.replace(".", r"(\.|\.size\()").replace("shape[1]", "").replace("[", r"\[").replace("]", r"\]")
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        torch.ops.mome.deform_attn(*args)


def test_inconsistent_layout_raises_on_cpu_also_when_compiled():
    # The README's contract: a level_start_index inconsistent with spatial_shapes and S raises ValueError on the CPU,
    # in eager mode (the Python check) and under torch.compile (the C++ kernel reads the index tensors itself). On CUDA
    # the values are not read on the host; the kernels guard every read instead (tests/cuda).
    v, s, i, l, a = deform_inputs([(3, 4), (2, 2)], B=2, Q=3, H=2, D=4, P=2)
    compiled = torch.compile(ops.deform_attn, backend="aot_eager", fullgraph=True)
    for fn in (ops.deform_attn, compiled):
        with pytest.raises(ValueError, match="level_start_index"):
            fn(v, s, i + 1, l, a)
