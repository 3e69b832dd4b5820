"""`python -m mome.train`: the two-stage MoME recipe (PAPER.md, Training), from one CPU process to torchrun.

    python -m mome.train                                  # the embedded default: tiny model, synthetic benchmark
    python -m mome.train --config configs/paper_stage1.yaml [key=value ...] [--resume auto|none|DIR]
    torchrun --nproc-per-node 8 -m mome.train --config configs/paper.yaml

Steps: (1) resolve the config (preset + YAML + overrides; unknown keys fail), print it and save it with the run;
(2) prepare the data (the synthetic benchmark is generated on first use); (3) stage 1: MoVE + one adapter per FFN;
(4) stage 2: the stage-1 adapter replicated into K experts plus the MoLE router, or a stage-2 model (`train.init_from`)
fine-tuned as it is (mome.training.finetune); (5) evaluate on the test split, print the per-group table and the
routing summary. Everything goes under `runs/<name>/`:

    config.yaml                 the resolved run config
    metrics.jsonl, tb/          per-step metrics (JSON lines, TensorBoard)
    stage<k>/checkpoints/       crash-safe checkpoints (mome.checkpoint; sharded under FSDP), the newest `keep_last`
    stage<k>/final/             the stage's model (MoME.save_pretrained)
    eval/                       scores (JSON + markdown) of the untrained and the trained model, routing summary

`--resume auto` (the default) continues an interrupted run from its newest complete checkpoint, on any number of
processes; finished stages are not retrained. SIGTERM saves a checkpoint and exits with status 143.

The parts: this file (config, data, stages, evaluation), `mome.training.loop` (the optimizer steps),
`mome.training.finetune` (where stage 2 starts, `train.trainable`),
`mome.distributed` (processes, DDP / FSDP), `mome.training.checkpointing` (checkpoint I/O), docs/distributed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from mome.cli import UsageError, need_dir, need_file, parse, positive
from mome.cli import run as run_program
from mome.configtree import ConfigError, apply_overrides, build, parse_overrides
from mome.schedule import WarmupCosine
from mome.training import checkpointing, finetune, loop
from mome.training.checkpointing import load_model
from mome.training.loop import Metrics, make_optimizer, no_weight_decay

__all__ = ["DEFAULT_RUN", "RunConfig", "DataConfig", "TrainConfig", "StageConfig", "resolve_config", "Batches",
           "make_optimizer", "no_weight_decay", "load_model", "main"]

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
    # Train and evaluate on these datasets only (record field `dataset`, e.g. [synth-rec]); None: all of them.
    datasets: list[str] | None = None


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
    # Peak lr of the LLM's own weights when they train (language.train: true), e.g. lower to fine-tune a pretrained
    # LLM gently; None: lr. Its MoLE adapters and routers always use lr.
    llm_lr: float | None = None


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    stages: list[int] = field(default_factory=lambda: [1, 2])
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    # Start stage 2 from this model (a `final/` folder, a converted release or a checkpoint folder) instead of this
    # run's stage 1: a stage-1 model has its adapter replicated into K experts; a stage-2 model is fine-tuned as it is
    # (mome.training.finetune). Its MoLE must fit model.mole (router, K, rank): checked before any data is read.
    init_from: str | None = None
    # A stage-2 init_from with another K than model.mole.num_experts: keep its first K experts, or add copies of
    # experts j mod K_s (router rows perturbed): `mome.model.mole.resize_experts`. false: such a source is an error.
    resize_experts: bool = False
    # The parts that train (mome.training.finetune.PARTS: adt, projectors, vision_router, adapters, mole_router, llm);
    # the others stay frozen (and saved). null: everything the model's config trains.
    trainable: list[str] | None = None
    global_batch_size: int = 64  # samples per optimizer step, over all processes (unless the stage sets its own)
    micro_batch_size: int = 8  # samples per forward per process; accumulation = global / (micro · world)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    grad_checkpointing: bool = False  # the LLM's decoder layers
    strategy: str = "auto"  # auto | ddp | fsdp (multi-process only; auto: FSDP for a model over 1B parameters)
    # A collective waiting longer than this fails the job (a rank lost without its connection closing); a
    # checkpoint save of the paper's model takes well under a minute.
    timeout_s: float = 1800.0
    grad_clip: float = 1.0  # max global grad norm (0: off)
    log_every: int = 10
    save_every: int = 500  # optimizer steps between checkpoints (a stage's last step is always saved)
    keep_last: int = 3
    evaluate: bool = True  # evaluate the untrained and the final model on the test split
    evaluate_untrained: bool = True  # with `evaluate`: also the model before training ("untrained", or "before
    # fine-tuning" for a run that starts at stage 2 from a trained model)
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


# The embedded default: `python -m mome.train` with no arguments.
DEFAULT_RUN: dict = {
    "preset": "tiny",
    # The tiny preset's LLM is pretrained and frozen, the paper's recipe. Frozen, this run gives REC at the baseline
    # and Doc. below it (measured: Avg 98.0, REC 1, Doc. 14.0; docs/reproduce.md § The tiny LLM), so the default run
    # fine-tunes it, gently: its own weights at a quarter of the stage's lr (llm_lr; REC 4, Doc. 19.0, Avg 96.6).
    "model": {"language": {"train": True}},
    # 4000 training records: 1000 per task group, so 800 + 150 steps of 16 see each record ~4 times.
    "data": {"train": "synth", "test": "synth", "synth_train": 4000, "synth_test": 400},
    "train": {
        "name": "tiny-synth",
        "stage1": {"steps": 800, "lr": 2e-3, "llm_lr": 5e-4, "warmup_steps": 80, "weight_decay": 0.05},
        "stage2": {"steps": 150, "lr": 1e-3, "llm_lr": 2.5e-4, "warmup_steps": 15, "weight_decay": 0.05},
        "global_batch_size": 16,
        "micro_batch_size": 16,
        "log_every": 10,
        "save_every": 100,
        # a box answer is 28 tiny-tokenizer pieces + EOS: 24 (as before) cut every REC answer short of its "]"
        "max_new_tokens": 32,
        # One thread: the same numbers on machines with any core count (2 threads here gave Avg 82.8 instead of
        # 90.2: training this small is sensitive to float rounding, see docs/reproduce.md § The default run).
        "threads": 1,
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
        if s.llm_lr is not None and s.llm_lr <= 0:
            raise ConfigError(f"train.{name}.llm_lr must be > 0 (or null), got {s.llm_lr}")
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
    if run.data.datasets is not None and (not run.data.datasets or "" in run.data.datasets):  # types: configtree
        raise ConfigError(f"data.datasets must be a non-empty list of dataset names (or null), "
                          f"got {run.data.datasets!r}")
    if t.keep_last < 1:
        raise ConfigError(f"train.keep_last must be >= 1, got {t.keep_last}")
    if t.init_from and 1 in t.stages:
        raise ConfigError(f"train.init_from is where stage 2 starts, instead of this run's stage 1: set "
                          f"train.stages=[2] (got {t.stages})")
    if t.trainable is not None:
        unknown = sorted(set(t.trainable) - set(finetune.PARTS))
        if not t.trainable or unknown:
            raise ConfigError(f"train.trainable must be a non-empty list of parts {sorted(finetune.PARTS)} (or null), "
                              f"got {t.trainable!r}")
    if t.timeout_s <= 0:
        raise ConfigError(f"train.timeout_s must be > 0, got {t.timeout_s}")


def run_config_yaml(run: RunConfig, model_cfg) -> str:
    """The resolved config as YAML: the preset name and the complete model config, so it reloads to the same run."""
    tree = dataclasses.asdict(run)
    tree["model"] = model_cfg.to_dict()
    return yaml.safe_dump(tree, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------------
# Data


def read_records_files(run: RunConfig) -> dict[str, list[dict]]:
    """The records of `data.train` / `data.test` where they are files, read and validated ({split: records}): done
    before anything is generated or written, so a bad file fails the run with nothing left behind."""
    from mome.data import load_records

    out = {}
    for split, spec in (("train", run.data.train), ("test", run.data.test)):
        if spec != "synth":
            try:
                out[split] = load_records(spec)
            except ValueError as err:
                raise UsageError(f"data.{split}: {err}") from None
    return out


def prepare_data(run: RunConfig, env: distributed.Dist, log,
                 files: dict[str, list[dict]] | None = None) -> tuple[list[dict], Path, list[dict], Path]:
    """(train records, train image root, test records, test image root): the records already read from files
    (`read_records_files`; the others are read here) and the synthetic benchmark, generated once."""
    from mome.data import load_records

    files = files or {}
    d = run.data
    if "synth" in (d.train, d.test):
        synth_dir = Path(d.synth_dir)
        from mome.data import synth

        if env.is_main:
            synth.ensure(synth_dir, d.synth_train, d.synth_test, d.synth_seed, log)
        env.barrier()

    def resolve(spec: str, split: str) -> tuple[Path, Path]:
        path = Path(d.synth_dir) / f"{split}.jsonl" if spec == "synth" else Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"data.{split}: no such records file {str(path)!r}")
        root = Path(d.image_root) if (d.image_root and spec != "synth") else path.parent
        return path, root

    train_path, train_root = resolve(d.train, "train")
    test_path, test_root = resolve(d.test, "test")
    train = files["train"] if "train" in files else load_records(train_path)
    test = files["test"] if "test" in files else load_records(test_path)
    if d.datasets is not None:
        train, test = select_datasets(train, d.datasets, "train"), select_datasets(test, d.datasets, "test")
    return train, train_root, test, test_root


def select_datasets(records: list[dict], names: list[str], split: str) -> list[dict]:
    """The records of the datasets `names` (`data.datasets`); a name with no record in `split` is an error."""
    present = {r["dataset"] for r in records}  # load_records checked every record has one
    missing = [n for n in names if n not in present]
    if missing:
        raise ConfigError(f"data.datasets: no {split} record of {missing}; the {split} records' datasets are "
                          f"{sorted(present)}")
    return [r for r in records if r["dataset"] in names]


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
# Stages


def build_stage_model(stage: int, model_cfg, run: RunConfig, run_dir: Path, log):
    """The model a stage trains, before any of its own checkpoints are loaded."""
    from mome.model.mome import MoME

    target = model_cfg.mole.router
    if stage == 1:
        cfg = model_cfg.override({"mole.router": "single"}) if target not in ("none", "single") else model_cfg
        model = MoME(cfg)
    else:
        source = Path(run.train.init_from) if run.train.init_from else run_dir / "stage1" / "final"
        src_cfg = finetune.source_config(source)
        finetune.check_source(source, src_cfg, model_cfg, run.train.resize_experts)
        settable, kept = finetune.run_overrides(src_cfg, model_cfg)
        if settable:
            log(f"stage 2: the run's {', '.join(f'{k}={v!r}' for k, v in settable.items())} applied to {source}")
        if kept:
            log(f"stage 2: the model is {source}'s; the run's model config differs in {', '.join(kept[:8])}"
                f"{' …' if len(kept) > 8 else ''}: the source's values are kept (docs/finetune.md)")
        model = load_model(source, settable)
        K = model_cfg.mole.num_experts
        if finetune.is_stage2(src_cfg):
            log(f"stage 2: fine-tuning the stage-2 model {source} as it is ({src_cfg.mole.num_experts} experts, "
                f"router {src_cfg.mole.router}; nothing replicated or re-initialised)")
            if src_cfg.mole.num_experts != K:
                log(f"stage 2: train.resize_experts: {src_cfg.mole.num_experts} → {K} experts "
                    f"({'the first kept' if K < src_cfg.mole.num_experts else 'copies added'})")
                model.resize_experts(K)
        else:
            log(f"stage 2: replicating the stage-1 adapter of {source} into {K} experts (router: {target})")
            model.replicate_adapter(K, router=target)
    finetune.select_trainable(model, run.train.trainable, lambda msg: log(f"stage {stage}: {msg}"))
    return model


def train_stage(stage: int, model, run: RunConfig, env: distributed.Dist, stage_dir: Path, train_data,
                metrics: Metrics, log, resume: str, stop_after: int | None = None,
                preemption: distributed.Preemption | None = None):
    """Setup (device, sharding, optimizer), resume, train, and return the model as wrapped for `save_final`."""
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
    model = distributed.wrap(core, env, t.strategy)
    _log_parameter_memory(core, env, log)
    optimizer = make_optimizer(core, scfg)  # after wrapping: FSDP replaces the parameters by their shards
    scheduler = WarmupCosine(optimizer, total_steps=scfg.steps, warmup_steps=scfg.warmup_steps, min_lr=scfg.min_lr)
    ckpt_dir = stage_dir / "checkpoints"
    step, rng = checkpointing.resume(resume, ckpt_dir, model, optimizer, scheduler, env,
                                     lambda msg: log(f"stage {stage}: {msg}"))
    batches = Batches(*train_data, core.config, run, env, t.seed * 100 + stage, global_batch, micro_batch,
                      consumed=step * accumulation * micro_batch)
    if rng is not None:  # after the loader's iterator, which draws its base seed from torch's generator
        checkpointing.set_rng_state(rng)

    def save(at_step: int) -> None:
        checkpointing.save(ckpt_dir, at_step, model, optimizer, scheduler, env, stage, keep_last=t.keep_last,
                           extra_files={"model.yaml": core.config.to_yaml(),
                                        "run.yaml": run_config_yaml(run, core.config)})

    def has_checkpoint(at_step: int) -> bool:
        return (ckpt.step_dir(ckpt_dir, at_step) / ckpt.MANIFEST).exists()

    loop.train(stage, model, optimizer, scheduler, batches, env, t, scfg, accumulation, global_batch, step, save,
               has_checkpoint, metrics, preemption or distributed.Preemption(), log, stop_after)
    return model


def _log_parameter_memory(core, env: distributed.Dist, log) -> None:
    """Parameter bytes each rank holds (frozen, trainable), gathered on rank 0 and logged."""
    mine = torch.tensor(distributed.parameter_bytes(core), dtype=torch.float64)
    per_rank = [f"{int(f) / 2**20:.3f}+{int(tr) / 2**20:.3f}" for f, tr in env.all_gather(mine)]
    log(f"parameter memory per rank (MiB, frozen+trainable): {' '.join(per_rank)}")


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


def before_training(run: RunConfig, stages: list[int]) -> tuple[str, str]:
    """(eval tag, table label) of the model a run starts from: "untrained" for stage 1; a run that starts at stage 2
    starts from a trained model ("before": a stage-2 source is fine-tuned, a stage-1 source goes through stage 2)."""
    if stages[0] == 1:
        return "untrained", "untrained"
    stage2_source = run.train.init_from and finetune.is_stage2(finetune.source_config(run.train.init_from))
    return "before", "before fine-tuning" if stage2_source else "before stage 2"


def evaluate_model(model, records, image_root, run: RunConfig, env, run_dir: Path, tag: str, log,
                   label: str | None = None) -> dict:
    from mome.eval.harness import evaluate, limit_per_dataset, write_results

    subset = limit_per_dataset(records, run.data.eval_limit)
    what = f"the model {label}" if tag == "before" else f"the {tag} model"  # "the model before fine-tuning"
    log(f"evaluating {what} on {len(subset)} test records ...")
    result = evaluate(model.to(env.device), subset, image_root, batch_size=run.train.eval_batch_size,
                      max_new_tokens=run.train.max_new_tokens, progress=True)
    write_results(result, run_dir / "eval", tag)
    print(f"\n== {what} ==\n{result['markdown']}\n{result['routing_text']}", flush=True)
    return result


def evaluate_baseline(train_records, test_records, run: RunConfig, run_dir: Path) -> dict:
    """The constant-answer baseline (`mome.eval.baselines`) on the same test records as the model."""
    from mome.eval.baselines import constant_baseline
    from mome.eval.harness import limit_per_dataset, write_results

    result = constant_baseline(train_records, limit_per_dataset(test_records, run.data.eval_limit))
    write_results(result, run_dir / "eval", "baseline")
    return result


def _print_comparison(run_dir: Path, before: tuple[str, str], log) -> None:
    """The comparison table: baseline, the model before this run trained it (`before`: its tag and label), and the
    trained model."""
    rows = {}
    for tag, label in (("baseline", "constant answer"), before, ("final", "trained")):
        try:
            rows[label] = json.loads((run_dir / "eval" / f"{tag}.json").read_text())["summary"]
        except (FileNotFoundError, KeyError):
            continue
    if "trained" not in rows or len(rows) < 2:
        return
    keys = [k for k in rows["trained"] if all(k in r for r in rows.values())]
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {label} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |" for label, r in rows.items()]
    print(f"\n== constant-answer baseline vs {before[1]} vs trained ==\n" + "\n".join(lines), flush=True)


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
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.stage1.steps=100 model.mole.num_experts=8"
                                                " (flags and overrides in any order)")
    return parse(p, argv)


def check_inputs(args, run: RunConfig, model_cfg) -> None:
    """Everything a run reads, checked before any data is generated or model built (`UsageError` names it)."""
    if args.config is not None:
        need_file("--config", args.config)
    if args.resume not in ("auto", "none"):
        need_dir("--resume", args.resume)
    if args.stop_after is not None:
        positive("--stop-after", args.stop_after)
    d = run.data
    for split, spec in (("train", d.train), ("test", d.test)):
        if spec != "synth" and not Path(spec).is_file():
            raise UsageError(f"data.{split} {spec}: no such records file (a .jsonl/.json records file, or synth)")
    if d.image_root and not Path(d.image_root).is_dir():
        raise UsageError(f"data.image_root {d.image_root}: no such folder")
    if run.train.stages == [2] and not finetune.is_stage2(model_cfg):
        raise UsageError(f"train.stages = [2] but mole.router = {model_cfg.mole.router!r} has no stage 2: set "
                         f"model.mole.router (e.g. instance) or train.stages=[1]")
    if run.train.init_from:
        need_dir("train.init_from", run.train.init_from)
        if 2 in run.train.stages and finetune.is_stage2(model_cfg):
            src = finetune.source_config(run.train.init_from)
            finetune.check_source(run.train.init_from, src, model_cfg, run.train.resize_experts)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.config is not None:
        need_file("--config", args.config)
    run, model_cfg = resolve_config(args.config, args.overrides)
    check_inputs(args, run, model_cfg)
    text = run_config_yaml(run, model_cfg)
    if args.print_config:
        print(text)
        return 0
    files = read_records_files(run)
    preemption = distributed.Preemption().install()  # before the process group: a SIGTERM from now on is seen
    env = distributed.setup(run.train.device, run.train.timeout_s)
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
        train_records, train_root, test_records, test_root = prepare_data(run, env, log, files)
        log(f"data: {len(train_records)} train records, {len(test_records)} test records; world size "
            f"{env.world_size}, device {env.device}")
        results = {}
        stages = list(run.train.stages)
        if model_cfg.mole.router in ("none", "single") and 2 in stages:
            log(f"mole.router = {model_cfg.mole.router}: no experts to replicate, stage 2 is skipped")
            stages.remove(2)
        before_tag, before_label = before_training(run, stages)
        for stage in stages:
            stage_dir = run_dir / f"stage{stage}"
            if (stage_dir / "final" / "model.safetensors").is_file() and args.resume != "none":
                log(f"stage {stage}: already finished ({stage_dir / 'final'}), not retrained")
                continue
            model = build_stage_model(stage, model_cfg, run, run_dir, log)
            if (stage == stages[0] and run.train.evaluate and run.train.evaluate_untrained and env.is_main
                    and before_tag not in results):
                if not (run_dir / "eval" / f"{before_tag}.json").exists():
                    results[before_tag] = evaluate_model(model, test_records, test_root, run, env, run_dir,
                                                         before_tag, log, label=before_label)
            trained = train_stage(stage, model, run, env, stage_dir, (train_records, train_root), metrics, log,
                                  args.resume, args.stop_after, preemption)
            path = checkpointing.save_final(trained, stage_dir, env)
            log(f"stage {stage}: done, model saved to {path}")
            del model, trained
        if run.train.evaluate and env.is_main:
            final_stage = stages[-1]
            final = load_model(run_dir / f"stage{final_stage}" / "final").to(env.device)
            results["final"] = evaluate_model(final, test_records, test_root, run, env, run_dir, "final", log)
            evaluate_baseline(train_records, test_records, run, run_dir)
            _print_comparison(run_dir, (before_tag, before_label), log)
        log(f"finished in {time.perf_counter() - start:.0f} s; everything is in {run_dir}")
        return 0
    except loop.NonFiniteLoss as err:
        log(str(err))
        return 3
    except loop.Stopped as err:
        log(str(err))
        return 0
    except loop.Preempted as err:
        log(str(err))
        return 143  # 128 + SIGTERM, as if the signal had ended the process: the job did not finish
    finally:
        metrics.close()
        distributed.cleanup()
        preemption.uninstall()


if __name__ == "__main__":
    sys.exit(run_program(main, "python -m mome.train"))
