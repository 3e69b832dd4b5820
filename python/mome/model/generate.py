"""Batched generation with MoME, returning each sample's text and its routing (PAPER.md § Analyses, Figs. 4 and 6).

Prompts are left-padded so every row's next token sits in the last column; positions count only real tokens, so a
sample generates the same text alone or in a batch. Greedy by default; sampling with temperature / top-k / top-p.

Routing per sample:
    vision             {encoder: G_s(I)_i}                 the soft router's weights (1.0 each for addition)
    vision_importance  {encoder: mean |G_s(I)_i · f̂_i|}    Fig. 4's importance
    language           [expert per decoder layer]          MoLE's choice on the prompt (MoLE-T: the expert most of
                                                           the prompt's tokens chose); None without adapters
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mome.model.mole import mole_modules, routing_context

__all__ = ["generate", "Generation"]


@dataclass
class Generation:
    text: str
    routing: dict

    def to_dict(self) -> dict:
        return {"text": self.text, "routing": self.routing}


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
          generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits → (B,) next tokens."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float() / max(temperature, 1e-6)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model, images, prompts: list[str], max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             pixel_inputs: dict | None = None) -> list[Generation]:
    """Generate an answer for each (image, prompt). ``pixel_inputs`` may replace ``images`` (already preprocessed)."""
    if pixel_inputs is None:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
        pixel_inputs = model.preprocess(images)
    was_training = model.training
    model.eval()
    device = model.device
    tk = model.tokenizer
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    instruction = model.instruction_embeddings(prompts)
    vis = model.move(pixel_inputs, instruction)
    input_ids, image_mask, _, attention = (t.to(device) for t in model.tokenize(prompts, padding_side="left"))
    embeds = model.embed(input_ids, image_mask, vis.tokens)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    B = len(prompts)
    out_tokens = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    with routing_context(model.llm, instruction):
        out = model.llm(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True)
        language = _language_routing(model, attention)
        cache = out.past_key_values
        next_pos = positions[:, -1:] + 1
        for _ in range(max_new_tokens):
            nxt = _pick(out.logits[:, -1], do_sample, temperature, top_k, top_p, generator).to(device)
            nxt = torch.where(done, torch.full_like(nxt, tk.pad_id), nxt)
            for b in range(B):
                if not done[b] and int(nxt[b]) != tk.eos_id:
                    out_tokens[b].append(int(nxt[b]))
            done |= nxt == tk.eos_id
            if bool(done.all()):
                break
            attention = torch.cat([attention, attention.new_ones(B, 1)], dim=1)
            out = model.llm(input_ids=nxt[:, None], attention_mask=attention, position_ids=next_pos,
                            past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            next_pos = next_pos + 1
    model.train(was_training)
    names = model.move.names
    results = []
    for b in range(B):
        routing = {
            "vision": {n: float(vis.weights[b, i]) for i, n in enumerate(names)},
            "vision_importance": {n: float(vis.importance[b, i]) for i, n in enumerate(names)},
            "language": None if language is None else [int(e) for e in language[b]],
        }
        results.append(Generation(tk.decode(out_tokens[b]), routing))
    return results


def _language_routing(model, attention: torch.Tensor) -> torch.Tensor | None:
    """(B, layers) expert per layer: the most frequent choice over each sample's real prompt tokens."""
    moles = mole_modules(model.llm)
    if not moles:
        return None
    per_layer = []
    for m in moles:
        experts = m.last_expert  # (B, T)
        counts = torch.zeros(experts.shape[0], m.num_experts, dtype=torch.long, device=experts.device)
        counts.scatter_add_(1, experts, attention.long())
        per_layer.append(counts.argmax(dim=1))
    return torch.stack(per_layer, dim=1)
