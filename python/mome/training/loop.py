"""The optimizer-step loop of one training stage, and what it needs: the AdamW groups, the metrics log, the stops.

One optimizer step takes `accumulation` micro-batches per process. Its loss is the mean over every answer token of
the global batch: the tokens are counted on all ranks first, each micro-batch's token sum is divided by that total,
and the gradients are reduced (DDP's all-reduce, FSDP's reduce-scatter, both averaging) only after the last
micro-batch. So 1 process and N processes with the same global batch compute the same losses and updates.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import re
import time
from pathlib import Path
from typing import Callable

import torch

from mome import distributed
from mome.distributed import Dist, Preemption


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/Inf: the weights before that step are saved."""


class Stopped(Exception):
    """--stop-after reached: a checkpoint was saved; rerun with --resume auto to continue."""


class Preempted(Exception):
    """SIGTERM: a checkpoint of the last finished step was saved; rerun with --resume auto to continue."""


def no_weight_decay(name: str, p: torch.Tensor) -> bool:
    """The release's rule (1-d tensors and biases are not decayed), with MoLE's stacked per-expert biases (K, ·)
    counted as the biases they are."""
    return p.ndim < 2 or "bias" in name or name.endswith((".scale", ".b_down", ".b_up"))


def make_optimizer(model, stage):
    """AdamW over the trainable parameters (of the model as wrapped: FSDP's shards), two weight-decay groups;
    `stage`: a `mome.train.StageConfig` (lr, betas, weight_decay, llm_lr). With ``stage.llm_lr`` set, the LLM's own
    weights (not its MoLE adapters or routers) form two more groups at that peak lr."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        llm = stage.llm_lr is not None and _is_llm_weight(name)
        groups.setdefault((llm, no_weight_decay(name, p)), []).append(p)
    out = []
    for llm in (False, True):
        for nd in (False, True):
            if (llm, nd) in groups or not llm:
                out.append({"params": groups.get((llm, nd), []), "weight_decay": 0.0 if nd else stage.weight_decay,
                            "lr": stage.llm_lr if llm else stage.lr})
    return torch.optim.AdamW(out, lr=stage.lr, betas=tuple(stage.betas))


def _is_llm_weight(name: str) -> bool:
    """A parameter of the LLM itself (names as wrapped: DDP's ``module.``, FSDP's prefixes), not of its MoLE."""
    return re.search(r"(^|\.)llm\.", name) is not None and ".mole." not in name


class Metrics:
    """metrics.jsonl (appended, flushed every line) and TensorBoard (when installed), on the main process only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, log):
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                log("tensorboard is not installed: metrics go to metrics.jsonl only (pip install tensorboard)")

    def write(self, stage: int, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"stage": stage, "step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"stage{stage}/{k}", v, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(stage: int, model, optimizer, scheduler, batches, env: Dist, t, scfg,
          accumulation: int, global_batch: int, step: int, save: Callable[[int], None], has_checkpoint,
          metrics: Metrics, preemption: Preemption, log, stop_after: int | None = None) -> None:
    """Optimizer steps `step + 1 … scfg.steps` of `stage` (`t`, `scfg`: `mome.train.TrainConfig` and the stage's
    `StageConfig`); `save(step)` writes a checkpoint (collective), `has_checkpoint(step)` says if one exists.
    Raises NonFiniteLoss, Stopped (--stop-after) or Preempted (SIGTERM) after saving."""
    core = distributed.unwrap(model)
    autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                else contextlib.nullcontext())
    progress = _progress(scfg.steps, step, f"stage {stage}", env.is_main)
    model.train()
    steps_this_run = 0
    samples_done, t0 = 0, time.perf_counter()
    while step < scfg.steps:
        micro = [batches.next() for _ in range(accumulation)]
        # The loss is the mean over every answer token of the global batch: count them first (all ranks).
        counts = torch.tensor([_answer_tokens(core, b) for b in micro], dtype=torch.float64)
        total_tokens = env.all_reduce_sum(counts.sum().clone()).item()
        loss_sum = torch.zeros((), dtype=torch.float64)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(micro):
            with distributed.gradient_sync(model, i == accumulation - 1):
                with autocast:
                    out = model(batch["pixel_inputs"], _prompts(batch), _answers(batch))
                token_sum = out.lm_loss.float() * counts[i].item()
                # Gradients are averaged over ranks: scale by the world size so the result is Σ / total_tokens.
                loss = token_sum * (env.world_size / max(total_tokens, 1.0))
                if out.aux_loss is not None:
                    loss = loss + out.aux_loss / accumulation
                loss.backward()
            loss_sum += token_sum.detach().double()
        step_loss = env.all_reduce_sum(loss_sum).item() / max(total_tokens, 1.0)
        if not math.isfinite(step_loss):
            log(f"stage {stage}: the loss became {step_loss} at step {step + 1}; stopping. The weights before this "
                f"step are saved as checkpoint step {step} (lower the learning rate, check the data).")
            if not has_checkpoint(step):
                save(step)
            raise NonFiniteLoss(f"non-finite loss at stage {stage} step {step + 1}")
        grad_norm = (torch.nn.utils.clip_grad_norm_(core.parameters(), t.grad_clip) if t.grad_clip > 0
                     else torch.tensor(0.0))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        samples_done += global_batch
        elapsed = time.perf_counter() - t0
        values = {"loss": step_loss, "lr": lr, "grad_norm": float(distributed.full(grad_norm)),
                  "samples_per_s": samples_done / elapsed, "tokens_per_s": total_tokens / max(elapsed, 1e-9)}
        if step % t.log_every == 0 or step == scfg.steps:
            metrics.write(stage, step, values)
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", sps=f"{values['samples_per_s']:.1f}")
        steps_this_run += 1
        preempted = preemption.requested(env) and step < scfg.steps
        stop = stop_after is not None and steps_this_run >= stop_after and step < scfg.steps
        if step % t.save_every == 0 or step == scfg.steps or stop or preempted:
            save(step)
        if preempted:
            progress.close()
            raise Preempted(f"stage {stage}: SIGTERM; checkpoint saved at step {step}; rerun with --resume auto "
                            "to continue")
        if stop:
            progress.close()
            raise Stopped(f"stage {stage}: stopped after {steps_this_run} steps (--stop-after) at step {step}; "
                          "rerun with --resume auto to continue")
    progress.close()


def _prompts(batch) -> list[str]:
    return [r["conversations"][0]["value"] for r in batch["records"]]


def _answers(batch) -> list[str]:
    return [r["conversations"][1]["value"] for r in batch["records"]]


def _answer_tokens(core, batch) -> int:
    """Answer tokens (and EOS) the loss covers in this micro-batch, counted as the model's tokenizer lays them out."""
    labels = core.tokenize(_prompts(batch), _answers(batch))[2]
    return int((labels[:, 1:] != -100).sum())


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr)
