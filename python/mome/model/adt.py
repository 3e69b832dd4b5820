"""ADT, the Adaptive Deformable Transformation of MoVE (paper §3.2; OFFICIAL.md § Architecture, "ADT"):

    f̂ = D^M(Pool(f), f)

`Pool` is a 2-D adaptive average pool of the encoder's h × w map to L = l × l query tokens; each of the M layers of
`D` is a post-norm Deformable-DETR decoder layer at the encoder's own width C, as the release builds it from
transformers' ``DeformableDetrDecoderLayer`` (8 heads, 4 points, one level, FFN width 1024 for any C, ReLU,
dropout 0.1):

    q = LN1(q + SelfAttn(q + pos, q + pos, q))                  pos: learnable (L, C) query position embeddings
    q = LN2(q + DeformCrossAttn(q + pos, f))
    q = LN3(q + fc2(ReLU(fc1(q))))

At init `SelfAttn`'s output projection, the cross-attention's output projection and fc2 are zero (every layer starts
as LN of its input), the position embeddings are zero and the learnable reference points are the release's grid
``meshgrid(linspace(0, 1, l), linspace(0, 1, l), indexing="ij")`` read as (x, y): query (i, j) — row i, column j of
the pooled grid — starts at x = i/(l−1), y = j/(l−1), i.e. transposed, with the corners half a pixel outside the map
under ``align_corners=False``. Training adjusts them; a checkpoint's values are loaded, never rebuilt.

Every image is pooled and sampled on its own true h × w map even when a batch mixes sizes (Pix2Struct; the release
runs such samples one at a time): the map sits zero-padded on a common Hm × Wm grid, pooling uses per-image bin
matrices, and locations normalised to the image's own map are rescaled by (w/Wm, h/Hm) — with
``align_corners=False`` that reads exactly the pixels (and the zeros beyond the edge) the unpadded map gives.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import mome.ops

__all__ = ["adaptive_pool", "reference_grid", "ADTSelfAttention", "DeformableCrossAttention", "ADTLayer", "ADT",
           "AvgPool", "Sampler"]

# (value (B, S, H, D), (Hm, Wm), locations (B, L, H, P, 2) normalised (x, y), weights (B, L, H, P)) → (B, L, H·D)
Sampler = Callable[[torch.Tensor, tuple[int, int], torch.Tensor, torch.Tensor], torch.Tensor]


def ops_sampler(value: torch.Tensor, grid: tuple[int, int], loc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Single-level deformable sampling through the compiled `mome.ops.deform_attn`."""
    shapes = torch.tensor([list(grid)], dtype=torch.long, device=value.device)
    start = torch.zeros(1, dtype=torch.long, device=value.device)
    return mome.ops.deform_attn(value, shapes, start, loc[:, :, :, None].contiguous(),
                                weights[:, :, :, None].contiguous())


def adaptive_pool(features: torch.Tensor, sizes: torch.Tensor, grid: tuple[int, int], side: int) -> torch.Tensor:
    """Per-image 2-D adaptive average pool (PyTorch's bins: ``[⌊i·h/l⌋, ⌈(i+1)·h/l⌉)``) of each true map to l × l.

    Args:
        features: (B, Hm·Wm, C), each image's map padded on the Hm × Wm grid.
        sizes: (B, 2) int64 true (h, w).
        side: l.

    Returns:
        (B, l·l, C), tokens row-major.
    """
    B, _, C = features.shape
    Hm, Wm = grid
    fmap = features.view(B, Hm, Wm, C)

    def bins(n: torch.Tensor, m: int) -> torch.Tensor:  # (B, l, m) averaging weights along one axis
        i = torch.arange(side, device=n.device)
        start = (i[None] * n[:, None]) // side  # (B, l)
        end = ((i[None] + 1) * n[:, None] + side - 1) // side
        pos = torch.arange(m, device=n.device)
        inside = (pos[None, None] >= start[..., None]) & (pos[None, None] < end[..., None])  # (B, l, m)
        return inside.to(features.dtype) / (end - start)[..., None].to(features.dtype)

    rows = bins(sizes[:, 0], Hm)  # (B, l, Hm)
    cols = bins(sizes[:, 1], Wm)  # (B, l, Wm)
    pooled = torch.einsum("bih,bhwc,bjw->bijc", rows, fmap, cols)  # (B, l, l, C)
    return pooled.reshape(B, side * side, C)


def reference_grid(side: int) -> torch.Tensor:
    """The release's initial reference points, (l·l, 2): query q = i·l + j gets (i/(l−1), j/(l−1)), read as (x, y)."""
    lin = torch.linspace(0, 1, side)
    rows, cols = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([rows, cols], dim=-1).view(side * side, 2)


def _valid_mask(sizes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, Hm·Wm) True inside each image's own h × w map."""
    Hm, Wm = grid
    r = torch.arange(Hm, device=sizes.device)
    c = torch.arange(Wm, device=sizes.device)
    inside = (r[None, :, None] < sizes[:, 0, None, None]) & (c[None, None, :] < sizes[:, 1, None, None])
    return inside.view(-1, Hm * Wm)


