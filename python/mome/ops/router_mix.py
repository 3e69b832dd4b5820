"""`mome.ops.router_mix`: MoVE's soft-router aggregation ``out[b] = Σ_n weights[b, n] · features[n, b]``.

Dispatch, autograd and the fake implementation as in `mome.ops.deform_attn`.
"""

from __future__ import annotations

import torch

from mome.ops import _checks, _library, reference

__all__ = ["router_mix"]


def router_mix(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mix N experts' token sequences per sample with the soft router's weights.

    Args:
        features: (N, B, L, D), expert n's tokens for sample b.
        weights: (B, N), the router's probabilities (any real weights are accepted).

    Returns:
        (B, L, D). Differentiable in both arguments.
    """
    _check(features, weights)
    kernel_ok = weights.dtype == features.dtype and _library.uses_kernel("router_mix", features.device, features.dtype)
    if kernel_ok and features.device.type == "cuda":
        needs_backward = torch.is_grad_enabled() and (features.requires_grad or weights.requires_grad)
        kernel_ok = not cuda_unsupported(features.shape, needs_backward)
    if kernel_ok:
        return torch.ops.mome.router_mix(features, weights)
    return reference.router_mix(features, weights)


def _check(features, weights):
    """The arguments' ranks, dtype kinds, sizes and devices (the public op and the kernels)."""
    _checks.tensor("features", features, 4, "(N, B, L, D)")
    _checks.tensor("weights", weights, 2, "(B, N)")
    _checks.floating("features", features)
    _checks.floating("weights", weights)
    _checks.size("weights", weights, 0, features.shape[1], "the batch size features.shape[1]")
    _checks.size("weights", weights, 1, features.shape[0], "the number of experts features.shape[0]")
    _checks.same_device("weights", weights, "features", features)


def cuda_unsupported(features_shape, backward: bool = True) -> list[str]:
    """Why the CUDA kernels cannot take these sizes (empty: they can). Mirrors the checks of
    cpp/router_mix/router_mix_cuda.cu, so such inputs run the reference instead of raising there."""
    _, B, L, D = features_shape
    reasons = []
    if B * L * D > (2**31 - 1) * 256:  # one thread per element at worst (scalar path), 256 per block
        reasons.append(f"B·L·D = {B * L * D} elements is too many for one launch")
    if backward and B > 65535:
        reasons.append(f"batch size B = {B} (the backward's grid has B rows, at most 65535)")
    return reasons


# The kernels behind mome::router_mix: checks (for callers of torch.ops.mome.* too), outputs, then the launcher.

def _check_kernel(device_type, features, weights):
    fs, ws = features.shape, weights.shape
    if (len(fs) == 4 and len(ws) == 2 and ws[0] == fs[1] and ws[1] == fs[0] and weights.dtype == features.dtype
            and features.dtype in _library.KERNEL_DTYPES[device_type]["router_mix"]
            and features.get_device() == weights.get_device() and features.device.type == device_type):
        return  # the fast path of valid arguments; otherwise the checks below name what is wrong
    _check(features, weights)
    _checks.kernel_input("features", features, device_type, _library.KERNEL_DTYPES[device_type]["router_mix"])
    if weights.dtype != features.dtype:
        raise TypeError(f"weights must have dtype {features.dtype}, got {weights.dtype}")


def _check_grad(grad_output, features):
    _, B, L, D = features.shape
    _checks.tensor("grad_output", grad_output, 3, "(B, L, D)")
    if tuple(grad_output.shape) != (B, L, D):
        raise ValueError(f"grad_output must have shape ({B}, {L}, {D}), got {tuple(grad_output.shape)}")
    if grad_output.dtype != features.dtype:
        raise TypeError(f"grad_output must have dtype {features.dtype}, got {grad_output.dtype}")
    _checks.same_device("grad_output", grad_output, "features", features)


@_library.impl("router_mix", "cpu", "router_mix_forward_cpu")
def _forward_cpu(features, weights):
    _check_kernel("cpu", features, weights)
    N, B, L, D = features.shape
    f, w = features.contiguous(), weights.contiguous()
    out = f.new_empty(B, L, D)
    _library._C.router_mix_forward_cpu(_library.DTYPE_TAG[f.dtype], f.data_ptr(), w.data_ptr(), out.data_ptr(),
                                       N, B, L * D, torch.get_num_threads())
    return out


@_library.impl("router_mix_backward", "cpu", "router_mix_backward_cpu")
def _backward_cpu(grad_output, features, weights):
    _check_kernel("cpu", features, weights)
    _check_grad(grad_output, features)
    N, B, L, D = features.shape
    go, f, w = grad_output.contiguous(), features.contiguous(), weights.contiguous()
    grad_f, grad_w = torch.empty_like(f), torch.empty_like(w)
    _library._C.router_mix_backward_cpu(_library.DTYPE_TAG[f.dtype], go.data_ptr(), f.data_ptr(), w.data_ptr(),
                                        grad_f.data_ptr(), grad_w.data_ptr(), N, B, L * D, torch.get_num_threads())
    return grad_f, grad_w


@_library.impl("router_mix", "cuda", "router_mix_forward_cuda")
def _forward_cuda(features, weights):
    _check_kernel("cuda", features, weights)
    N, B, L, D = features.shape
    f, w = features.contiguous(), weights.contiguous()
    out = f.new_empty(B, L, D)
    if out.numel() == 0:
        return out
    _library._C.router_mix_forward_cuda(_library.DTYPE_TAG[f.dtype], f.data_ptr(), w.data_ptr(), out.data_ptr(),
                                        N, B, L * D, f.device.index, _library.cuda_stream(f.device))
    return out


@_library.impl("router_mix_backward", "cuda", "router_mix_backward_cuda")
def _backward_cuda(grad_output, features, weights):
    _check_kernel("cuda", features, weights)
    _check_grad(grad_output, features)
    N, B, L, D = features.shape
    go, f, w = grad_output.contiguous(), features.contiguous(), weights.contiguous()
    grad_f = torch.empty_like(f)
    if f.numel() == 0:  # L·D = 0: every dot product is empty
        return grad_f, torch.zeros_like(w)
    grad_w = torch.empty_like(w)
    tag = _library.DTYPE_TAG[f.dtype]
    workspace = torch.empty(_library._C.router_mix_backward_workspace_cuda(tag, N, B, L * D), dtype=torch.uint8,
                            device=f.device)
    _library._C.router_mix_backward_cuda(tag, go.data_ptr(), f.data_ptr(), w.data_ptr(), grad_f.data_ptr(),
                                         grad_w.data_ptr(), workspace.data_ptr(), workspace.numel(), N, B, L * D,
                                         f.device.index, _library.cuda_stream(f.device))
    return grad_f, grad_w


@_library.register_fake("router_mix")
def _(features, weights):
    _, B, L, D = features.shape
    return features.new_empty(B, L, D)


@_library.register_fake("router_mix_backward")
def _(grad_output, features, weights):
    # new_empty, not empty_like: the kernels return contiguous gradients whatever the inputs' strides.
    return features.new_empty(features.shape), weights.new_empty(weights.shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    features, weights = ctx.saved_tensors
    return torch.ops.mome.router_mix_backward(grad_output.contiguous(), features, weights)


_library.register_autograd("router_mix", _backward, _setup_context)
