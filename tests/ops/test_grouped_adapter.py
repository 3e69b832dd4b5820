"""mome.ops.grouped_adapter (CPU kernel) against its PyTorch reference, gradients, op registration, bad input."""

import pytest
import torch

from mome import ops
from mome.ops import reference
from tests.ops.cases import adapter_inputs

NAMES = ("x", "w_down", "b_down", "w_up", "b_up", "scale", "gate")


def _dense(x, ids, w_down, b_down, w_up, b_up, scale, gate=None):
    """An independent formulation (per-row gathered weights, batched matmul) to check the reference itself."""
    h = torch.relu(torch.bmm(x.unsqueeze(1), w_down[ids]).squeeze(1) + b_down[ids])
    u = torch.bmm(h.unsqueeze(1), w_up[ids]).squeeze(1) + b_up[ids]
    c = scale[ids] * (gate if gate is not None else 1)
    return c.unsqueeze(1) * u


def _diff_args(inputs):
    x, ids, wd, bd, wu, bu, s, g = inputs
    return [x, wd, bd, wu, bu, s] + ([g] if g is not None else [])


def test_kernel_is_compiled():
    assert ops.backend("grouped_adapter", "cpu", torch.float32) == "cpu-kernel"


CASES = [
    dict(T=37, D=12, R=5, K=3),
    dict(T=1, D=7, R=3, K=1),  # one token, one expert
    dict(T=1, D=7, R=3, K=4),  # one token, three empty experts
    dict(T=40, D=9, R=4, K=4, counts=[0, 37, 0, 3]),  # empty and very uneven groups
    dict(T=30, D=8, R=4, K=8, counts=[30, 0, 0, 0, 0, 0, 0, 0]),
    dict(T=25, D=6, R=2, K=2, gate=False),
    dict(T=0, D=6, R=2, K=2),  # no tokens at all
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_matches_reference_fp64(case):
    inputs = adapter_inputs(**case, requires_grad=True)
    out = ops.grouped_adapter(*inputs)
    expected = reference.grouped_adapter(*inputs)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(expected, _dense(*inputs), rtol=1e-12, atol=1e-12)
    diff = _diff_args(inputs)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, diff, g, allow_unused=True)
    want = torch.autograd.grad(expected, diff, g, allow_unused=True)
    for name, a, b in zip(NAMES, got, want):
        b = torch.zeros_like(a) if b is None else b  # the reference leaves unused experts' grads undefined
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_empty_expert_gets_zero_weight_grads():
    x, ids, wd, bd, wu, bu, s, g = adapter_inputs(T=10, D=4, R=3, K=3, counts=[6, 0, 4], requires_grad=True)
    ops.grouped_adapter(x, ids, wd, bd, wu, bu, s, g).sum().backward()
    for p in (wd, bd, wu, bu):
        assert torch.equal(p.grad[1], torch.zeros_like(p.grad[1]))
        assert p.grad[0].abs().sum() > 0
    assert s.grad[1] == 0


def test_float32_within_budget():
    inputs64 = adapter_inputs(T=512, D=256, R=64, K=4)
    inputs32 = [t.float() if t is not None and t.is_floating_point() else t for t in inputs64]
    truth = reference.grouped_adapter(*inputs64)
    err_kernel = (ops.grouped_adapter(*inputs32).double() - truth).abs().max()
    err_ref = (reference.grouped_adapter(*inputs32).double() - truth).abs().max()
    assert err_kernel <= 2 * err_ref + 1e-6


@pytest.mark.parametrize("gate", [True, False])
def test_gradcheck(gate):
    x, ids, *params = adapter_inputs(T=9, D=5, R=3, K=3, counts=[4, 0, 5], gate=gate, requires_grad=True)
    # keep pre-activations away from the ReLU kink, where the gradient is not defined
    with torch.no_grad():
        params[1].add_(torch.sign(params[1]) * 0.5)
    if not gate:
        params = params[:-1]
    assert torch.autograd.gradcheck(lambda x, *p: ops.grouped_adapter(x, ids, *p), (x, *params))


def test_opcheck():
    x, ids, wd, bd, wu, bu, s, g = adapter_inputs(T=11, D=6, R=3, K=3, requires_grad=True)
    torch.library.opcheck(torch.ops.mome.grouped_adapter.default, (x, ids, wd, bd, wu, bu, s, g))
    torch.library.opcheck(torch.ops.mome.grouped_adapter.default, (x, ids, wd, bd, wu, bu, s, None))
    y, h = torch.ops.mome.grouped_adapter(x, ids, wd, bd, wu, bu, s, g)
    detached = [t.detach() for t in (x, ids, h, wd, bd, wu, bu, s, g)]
    torch.library.opcheck(torch.ops.mome.grouped_adapter_backward.default, (torch.randn_like(y.detach()), *detached))


