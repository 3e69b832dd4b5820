"""MoVE, the Mixture of Vision Experts (paper §3.2, Fig. 2; OFFICIAL.md § Architecture):

    f̂_i = Proj_i(ADT_i(E_i(x)))               DINOv2, Pix2Struct (`vision.adt_encoders`; AvgPool instead: Table 1)
    f̂_i = Proj_i(LN_i(E_i(x)))                EVA: its own √L × √L patch tokens, LayerNorm in float32
    G_s(I) = softmax(W2 · GELU(W1 · I + b1) + b2)   the soft router on the instruction embedding I (384 → 384 → N)
    F = [Proj(LN(cls_EVA)); Σ_i G_s(I)_i · f̂_i]   mixed by `mome.ops.router_mix` (or added, G_s ≡ 1), CLS prepended

Proj_i is one Linear (the release; ``vision.projector = mlp`` is LLaVA-1.5's two-layer MLP, ours). The vision-expert
importance of Fig. 4 is the release's ``routing_outcome``: mean over tokens and channels of |G_s(I)_i · f̂_i|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import mome.ops
from mome.model.adt import ADT, AvgPool, Sampler
from mome.model.config import VisionConfig
from mome.model.encoders import EncoderOutput, VisionEncoder

__all__ = ["Projector", "Float32LayerNorm", "SoftRouter", "MoVE", "MoVEOutput", "importance"]


class Projector(nn.Module):
    """Encoder width → LLM width as LLaVA-1.5's 2-layer MLP, Linear → GELU → Linear (``vision.projector = mlp``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input's dtype (the release's EVA ``clip_ln``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class SoftRouter(nn.Module):
    """``G_s(I) = softmax(W2 σ(W1 I + b1) + b2)``, σ = GELU. (B, dim) → (B, N), rows sum to 1."""

    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_experts))

    def forward(self, instruction: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(instruction), dim=-1)


def importance(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fig. 4: (N, B, L, D) experts and (B, N) weights → (B, N) mean over L and D of |G_s(I)_i · f̂_i|."""
    return (weights.t()[..., None, None] * stacked).abs().mean(dim=(-1, -2)).t()


@dataclass
class MoVEOutput:
    tokens: torch.Tensor  # (B, L (+1 with the CLS token), D_llm), the visual tokens fed to the LLM
    weights: torch.Tensor  # (B, N), the router's G_s(I) (all ones for addition)
    importance: torch.Tensor  # (B, N), mean |G_s(I)_i · f̂_i| (Fig. 4)


class MoVE(nn.Module):
    """Encoders (frozen) → per-encoder branch (ADT/AvgPool or LayerNorm) → projector → soft router or addition →
    CLS prepended.

    ``forward(pixel_inputs, instruction)``: ``pixel_inputs[name]`` is what ``encoders[name].preprocess`` returned for
    the batch; ``instruction`` is the (B, sentence_dim) embedding I (unused by addition)."""

    def __init__(self, cfg: VisionConfig, encoders: dict[str, VisionEncoder], llm_dim: int, sentence_dim: int):
        super().__init__()
        self.cfg = cfg
        self.names = list(encoders)
        self.encoders = nn.ModuleDict(encoders)
        pooled = [n for n in self.names if n in cfg.adt_encoders]
        if cfg.aggregator == "adt":
            self.aggregators = nn.ModuleDict({
                n: ADT(encoders[n].hidden_size, cfg.num_tokens, cfg.adt_layers, cfg.adt_heads, cfg.adt_points,
                       cfg.adt_ffn_dim, cfg.adt_dropout) for n in pooled})
        else:
            self.aggregators = nn.ModuleDict({n: AvgPool(cfg.num_tokens) for n in pooled})
        self.norms = nn.ModuleDict({n: Float32LayerNorm(encoders[n].hidden_size, eps=1e-5)
                                    for n in self.names if n not in cfg.adt_encoders})
        make = nn.Linear if cfg.projector == "linear" else Projector
        self.projectors = nn.ModuleDict({n: make(e.hidden_size, llm_dim) for n, e in encoders.items()})
        self.router = SoftRouter(sentence_dim, cfg.router_hidden, len(encoders)) if cfg.router == "soft" else None
        # The CLS token comes from the first encoder with a LayerNorm branch (EVA), if any.
        self.cls_from = next(iter(self.norms), None) if cfg.cls_token else None

    @property
    def num_output_tokens(self) -> int:
        """L, plus one with the prepended CLS token."""
        return self.cfg.num_tokens + (self.cls_from is not None)

    def encode(self, pixel_inputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, EncoderOutput]:
        missing = [n for n in self.names if n not in pixel_inputs]
        if missing:
            raise KeyError(f"pixel_inputs lacks the inputs of encoder(s) {missing}; it has {sorted(pixel_inputs)}")
        device = next(self.projectors.parameters()).device
        return {n: self.encoders[n](**{k: v.to(device) for k, v in pixel_inputs[n].items()}) for n in self.names}

    def branch(self, name: str, out: EncoderOutput, sampler: Sampler | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One expert: (B, L, D_llm) tokens f̂_i and, for a LayerNorm branch, its projected CLS token (B, D_llm)."""
        dtype = next(self.projectors[name].parameters()).dtype
        feats = out.features.to(dtype)
        if name in self.aggregators:
            return self.projectors[name](self.aggregators[name](feats, out.sizes, out.grid, sampler)), None
        if feats.shape[1] != self.cfg.num_tokens:
            raise ValueError(f"{name} gives {feats.shape[1]} patch tokens, but without ADT its branch needs "
                             f"vision.num_tokens = {self.cfg.num_tokens}")
        if out.cls is None:
            return self.projectors[name](self.norms[name](feats)), None
        full = self.projectors[name](self.norms[name](torch.cat([out.cls.to(dtype)[:, None], feats], dim=1)))
        return full[:, 1:], full[:, 0]  # (B, L, D), (B, D): the release projects CLS + patch tokens together

    def mix(self, experts: list[torch.Tensor], cls: torch.Tensor | None, instruction: torch.Tensor | None,
            mix_fn=None) -> MoVEOutput:
        """Route and mix the experts (N × (B, L, D)); prepend ``cls`` (B, D) when given."""
        stacked = torch.stack(experts)  # (N, B, L, D)
        B = stacked.shape[1]
        if self.router is not None:
            if instruction is None:
                raise ValueError("the soft router needs the instruction embedding")
            weights = self.router(instruction.to(stacked.device, stacked.dtype))  # (B, N)
        else:
            weights = stacked.new_ones(B, len(self.names))
        tokens = (mix_fn or mome.ops.router_mix)(stacked, weights)
        if cls is not None:
            tokens = torch.cat([cls[:, None].to(tokens.dtype), tokens], dim=1)
        with torch.no_grad():
            imp = importance(stacked, weights)
        return MoVEOutput(tokens, weights, imp)

    def forward(self, pixel_inputs: dict[str, dict[str, torch.Tensor]],
                instruction: torch.Tensor | None = None) -> MoVEOutput:
        outs = self.encode(pixel_inputs)
        experts, cls = [], None
        for n in self.names:
            tokens, c = self.branch(n, outs[n])
            experts.append(tokens)
            if n == self.cls_from:
                if c is None:
                    raise ValueError(f"{n} returned no CLS token, but vision.cls_token is on")
                cls = c
        return self.mix(experts, cls, instruction)
