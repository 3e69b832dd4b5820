"""Seeded input builders shared by the op tests (CPU here; the CUDA tests reuse them with device=...)."""

from __future__ import annotations

import torch


def deform_inputs(
    shapes,
    B=2,
    Q=5,
    H=3,
    D=4,
    P=4,
    dtype=torch.float64,
    device="cpu",
    loc_range=(-0.2, 1.2),
    requires_grad=False,
    loc_dtype=None,
):
    """Inputs of deform_attn for levels of the given (h, w) shapes; locations uniform in loc_range."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64, device=device).view(-1, 2)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S = int(areas.sum())
    Lv = len(shapes)
    loc_dtype = loc_dtype or dtype
    lo, hi = loc_range
    value = torch.randn(B, S, H, D, dtype=dtype, device=device)
    loc = torch.rand(B, Q, H, Lv, P, 2, dtype=loc_dtype, device=device) * (hi - lo) + lo
    attn = torch.rand(B, Q, H, Lv, P, dtype=loc_dtype, device=device)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    if requires_grad:
        for t in (value, loc, attn):
            t.requires_grad_()
    return value, spatial_shapes, level_start_index, loc, attn


def smooth_locations(spatial_shapes, B, Q, H, P, dtype=torch.float64, device="cpu", margin=0.05):
    """Sampling locations (B, Q, H, Lv, P, 2) where bilinear sampling is differentiable, for gradcheck.

    The pixel coordinate u = loc·w − 0.5 (x; y with h) is kinked where a corner crosses a pixel line (u an integer) and
    at the edges of the support (u = −1 and u = w), where a point starts reading zeros: central differences there give
    half the slope. Each u is drawn in (−1, w) at least `margin` pixels from every integer, so border points that read
    one or two zero corners are covered but no kink is within a finite-difference step.
    """
    Lv = spatial_shapes.shape[0]
    sizes = spatial_shapes.flip(1).to(torch.float64).cpu()  # (Lv, 2) rows (w, h), matching (x, y)
    cells = torch.floor(torch.rand(B, Q, H, Lv, P, 2, dtype=torch.float64) * (sizes[:, None] + 1)) - 1  # in [-1, w - 1]
    frac = margin + torch.rand(B, Q, H, Lv, P, 2, dtype=torch.float64) * (1 - 2 * margin)
    loc = (cells + frac + 0.5) / sizes[:, None]
    return loc.to(device=device, dtype=dtype)


def adapter_inputs(T, D, R, K, counts=None, gate=True, dtype=torch.float64, device="cpu", requires_grad=False):
    """Inputs of grouped_adapter; `counts` fixes the rows per expert (shuffled), else ids are uniform."""
    if counts is not None:
        assert sum(counts) == T and len(counts) == K
        ids = torch.cat([torch.full((c,), e, dtype=torch.int64) for e, c in enumerate(counts)])
        ids = ids[torch.randperm(T)].to(device)
    else:
        ids = torch.randint(0, K, (T,), device=device)
    x = torch.randn(T, D, dtype=dtype, device=device)
    w_down = torch.randn(K, D, R, dtype=dtype, device=device) / D**0.5
    b_down = torch.randn(K, R, dtype=dtype, device=device) * 0.1
    w_up = torch.randn(K, R, D, dtype=dtype, device=device) / R**0.5
    b_up = torch.randn(K, D, dtype=dtype, device=device) * 0.1
    scale = torch.rand(K, dtype=dtype, device=device) + 0.5
    g = torch.rand(T, dtype=dtype, device=device) if gate else None
    tensors = [x, w_down, b_down, w_up, b_up, scale] + ([g] if gate else [])
    if requires_grad:
        for t in tensors:
            t.requires_grad_()
    return x, ids, w_down, b_down, w_up, b_up, scale, g
