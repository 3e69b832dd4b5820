"""MoLE, the Mixture of Language Experts (paper §3.3, Table 2; OFFICIAL.md § Architecture, "MoLE").

Each decoder layer's FFN gets K bottleneck adapters in parallel, one chosen per token by a top-1 router:

    y_k(x) = s_k · (ReLU(x W_down,k + b_down,k) W_up,k + b_up,k)        adapter k (bottleneck r, learnable scalar s_k)
    G(·)   = onehot(argmax_k p),  p = softmax(MLP(router input))        top-1 gate, exactly one-hot in the forward
    h ↦ h + FFN(h) + Σ_k G_k · y_k(h)                                  (the residual add stays the decoder's)

x is the FFN's input (the post-attention RMSNorm output); the router MLP is Linear(384, 384) → GELU → Linear(384, K).
Router inputs (Table 2): MoLE-I the instruction's sentence embedding I (one expert per sample, the paper's and the
release's), MoLE-T the token's hidden state, MoLE-IT their concatenation. Gradient to the router: the release's
straight-through ``G = onehot − p.detach() + p`` over all K experts, so every p_k receives ``⟨∂L/∂out, y_k(x)⟩``
(``router_grad="dense"``: the forward runs only the chosen adapter, the backward evaluates all K for this term), or
only the chosen expert's (``"top1"``), or Switch-style scaling by ``p_top1``. Options: Gumbel noise on the logits while
training (GS) and the Switch load-balance loss ``K · Σ_k f_k · P̄_k`` (LB).

W_up and the biases start at zero and s at 1, so a freshly attached model equals the base model bit for bit.
All adapters of a layer run in one `mome.ops.grouped_adapter` call.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

import mome.ops

__all__ = [
    "Adapter",
    "MoLE",
    "FFNWithMoLE",
    "attach_mole",
    "replicate_adapter",
    "resize_experts",
    "routing_context",
    "mole_modules",
    "mole_aux_loss",
    "ROUTERS",
]

ROUTERS = ("single", "instance", "token", "instance_token")


class Adapter(nn.Module):
    """One bottleneck adapter in plain PyTorch: ``y = s · (ReLU(x W_down + b_down) W_up + b_up)`` (the reference a
    one-expert MoLE must equal)."""

    def __init__(self, dim: int, rank: int = 64):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.scale = nn.Parameter(torch.ones(()))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.relu(self.down(x)))


class MoLE(nn.Module):
    """K adapters of one FFN plus their router. ``forward(x (B, T, D)) -> (B, T, D)``.

    Parameters (K experts): ``w_down`` (K, D, R), ``b_down`` (K, R), ``w_up`` (K, R, D), ``b_up`` (K, D),
    ``scale`` (K,) and ``router`` = Sequential(Linear, GELU, Linear). The release's ``adapters.k.down_proj.weight`` is
    ``w_down[k]ᵀ``, its ``adapters.k.up_proj.weight`` is ``w_up[k]ᵀ`` and its ``router_mlp`` is ``router``.

    The instruction embedding for MoLE-I/IT is read from ``self.instruction`` (B, dim), set by `routing_context`
    around the LLM's forward; after each forward ``last_expert`` (B, T), ``last_gate`` (B, T), ``last_probs``
    (B, T, K) and ``aux_loss`` describe the routing."""

    def __init__(self, dim: int, num_experts: int = 4, rank: int = 64, router: str = "instance",
                 instruction_dim: int = 384, router_hidden: int = 384, gate: str = "straight_through",
                 gumbel: bool = False, gumbel_tau: float = 1.0, load_balance: float = 0.0, router_grad: str = "dense"):
        super().__init__()
        if router_grad not in ("dense", "top1"):
            raise ValueError(f"router_grad must be 'dense' or 'top1', got {router_grad!r}")
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {list(ROUTERS)}, got {router!r}")
        if router == "single" and num_experts != 1:
            raise ValueError(f"a single adapter has num_experts = 1, got {num_experts}")
        if gate not in ("straight_through", "switch"):
            raise ValueError(f"gate must be 'straight_through' or 'switch', got {gate!r}")
        K, D, R = num_experts, dim, rank
        self.dim, self.num_experts, self.rank = D, K, R
        self.router_kind, self.gate_kind = router, gate
        self.gumbel, self.gumbel_tau, self.load_balance = gumbel, gumbel_tau, load_balance
        self.router_grad = router_grad
        self.instruction_dim, self.router_hidden = instruction_dim, router_hidden
        w_down = torch.empty(K, R, D)
        for k in range(K):  # nn.Linear's default (Kaiming-uniform) init, per expert
            nn.init.kaiming_uniform_(w_down[k], a=math.sqrt(5))
        self.w_down = nn.Parameter(w_down.transpose(1, 2).contiguous())  # (K, D, R)
        self.b_down = nn.Parameter(torch.zeros(K, R))
        self.w_up = nn.Parameter(torch.zeros(K, R, D))
        self.b_up = nn.Parameter(torch.zeros(K, D))
        self.scale = nn.Parameter(torch.ones(K))
        in_dim = {"single": 0, "instance": instruction_dim, "token": D, "instance_token": instruction_dim + D}[router]
        self.router = None if router == "single" else nn.Sequential(
            nn.Linear(in_dim, router_hidden), nn.GELU(), nn.Linear(router_hidden, K))
        self.instruction: torch.Tensor | None = None
        self.last_expert = self.last_gate = self.last_probs = None
        self.aux_loss: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.num_experts}, rank={self.rank}, router={self.router_kind}"

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, T, D) → expert ids (B, T), gate (B, T) or None, probabilities (B, T, K) or None."""
        B, T, _ = x.shape
        if self.router is None:
            return torch.zeros(B, T, dtype=torch.long, device=x.device), None, None
        if self.router_kind in ("instance", "instance_token"):
            if self.instruction is None:
                raise RuntimeError("MoLE-I/IT needs the instruction embedding: run the model inside "
                                   "mome.model.mole.routing_context(model, instruction)")
            inst = self.instruction.to(x.device, torch.float32)
            if inst.shape[0] != B:
                raise ValueError(f"instruction embedding has batch {inst.shape[0]}, hidden states have {B}")
        if self.router_kind == "instance":  # one routing per sample: the router MLP runs on B rows, not B·T
            logits = self.router(inst)[:, None].expand(B, T, self.num_experts)  # (B, T, K)
        else:
            parts = [inst[:, None].expand(B, T, inst.shape[-1])] if self.router_kind == "instance_token" else []
            logits = self.router(torch.cat(parts + [x.float()], dim=-1))  # (B, T, K)
        if self.gumbel and self.training:
            u = torch.rand_like(logits).clamp_(1e-9, 1 - 1e-9)
            logits = (logits - torch.log(-torch.log(u))) / self.gumbel_tau
        probs = torch.softmax(logits, dim=-1)
        expert = probs.argmax(dim=-1)  # (B, T)
        p_top = probs.gather(-1, expert[..., None])[..., 0]
        if self.gate_kind == "switch":
            gate = p_top
        elif self.router_grad == "dense":
            gate = None  # exactly one-hot; `_DenseRouterGrad` carries every p_k's gradient
        else:
            # (p - p.detach()) is exactly 0 in the forward, so the gate is exactly 1; its gradient is dp.
            gate = 1.0 + (p_top - p_top.detach())
        return expert, gate, probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        expert, gate, probs = self.route(x)
        flat = x.reshape(B * T, D).to(self.w_down.dtype)
        y = mome.ops.grouped_adapter(
            flat, expert.reshape(B * T), self.w_down, self.b_down, self.w_up, self.b_up, self.scale,
            None if gate is None else gate.reshape(B * T).to(self.w_down.dtype),
        )
        if (probs is not None and gate is None and torch.is_grad_enabled() and probs.requires_grad):
            y = _DenseRouterGrad.apply(y, probs.reshape(B * T, -1), flat.detach(), self.w_down.detach(),
                                       self.b_down.detach(), self.w_up.detach(), self.b_up.detach(),
                                       self.scale.detach())
        y = y.view(B, T, D)
        self.last_expert, self.last_gate, self.last_probs = expert.detach(), gate, probs
        if probs is not None and self.load_balance > 0:
            K = self.num_experts
            frac = F.one_hot(expert.reshape(-1), K).float().mean(0)  # f_k: share of tokens sent to k
            self.aux_loss = self.load_balance * K * (frac * probs.reshape(-1, K).mean(0)).sum()
        else:
            self.aux_loss = None
        return y.to(x.dtype)


