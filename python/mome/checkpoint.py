"""Crash-safe checkpoints: safetensors + JSON, staged, fsynced, a checksummed manifest written last, then renamed.

A checkpoint is a folder `<root>/step-<NNNNNNNN>/` in one of two formats. *full* (the weights in one file):

    weights.safetensors   the trainable weights (a flat name -> tensor dict)
    state.safetensors     every tensor found in the training state (optimizer moments, RNG states, ...)
    state.json            the rest of the training state, with references to the tensors above
    <extra files>         e.g. the run's config.yaml, each process's RNG states (`write_state`)
    MANIFEST.json         written last: the format, the step, each file's size and SHA-256

*sharded* (every process of a job writes its own part; `mome.training.checkpointing` under FSDP): no
weights.safetensors, instead

    shards/shard-<rank + 1>-model-00001-of-00001.safetensors
                          one file per process: the pieces of the weights and optimizer moments it holds, written by
                          that process through `torch.distributed.checkpoint` (`save_shards`), each piece's offset in
                          the full tensor in the file's metadata, so any number of processes reads them back
                          (`load_shards`)

Either is written to a staging folder (`.staging-*`, `begin`), every file and the folder are fsynced, the manifest
goes last, and only then is the folder renamed into place (`commit`; rename is atomic on POSIX). A crash at any point
leaves either the previous checkpoints untouched plus a staging folder (ignored, cleaned up next time), or a complete
new checkpoint. Loading verifies sizes and checksums and skips, with a message saying why, any checkpoint that fails.
Nothing is unpickled: tensors go through safetensors, the rest through JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "MANIFEST.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupted."""


# ---------------------------------------------------------------------------------------------------------------------
# Training state <-> (JSON tree, tensors), without pickle.


def flatten_state(obj: Any, prefix: str = "state") -> tuple[Any, dict[str, torch.Tensor]]:
    """Splits a nested structure of dicts/lists/tuples/scalars/tensors into a JSON-able tree and a tensor dict.

    Tensors become {"__tensor__": key}; tuples {"__tuple__": [...]}; dicts with non-string keys (an optimizer's
    integer parameter ids) {"__items__": [[key, value], ...]}.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            key = path
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{path}.{k}") for k, v in x.items()}
            return {"__items__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} at {path} in a checkpoint (only tensors, containers "
                        "and scalars)")

    return walk(obj, prefix), tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__tuple__"}:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
        if set(tree) == {"__items__"}:
            return {k: unflatten_state(v, tensors) for k, v in tree["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def staging_dir(root: str | os.PathLike, step: int, tag: str | None = None) -> Path:
    """Where checkpoint `step` is staged (`tag` tells concurrent writers' folders apart; default the process id:
    the processes of one job writing one checkpoint together pass the same tag)."""
    return Path(root) / f".staging-{step_dir(root, step).name}-{tag or os.getpid()}"


def begin(root: str | os.PathLike, step: int, tag: str | None = None) -> Path:
    """A fresh, empty `staging_dir` for checkpoint `step` under `root`. Files go into it, then `commit` publishes
    it."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(root, step, tag)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def write_state(folder: Path, name: str, state: Any) -> list[str]:
    """`state` (see flatten_state) as `<name>.json` + `<name>.safetensors`, each fsynced; returns the file names."""
    tree, tensors = flatten_state(state)
    save_file(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(tree))
    files = [f"{name}.safetensors", f"{name}.json"]
    for f in files:
        _fsync_file(folder / f)
    return files


def read_state(folder: Path, name: str, map_location: str | torch.device = "cpu") -> Any:
    tensors = load_file(folder / f"{name}.safetensors", device=str(map_location))
    return unflatten_state(json.loads((folder / f"{name}.json").read_text()), tensors)


