"""Reading and writing encoder weight files: ``torch.save``d state dicts (LAVIS `eva_vit_g.pth`, Meta
`dinov2_vitl14_pretrain.pth`, trainer checkpoints ``{"model": …}``) through ``torch.load(weights_only=True)`` only,
safetensors files, and transformers folders (``*.safetensors`` shards, or ``*.bin``, with ``config.json``). What the
tensors are is decided from their names by `mome.model.encoder_weights`."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from mome.model.encoder_weights import EncoderWeightsError, detect_format

__all__ = ["read_state_dict", "read_encoder_checkpoint", "save_encoder_safetensors"]


class _SafetensorsFiles(Mapping):
    """The tensors of one or more safetensors files, read one at a time on access (a whole BLIP-2 checkpoint holds
    an LLM that the vision tower never needs in memory)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                self._where.update(dict.fromkeys(h.keys(), f))

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._where[key]), framework="pt") as h:
            return h.get_tensor(key)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict, unwrapped from ``{"model": …}`` / ``{"state_dict": …}``; weights only."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # mmap needs the zip format; older files are read whole
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderWeightsError(f"{path}: refused: it needs pickled Python objects beyond tensors and containers "
                                  f"(read with weights_only=True: {reason})") from e
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict) and not isinstance(obj.get(wrapper), torch.Tensor):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise EncoderWeightsError(f"{path}: expected a state dict, found a {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise EncoderWeightsError(f"{path}: {bad[0]!r} is not a tensor (a state dict holds only tensors)")
    return obj


def read_encoder_checkpoint(path: str | Path) -> tuple[Mapping[str, torch.Tensor], dict | None]:
    """The tensors of ``path`` and, for a transformers folder, its vision config (``vision_config`` of a composite
    config, else the config itself). ``path``: a ``.pth``/``.pt``/``.bin`` file, a ``.safetensors`` file, or a folder
    of ``*.safetensors`` (or ``*.bin``) shards with an optional ``config.json``."""
    p = Path(path)
    if not p.exists():
        raise EncoderWeightsError(f"{p}: no such file or folder")
    config = None
    if p.is_dir():
        if (p / "config.json").exists():
            config = json.loads((p / "config.json").read_text())
            config = config.get("vision_config") or config
        shards = sorted(p.glob("*.safetensors"))
        if shards:
            return _SafetensorsFiles(shards), config
        shards = sorted(p.glob("*.bin")) + sorted(p.glob("*.pth"))
        if not shards:
            raise EncoderWeightsError(f"{p}: no *.safetensors or *.bin weights in this folder")
        state: dict[str, torch.Tensor] = {}
        for s in shards:
            state.update(read_state_dict(s))
        return state, config
    if p.suffix == ".safetensors":
        return _SafetensorsFiles([p]), None
    if p.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return read_state_dict(p), None
    raise EncoderWeightsError(f"{p}: unknown weight file type {p.suffix!r} (.pth, .pt, .bin, .safetensors or a folder)")


def save_encoder_safetensors(state: Mapping[str, torch.Tensor], path: str | Path, kind: str | None = None) -> str:
    """Write an encoder state dict (any format above, e.g. a LAVIS or Meta ``.pth`` read by `read_encoder_checkpoint`)
    as one safetensors file under its **source key names**, which `build_encoder` reads back as the same format
    (``EncoderConfig.path=<file>``). The format is checked first and stored in the metadata; returns it."""
    fmt, prefix = detect_format(state.keys(), kind)
    from safetensors.torch import save_file

    seen, out = set(), {}
    for k in state:
        t = state[k].detach().contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[k] = t.clone() if ptr in seen else t  # safetensors refuses tensors that share memory
        seen.add(ptr)
    save_file(out, str(path), metadata={"mome.encoder_format": fmt, "mome.encoder_prefix": prefix})
    return fmt
