"""`python -m mome.train`: the two-stage MoME recipe (PAPER.md, Training), from one CPU process to torchrun.

    python -m mome.train                                  # the embedded default: tiny model, synthetic benchmark
    python -m mome.train --config configs/paper_stage1.yaml [key=value ...] [--resume auto|none|DIR]
    torchrun --nproc-per-node 8 -m mome.train --config configs/paper.yaml

Steps: (1) resolve the config (preset + YAML + overrides; unknown keys fail), print it and save it with the run;
(2) prepare the data (the synthetic benchmark is generated on first use); (3) stage 1: MoVE + one adapter per FFN;
(4) stage 2: the stage-1 adapter replicated into K experts plus the MoLE router; (5) evaluate on the test split,
print the per-group table and the routing summary. Everything goes under `runs/<name>/`:

    config.yaml                 the resolved run config
    metrics.jsonl, tb/          per-step metrics (JSON lines, TensorBoard)
    stage<k>/checkpoints/       crash-safe checkpoints (mome.checkpoint), the newest `keep_last` kept
    stage<k>/final/             the stage's model (MoME.save_pretrained)
    eval/                       scores (JSON + markdown) of the untrained and the trained model, routing summary

`--resume auto` (the default) continues an interrupted run from its newest complete checkpoint; finished stages
are not retrained. The loss of a global batch is the mean over all its answer tokens, whatever the split into
micro-batches and processes, so 1 process and N processes with the same global batch compute the same losses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml

from mome import checkpoint as ckpt
from mome import distributed
from mome.configtree import ConfigError, apply_overrides, build, parse_overrides
from mome.schedule import WarmupCosine

if TYPE_CHECKING:
    from mome.model.config import MoMEConfig

# ---------------------------------------------------------------------------------------------------------------------
# Config


@dataclass
class DataConfig:
    train: str = "synth"  # "synth" (the built-in benchmark) or a .json / .jsonl file of records
    test: str = "synth"
    image_root: str | None = None  # default: the folder of the records file
    synth_dir: str = "data/synth"  # where the synthetic benchmark is generated on first use
    synth_train: int = 2000
    synth_test: int = 400
    synth_seed: int = 0
    on_missing: str = "error"  # a missing / unreadable image: "error" or "skip" (counted)
    # one_group: every optimizer step's batch from one group, the groups in turn (the release, OFFICIAL.md);
    # mixed: each sample's group drawn at random, groups equally likely (our reading of PAPER.md App. B).
    batching: str = "one_group"
    num_workers: int = 0
    eval_limit: int | None = None  # evaluate on at most this many test records per dataset (None: all)


@dataclass
class StageConfig:
    steps: int = 30000  # optimizer steps
    lr: float = 5e-4  # peak, reached after linear warm-up from 0; then cosine to min_lr
    warmup_steps: int = 1000
    min_lr: float = 0.0
    weight_decay: float = 0.05  # AdamW; biases, norms and adapter scales are not decayed (`no_weight_decay`)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    global_batch_size: int | None = None  # this stage's (the release: 64, then 16); None: train.global_batch_size
    micro_batch_size: int | None = None  # None: train.micro_batch_size


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    stages: list[int] = field(default_factory=lambda: [1, 2])
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    # Start stage 2 from this stage-1 model (a `final/` folder or a checkpoint folder) instead of this run's stage 1.
    init_from: str | None = None
    global_batch_size: int = 64  # samples per optimizer step, over all processes (unless the stage sets its own)
    micro_batch_size: int = 8  # samples per forward per process; accumulation = global / (micro · world)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    grad_checkpointing: bool = False  # the LLM's decoder layers
    strategy: str = "auto"  # auto | ddp | fsdp (multi-process only; auto: FSDP for a model over 1B parameters)
    grad_clip: float = 1.0  # max global grad norm (0: off)
    log_every: int = 10
    save_every: int = 500  # optimizer steps between checkpoints (a stage's last step is always saved)
    keep_last: int = 3
    evaluate: bool = True  # evaluate the untrained and the final model on the test split
    eval_batch_size: int = 32
    max_new_tokens: int = 32
    tensorboard: bool = True
    threads: int = 0  # torch.set_num_threads (0: torch's default)

    def batch_sizes(self, stage: int) -> tuple[int, int]:
        """(global, micro) batch size of `stage`: the stage's own where set, else the run-wide ones."""
        s = self.stage1 if stage == 1 else self.stage2
        return (s.global_batch_size or self.global_batch_size, s.micro_batch_size or self.micro_batch_size)