def save_shards(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Every process's local pieces of `tensors` (DTensors: the shards it holds; plain tensors: written once) into
    `folder`, one safetensors file per process. Collective: every process of the group calls it with the same keys."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(folder), save_distributed=True))


def load_shards(folder: Path, tensors: dict[str, torch.Tensor], collective: bool) -> None:
    """Fills `tensors` (DTensors or plain tensors of the full shapes) in place from `save_shards` files written by
    any number of processes. `collective`: every process of the group calls it (else this process reads alone)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=not collective)


def commit(root: str | os.PathLike, step: int, staging: Path, fmt: str = "full", keep_last: int | None = 3) -> Path:
    """Publishes a staging folder as checkpoint `step`: fsyncs every file, writes the checksummed manifest last,
    renames the folder into place and keeps the newest `keep_last` complete checkpoints (None: all)."""
    root = Path(root)
    final = step_dir(root, step)
    files = sorted(str(f.relative_to(staging)) for f in staging.rglob("*") if f.is_file())
    for name in files:
        _fsync_file(staging / name)
    for folder in {(staging / name).parent for name in files} | {staging}:
        _fsync_dir(folder)
    manifest = {
        "format": fmt,
        "step": step,
        "files": {name: {"bytes": (staging / name).stat().st_size, "sha256": _sha256(staging / name)} for name in files},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync_file(staging / MANIFEST)
    _fsync_dir(staging)

    if final.exists():  # re-saving a step (e.g. after a resume): replace it, never leave it half-deleted
        trash = root / f".trash-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(root)

    if keep_last is not None:
        complete = [p for p in list_checkpoints(root) if (p / MANIFEST).exists()]
        for old in complete[:-keep_last] if keep_last > 0 else complete:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict | None = None,
    extra_files: dict[str, str] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Writes checkpoint `step` under `root` crash-safely (the full format, one writer) and returns its folder;
    keeps the newest `keep_last`.

    Args:
        weights: name -> tensor (the trainable weights; stored in weights.safetensors).
        state: any nesting of dicts/lists/tuples/scalars/tensors (optimizer, scheduler, sampler, RNG, step, ...).
        extra_files: file name -> text content (e.g. {"config.yaml": ...}).
        keep_last: how many complete checkpoints to keep (None: all).
    """
    staging = begin(root, step)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, staging / "weights.safetensors")
    write_state(staging, "state", state or {})
    write_extra_files(staging, extra_files or {})
    return commit(root, step, staging, "full", keep_last)


def write_extra_files(staging: Path, extra_files: dict[str, str]) -> None:
    for name, text in extra_files.items():
        if "/" in name or name == MANIFEST or (staging / name).exists():
            raise ValueError(f"extra_files: invalid file name {name!r}")
        (staging / name).write_text(text)


# ---------------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Checkpoint:
    path: Path
    step: int
    weights: dict[str, torch.Tensor] | None  # None in the sharded format: read them with `load_shards`
    state: dict
    format: str = "full"  # full | sharded

    @property
    def shards(self) -> Path:
        return self.path / "shards"

    def read_text(self, name: str) -> str:
        return (self.path / name).read_text()

    def read_state(self, name: str):
        """A state written with `write_state` (e.g. "rng-1"), or None when this checkpoint has none of that name."""
        return read_state(self.path, name) if (self.path / f"{name}.json").is_file() else None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint folders under root (complete or not), oldest first. Staging folders are not listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Returns the manifest of a complete, intact checkpoint; raises CheckpointError saying what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{path}: incomplete (no {MANIFEST}; the save was interrupted)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({err})") from err
    for name, meta in entries.items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{path}: {name} is missing")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"{path}: {name} has {size} bytes, the manifest says {meta['bytes']} (truncated?)")
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"{path}: {name} does not match its checksum (altered or corrupted)")
    return manifest


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Loads one checkpoint folder after verifying it (CheckpointError if it is incomplete or corrupted)."""
    path = Path(path)
    manifest = verify_checkpoint(path)
    fmt = manifest.get("format", "full")
    weights = load_file(path / "weights.safetensors", device=str(map_location)) if fmt == "full" else None
    state = read_state(path, "state", map_location)
    return Checkpoint(path=path, step=int(manifest["step"]), weights=weights, state=state, format=fmt)


def latest_checkpoint(root: str | os.PathLike, map_location: str | torch.device = "cpu", log=None) -> Checkpoint | None:
    """The newest checkpoint under root that verifies, or None. Skipped ones are reported through `log`
    (default: warnings.warn) with the reason; leftover staging folders of interrupted saves are removed."""
    root = Path(root)
    report = log or (lambda msg: warnings.warn(msg, stacklevel=2))
    if root.is_dir():
        for leftover in root.glob(".staging-*"):
            report(f"removing {leftover.name}: a save that was interrupted")
            shutil.rmtree(leftover, ignore_errors=True)
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as err:
            report(f"skipping checkpoint {err}")
    return None
