"""The mome ops: compiled kernels (C++ CPU; CUDA where built) with autograd, and their PyTorch references.

    deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> (B, Q, H·D)
    router_mix(features, weights) -> (B, L, D)
    grouped_adapter(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate=None) -> (T, D)

`reference` holds the specification of each op in plain PyTorch. `backend(op, device, dtype)` names the
implementation that runs for given inputs.
"""

from mome.ops import reference
from mome.ops._library import BUILD_INFO, IMPORT_ERROR, backend, has_kernel
from mome.ops.deform_attn import deform_attn
from mome.ops.grouped_adapter import grouped_adapter, grouped_adapter_sorted
from mome.ops.router_mix import router_mix
from mome.ops._library import _read_kernels

_read_kernels()  # every op module has registered its kernels

OPS = ("deform_attn", "router_mix", "grouped_adapter", "grouped_adapter_sorted")

__all__ = [
    "OPS",
    "BUILD_INFO",
    "IMPORT_ERROR",
    "backend",
    "deform_attn",
    "grouped_adapter",
    "grouped_adapter_sorted",
    "has_kernel",
    "reference",
    "router_mix",
]