@dataclass
class RunConfig:
    preset: str = "tiny"  # the model preset the `model` mapping is applied over
    model: dict = field(default_factory=dict)  # overrides of mome.MoMEConfig fields (nested mapping)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# The embedded default: `python -m mome.train` with no arguments. The tiny LLM is random, so it trains with the rest
# (`language.train: true` in the tiny preset); the paper's recipe keeps the LLM frozen (configs/paper_*.yaml).
DEFAULT_RUN: dict = {
    "preset": "tiny",
    "model": {},
    "data": {"train": "synth", "test": "synth"},
    "train": {
        "name": "tiny-synth",
        "stage1": {"steps": 500, "lr": 2e-3, "warmup_steps": 50, "weight_decay": 0.05},
        "stage2": {"steps": 200, "lr": 1e-3, "warmup_steps": 20, "weight_decay": 0.05},
        "global_batch_size": 16,
        "micro_batch_size": 16,
        "log_every": 10,
        "save_every": 100,
        "max_new_tokens": 24,
        "eval_batch_size": 50,
    },
}


def resolve_config(config_path: str | None, overrides: list[str]) -> tuple[RunConfig, "MoMEConfig"]:
    """(run config, model config) from the embedded default or a YAML file, plus `key=value` overrides."""
    from mome.model.config import MoMEConfig

    if config_path is None:
        data = DEFAULT_RUN
    else:
        with open(config_path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{config_path}: expected a mapping at the top level")
    pairs = parse_overrides(overrides)
    model_pairs = [(k[len("model."):], v) for k, v in pairs if k.startswith("model.")]
    run_pairs = [(k, v) for k, v in pairs if not k.startswith("model.")]
    known = dataclasses.asdict(build(RunConfig, {k: v for k, v in data.items() if k != "model"}))
    data = apply_overrides(data, run_pairs, known)
    run = build(RunConfig, data)
    if not isinstance(run.model, dict):
        raise ConfigError(f"model must be a mapping of MoMEConfig overrides, got {type(run.model).__name__}")
    model_cfg = MoMEConfig.preset(run.preset)
    if run.model:
        model_cfg = model_cfg.override(_flatten(run.model))
    if model_pairs:
        model_cfg = model_cfg.override(dict(model_pairs))
    _validate(run)
    return run, model_cfg


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k not in ("mean", "std"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _validate(run: RunConfig) -> None:
    t = run.train
    if not t.stages or any(s not in (1, 2) for s in t.stages) or t.stages != sorted(set(t.stages)):
        raise ConfigError(f"train.stages must be [1], [2] or [1, 2], got {t.stages}")
    for key in ("global_batch_size", "micro_batch_size", "log_every", "save_every", "eval_batch_size",
                "max_new_tokens"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    for name in ("stage1", "stage2"):
        s = getattr(t, name)
        if s.steps < 1 or s.warmup_steps < 0 or s.lr <= 0 or s.min_lr < 0 or len(s.betas) != 2:
            raise ConfigError(f"train.{name}: need steps >= 1, warmup_steps >= 0, lr > 0, min_lr >= 0 and two betas")
        for key in ("global_batch_size", "micro_batch_size"):
            if getattr(s, key) is not None and getattr(s, key) < 1:
                raise ConfigError(f"train.{name}.{key} must be >= 1 (or null), got {getattr(s, key)}")
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision must be fp32 or bf16, got {t.precision!r}")
    if t.strategy not in ("auto", "ddp", "fsdp"):
        raise ConfigError(f"train.strategy must be auto, ddp or fsdp, got {t.strategy!r}")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {t.device!r}")
    if run.data.on_missing not in ("error", "skip"):
        raise ConfigError(f"data.on_missing must be error or skip, got {run.data.on_missing!r}")
    if run.data.batching not in ("one_group", "mixed"):
        raise ConfigError(f"data.batching must be one_group or mixed, got {run.data.batching!r}")
    if t.keep_last < 1:
        raise ConfigError(f"train.keep_last must be >= 1, got {t.keep_last}")


def run_config_yaml(run: RunConfig, model_cfg) -> str:
    """The resolved config as YAML: the preset name and the complete model config, so it reloads to the same run."""
    tree = dataclasses.asdict(run)
    tree["model"] = model_cfg.to_dict()
    return yaml.safe_dump(tree, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------------
# Data


def prepare_data(run: RunConfig, env: distributed.Dist, log) -> tuple[list[dict], Path, list[dict], Path]:
    """(train records, train image root, test records, test image root); generates the synthetic benchmark once."""
    from mome.data import load_records

    d = run.data
    if "synth" in (d.train, d.test):
        synth_dir = Path(d.synth_dir)
        if env.is_main and not (synth_dir / "train.jsonl").exists():
            from mome.data import synth

            log(f"generating the synthetic benchmark in {synth_dir} (first use) ...")
            synth.generate(synth_dir, n_train=d.synth_train, n_test=d.synth_test, seed=d.synth_seed)
        env.barrier()

    def resolve(spec: str, split: str) -> tuple[Path, Path]:
        path = Path(d.synth_dir) / f"{split}.jsonl" if spec == "synth" else Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"data.{split}: no such records file {str(path)!r}")
        root = Path(d.image_root) if (d.image_root and spec != "synth") else path.parent
        return path, root

    train_path, train_root = resolve(d.train, "train")
    test_path, test_root = resolve(d.test, "test")
    return load_records(train_path), train_root, load_records(test_path), test_root


class Batches:
    """Micro-batches for one rank from the group-balanced sampler (`data.batching`: one group per global batch, or
    mixed), resumable: the sampler's state is a count of consumed indices, set from the optimizer step on resume."""

    def __init__(self, records, image_root, model_cfg, run: RunConfig, env: distributed.Dist, seed: int,
                 global_batch_size: int, micro_batch_size: int, consumed: int = 0):
        from mome.data import GroupBalancedSampler, MultimodalDataset, collate
        from mome.model.mome import MoME

        self.dataset = MultimodalDataset(records, image_root, on_missing=run.data.on_missing)
        self.sampler = GroupBalancedSampler(self.dataset.records, batch_size=micro_batch_size, seed=seed,
                                            rank=env.rank, world_size=env.world_size, batching=run.data.batching,
                                            global_batch_size=global_batch_size)
        state = self.sampler.state_dict()
        state["yielded"] = consumed
        self.sampler.load_state_dict(state)
        processors = MoME.preprocessors(model_cfg)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=micro_batch_size, sampler=self.sampler, num_workers=run.data.num_workers,
            collate_fn=lambda items: collate(items, processors), persistent_workers=run.data.num_workers > 0,
        )
        self._it = iter(self.loader)

    def next(self) -> dict:
        return next(self._it)


# ---------------------------------------------------------------------------------------------------------------------
# Model, optimizer, state


def build_stage_model(stage: int, model_cfg, run: RunConfig, run_dir: Path, log):
    """The model a stage trains, before any of its own checkpoints are loaded."""
    from mome.model.mome import MoME

    target = model_cfg.mole.router
    if stage == 1:
        cfg = model_cfg.override({"mole.router": "single"}) if target not in ("none", "single") else model_cfg
        return MoME(cfg)
    source = Path(run.train.init_from) if run.train.init_from else run_dir / "stage1" / "final"
    model = load_model(source)
    if model.config.mole.router != "single":
        raise ConfigError(f"stage 2 starts from a stage-1 model (mole.router = single); {source} has "
                          f"mole.router = {model.config.mole.router!r}")
    log(f"stage 2: replicating the stage-1 adapter of {source} into {model_cfg.mole.num_experts} experts "
        f"(router: {target})")
    model.replicate_adapter(model_cfg.mole.num_experts, router=target)
    return model


def load_model(source: Path):
    """A MoME from a `final/` folder (save_pretrained) or from a training checkpoint folder."""
    from mome.model.config import MoMEConfig
    from mome.model.mome import MoME

    if (source / "model.safetensors").is_file():
        return MoME.from_pretrained(source)
    if (source / ckpt.MANIFEST).is_file():
        c = ckpt.load_checkpoint(source)
        model = MoME(MoMEConfig.from_dict(yaml.safe_load(c.read_text("model.yaml"))))
        _load_weights(model, c.weights, source)
        return model
    raise FileNotFoundError(f"{source} is neither a saved model (model.safetensors) nor a checkpoint ({ckpt.MANIFEST})")


def _load_weights(model, weights: dict[str, torch.Tensor], source) -> None:
    expected = model.saved_state()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ckpt.CheckpointError(f"{source}: weights do not match the model (missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]})")
    for k, v in weights.items():
        if v.shape != expected[k].shape:
            raise ckpt.CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects "
                                       f"{tuple(expected[k].shape)}")
    model.load_state_dict(weights, strict=False)


def no_weight_decay(name: str, p: torch.Tensor) -> bool:
    """The release's rule (1-d tensors and biases are not decayed), with MoLE's stacked per-expert biases (K, ·)
    counted as the biases they are."""
    return p.ndim < 2 or "bias" in name or name.endswith((".scale", ".b_down", ".b_up"))


def make_optimizer(model, stage: StageConfig):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_weight_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=stage.lr, betas=tuple(stage.betas))


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": _tuples_to_lists(random.getstate()),
        "numpy": _tuples_to_lists(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_lists_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_tuples_to_lists(v) for v in x]
    return x


