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
    if weights.dtype == features.dtype and _library.uses_kernel("router_mix", features.device, features.dtype):
        return torch.ops.mome.router_mix(features, weights)
    return reference.router_mix(features, weights)


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
