"""Argument checks of the public ops, run before dispatch (so the reference path rejects what the kernels reject).

Every message names the offending argument. Wrong types raise TypeError, wrong shapes and values ValueError.
"""

from __future__ import annotations

import torch

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def tensor(name: str, t, rank: int | None = None, legend: str = "") -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if rank is not None and t.dim() != rank:
        raise ValueError(f"{name} must have rank {rank} {legend}, got shape {tuple(t.shape)}")
    return t


def floating(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def index(name: str, t: torch.Tensor) -> torch.Tensor:
    """An integer index tensor, returned as int64."""
    if t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be an integer index tensor (int64), got {t.dtype}")
    return t.long()


def size(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name}.shape[{dim}] must equal {what} ({expected}), got {t.shape[dim]}; shape {tuple(t.shape)}"
        )


def same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")


def same_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


def kernel_input(name: str, t: torch.Tensor, device_type: str, supported, op: str = "") -> None:
    """`t` (the op's main input) can go to the compiled `device_type` kernel: on that device, of a dtype in
    `supported`. For callers of ``torch.ops.mome.*``; `mome.ops` routes other inputs to the reference first."""
    kind = device_type.upper()
    if t.device.type != device_type:
        raise ValueError(f"{name} must be a {kind} tensor for the {kind} kernel, got {t.device}")
    if t.dtype not in supported:
        kernel = f"the {kind} kernel of {op}" if op else f"the {kind} kernel"
        raise TypeError(f"{name}: {kernel} supports {', '.join(map(str, supported))}, got {t.dtype} (mome.ops falls "
                        "back to the PyTorch reference for other dtypes)")


def can_read_values(*ts: torch.Tensor) -> bool:
    """Whether value checks may read these tensors: real CPU tensors outside of tracing (no host sync, no graph break)."""
    if torch.compiler.is_compiling():
        return False
    from torch._subclasses.fake_tensor import is_fake

    return all(t.device.type == "cpu" and not is_fake(t) and not t.is_meta for t in ts)