def _lists_to_tuples(x):
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, list) else x


# ---------------------------------------------------------------------------------------------------------------------
# Training one stage


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


class NonFiniteLoss(RuntimeError):
    pass


def wrap_model(model, env: distributed.Dist, strategy: str):
    """DDP or FSDP (torch's fully_shard) around the model when running multi-process; the model itself otherwise."""
    if not env.enabled:
        return model
    n_params = sum(p.numel() for p in model.parameters())
    if strategy == "fsdp" or (strategy == "auto" and n_params > 1e9):
        from torch.distributed.fsdp import fully_shard

        for layer in model.llm.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # Experts a batch does not route to get no gradient: find_unused_parameters lets DDP cope (K > 1 only).
    return DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
               find_unused_parameters=model.config.num_experts > 1)


def _is_fsdp(model) -> bool:
    return type(model).__name__.startswith("FSDP")


def full_state(model, core, optimizer):
    """(weights to save, optimizer state): gathered in full on every rank under FSDP, else as they are."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
        keep = set(core.saved_state())
        return {k: v for k, v in model_sd.items() if k in keep}, optim_sd
    return core.saved_state(), optimizer.state_dict()


class Stopped(Exception):
    """--stop-after reached: a checkpoint was saved; rerun with --resume auto to continue."""


def train_stage(stage: int, model, run: RunConfig, env: distributed.Dist, stage_dir: Path, train_data,
                metrics: Metrics, log, resume: str, stop_after: int | None = None) -> None:
    t = run.train
    scfg = t.stage1 if stage == 1 else t.stage2
    global_batch, micro_batch = t.batch_sizes(stage)
    per_step = micro_batch * env.world_size
    if global_batch % per_step:
        raise ConfigError(f"stage {stage}: the global batch size ({global_batch}) must be a multiple of the micro "
                          f"batch size × world size ({micro_batch} × {env.world_size})")
    accumulation = global_batch // per_step
    core = model.to(env.device)
    if t.grad_checkpointing:
        core.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = make_optimizer(core, scfg)
    scheduler = WarmupCosine(optimizer, total_steps=scfg.steps, warmup_steps=scfg.warmup_steps, min_lr=scfg.min_lr)
    ckpt_dir = stage_dir / "checkpoints"

    step, rng = 0, None
    if resume != "none":
        source = ckpt.latest_checkpoint(ckpt_dir, log=log) if resume == "auto" else ckpt.load_checkpoint(resume)
        if source is not None:
            _load_weights(core, source.weights, source.path)
            optimizer.load_state_dict(source.state["optimizer"])
            scheduler.load_state_dict(source.state["scheduler"])
            rng = source.state["rng"]
            step = int(source.state["step"])
            log(f"stage {stage}: resumed from {source.path} at step {step}")
    model = wrap_model(core, env, t.strategy)
    seed = t.seed * 100 + stage
    batches = Batches(*train_data, core.config, run, env, seed, global_batch, micro_batch,
                      consumed=step * accumulation * micro_batch)
    if rng is not None:  # after the loader's iterator, which draws its base seed from torch's generator
        set_rng_state(rng)
    autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                else contextlib.nullcontext())

    def save(at_step: int) -> None:
        weights, optim_state = full_state(model, core, optimizer)
        if env.is_main:
            state = {"optimizer": optim_state, "scheduler": scheduler.state_dict(), "rng": rng_state(),
                     "step": at_step, "stage": stage}
            ckpt.save_checkpoint(ckpt_dir, at_step, weights, state, keep_last=t.keep_last,
                                 extra_files={"model.yaml": core.config.to_yaml(),
                                              "run.yaml": run_config_yaml(run, core.config)})
        env.barrier()

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
            sync = contextlib.nullcontext()
            if env.enabled and i < accumulation - 1 and hasattr(model, "no_sync"):
                sync = model.no_sync()
            with sync, autocast:
                out = model(batch["pixel_inputs"], _prompts(batch), _answers(batch))
                token_sum = out.lm_loss.float() * counts[i].item()
                # DDP averages gradients over ranks: scale by the world size so the result is Σ / total_tokens.
                loss = token_sum * (env.world_size / max(total_tokens, 1.0))
                if out.aux_loss is not None:
                    loss = loss + out.aux_loss / accumulation
            loss.backward()
            loss_sum += token_sum.detach().double()
        step_loss = env.all_reduce_sum(loss_sum).item() / max(total_tokens, 1.0)
        if not math.isfinite(step_loss):
            log(f"stage {stage}: the loss became {step_loss} at step {step + 1}; stopping. The weights before this "
                f"step are saved as checkpoint step {step} in {ckpt_dir} (lower the learning rate, check the data).")
            if not (ckpt.step_dir(ckpt_dir, step) / ckpt.MANIFEST).exists():
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
        values = {"loss": step_loss, "lr": lr, "grad_norm": float(grad_norm),
                  "samples_per_s": samples_done / elapsed, "tokens_per_s": total_tokens / max(elapsed, 1e-9)}
        if step % t.log_every == 0 or step == scfg.steps:
            metrics.write(stage, step, values)
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", sps=f"{values['samples_per_s']:.1f}")
        steps_this_run += 1
        stop = stop_after is not None and steps_this_run >= stop_after and step < scfg.steps
        if step % t.save_every == 0 or step == scfg.steps or stop:
            save(step)
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


def save_final(model, stage_dir: Path) -> Path:
    """The stage's model, written to a temporary folder and renamed into place (a crash never leaves half of it)."""
    final = stage_dir / "final"
    tmp = stage_dir / f".final-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


