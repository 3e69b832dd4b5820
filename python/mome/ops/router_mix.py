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
    _checks.tensor("features", features, 4, "(N, B, L, D)")
    _checks.tensor("weights", weights, 2, "(B, N)")
    _checks.floating("features", features)
    _checks.floating("weights", weights)
    _checks.size("weights", weights, 0, features.shape[1], "the batch size features.shape[1]")
    _checks.size("weights", weights, 1, features.shape[0], "the number of experts features.shape[0]")
    _checks.same_device("weights", weights, "features", features)
    kernel_ok = weights.dtype == features.dtype and _library.uses_kernel("router_mix", features.device, features.dtype)
    if kernel_ok and features.device.type == "cuda":
        needs_backward = torch.is_grad_enabled() and (features.requires_grad or weights.requires_grad)
        kernel_ok = not cuda_unsupported(features.shape, needs_backward)
    if kernel_ok:
        return torch.ops.mome.router_mix(features, weights)
    return reference.router_mix(features, weights)


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