class _DenseRouterGrad(torch.autograd.Function):
    """Identity on the adapter output y in the forward; in the backward it also returns, for every row n and expert
    k, ``∂L/∂p[n, k] = ⟨∂L/∂y[n], y_k(x[n])⟩`` — the gradient the release's straight-through gate
    ``onehot − p.detach() + p`` gives each probability, since it multiplies all K adapters' outputs. y_k is recomputed
    densely here (no gradient flows to x or the adapters through this path: their gate value is 0 or exactly 1)."""

    @staticmethod
    def forward(ctx, y, probs, x, w_down, b_down, w_up, b_up, scale):
        ctx.save_for_backward(x, w_down, b_down, w_up, b_up, scale)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_y):
        x, w_down, b_down, w_up, b_up, scale = ctx.saved_tensors
        g = grad_y.to(x.dtype)
        cols = []
        for k in range(w_down.shape[0]):  # (N,) per expert: ⟨g, s_k (ReLU(x W_down + b_down) W_up + b_up)⟩
            h = torch.relu(torch.addmm(b_down[k], x, w_down[k]))
            cols.append(scale[k] * ((h @ w_up[k]) * g).sum(-1) + scale[k] * (g @ b_up[k]))
        return grad_y, torch.stack(cols, dim=-1), None, None, None, None, None, None