# ---------------------------------------------------------------------------------------------------------------------
# The program


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mome.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="run config YAML (default: the embedded tiny + synthetic recipe)")
    p.add_argument("--resume", default="auto",
                   help="auto: continue from the newest complete checkpoint of this run (default); none: start over; "
                        "or a checkpoint folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N optimizer steps in this invocation, with a checkpoint (a job with a time limit: "
                        "rerun with --resume auto to continue)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.stage1.steps=100 model.mole.num_experts=8")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run, model_cfg = resolve_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    text = run_config_yaml(run, model_cfg)
    if args.print_config:
        print(text)
        return 0
    env = distributed.setup(run.train.device)
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    run_dir = Path(run.train.out_dir) / run.train.name

    def log(msg: str) -> None:
        if env.is_main:
            print(f"[mome.train] {msg}", file=sys.stderr, flush=True)

    if args.resume == "none" and env.is_main and run_dir.exists():
        log(f"--resume none: starting over in {run_dir} (its old checkpoints are removed)")
        for stage_name in ("stage1", "stage2"):
            shutil.rmtree(run_dir / stage_name, ignore_errors=True)
        for name in ("metrics.jsonl",):
            (run_dir / name).unlink(missing_ok=True)
    env.barrier()
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(text)
        print(text, flush=True)
    torch.manual_seed(run.train.seed)
    random.seed(run.train.seed)
    np.random.seed(run.train.seed)
    metrics = Metrics(run_dir, env.is_main, run.train.tensorboard, log)
    start = time.perf_counter()
    try:
        train_records, train_root, test_records, test_root = prepare_data(run, env, log)
        log(f"data: {len(train_records)} train records, {len(test_records)} test records; world size "
            f"{env.world_size}, device {env.device}")
        results = {}
        stages = list(run.train.stages)
        if model_cfg.mole.router in ("none", "single") and 2 in stages:
            log(f"mole.router = {model_cfg.mole.router}: no experts to replicate, stage 2 is skipped")
            stages.remove(2)
        model = None
        for stage in stages:
            stage_dir = run_dir / f"stage{stage}"
            if (stage_dir / "final" / "model.safetensors").is_file() and args.resume != "none":
                log(f"stage {stage}: already finished ({stage_dir / 'final'}), not retrained")
                model = None
                continue
            model = build_stage_model(stage, model_cfg, run, run_dir, log)
            if stage == stages[0] and run.train.evaluate and env.is_main and "untrained" not in results:
                if not (run_dir / "eval" / "untrained.json").exists():
                    results["untrained"] = evaluate_model(model, test_records, test_root, run, env, run_dir,
                                                          "untrained", log)
            train_stage(stage, model, run, env, stage_dir, (train_records, train_root), metrics, log,
                        args.resume if args.resume in ("auto", "none") else args.resume, args.stop_after)
            if env.is_main:
                path = save_final(model, stage_dir)
                log(f"stage {stage}: done, model saved to {path}")
            env.barrier()
        if run.train.evaluate and env.is_main:
            final_stage = stages[-1]
            final = load_model(run_dir / f"stage{final_stage}" / "final").to(env.device)
            results["final"] = evaluate_model(final, test_records, test_root, run, env, run_dir, "final", log)
            _print_comparison(run_dir, log)
        log(f"finished in {time.perf_counter() - start:.0f} s; everything is in {run_dir}")
        return 0
    except NonFiniteLoss as err:
        log(str(err))
        return 3
    except Stopped as err:
        log(str(err))
        return 0
    finally:
        metrics.close()
        distributed.cleanup()