class ADTSelfAttention(nn.Module):
    """DETR's self-attention: queries and keys see ``q + pos``, values ``q``; ``softmax(Q Kᵀ / √d) V``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        H = self.heads
        qk = x + pos
        q = self.q_proj(qk).view(B, L, H, C // H).transpose(1, 2)  # (B, H, L, D)
        k = self.k_proj(qk).view(B, L, H, C // H).transpose(1, 2)
        v = self.v_proj(x).view(B, L, H, C // H).transpose(1, 2)
        attn = torch.softmax((q * (C // H) ** -0.5) @ k.transpose(-1, -2), dim=-1)  # (B, H, L, L)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(B, L, C))


class DeformableCrossAttention(nn.Module):
    """Single-level deformable cross-attention (Zhu et al., 2021) of the L queries on the encoder map f:

        p_hk = R + P_p(q)_hk / (w, h)               offsets in the image's own pixels, R the reference point (x, y)
        a_h· = softmax_k P_a(q)_hk                  over a head's points
        o_h  = Σ_k a_hk · Sample(P_v(f)_h, p_hk)    bilinear, zeros outside the map (align_corners=False)
        O    = P_o(o)

    ``forward(query (B, L, C) with its position embedding added, reference (L, 2), features (B, Hm·Wm, C), sizes (B, 2)
    true (h, w), grid (Hm, Wm))`` → (B, L, C). ``sampler`` replaces `mome.ops.deform_attn` (the ONNX export)."""

    def __init__(self, dim: int, heads: int = 8, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by the number of heads {heads}")
        self.heads, self.points = heads, points
        self.value_proj = nn.Linear(dim, dim)
        self.offset_proj = nn.Linear(dim, heads * points * 2)
        self.weight_proj = nn.Linear(dim, heads * points)
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's init: zero offset weights with point k of head h at (k + 1) px along direction 2πh/H
        (scaled so the larger coordinate is 1), uniform attention, Xavier value/output projections."""
        H, P = self.heads, self.points
        nn.init.zeros_(self.offset_proj.weight)
        theta = torch.arange(H, dtype=torch.float32) * (2 * math.pi / H)
        direction = torch.stack([theta.cos(), theta.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values  # (H, 2)
        steps = torch.arange(1, P + 1, dtype=torch.float32)
        self.offset_proj.bias.copy_((direction[:, None, :] * steps[None, :, None]).flatten())  # (H, P, 2)
        nn.init.zeros_(self.weight_proj.weight)
        nn.init.zeros_(self.weight_proj.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, features: torch.Tensor, sizes: torch.Tensor,
                grid: tuple[int, int], sampler: Sampler | None = None) -> torch.Tensor:
        B, L, C = query.shape
        H, P = self.heads, self.points
        Hm, Wm = grid
        value = self.value_proj(features)
        valid = _valid_mask(sizes, grid)  # padded cells must read as zero, not as the bias
        value = (value * valid[..., None].to(value.dtype)).view(B, Hm * Wm, H, C // H)  # (B, S, H, D)
        wh = sizes.flip(-1).to(query.dtype)  # (B, 2) true (w, h)
        offsets = self.offset_proj(query).view(B, L, H, P, 2)  # (B, L, H, P, 2) in pixels
        loc = reference.to(query.dtype)[None, :, None, None, :] + offsets / wh[:, None, None, None, :]
        to_grid = torch.stack([wh[:, 0] / Wm, wh[:, 1] / Hm], dim=-1)  # own map → padded grid
        loc = loc * to_grid[:, None, None, None, :]
        weights = F.softmax(self.weight_proj(query).view(B, L, H, P), dim=-1)  # (B, L, H, P)
        out = (sampler or ops_sampler)(value, grid, loc, weights)  # (B, L, H·D)
        return self.out_proj(out)


class ADTLayer(nn.Module):
    """One post-norm Deformable-DETR decoder layer (the module docstring's three lines)."""

    def __init__(self, dim: int, heads: int, points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = ADTSelfAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = DeformableCrossAttention(dim, heads, points)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for zero in (self.self_attn.out_proj, self.cross_attn.out_proj, self.fc2):  # identity residuals at init
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def forward(self, q, pos, reference, features, sizes, grid, sampler: Sampler | None = None):
        q = self.norm1(q + self.dropout(self.self_attn(q, pos)))
        q = self.norm2(q + self.dropout(self.cross_attn(q + pos, reference, features, sizes, grid, sampler)))
        return self.norm3(q + self.dropout(self.fc2(F.relu(self.fc1(q)))))


class ADT(nn.Module):
    """``f̂ = D^M(Pool(f), f)``: (B, Hm·Wm, C) map with true sizes (B, 2) → (B, L, C)."""

    def __init__(self, dim: int, num_tokens: int = 256, layers: int = 6, heads: int = 8, points: int = 4,
                 ffn_dim: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.side = round(num_tokens**0.5)
        if self.side * self.side != num_tokens:
            raise ValueError(f"num_tokens must be a square number, got {num_tokens}")
        self.layers = nn.ModuleList(ADTLayer(dim, heads, points, ffn_dim, dropout) for _ in range(layers))
        self.reference = nn.Parameter(reference_grid(self.side))  # (L, 2) as (x, y)
        self.query_pos = nn.Parameter(torch.zeros(num_tokens, dim))  # (L, C)

    def forward(self, features: torch.Tensor, sizes: torch.Tensor, grid: tuple[int, int],
                sampler: Sampler | None = None) -> torch.Tensor:
        q = adaptive_pool(features, sizes, grid, self.side)
        pos = self.query_pos.to(q.dtype)
        for layer in self.layers:
            q = layer(q, pos, self.reference, features, sizes, grid, sampler)
        return q


class AvgPool(nn.Module):
    """Table 1's baseline aggregator: the adaptive average pool alone, no parameters."""

    def __init__(self, num_tokens: int = 256):
        super().__init__()
        self.side = round(num_tokens**0.5)

    def forward(self, features: torch.Tensor, sizes: torch.Tensor, grid: tuple[int, int],
                sampler: Sampler | None = None) -> torch.Tensor:
        return adaptive_pool(features, sizes, grid, self.side)