class FFNWithMoLE(nn.Module):
    """``FFN(h) + MoLE(h)``: the decoder layer adds its residual around this, giving h + FFN(h) + MoLE(h). The
    original FFN module is kept untouched as ``.ffn``."""

    def __init__(self, ffn: nn.Module, mole: MoLE):
        super().__init__()
        self.ffn = ffn
        self.mole = mole

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.ffn(h) + self.mole(h)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None or not all(hasattr(layer, "mlp") for layer in layers):
        raise TypeError(f"{type(model).__name__} does not have the LLaMA-family layout model.model.layers[i].mlp")
    return layers


def attach_mole(model: nn.Module, num_experts: int, rank: int = 64, router: str = "instance", *,
                instruction_dim: int = 384, router_hidden: int = 384, gate: str = "straight_through",
                gumbel: bool = False, gumbel_tau: float = 1.0, load_balance: float = 0.0,
                router_grad: str = "dense") -> nn.Module:
    """Put a MoLE parallel to every decoder layer's MLP of a transformers LLaMA-family causal LM (LLaMA, Vicuna,
    Mistral, Qwen2: ``model.model.layers[i].mlp``), in place; returns the model. Right after attaching, the model's
    outputs equal the original's exactly. ``router="single"`` with ``num_experts=1`` is the plain adapter."""
    layers = _decoder_layers(model)
    dim = model.config.hidden_size
    for layer in layers:
        if isinstance(layer.mlp, FFNWithMoLE):
            raise ValueError("this model already has MoLE attached")
        ref = next(layer.mlp.parameters())
        mole = MoLE(dim, num_experts, rank, router, instruction_dim=instruction_dim, router_hidden=router_hidden,
                    gate=gate, gumbel=gumbel, gumbel_tau=gumbel_tau, load_balance=load_balance,
                    router_grad=router_grad).to(ref.device)
        layer.mlp = FFNWithMoLE(layer.mlp, mole)
    return model


