"""The tiny preset's specialist vision encoders: small pretrained models of our own that ship with mome.

The paper's encoders are specialists (Table 1: CLIP best on General, DINOv2 on REC, Pix2Struct on Document) because
each was pretrained on a different objective. Random tiny encoders are specialists of nothing, so the ``tiny`` preset
uses encoders pretrained on the synthetic images, each on its own objective (`mome.training.specialists`):

    eva_clip    scene semantics, image-level only as CLIP: which (colour, shape) pairs, how many, in which order
    dinov2      localisation: per 8 × 8 px patch, which object covers it and that object's box (and its digits)
    pix2struct  reading: per patch of a document at its true aspect ratio, which word / number / bar value is there

The weights (``weights/tiny-<kind>.safetensors``, 0.3-2.5 MB each) and ``weights/tiny-specialists.json`` (the
command, seed and steps that made them, the SHA-256 of their tensors, held-out scores, the machine) are package data.
A config names them as ``path: mome:tiny-<kind>``; `resolve_path` turns that into the file. Regenerate with
``python -m mome.data pretrain-encoders`` (docs/reproduce.md § The specialist encoders).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

__all__ = ["WEIGHTS_DIR", "MANIFEST", "PREFIX", "KINDS", "LLM", "resolve_path", "builtin_name", "manifest", "sha256",
           "file_name"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "tiny-specialists.json"
PREFIX = "mome:"
KINDS = ("eva_clip", "dinov2", "pix2struct")
LLM = "tiny-llm"  # the shipped tiny LLM: a transformers LLaMA folder in WEIGHTS_DIR, ``language.path: mome:tiny-llm``


def file_name(kind: str) -> str:
    return f"tiny-{kind}.safetensors"


def builtin_name(path: str | None) -> str | None:
    """``"mome:tiny-dinov2"`` → ``"tiny-dinov2"``; None for any other path."""
    if isinstance(path, str) and path.startswith(PREFIX):
        return path[len(PREFIX):]
    return None


def resolve_path(path: str | Path) -> Path:
    """An encoder or LLM path as a file or folder: ``mome:tiny-<kind>`` is the shipped specialist encoder,
    ``mome:tiny-llm`` the shipped LLM's folder (`mome.training.llm_pretrain`), anything else is itself."""
    name = builtin_name(str(path))
    if name is None:
        return Path(path)
    known = [f"tiny-{k}" for k in KINDS] + [LLM]
    if name not in known:
        raise FileNotFoundError(f"{path}: no built-in model of that name; built-in: "
                                f"{', '.join(PREFIX + k for k in known)}")
    if name == LLM:
        folder = WEIGHTS_DIR / LLM
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: the shipped folder {folder} is missing or incomplete; regenerate it "
                                    f"with `python -m mome.data pretrain-llm --out {WEIGHTS_DIR}`")
        return folder
    file = WEIGHTS_DIR / f"{name}.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: the shipped file {file} is missing; regenerate it with "
                                f"`python -m mome.data pretrain-encoders --out {WEIGHTS_DIR}`")
    return file


def sha256(path: str | Path) -> str:
    """SHA-256 of a safetensors file's content: its metadata and every tensor's name, dtype, shape and bytes, in
    sorted order. Not of the file's bytes: safetensors writes the metadata map in an order that changes from one
    process to the next, so two writes of the same tensors can differ byte for byte."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        h.update(json.dumps(f.metadata() or {}, sort_keys=True).encode())
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def manifest(directory: str | Path = WEIGHTS_DIR) -> dict:
    """The record written beside the weights by `mome.training.specialists.pretrain`."""
    return json.loads((Path(directory) / MANIFEST).read_text())
