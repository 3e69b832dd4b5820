"""Pretraining of the tiny preset's LLM on text only (`mome.data.corpus`): the tiny counterpart of Vicuna.

    python -m mome.data pretrain-llm [--out DIR] [--seed S] [--steps N] [--check]

The paper's LLM arrives pretrained and stays frozen; a random tiny LLM would have to learn the language, the answer
forms and how to find a named thing in its context from the multimodal records alone. This trains the ``tiny``
preset's LLaMA (`mome.model.config.PRESETS["tiny"]["language"]`, the tiny ~1k-piece tokenizer) from random weights
as a causal LM on the corpus's text, every token after BOS, with the image replaced by its content as text between
``<Img>`` and ``</Img>``, where MoME later puts the visual tokens. Deterministic: fixed seeds, one thread, a fixed
corpus; the same machine kind gives the same bits.

Output (``--out``, default the package's ``weights/tiny-llm/``): a transformers LLaMA folder (``config.json``,
``model.safetensors``, ``tokenizer.model``) that ``language.path`` can name, and ``tiny-llm.json`` beside it (the
command, seed, steps, SHA-256 of the tensors, held-out scores per dataset, torch version, machine).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mome.data import corpus

__all__ = ["pretrain", "encode", "heldout_scores", "DEFAULT_STEPS", "BATCH", "TRAIN_SAMPLES", "EVAL_SAMPLES",
           "MANIFEST", "LR"]

DEFAULT_STEPS = 3000
BATCH = 32
LR = 3e-3
TRAIN_SAMPLES = 24000
EVAL_SAMPLES = 350  # 50 per dataset, from indices the training samples never reach
MANIFEST = "tiny-llm.json"
# LLaMA's default init (std 0.02) is sized for widths in the thousands; at width 128 it leaves attention logits near
# zero for a long plateau. 128 ** -0.5 ≈ 0.088 (measured: loss 0.44 vs 0.62 after 100 steps).
INIT_STD = 0.088


def encode(tokenizer, text: str, instruction: str, answer: str | None = None) -> tuple[list[int], int]:
    """Token ids of one sample laid out exactly as `MoME.tokenize` lays out a record (the ``mome`` template), with
    the image's slots holding ``text``; and the index where the answer starts."""
    from mome.model.mome import build_prompt

    before, after = build_prompt(instruction, "mome")
    ids = [tokenizer.bos_id] + tokenizer.encode(before) + tokenizer.encode(text) + tokenizer.encode("</Img>")
    ids += tokenizer.encode(after)
    start = len(ids)
    if answer is not None:
        ids += tokenizer.encode(answer) + [tokenizer.eos_id]
    return ids, start


def _batch(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def heldout_scores(llm, tokenizer, samples: list[corpus.Sample], max_new_tokens: int = 32) -> dict[str, float]:
    """Greedy answers to held-out samples, scored per dataset: exact match (REC: IoU ≥ 0.5), and the answer loss."""
    from mome.data.records import parse_box
    from mome.eval.metrics.rec import iou as box_iou

    llm.eval()
    hits: dict[str, list[float]] = {}
    for dataset, text, instruction, answer in samples:
        ids, _ = encode(tokenizer, text, instruction)
        out = llm.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                           eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
        pred = tokenizer.decode(out[0, len(ids):].tolist()).strip()
        if dataset == "synth-rec":
            box = parse_box(pred)
            ok = box is not None and box_iou(box, parse_box(answer)) >= 0.5
        else:
            ok = pred == answer
        hits.setdefault(dataset, []).append(float(ok))
    return {d: round(sum(v) / len(v), 4) for d, v in sorted(hits.items())}


def pretrain(out_dir: str | Path, seed: int = 0, steps: int = DEFAULT_STEPS, train_samples: int = TRAIN_SAMPLES,
             eval_samples: int = EVAL_SAMPLES, progress: bool = False, log=print, eval_every: int = 0) -> dict:
    """Train the tiny LLM and write it with its manifest into ``out_dir``; returns the manifest."""
    import transformers as tf
    from safetensors.torch import save_file
    from tqdm import tqdm

    from mome.model.config import MoMEConfig
    from mome.model.specialists import sha256
    from mome.model.tokenizer import Tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lang = MoMEConfig.preset("tiny").language
        tokenizer = Tokenizer.tiny(lang.vocab_size)
        exclude = corpus.test_keys()
        t0 = time.time()
        train = corpus.samples(train_samples, seed=seed, exclude=exclude)
        heldout = corpus.samples(eval_samples, seed=seed, offset=10 * train_samples, exclude=exclude)
        rows = [encode(tokenizer, text, ins, ans)[0] for _, text, ins, ans in train]
        too_long = max(len(r) for r in rows)
        if too_long > lang.max_length:
            raise ValueError(f"a corpus sample has {too_long} tokens, more than language.max_length = "
                             f"{lang.max_length}")
        log(f"pretrain-llm: {len(rows)} samples ({sum(map(len, rows))} tokens) in {time.time() - t0:.1f} s")

        torch.manual_seed(seed)
        config = tf.LlamaConfig(
            vocab_size=lang.vocab_size, hidden_size=lang.hidden_size, intermediate_size=lang.intermediate_size,
            num_hidden_layers=lang.num_layers, num_attention_heads=lang.num_heads,
            num_key_value_heads=lang.num_heads, max_position_embeddings=lang.max_length,
            bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
            tie_word_embeddings=False, initializer_range=INIT_STD)
        llm = tf.LlamaForCausalLM(config).float()
        decay = [p for n, p in llm.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in llm.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=LR, betas=(0.9, 0.98))
        warmup = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
        order = random.Random(f"{corpus.SEED_PREFIX}/{seed}/order")
        perm: list[int] = []
        llm.train()
        t0 = time.time()
        losses = []
        bar = tqdm(range(steps), desc="pretrain-llm", disable=not progress, unit="step")
        for step in bar:
            if len(perm) < BATCH:
                more = list(range(len(rows)))
                order.shuffle(more)
                perm += more
            idx, perm = perm[:BATCH], perm[BATCH:]
            ids, mask = _batch([rows[i] for i in idx], tokenizer.pad_id)
            logits = llm(input_ids=ids, attention_mask=mask, use_cache=False).logits
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                log(f"pretrain-llm: step {step + 1} held-out answers {heldout_scores(llm, tokenizer, heldout)}")
                llm.train()
            if step % 50 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if not progress:
                    log(f"pretrain-llm: step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
        train_s = time.time() - t0
        scores = heldout_scores(llm, tokenizer, heldout)
        log(f"pretrain-llm: held-out answers {scores}")

        out_dir = Path(out_dir)
        folder = out_dir / "tiny-llm"
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)
        tmp = folder / "model.safetensors.tmp"
        state = {k: v.detach().contiguous() for k, v in llm.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / "model.safetensors")
        tokenizer.save(folder)
        manifest = {
            "schema": "mome.tiny-llm/1",
            "command": "python -m mome.data pretrain-llm",
            "seed": seed, "steps": steps, "batch": BATCH, "lr": LR, "init_std": INIT_STD,
            "train_samples": len(rows), "train_tokens": sum(map(len, rows)), "eval_samples": len(heldout),
            "sha256": sha256(folder / "model.safetensors"),
            "tokenizer": "the tiny tokenizer (mome.model.tokenizer.Tokenizer.tiny), unchanged",
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "heldout": scores,
            "wall_s": round(train_s, 1),
            "torch": torch.__version__, "machine": platform.machine(),
        }
        tmp = out_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out_dir / MANIFEST)
        return manifest
    finally:
        torch.set_num_threads(threads)
