"""DINOv2 (Oquab et al., 2023) as Meta's `dinov2/models/vision_transformer.py` builds it without register tokens,
under Meta's own state-dict names, so that `dinov2_vitl14_pretrain.pth` loads as it is:

    x₀ = [cls; patch_embed(image)] + pos                      (B, 1 + h·w, C)
    xₗ = xₗ₋₁ + γ₁ ⊙ Attn(LN₁(xₗ₋₁));  xₗ = xₗ + γ₂ ⊙ MLP(LN₂(xₗ))   pre-norm blocks with LayerScale γ (ls1, ls2)
    out = LN(x_L)                                              Meta's x_norm_clstoken / x_norm_patchtokens

Position table. Meta trained ViT-L/14 at 518 px (a 37×37 table) and interpolates it at every other resolution with
``F.interpolate(bicubic, scale_factor=((n + 0.1)/N, (n + 0.1)/N), antialias=False)``: the *scale factor* (not the output
size) sets the sampling positions, so this is not the same as resizing to n × n (which transformers' Dinov2 does).
`meta_interpolate_pos_embed` applies that rule once, when the weights are loaded, for the encoder's own image size;
the module then holds the table of its own grid. A different input size at run time (ONNX export with dynamic sizes)
resizes that table to the new grid, transformers-style; MoME itself always feeds the configured size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOv2", "meta_interpolate_pos_embed"]


def meta_interpolate_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """Meta's `interpolate_pos_encoding` for a square ``grid`` × ``grid`` patch map: (1, 1 + N, C) → (1, 1 + grid², C),
    computed in float32 and returned in float32. The CLS entry is kept; an N = grid² table is returned unchanged."""
    n = pos_embed.shape[1] - 1
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"DINOv2 pos_embed: {n} patch positions is not a square grid")
    pos = pos_embed.float()
    if side == grid:
        return pos
    C = pos.shape[-1]
    scale = (grid + offset) / math.sqrt(n)
    patch = F.interpolate(pos[:, 1:].reshape(1, side, side, C).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                          mode="bicubic", antialias=False)  # (1, C, grid, grid)
    if patch.shape[-2:] != (grid, grid):
        raise ValueError(f"DINOv2 pos_embed: interpolation gave {tuple(patch.shape[-2:])}, expected {(grid, grid)}")
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, C)], dim=1)


class _PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # 3 × (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√d)·v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, layer_scale: float | None, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, hidden)
        self.ls2 = _LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2(nn.Module):
    """``forward(pixel_values (B, 3, H, W))`` → (B, 1 + h·w, C): the final-norm tokens, CLS first.

    ``grid`` is the side of the patch map the position table is for (image_size // patch_size); ``layer_scale`` the
    LayerScale init (Meta: 1.0 for ViT-L/14), None for blocks without it."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, patch_size: int,
                 grid: int, layer_scale: float | None = 1.0, eps: float = 1e-6):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"dinov2: hidden size {hidden_size} is not divisible by num_heads {num_heads}")
        self.patch_size, self.grid = patch_size, grid
        self.patch_embed = _PatchEmbed(patch_size, hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, hidden_size))  # Meta's masked-image-modelling token (unused)
        self.blocks = nn.ModuleList(_Block(hidden_size, num_heads, intermediate_size, layer_scale, eps)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def reset_parameters(self, std: float = 0.02) -> None:
        """A random init in Meta's manner (truncated-normal weights and position table, zero biases)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=std)
        nn.init.normal_(self.cls_token, std=1e-6)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.pos_embed
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and h == w == self.grid:
            return pos
        # Another grid at run time (export with dynamic sizes): resize the table, in float32.
        C = pos.shape[-1]
        patch = pos[:, 1:].reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2).float()
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False).to(pos.dtype)
        return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, h * w, C)], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixel_values)  # (B, C, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, h·w, C), row-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1) + self._pos(h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
