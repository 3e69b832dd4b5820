"""Where stage 2 starts (`train.init_from`) and what trains (`train.trainable`).

Stage 2 starts from a stage-1 model (one adapter per FFN: replicated into K experts plus a fresh router, PAPER.md
§ Training) or from a stage-2 model — a converted release (`python -m mome.convert official`), a `stage2/final`, a
stage-2 training checkpoint — which is fine-tuned as it is: experts, routers, ADT and projectors kept, nothing
replicated or re-initialised. `check_source` compares the source's MoLE with the run's config before any data is
read; `train.resize_experts` allows another K by `mome.model.mole.resize_experts`'s rule.

`train.trainable` names the parts that train (`PARTS`); the others are frozen but still saved, so every saved model
and checkpoint has the layout its config describes. null: everything the model's config trains.
"""

from __future__ import annotations

from pathlib import Path

from mome import checkpoint as ckpt
from mome.configtree import ConfigError

__all__ = ["PARTS", "part_of", "source_config", "is_stage2", "check_source", "run_overrides",
           "RUN_SETTABLE", "select_trainable"]

# The trainable parts of a MoME, by parameter name (`part_of`).
PARTS = {
    "adt": "MoVE's ADT / pooling per encoder (move.aggregators)",
    "projectors": "MoVE's projectors into the LLM, with EVA's LayerNorm (move.projectors, move.norms)",
    "vision_router": "MoVE's soft router (move.router)",
    "adapters": "MoLE's experts (w_down, b_down, w_up, b_up, scale of every FFN)",
    "mole_router": "MoLE's routers",
    "llm": "the LLM itself (only where the model's config trains it: language.train)",
}


# Model-config keys a run may set on a trained source (`run_overrides`): they change how it trains, not the shape of
# any tensor. Every other key of a source's config is the source's.
RUN_SETTABLE = ("vision.adt_dropout", "language.max_length", "mole.gate", "mole.router_grad", "mole.gumbel",
                "mole.gumbel_tau", "mole.load_balance")


def part_of(name: str) -> str:
    """The `PARTS` entry a parameter name belongs to."""
    if name.startswith("move.aggregators."):
        return "adt"
    if name.startswith(("move.projectors.", "move.norms.")):
        return "projectors"
    if name.startswith("move.router."):
        return "vision_router"
    if name.startswith("llm.") and ".mole.router." in name:
        return "mole_router"
    if name.startswith("llm.") and ".mole." in name:
        return "adapters"
    if name.startswith("llm."):
        return "llm"
    raise KeyError(f"{name}: not a trainable part of MoME (parts: {sorted(PARTS)})")


def source_config(source: str | Path):
    """The MoMEConfig of a saved model (`config.yaml`) or a training checkpoint (`model.yaml`), without building it."""
    from mome.model.config import MoMEConfig

    source = Path(source)
    if (source / "model.safetensors").is_file() and (source / "config.yaml").is_file():
        return MoMEConfig.load(source / "config.yaml")
    if (source / ckpt.MANIFEST).is_file() and (source / "model.yaml").is_file():
        return MoMEConfig.load(source / "model.yaml")
    raise ConfigError(f"train.init_from {source}: neither a saved model (config.yaml + model.safetensors) nor a "
                      f"training checkpoint ({ckpt.MANIFEST} + model.yaml)")


def is_stage2(cfg) -> bool:
    """A model with routed experts (MoLE-I/T/IT): stage 2 fine-tunes it instead of replicating an adapter."""
    return cfg.mole.router not in ("none", "single")


def check_source(source: str | Path, src, run, resize: bool) -> None:
    """`ConfigError` naming both values when the source's MoLE (`src`, its MoMEConfig) does not fit the run's model
    config `run`: another rank or router_hidden; for a stage-2 source also another router kind, or another K without
    `train.resize_experts`; a source without adapters at all."""
    where = f"train.init_from {source}"
    s, r = src.mole, run.mole
    if s.router == "none":
        raise ConfigError(f"{where} has no adapters (mole.router = 'none'): stage 2 needs a stage-1 or stage-2 model")
    mismatched = [key for key in ("rank", "router_hidden") if getattr(s, key) != getattr(r, key)]
    if is_stage2(src):
        mismatched += [key for key in ("router",) if getattr(s, key) != getattr(r, key)]
        if s.num_experts != r.num_experts and not resize:
            mismatched.append("num_experts")
    if mismatched:
        both = "; ".join(f"mole.{k} = {getattr(s, k)!r} in the source, {getattr(r, k)!r} in the run's config"
                         for k in mismatched)
        hint = " (or train.resize_experts=true for another number of experts)" if "num_experts" in mismatched else ""
        raise ConfigError(f"{where} does not fit the run's model: {both}. Set the run's model.mole.* to the "
                          f"source's{hint}")


def run_overrides(src, run) -> tuple[dict, list[str]]:
    """How the run's model config `run` changes a trained source's `src`: (the `RUN_SETTABLE` keys where they differ,
    with the run's values: applied when the source is loaded; the other keys where they differ: the source's values
    are kept). The experts' router and number are left out: `check_source`, replication and resizing handle them."""
    def flat(tree, prefix=""):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(src.to_dict()), flat(run.to_dict())
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)
                    and k not in ("name", "mole.router", "mole.num_experts"))
    return {k: b[k] for k in differ if k in RUN_SETTABLE}, [k for k in differ if k not in RUN_SETTABLE]


def select_trainable(model, parts: list[str] | None, log) -> None:
    """Freeze every trainable parameter outside `parts` (`train.trainable`; None: leave the model as its config
    trains it). A part that is unknown, or has nothing trainable in this model, is a `ConfigError`."""
    if parts is None:
        return
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ConfigError(f"train.trainable: unknown part(s) {unknown}; parts: {sorted(PARTS)}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    present = {part_of(n) for n in trainable}
    empty = [p for p in parts if p not in present]
    if empty:
        raise ConfigError(f"train.trainable: {empty} has no trainable parameter in this model (its trainable parts: "
                          f"{sorted(present)}; the LLM trains only with model.language.train=true)")
    frozen = {n for n in trainable if part_of(n) not in parts}
    model.freeze(frozen)
    kept = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    log(f"train.trainable = {sorted(parts)}: {kept / 1e6:.3f} M parameters train, "
        f"{sum(dict(model.named_parameters())[n].numel() for n in frozen) / 1e6:.3f} M frozen")
