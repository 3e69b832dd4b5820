"""Permuted-but-dense inputs (transposes of contiguous tensors): every kernel returns contiguous outputs, so every fake
(meta) implementation must too. A fake that copies an input's strides (`empty_like`) fails `opcheck` and makes
`torch.compile(fullgraph=True)` raise a stride assertion. The forward and backward op of every op, on the CPU kernels
(the fakes are device-independent).
"""

import pytest
import torch
import torch.nn.functional as F

from mome import ops
from tests.ops.cases import adapter_inputs, deform_inputs


def _permuted(t, perm):
    """The values of t, stored in the dim order `perm`: dense, not contiguous (for t with two dims > 1)."""
    inv = [perm.index(i) for i in range(t.dim())]
    out = t.detach().permute(perm).contiguous().permute(inv)
    assert torch.equal(out, t) and not out.is_contiguous()
    return out.requires_grad_(t.requires_grad)


def _deform_permuted():
    value, shapes, starts, loc, attn = deform_inputs([(4, 5), (2, 3)], B=2, Q=3, H=2, D=3, P=2, requires_grad=True)
    return (_permuted(value, [0, 2, 1, 3]), shapes, starts, _permuted(loc, [0, 2, 1, 3, 4, 5]),
            _permuted(attn, [0, 2, 1, 3, 4]))


def _router_permuted():
    features = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.softmax(torch.randn(2, 3, dtype=torch.float64), -1).requires_grad_()
    return _permuted(features, [1, 0, 2, 3]), _permuted(weights, [1, 0])


def _adapter_permuted(sorted_rows=False):
    x, ids, wd, bd, wu, bu, s, g = adapter_inputs(T=11, D=6, R=3, K=3, counts=[5, 0, 6], requires_grad=True)
    if sorted_rows:
        perm = torch.argsort(ids, stable=True)
        x, g = x.detach()[perm].requires_grad_(), g.detach()[perm].requires_grad_()
        ids = F.pad(torch.bincount(ids, minlength=3).cumsum(0), (1, 0))
    return (_permuted(x, [1, 0]), ids, _permuted(wd, [0, 2, 1]), _permuted(bd, [1, 0]), _permuted(wu, [0, 2, 1]),
            _permuted(bu, [1, 0]), s, g)


def test_fakes_are_contiguous_like_the_kernels():
    value, shapes, starts, loc, attn = _deform_permuted()
    grad = _permuted(torch.randn(2, 3, 6, dtype=torch.float64), [1, 0, 2])
    torch.library.opcheck(torch.ops.mome.deform_attn.default, (value, shapes, starts, loc, attn))
    torch.library.opcheck(torch.ops.mome.deform_attn_backward.default,
                          (grad, value.detach(), shapes, starts, loc.detach(), attn.detach()))

    features, weights = _router_permuted()
    torch.library.opcheck(torch.ops.mome.router_mix.default, (features, weights))
    grad = _permuted(torch.randn(2, 4, 5, dtype=torch.float64), [1, 0, 2])
    torch.library.opcheck(torch.ops.mome.router_mix_backward.default, (grad, features.detach(), weights.detach()))

    for name, sorted_rows in (("grouped_adapter", False), ("grouped_adapter_sorted", True)):
        x, routing, *params = _adapter_permuted(sorted_rows)
        residual = _permuted(torch.randn(11, 6, dtype=torch.float64), [1, 0])
        op = getattr(torch.ops.mome, name).default
        torch.library.opcheck(op, (x, routing, *params, residual))
        y, h = op(x, routing, *params)
        grad = _permuted(torch.randn(11, 6, dtype=torch.float64), [1, 0])
        detached = [t.detach() for t in (x, routing, h, *params)]
        torch.library.opcheck(getattr(torch.ops.mome, f"{name}_backward").default, (grad, *detached))


@pytest.mark.parametrize("op", ["deform_attn", "router_mix", "grouped_adapter", "grouped_adapter_sorted"])
def test_inductor_fullgraph_with_permuted_inputs(op):
    # inductor asserts every custom op's output strides against its fake (aot_eager does not).
    if op == "deform_attn":
        inputs = _deform_permuted()
    elif op == "router_mix":
        inputs = _router_permuted()
    else:
        inputs = _adapter_permuted(sorted_rows=op == "grouped_adapter_sorted")
    fn = getattr(ops, op)
    diff = [t for t in inputs if t.is_floating_point() and t.requires_grad]
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    g = torch.randn_like(fn(*inputs))
    # No on-disk caches: a graph compiled earlier (under another fake implementation) would be reused unchecked. The
    # backward graph is compiled lazily, inside autograd.grad.
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        out_c = compiled(*inputs)
        grads_c = torch.autograd.grad(out_c, diff, g)
    out_e = fn(*inputs)
    assert torch.equal(out_c, out_e)
    for a, b in zip(grads_c, torch.autograd.grad(out_e, diff, g)):
        assert torch.equal(a, b)