def evaluate_model(model, records, image_root, run: RunConfig, env, run_dir: Path, tag: str, log) -> dict:
    from mome.eval.harness import evaluate, limit_per_dataset, write_results

    subset = limit_per_dataset(records, run.data.eval_limit)
    log(f"evaluating the {tag} model on {len(subset)} test records ...")
    result = evaluate(model.to(env.device), subset, image_root, batch_size=run.train.eval_batch_size,
                      max_new_tokens=run.train.max_new_tokens, progress=True)
    write_results(result, run_dir / "eval", tag)
    print(f"\n== {tag} model ==\n{result['markdown']}\n{result['routing_text']}", flush=True)
    return result


def _print_comparison(run_dir: Path, log) -> None:
    try:
        before = json.loads((run_dir / "eval" / "untrained.json").read_text())["summary"]
        after = json.loads((run_dir / "eval" / "final.json").read_text())["summary"]
    except (FileNotFoundError, KeyError):
        return
    keys = [k for k in after if k in before]
    rows = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
            "| untrained | " + " | ".join(f"{before[k]:.2f}" for k in keys) + " |",
            "| trained | " + " | ".join(f"{after[k]:.2f}" for k in keys) + " |"]
    print("\n== untrained vs trained ==\n" + "\n".join(rows), flush=True)


if __name__ == "__main__":
    sys.exit(main())
