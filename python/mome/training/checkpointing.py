"""Checkpoint I/O of a training stage: what goes into a `mome.checkpoint` folder, and back into the model, the
optimizer, the scheduler and the RNGs; the stage's final model; loading a model from either.

A checkpoint holds the model's `saved_state` (trainable weights plus every randomly initialised base part), AdamW's
state keyed by parameter name, the scheduler, the step, and each rank's RNG states (`rng-<rank>`). Under FSDP it is
written in the sharded format: every rank writes the pieces it holds and nothing is gathered on one rank; otherwise
rank 0 writes the full format. Both are read by any number of processes with or without FSDP (names, not ranks, key
the state), so a run can continue on another world size. Rank 0 chooses which checkpoint to resume from and tells
the others, so all ranks load the same one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from mome import checkpoint as ckpt
from mome import distributed
from mome.distributed import Dist


def save(ckpt_dir: Path, step: int, model, optimizer, scheduler, env: Dist, stage: int,
         extra_files: dict[str, str], keep_last: int) -> None:
    """Checkpoint `step` of a stage. Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    core = distributed.unwrap(model)
    sharded = distributed.is_fsdp(model)
    staging = ckpt.staging_dir(ckpt_dir, step, tag="job")
    if env.is_main:
        ckpt.begin(ckpt_dir, step, tag="job")
    env.barrier()
    optim = get_optimizer_state_dict(core, optimizer)  # {"state": {name: {exp_avg, ...}}, "param_groups": [...]}
    if sharded:
        ckpt.save_shards(staging / "shards", {**_prefixed("model.", core.saved_state()), **_optim_tensors(optim)})
        optimizer_state = {"param_groups": optim["param_groups"]}
    else:
        optimizer_state = optim
        if env.is_main:
            weights = {k: v.detach().cpu().contiguous() for k, v in core.saved_state().items()}
            save_file(weights, staging / "weights.safetensors")
    ckpt.write_state(staging, f"rng-{env.rank}", rng_state())
    env.barrier()
    if env.is_main:
        state = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "step": step, "stage": stage,
                 "world_size": env.world_size}
        ckpt.write_state(staging, "state", state)
        ckpt.write_extra_files(staging, extra_files)
        ckpt.commit(ckpt_dir, step, staging, "sharded" if sharded else "full", keep_last)
    env.barrier()


def resume(spec: str, ckpt_dir: Path, model, optimizer, scheduler, env: Dist, log) -> tuple[int, dict | None]:
    """Loads the checkpoint `spec` names (auto: the newest complete one in `ckpt_dir`, or none; a folder) into the
    model, optimizer and scheduler. Returns (its step, this rank's RNG states), or (0, None) with nothing to load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_state_dict

    if spec == "none":
        return 0, None
    if spec == "auto":
        found = ckpt.latest_checkpoint(ckpt_dir, log=log) if env.is_main else None
        step = env.broadcast_int(found.step if found is not None else -1)
        if step < 0:
            return 0, None
        source = found if env.is_main else ckpt.load_checkpoint(ckpt.step_dir(ckpt_dir, step))
    else:
        source = ckpt.load_checkpoint(spec)
    core = distributed.unwrap(model)
    fsdp = distributed.is_fsdp(model)
    if source.format == "sharded":
        optim = get_optimizer_state_dict(core, optimizer)  # the targets: this rank's shapes, state initialised
        tensors = {**_prefixed("model.", core.saved_state()), **_optim_tensors(optim)}
        ckpt.load_shards(source.shards, tensors, collective=fsdp)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optim_state = {"state": optim["state"], "param_groups": source.state["optimizer"]["param_groups"]}
        whole = False
    else:
        weights, optim_state, whole = source.weights, source.state["optimizer"], fsdp
    check_weights(core, weights, source.path)
    set_state_dict(core, optimizer, model_state_dict=weights, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=whole, strict=False))
    scheduler.load_state_dict(source.state["scheduler"])
    rng = source.read_state(f"rng-{env.rank}") or source.read_state("rng-0")
    log(f"resumed from {source.path} at step {source.step} (written by {source.state.get('world_size', 1)} "
        f"process(es), {source.format} format)")
    return int(source.state["step"]), rng


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def _optim_tensors(optim: dict) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter tensors as flat names ("optim.<param>.<exp_avg|exp_avg_sq|step>"), the same objects
    as in `optim` (so loading into them fills `optim`)."""
    return {f"optim.{name}.{key}": v for name, st in optim["state"].items() for key, v in st.items()}


