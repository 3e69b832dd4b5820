"""The `mome::` torch ops: their schemas, the compiled core (`mome._C`) behind them, and which backend runs an op.

`mome._C` is torch-free: launchers on raw pointers (cpp/*/*.h). The ops are defined here with the low-level
`torch.library.Library("mome", "DEF")` route, and each op module (deform_attn.py, router_mix.py, grouped_adapter.py)
registers a CPU and (when built) a CUDA implementation that checks the arguments, allocates outputs and workspace as
torch tensors and calls the launcher with `data_ptr()`s, `torch.get_num_threads()` or the current CUDA stream. Fakes
and autograd are registered on top (`register_fake`, `register_autograd`), so opcheck and torch.compile see ordinary
custom ops. (`torch.library.custom_op` was measured slower per call: bench/README.md "Per-call overhead".)
"""

from __future__ import annotations

import torch

try:
    from mome import _C

    BUILD_INFO: dict = dict(_C.build_info())
    IMPORT_ERROR: str | None = None
except ImportError as err:  # a source checkout that was not built
    _C = None
    BUILD_INFO = {"cuda": False, "cuda_archs": "", "cuda_runtime": "", "cutlass_version": "", "compiler": ""}
    IMPORT_ERROR = str(err)

# The schemas of the ops, unchanged from the TORCH_LIBRARY build (cpp/registration.cpp before the torch-free core).
SCHEMAS = {
    "deform_attn": "deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
                   "Tensor sampling_locations, Tensor attention_weights) -> Tensor",
    "deform_attn_backward": "deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
                            "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
                            "-> (Tensor, Tensor, Tensor)",
    "router_mix": "router_mix(Tensor features, Tensor weights) -> Tensor",
    "router_mix_backward": "router_mix_backward(Tensor grad_output, Tensor features, Tensor weights) "
                           "-> (Tensor, Tensor)",
    "grouped_adapter": "grouped_adapter(Tensor x, Tensor expert_ids, Tensor w_down, Tensor b_down, Tensor w_up, "
                       "Tensor b_up, Tensor scale, Tensor? gate, Tensor? residual=None) -> (Tensor, Tensor)",
    "grouped_adapter_sorted": "grouped_adapter_sorted(Tensor x, Tensor expert_offsets, Tensor w_down, "
                              "Tensor b_down, Tensor w_up, Tensor b_up, Tensor scale, Tensor? gate, "
                              "Tensor? residual=None) -> (Tensor, Tensor)",
    "grouped_adapter_sorted_backward": "grouped_adapter_sorted_backward(Tensor grad_output, Tensor x, "
                                       "Tensor expert_offsets, Tensor hidden, Tensor w_down, Tensor b_down, "
                                       "Tensor w_up, Tensor b_up, Tensor scale, Tensor? gate) "
                                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "grouped_adapter_backward": "grouped_adapter_backward(Tensor grad_output, Tensor x, Tensor expert_ids, "
                                "Tensor hidden, Tensor w_down, Tensor b_down, Tensor w_up, Tensor b_up, "
                                "Tensor scale, Tensor? gate) "
                                "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}

_LIB = None
if _C is not None:
    _LIB = torch.library.Library("mome", "DEF")
    for _schema in SCHEMAS.values():
        _LIB.define(_schema)

# The launchers' dtype tags (cpp/common/core.h, enum class DType).
DTYPE_TAG = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

# dtypes each compiled kernel accepts for `value` / `features` / `x`, by device type and op; other dtypes run the
# PyTorch reference.
_CPU = (torch.float32, torch.float64)
_CUDA_ALL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CUDA_GEMM = (torch.float16, torch.bfloat16, torch.float32)  # CUTLASS grouped GEMMs: no float64 kernel
KERNEL_DTYPES = {
    "cpu": {"deform_attn": _CPU, "router_mix": _CPU, "grouped_adapter": _CPU, "grouped_adapter_sorted": _CPU},
    "cuda": {"deform_attn": _CUDA_ALL, "router_mix": _CUDA_ALL, "grouped_adapter": _CUDA_GEMM,
             "grouped_adapter_sorted": _CUDA_GEMM},
}

_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def impl(op: str, device_type: str, launcher: str):
    """Registers the decorated function as the `device_type` implementation of `mome::<op>` when this build has the
    launcher `mome._C.<launcher>` (a CUDA launcher exists only in a CUDA build)."""

    def decorator(fn):
        if _C is not None and hasattr(_C, launcher):
            _LIB.impl(op, fn, _DISPATCH_KEY[device_type])
        return fn

    return decorator


def has_kernel(op: str, device_type: str) -> bool:
    """Whether `mome::<op>` has a compiled kernel for `device_type` ("cpu" or "cuda") in this build."""
    if _C is None:
        return False
    key = _DISPATCH_KEY.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"mome::{op}", key)


def uses_kernel(op: str, device: torch.device, dtype: torch.dtype) -> bool:
    """True when `mome.ops.<op>` runs the compiled kernel for these inputs; False: it runs the PyTorch reference."""
    return (op, device.type) in _KERNELS and dtype in KERNEL_DTYPES.get(device.type, {}).get(op, ())


def backend(op: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """A short name of the implementation `mome.ops.<op>` uses: 'cpu-kernel', 'cuda-kernel' or 'reference'."""
    device = torch.device(device)
    return f"{device.type}-kernel" if uses_kernel(op, device, dtype) else "reference"


def register_fake(op: str):
    """`torch.library.register_fake` for `mome::<op>`, skipped when the compiled core is absent."""

    def decorator(fn):
        return torch.library.register_fake(f"mome::{op}", lib=_LIB)(fn) if _C is not None else fn

    return decorator


def register_autograd(op: str, backward, setup_context) -> None:
    """`torch.library.register_autograd` for `mome::<op>`, skipped when the compiled core is absent."""
    if _C is not None:
        torch.library.register_autograd(f"mome::{op}", backward, setup_context=setup_context, lib=_LIB)


def cuda_stream(device: torch.device) -> int:
    """The current stream of `device` as the integer the CUDA launchers take (never the legacy default stream
    unless torch itself runs on it)."""
    return torch.cuda.current_stream(device).cuda_stream


_KERNELS: set[tuple[str, str]] = set()  # filled by mome.ops.__init__ once every op module has registered


def _read_kernels() -> None:
    """(op, device type) pairs with a compiled kernel, read once: dispatch must stay traceable by torch.compile."""
    _KERNELS.clear()
    for op in ("deform_attn", "router_mix", "grouped_adapter", "grouped_adapter_sorted"):
        for device_type in _DISPATCH_KEY:
            if has_kernel(op, device_type):
                _KERNELS.add((op, device_type))