def test_compile_matches_eager():
    inputs = adapter_inputs(T=16, D=8, R=4, K=3, dtype=torch.float32, requires_grad=True)
    compiled = torch.compile(ops.grouped_adapter, backend="aot_eager", fullgraph=True)
    out_c, out_e = compiled(*inputs), ops.grouped_adapter(*inputs)
    assert torch.equal(out_c, out_e)
    g = torch.randn_like(out_e)
    diff = _diff_args(inputs)
    for a, b in zip(torch.autograd.grad(out_c, diff, g), torch.autograd.grad(out_e, diff, g)):
        assert torch.equal(a, b)


def test_deterministic_and_thread_independent():
    inputs = adapter_inputs(T=300, D=64, R=16, K=4, dtype=torch.float32, requires_grad=True)
    diff = _diff_args(inputs)
    out = ops.grouped_adapter(*inputs)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, diff, g, retain_graph=True)
    again = torch.autograd.grad(out, diff, g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out1 = ops.grouped_adapter(*inputs)
        single = torch.autograd.grad(out1, diff, g)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, out1)
    for a, b, c in zip(first, again, single):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_low_precision_on_cpu_falls_back_to_reference():
    inputs = adapter_inputs(T=12, D=8, R=4, K=2, dtype=torch.bfloat16)
    assert ops.backend("grouped_adapter", "cpu", torch.bfloat16) == "reference"
    torch.testing.assert_close(ops.grouped_adapter(*inputs), reference.grouped_adapter(*inputs))


def _bad_cases():
    x, ids, wd, bd, wu, bu, s, g = adapter_inputs(T=6, D=4, R=3, K=2)
    ok = dict(x=x, expert_ids=ids, w_down=wd, b_down=bd, w_up=wu, b_up=bu, scale=s, gate=g)

    def with_(**kw):
        return {**ok, **kw}

    return [
        ("expert_ids", with_(expert_ids=torch.tensor([0, 1, 2, 0, 1, 0])), ValueError),  # 2 >= K
        ("expert_ids", with_(expert_ids=torch.tensor([0, -1, 1, 0, 1, 0])), ValueError),
        ("expert_ids", with_(expert_ids=ids.double()), TypeError),
        ("expert_ids", with_(expert_ids=ids[:5]), ValueError),
        ("x", with_(x=x[0]), ValueError),
        ("x", with_(x=x.long()), TypeError),
        ("w_down", with_(w_down=wd[:, :3]), ValueError),
        ("w_down", with_(w_down=wd.float()), TypeError),
        ("b_down", with_(b_down=bd[:, :2]), ValueError),
        ("w_up", with_(w_up=wu[:1]), ValueError),
        ("w_up", with_(w_up=wu[:, :, :3]), ValueError),
        ("b_up", with_(b_up=bu[:, :2]), ValueError),
        ("scale", with_(scale=s[:1]), ValueError),
        ("scale", with_(scale=s.float()), TypeError),
        ("gate", with_(gate=g[:3]), ValueError),
        ("gate", with_(gate=g.float()), TypeError),
        ("w_down", with_(w_down=wd[:0], b_down=bd[:0], w_up=wu[:0], b_up=bu[:0], scale=s[:0]), ValueError),
    ]


@pytest.mark.parametrize("name,kwargs,exc", _bad_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_names_the_argument(name, kwargs, exc):
    with pytest.raises(exc, match=name):
        ops.grouped_adapter(**kwargs)


@pytest.mark.parametrize("name,kwargs,exc", _bad_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_to_raw_op_names_the_argument(name, kwargs, exc):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=name):
        torch.ops.mome.grouped_adapter(*kwargs.values())


@pytest.mark.parametrize("entry", ["unsorted", "sorted"])
def test_rank_zero(entry):
    # R = 0 (an empty bottleneck): y = gate · scale · b_up, gradients of the empty weights are empty, grad x is zero.
    # The contract the CUDA kernel keeps too (tests/cuda: test_small_rank_zero).
    x, ids, wd, bd, wu, bu, s, g = adapter_inputs(T=13, D=6, R=0, K=3, counts=[5, 0, 8], requires_grad=True)
    args = [x, ids, wd, bd, wu, bu, s, g]
    fn, ref = ops.grouped_adapter, reference.grouped_adapter
    if entry == "sorted":
        perm = torch.argsort(ids, stable=True)
        x_s, g_s = x[perm], g[perm]
        args = [x_s, torch.tensor([0, 5, 5, 13]), wd, bd, wu, bu, s, g_s]
        fn, ref = ops.grouped_adapter_sorted, reference.grouped_adapter_sorted
    out, expected = fn(*args), ref(*args)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, wd, bd, wu, bu, s, g], dy, retain_graph=True)
    assert torch.equal(grads[0], torch.zeros_like(x))
    for grad, p in zip(grads[1:4], (wd, bd, wu)):
        assert grad.shape == p.shape and grad.numel() == 0
    for a, b in zip(grads[4:], torch.autograd.grad(expected, [bu, s, g], dy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