def check_weights(model, weights: dict[str, torch.Tensor], source) -> None:
    """The checkpoint's weights are exactly the model's `saved_state`, with the same (full) shapes."""
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


def load_model(source: Path, overrides: dict | None = None):
    """A MoME from a `final/` folder (save_pretrained) or from a training checkpoint folder (either format);
    `overrides` (dotted model-config keys → values) change its config before it is built, never a tensor's shape."""
    from mome.model.config import MoMEConfig
    from mome.model.mome import MoME

    source = Path(source)
    if (source / "model.safetensors").is_file():
        return MoME.from_pretrained(source, overrides)
    if (source / ckpt.MANIFEST).is_file():
        c = ckpt.load_checkpoint(source)
        cfg = MoMEConfig.from_dict(yaml.safe_load(c.read_text("model.yaml")))
        model = MoME(cfg.override(overrides) if overrides else cfg)
        weights = c.weights
        if weights is None:
            weights = {k: v.detach().clone() for k, v in model.saved_state().items()}
            tensors = _prefixed("model.", weights)
            ckpt.load_shards(c.shards, tensors, collective=False)
            weights = {k[len("model."):]: v for k, v in tensors.items()}
        check_weights(model, weights, source)
        model.load_state_dict(weights, strict=False)
        return model
    raise FileNotFoundError(f"{source} is neither a saved model (model.safetensors) nor a checkpoint ({ckpt.MANIFEST})")


def save_final(model, stage_dir: Path, env: Dist) -> Path:
    """The stage's model as `MoME.save_pretrained` writes it, to a temporary folder renamed into place (a crash never
    leaves half of it). Collective. Under FSDP the saved tensors are gathered one at a time onto rank 0 and written
    through `_shell`, so no rank ever holds the whole model."""
    core = distributed.unwrap(model)
    final = stage_dir / "final"
    if distributed.is_fsdp(model):
        state = {}
        for k, v in core.saved_state().items():
            whole = distributed.full(v)
            if env.is_main:
                state[k] = whole.detach().cpu()
        if env.is_main:
            _write_final(_shell(core, state), stage_dir, final)
    elif env.is_main:
        _write_final(core, stage_dir, final)
    env.barrier()
    return final


def _shell(core, state: dict[str, torch.Tensor]):
    """A MoME holding `state` (the saved tensors) and nothing else: built on the meta device from `core`'s config
    with the pretrained paths dropped (nothing is read from disk), then given `core`'s config back, so that its
    `saved_state` and `save_pretrained` are `core`'s. A config whose sizes do not match the pretrained parts fails
    here, on the shapes of the trainable tensors."""
    from mome.model.mome import MoME

    cfg = core.config
    no_paths = {"language.path": None, **{f"vision.{name}.path": None for name in cfg.encoders()}}
    with torch.device("meta"):
        shell = MoME(cfg.override(no_paths), core.tokenizer)
    shell.config = cfg
    shell.load_state_dict(state, strict=False, assign=True)
    return shell


def _write_final(model, stage_dir: Path, final: Path) -> None:
    tmp = stage_dir / f".final-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


# ---------------------------------------------------------------------------------------------------------------------
# RNG states (torch, Python, NumPy, CUDA), as tensors and lists (JSON, no pickle)


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