def replicate_adapter(model: nn.Module, num_experts: int, router: str = "instance", **router_kwargs) -> nn.Module:
    """Stage 2 (PAPER.md § Training): turn every single adapter into K copies of itself plus a fresh router. As all
    experts are equal and the gate is exactly 1, the outputs are identical to the stage-1 model at this moment."""
    for layer in _decoder_layers(model):
        block = layer.mlp
        if not isinstance(block, FFNWithMoLE) or block.mole.num_experts != 1:
            raise ValueError("replicate_adapter expects a model with a single adapter per layer (router='single')")
        old = block.mole
        kwargs = dict(instruction_dim=old.instruction_dim, router_hidden=old.router_hidden, gate=old.gate_kind,
                      router_grad=old.router_grad)
        kwargs.update(router_kwargs)
        new = MoLE(old.dim, num_experts, old.rank, router, **kwargs).to(old.w_down.device)
        with torch.no_grad():
            for name in ("w_down", "b_down", "w_up", "b_up", "scale"):
                getattr(new, name).copy_(getattr(old, name).expand_as(getattr(new, name)))
        block.mole = new
    return model


def resize_experts(model: nn.Module, num_experts: int, generator: torch.Generator | None = None,
                   noise: float = 1e-3) -> nn.Module:
    """Change every MoLE's number of experts K_s → K in place (fine-tuning a stage-2 model with another K):

    - K < K_s: experts 0 … K−1 and the router's output rows 0 … K−1 are kept; a sample whose top expert was dropped
      goes to its best remaining one, so the outputs change for those samples.
    - K > K_s: new expert j is a copy of expert j mod K_s, and its router output row (weight and bias) a copy of row
      j mod K_s plus N(0, noise²) noise from ``generator``, which breaks the tie between an expert and its copies.
      As copies are equal, the outputs are unchanged at this moment whichever of them the router picks, as long as
      the small noise does not reorder distinct experts (a logit gap below ~noise·|input|).

    Routers other than the stacked experts' (MoLE-I/T/IT) are resized the same way; a single adapter cannot be."""
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    for layer in _decoder_layers(model):
        block = layer.mlp
        if not isinstance(block, FFNWithMoLE) or block.mole.router is None:
            raise ValueError("resize_experts expects a model with routed experts (mole.router = instance, token or "
                             "instance_token)")
        old = block.mole
        if old.num_experts == num_experts:
            continue
        new = MoLE(old.dim, num_experts, old.rank, old.router_kind, instruction_dim=old.instruction_dim,
                   router_hidden=old.router_hidden, gate=old.gate_kind, gumbel=old.gumbel, gumbel_tau=old.gumbel_tau,
                   load_balance=old.load_balance, router_grad=old.router_grad).to(old.w_down.device)
        src = torch.arange(num_experts) % old.num_experts  # new expert j ← old expert src[j]
        with torch.no_grad():
            for name in ("w_down", "b_down", "w_up", "b_up", "scale"):
                getattr(new, name).copy_(getattr(old, name)[src.to(old.w_down.device)])
            new.router[0].load_state_dict(old.router[0].state_dict())
            out_old, out_new = old.router[2], new.router[2]
            rows = src.to(out_old.weight.device)
            out_new.weight.copy_(out_old.weight[rows])
            out_new.bias.copy_(out_old.bias[rows])
            copies = torch.arange(num_experts) >= old.num_experts
            if copies.any():
                n = int(copies.sum())
                out_new.weight[copies] += noise * torch.randn(n, out_new.weight.shape[1], generator=generator).to(
                    out_new.weight)
                out_new.bias[copies] += noise * torch.randn(n, generator=generator).to(out_new.bias)
        block.mole = new
    return model


def mole_modules(model: nn.Module) -> list[MoLE]:
    return [m for m in model.modules() if isinstance(m, MoLE)]


@contextlib.contextmanager
def routing_context(model: nn.Module, instruction: torch.Tensor | None):
    """Give every MoLE of ``model`` the (B, dim) instruction embedding for the duration of a forward/generation."""
    moles = mole_modules(model)
    for m in moles:
        m.instruction = instruction
    try:
        yield
    finally:
        for m in moles:
            m.instruction = None


def mole_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the load-balance losses of the last forward (None when LB is off)."""
    losses = [m.aux_loss for m in mole_modules(model) if m.aux_loss is not None]
    return torch.stack(losses).sum() if losses else None
