"""`mome.ops.deform_attn`: multi-scale deformable attention (the sampler of ADT's deformable cross-attention).

Dispatch: the compiled kernel for the device and dtype when this build has one (`mome.ops.backend`), otherwise
`mome.ops.reference.deform_attn`. Autograd and the fake (meta) implementation are registered here for `mome::`.
"""

from __future__ import annotations

import torch

from mome.ops import _checks, _library, reference

__all__ = ["deform_attn"]


def deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; the math is in `mome.ops.reference.deform_attn`.

    Args:
        value: (B, S, H, D), the levels' maps flattened row-major and stacked along S.
        spatial_shapes: (Lv, 2) int64, rows (h, w) of each level.
        level_start_index: (Lv,) int64, start of each level along S.
        sampling_locations: (B, Q, H, Lv, P, 2), normalised (x, y); outside [0, 1] reads zeros.
        attention_weights: (B, Q, H, Lv, P).

    Returns:
        (B, Q, H·D). Differentiable in value, sampling_locations and attention_weights.

    Raises ValueError for a spatial_shapes / level_start_index inconsistent with each other and S on the CPU only; on
    CUDA the index tensors are not read on the host (no synchronisation) and the kernels guard every read instead: an
    inconsistent layout gives zeros where it points outside value, not an error.
    """
    spatial_shapes, level_start_index = _check(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    kernel_ok = (
        _library.uses_kernel("deform_attn", value.device, value.dtype)
        and sampling_locations.dtype in (value.dtype, torch.float32)
        and (value.device.type != "cpu" or sampling_locations.dtype == value.dtype)
    )
    if kernel_ok and value.device.type == "cuda":
        needs_backward = torch.is_grad_enabled() and any(
            t.requires_grad for t in (value, sampling_locations, attention_weights))
        kernel_ok = not cuda_unsupported(value.shape, sampling_locations.shape, needs_backward)
    if kernel_ok:
        return torch.ops.mome.deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return reference.deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def cuda_unsupported(value_shape, locations_shape, backward: bool = True) -> list[str]:
    """Why the CUDA kernels cannot take these sizes (empty: they can). Mirrors the checks of
    cpp/deform_attn/deform_attn_cuda.cu (32-bit sort keys and ids of the backward, 32-bit grids), so such inputs run
    the reference instead of raising there; `backward=False` checks the forward alone."""
    B, S, H, _ = value_shape
    _, Q, _, Lv, P, _ = locations_shape
    reasons = []
    if B * Q * H * 32 > (2**31 - 1) * 256:  # launch_of: at most 32 lanes per (b, q, h), 256 per block
        reasons.append(f"B·Q·H = {B * Q * H} rows is too many for one launch")
    if backward:
        if B * S * H >= 2**32 - 1:
            reasons.append(f"B·S·H = {B * S * H} grad_value rows (the backward's sort keys are 32-bit)")
        if 4 * B * Q * H * Lv * P >= 2**31:
            reasons.append(f"4·B·Q·H·Lv·P = {4 * B * Q * H * Lv * P} corner entries (the backward's ids are 32-bit)")
    return reasons


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, read_values=True):
    _checks.tensor("value", value, 4, "(B, S, H, D)")
    _checks.tensor("spatial_shapes", spatial_shapes, 2, "(Lv, 2)")
    _checks.tensor("level_start_index", level_start_index, 1, "(Lv,)")
    _checks.tensor("sampling_locations", sampling_locations, 6, "(B, Q, H, Lv, P, 2)")
    _checks.tensor("attention_weights", attention_weights, 5, "(B, Q, H, Lv, P)")
    spatial_shapes = _checks.index("spatial_shapes", spatial_shapes)
    level_start_index = _checks.index("level_start_index", level_start_index)
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        _checks.floating(name, t)
    _checks.same_dtype("attention_weights", attention_weights, "sampling_locations", sampling_locations)
    B, S, H, _ = value.shape
    Lv = spatial_shapes.shape[0]
    if Lv < 1:
        raise ValueError(f"spatial_shapes must have at least one level, got shape {tuple(spatial_shapes.shape)}")
    _checks.size("spatial_shapes", spatial_shapes, 1, 2, "2 (h, w)")
    _checks.size("level_start_index", level_start_index, 0, Lv, "the number of levels spatial_shapes.shape[0]")
    _checks.size("sampling_locations", sampling_locations, 0, B, "the batch size value.shape[0]")
    _checks.size("sampling_locations", sampling_locations, 2, H, "the number of heads value.shape[2]")
    _checks.size("sampling_locations", sampling_locations, 3, Lv, "the number of levels spatial_shapes.shape[0]")
    _checks.size("sampling_locations", sampling_locations, 5, 2, "2 (x, y)")
    if attention_weights.shape != sampling_locations.shape[:5]:
        raise ValueError(
            f"attention_weights must have shape sampling_locations.shape[:5] = {tuple(sampling_locations.shape[:5])}, "
            f"got {tuple(attention_weights.shape)}"
        )
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index),
                    ("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        _checks.same_device(name, t, "value", value)
    if read_values and _checks.can_read_values(spatial_shapes, level_start_index):
        hw = spatial_shapes.tolist()
        starts = level_start_index.tolist()
        expected = 0
        for level, ((h, w), start) in enumerate(zip(hw, starts)):
            if h < 1 or w < 1:
                raise ValueError(f"spatial_shapes[{level}] must be a positive (h, w), got ({h}, {w})")
            if start != expected:
                raise ValueError(
                    f"level_start_index[{level}] must be {expected} (the sum of h·w over the previous levels of "
                    f"spatial_shapes), got {start}"
                )
            expected += h * w
        if expected != S:
            raise ValueError(
                f"value.shape[1] must equal the total number of positions in spatial_shapes ({expected}), got {S}"
            )
    return spatial_shapes, level_start_index


# The kernels behind mome::deform_attn: checks (for callers of torch.ops.mome.* too), outputs, then the launcher.
# The CPU launcher reads spatial_shapes / level_start_index itself and raises ValueError on an inconsistent layout,
# also under torch.compile; the CUDA launchers never read them on the host.

def _problem(value, sampling_locations):
    B, S, H, D = value.shape
    _, Q, _, Lv, P, _ = sampling_locations.shape
    return B, S, H, D, Q, Lv, P


def _fine(device_type, value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> bool:
    """One cheap expression that is True for valid kernel arguments (the dispatcher already put every tensor on
    `device_type`'s dispatch key); when False, `_check_kernel` runs the checks that name the argument."""
    vs, ls = value.shape, sampling_locations.shape
    return (len(vs) == 4 and len(ls) == 6 and spatial_shapes.dim() == 2 and level_start_index.dim() == 1
            and attention_weights.shape == ls[:5] and ls[0] == vs[0] and ls[2] == vs[2] and ls[5] == 2
            and spatial_shapes.shape[0] == ls[3] == level_start_index.shape[0] and ls[3] >= 1
            and spatial_shapes.shape[1] == 2
            and spatial_shapes.dtype == torch.int64 and level_start_index.dtype == torch.int64
            and value.dtype in _library.KERNEL_DTYPES[device_type]["deform_attn"]
            and sampling_locations.dtype == attention_weights.dtype
            and (sampling_locations.dtype == value.dtype
                 or (device_type == "cuda" and sampling_locations.dtype == torch.float32))
            and value.get_device() == spatial_shapes.get_device() == level_start_index.get_device()
            == sampling_locations.get_device() == attention_weights.get_device()
            and value.device.type == device_type)


def _check_kernel(device_type, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if _fine(device_type, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, read_values=False)
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be an int64 index tensor, got {t.dtype}")
    _checks.kernel_input("value", value, device_type, _library.KERNEL_DTYPES[device_type]["deform_attn"])
    loc_ok = (value.dtype,) if device_type == "cpu" else (value.dtype, torch.float32)
    if sampling_locations.dtype not in loc_ok:
        raise TypeError(f"sampling_locations must have the dtype of value ({value.dtype})"
                        f"{' or float32' if device_type == 'cuda' else ''} on the {device_type.upper()}, got "
                        f"{sampling_locations.dtype}")


def _check_grad(grad_output, value, sampling_locations):
    B, _, H, D = value.shape
    Q = sampling_locations.shape[1]
    _checks.tensor("grad_output", grad_output, 3, "(B, Q, H·D)")
    if tuple(grad_output.shape) != (B, Q, H * D):
        raise ValueError(f"grad_output must have shape ({B}, {Q}, {H * D}), got {tuple(grad_output.shape)}")
    if grad_output.dtype != value.dtype:
        raise TypeError(f"grad_output must have dtype {value.dtype}, got {grad_output.dtype}")
    _checks.same_device("grad_output", grad_output, "value", value)


@_library.impl("deform_attn", "cpu", "deform_attn_forward_cpu")
def _forward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    _check_kernel("cpu", value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    n = _problem(value, sampling_locations)
    B, _, H, D, Q, _, _ = n
    v, shapes, starts = value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous()
    loc, attn = sampling_locations.contiguous(), attention_weights.contiguous()
    out = v.new_empty(B, Q, H * D)
    _library._C.deform_attn_forward_cpu(
        _library.DTYPE_TAG[v.dtype], v.data_ptr(), shapes.data_ptr(), starts.data_ptr(), loc.data_ptr(),
        attn.data_ptr(), out.data_ptr(), *n, torch.get_num_threads())
    return out


@_library.impl("deform_attn_backward", "cpu", "deform_attn_backward_cpu")
def _backward_cpu(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    _check_kernel("cpu", value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_grad(grad_output, value, sampling_locations)
    go, v, shapes, starts = (t.contiguous() for t in (grad_output, value, spatial_shapes, level_start_index))
    loc, attn = sampling_locations.contiguous(), attention_weights.contiguous()
    grad_value, grad_loc, grad_attn = torch.empty_like(v), torch.empty_like(loc), torch.empty_like(attn)
    _library._C.deform_attn_backward_cpu(
        _library.DTYPE_TAG[v.dtype], go.data_ptr(), v.data_ptr(), shapes.data_ptr(), starts.data_ptr(),
        loc.data_ptr(), attn.data_ptr(), grad_value.data_ptr(), grad_loc.data_ptr(), grad_attn.data_ptr(),
        *_problem(value, sampling_locations), torch.get_num_threads())
    return grad_value, grad_loc, grad_attn


@_library.impl("deform_attn", "cuda", "deform_attn_forward_cuda")
def _forward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    _check_kernel("cuda", value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    n = _problem(value, sampling_locations)
    B, _, H, D, Q, _, _ = n
    v, shapes, starts = value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous()
    loc, attn = sampling_locations.contiguous(), attention_weights.contiguous()
    out = v.new_empty(B, Q, H * D)
    if out.numel() == 0:
        return out
    _library._C.deform_attn_forward_cuda(
        _library.DTYPE_TAG[v.dtype], _library.DTYPE_TAG[loc.dtype], v.data_ptr(), shapes.data_ptr(),
        starts.data_ptr(), loc.data_ptr(), attn.data_ptr(), out.data_ptr(), *n, v.device.index,
        _library.cuda_stream(v.device))
    return out


@_library.impl("deform_attn_backward", "cuda", "deform_attn_backward_cuda")
def _backward_cuda(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    _check_kernel("cuda", value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_grad(grad_output, value, sampling_locations)
    go, v, shapes, starts = (t.contiguous() for t in (grad_output, value, spatial_shapes, level_start_index))
    loc, attn = sampling_locations.contiguous(), attention_weights.contiguous()
    grad_value, grad_loc, grad_attn = torch.empty_like(v), torch.empty_like(loc), torch.empty_like(attn)
    if v.numel() == 0 or loc.numel() == 0:  # nothing sampled, or nothing to sample from
        return grad_value.zero_(), grad_loc.zero_(), grad_attn.zero_()
    n = _problem(value, sampling_locations)
    tag = _library.DTYPE_TAG[v.dtype]
    workspace = torch.empty(_library._C.deform_attn_backward_workspace_cuda(tag, *n, v.device.index),
                            dtype=torch.uint8, device=v.device)
    _library._C.deform_attn_backward_cuda(
        tag, _library.DTYPE_TAG[loc.dtype], go.data_ptr(), v.data_ptr(), shapes.data_ptr(), starts.data_ptr(),
        loc.data_ptr(), attn.data_ptr(), grad_value.data_ptr(), grad_loc.data_ptr(), grad_attn.data_ptr(),
        workspace.data_ptr(), workspace.numel(), *n, v.device.index, _library.cuda_stream(v.device))
    return grad_value, grad_loc, grad_attn


@_library.register_fake("deform_attn")
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    B, _, H, D = value.shape
    Q = sampling_locations.shape[1]
    return value.new_empty(B, Q, H * D)


@_library.register_fake("deform_attn_backward")
def _(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    # new_empty, not empty_like: the kernels return contiguous gradients whatever the inputs' strides.
    return value.new_empty(value.shape), sampling_locations.new_empty(sampling_locations.shape), \
        attention_weights.new_empty(attention_weights.shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = torch.ops.mome.deform_attn_backward(
        grad_output.contiguous(), value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return grad_value, None, None, grad_loc, grad_attn


_library.register_autograd("deform_attn", _backward, _setup_context)
