"""mome.ops.router_mix's CUDA kernels against the PyTorch reference: float64 parity and gradcheck, a low-precision error
budget, opcheck, CUDA-graph capture, a deterministic weight gradient, bad input. Skipped without a GPU or CUDA build."""

import pytest
import torch

from mome import ops
from mome.ops import reference

DEV = "cuda"


def _inputs(N, B, L, D, dtype=torch.float64, requires_grad=False):
    features = torch.randn(N, B, L, D, dtype=dtype, device=DEV, requires_grad=requires_grad)
    weights = torch.softmax(torch.randn(B, N, dtype=torch.float64, device=DEV), -1).to(dtype)
    return features, weights.requires_grad_(requires_grad)


def _rel(x, truth):
    truth = truth.double()
    return ((x.double() - truth).norm() / truth.norm().clamp_min(1e-300)).item()


def test_kernels_are_used():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert ops.backend("router_mix", DEV, dtype) == "cuda-kernel", dtype


# (1, 1, 1, 1) and odd L·D take the scalar path; (3, 8, 576, 1024) has several backward blocks per sample.
@pytest.mark.parametrize("shape", [(3, 2, 16, 8), (1, 1, 1, 1), (2, 5, 7, 13), (4, 3, 256, 96), (3, 8, 576, 1024),
                                   (3, 0, 4, 4), (2, 3, 0, 8)], ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_fp64(shape):
    features, weights = _inputs(*shape, requires_grad=True)
    out = ops.router_mix(features, weights)
    expected = reference.router_mix(features, weights)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (features, weights), g),
                    torch.autograd.grad(expected, (features, weights), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradcheck_and_opcheck():
    features, weights = _inputs(3, 2, 4, 5, requires_grad=True)
    assert torch.autograd.gradcheck(ops.router_mix, (features, weights))
    torch.library.opcheck(torch.ops.mome.router_mix.default, (features, weights))
    torch.library.opcheck(torch.ops.mome.router_mix_backward.default,
                          (torch.randn(2, 4, 5, dtype=torch.float64, device=DEV), features.detach(), weights.detach()))
    f16, w16 = _inputs(3, 2, 8, 16, dtype=torch.bfloat16, requires_grad=True)
    torch.library.opcheck(torch.ops.mome.router_mix.default, (f16, w16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(3, 4, 576, 1024), (2, 3, 37, 37)], ids=lambda s: "x".join(map(str, s)))
def test_low_precision_error_budget(dtype, shape):
    features, weights = _inputs(*shape, dtype=dtype)
    g = torch.randn(shape[1], shape[2], shape[3], device=DEV, dtype=dtype)

    def run(fn, cast):
        leaves = [cast(t).detach().requires_grad_() for t in (features, weights)]
        out = fn(*leaves)
        return (out, *torch.autograd.grad(out, leaves, cast(g)))

    truth = run(reference.router_mix, lambda t: t.double())
    kernel = run(ops.router_mix, lambda t: t)
    ref_lp = run(reference.router_mix, lambda t: t)
    for name, k, r, t in zip(("output", "grad_features", "grad_weights"), kernel, ref_lp, truth):
        err_k, err_r = _rel(k, t), _rel(r, t)
        assert err_k <= 2 * err_r + 1e-6, f"{name}: kernel error {err_k:.3e} > 2 × reference error {err_r:.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_weight_gradient_is_deterministic(dtype):
    features, weights = _inputs(4, 8, 576, 1024, dtype=dtype, requires_grad=True)
    out = ops.router_mix(features, weights)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, (features, weights), g, retain_graph=True)
    for _ in range(50):
        again = torch.autograd.grad(out, (features, weights), g, retain_graph=True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_misaligned_input_gives_the_same_bits(dtype):
    # The backward's reduction order depends on the shape alone: a features / grad_output view off a 16-byte boundary
    # reads the same packs element by element, so grad_weights (and everything else) is bit-identical.
    features, weights = _inputs(3, 4, 37, 512, dtype=dtype)  # 2 (bf16) or 3 (float32) backward blocks per sample
    g = torch.randn(4, 37, 512, device=DEV, dtype=dtype)

    def odd(t):
        flat = torch.empty(t.numel() + 1, device=DEV, dtype=t.dtype)
        out = flat[1:].view_as(t)
        out.copy_(t)
        assert out.data_ptr() % 16 != 0
        return out

    out = torch.ops.mome.router_mix(features, weights)
    assert torch.equal(torch.ops.mome.router_mix(odd(features), weights), out)
    want = torch.ops.mome.router_mix_backward(g, features, weights)
    got = torch.ops.mome.router_mix_backward(odd(g), odd(features), weights)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_one_hot_weights_select_one_expert():
    features, _ = _inputs(3, 4, 5, 8, dtype=torch.bfloat16)
    weights = torch.nn.functional.one_hot(torch.tensor([2, 0, 1, 2], device=DEV), 3).bfloat16()
    out = ops.router_mix(features, weights)
    for b, n in enumerate([2, 0, 1, 2]):
        assert torch.equal(out[b], features[n, b])


def test_cuda_graph_capture_matches_eager():
    features, weights = _inputs(3, 4, 64, 96, dtype=torch.bfloat16)
    g = torch.randn(4, 64, 96, device=DEV, dtype=torch.bfloat16)

    def step():
        out = torch.ops.mome.router_mix(features, weights)
        return (out, *torch.ops.mome.router_mix_backward(g, features, weights))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    f2, w2 = _inputs(3, 4, 64, 96, dtype=torch.bfloat16)
    features.copy_(f2)
    weights.copy_(w2)
    g.copy_(torch.randn_like(g))
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(static, step()):
        assert torch.equal(a, b)


def test_bad_input_names_the_argument():
    features, weights = _inputs(3, 2, 4, 8, dtype=torch.float32)
    with pytest.raises((TypeError, RuntimeError), match="weights"):
        torch.ops.mome.router_mix(features, weights.double())
    with pytest.raises((ValueError, RuntimeError), match="weights"):
        torch.ops.mome.router_mix(features, weights.cpu())
    with pytest.raises((TypeError, RuntimeError), match="features"):
        torch.ops.mome.router_mix(features.int(), weights)
    out = torch.ops.mome.router_mix(features, weights)
    with pytest.raises((TypeError, RuntimeError), match="grad_output"):
        torch.ops.mome.router_mix_backward(out.half(), features, weights)
    with pytest.raises((ValueError, RuntimeError), match="grad_output"):
        torch.ops.mome.router_mix_backward(out[:1], features, weights)
