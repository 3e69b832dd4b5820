"""`mome.ops.grouped_adapter`: MoLE's top-1 bottleneck adapters for a whole batch in one call.

Dispatch, autograd and the fake implementation as in `mome.ops.deform_attn`. The kernel returns the hidden
activations beside the output; autograd saves them so the backward does not recompute the down-projection.

Two entry points: `grouped_adapter` takes per-row expert ids in any order and groups the rows itself;
`grouped_adapter_sorted` takes rows already grouped by expert (``expert_offsets``), so a model that sorts its batch
by expert once per step skips the gather and scatter in every layer. Both take ``residual=``: the result is then
``residual + adapter(x)``, added inside the kernel (the GEMM epilogue on CUDA), so adding the adapter into the FFN
output costs no extra pass over (T, D).

The CUDA kernels (CUTLASS grouped GEMMs) run float16, bfloat16 (float32 accumulation) and float32 (exact fp32,
no TF32). float16/bfloat16 need D and R to be multiples of 8 (128-bit accesses), and every dtype fewer than 4096
experts and 2^31 rows (`cuda_unsupported`); other sizes and float64 on CUDA run the PyTorch reference, so no input
is rejected for its sizes at this level.
"""

from __future__ import annotations

import torch

from mome.ops import _checks, _library, reference

__all__ = ["grouped_adapter", "grouped_adapter_sorted"]

# dtypes of the CUDA kernel, and the multiple of D and R each needs (CUTLASS's 128-bit tensor-core accesses for
# 16-bit types; the float32 kernel is SIMT with scalar accesses).
_CUDA_ALIGNMENT = {torch.float16: 8, torch.bfloat16: 8, torch.float32: 1}
_ROW_PAD = 8  # kRowPad of grouped_adapter_cuda.cu: the augmented GEMMs are R + 8 wide


def cuda_unsupported(dtype: torch.dtype, T: int, D: int, R: int, K: int) -> list[str]:
    """Why the CUDA kernel cannot take these sizes (empty: it can). Mirrors `check_sizes` in
    cpp/grouped_adapter/grouped_adapter_cuda.cu, so such inputs run the reference instead of raising there."""
    reasons = []
    align = _CUDA_ALIGNMENT.get(dtype)
    if align is None:
        reasons.append(f"dtype {dtype} (the kernel runs float16, bfloat16 and float32)")
    elif D % align or R % align:
        reasons.append(f"D = {D} and R = {R} must be multiples of {align} for {dtype}")
    if T >= 2**31:
        reasons.append(f"T = {T} rows (fewer than 2^31)")
    if K >= 4096:
        reasons.append(f"K = {K} experts (fewer than 4096)")
    if D >= 2**31 or R + _ROW_PAD >= 2**31:
        reasons.append(f"D = {D}, R = {R} (each below 2^31)")
    return reasons


def _runs_kernel(op: str, x: torch.Tensor, w_down: torch.Tensor) -> bool:
    if not _library.uses_kernel(op, x.device, x.dtype):
        return False
    if x.device.type == "cuda":
        return not cuda_unsupported(x.dtype, x.shape[0], x.shape[1], w_down.shape[2], w_down.shape[0])
    return True


def grouped_adapter(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    scale: torch.Tensor,
    gate: torch.Tensor | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y[t] = gate[t] · scale[e] · (ReLU(x[t] @ w_down[e] + b_down[e]) @ w_up[e] + b_up[e])``, ``e = expert_ids[t]``.

    Args:
        x: (T, D) rows (tokens) of any experts, in any order.
        expert_ids: (T,) int64 in [0, K). Any expert may get no rows.
        w_down: (K, D, R); b_down: (K, R); w_up: (K, R, D); b_up: (K, D); scale: (K,).
        gate: optional (T,) per-row multiplier (e.g. the router's probability of the chosen expert).
        residual: optional (T, D); the result is then ``residual + y``, accumulated inside the kernel
            (MoLE's ``h + FFN(h) + MoLE(h)`` with residual = ``h + FFN(h)``).

    Returns:
        (T, D). Differentiable in x, all weights and biases, scale, gate and residual.
    """
    expert_ids = _check(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate)
    _check_residual(x, residual)
    if _runs_kernel("grouped_adapter", x, w_down):
        y, _ = torch.ops.mome.grouped_adapter(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate, residual)
        return y
    y = reference.grouped_adapter(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate)
    return y if residual is None else residual + y


def grouped_adapter_sorted(
    x: torch.Tensor,
    expert_offsets: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    scale: torch.Tensor,
    gate: torch.Tensor | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`grouped_adapter` for rows already grouped by expert: expert e owns rows ``[expert_offsets[e], expert_offsets[e+1])``.

    Args:
        x: (T, D) rows sorted by expert.
        expert_offsets: (K + 1,) int64, ``0 = expert_offsets[0] <= ... <= expert_offsets[K] = T`` (e.g.
            ``F.pad(torch.bincount(ids, minlength=K).cumsum(0), (1, 0))`` for ``ids`` sorted). On CUDA the values
            are not read on the host (no synchronisation); invalid offsets trip a device-side assertion.
        w_down, b_down, w_up, b_up, scale, gate, residual: as in `grouped_adapter` (gate and residual in x's row order).

    Returns:
        (T, D), in x's row order. Differentiable in x, all weights and biases, scale, gate and residual.
    """
    expert_offsets = _check_offsets(x, expert_offsets, w_down, b_down, w_up, b_up, scale, gate)
    _check_residual(x, residual)
    if _runs_kernel("grouped_adapter_sorted", x, w_down):
        y, _ = torch.ops.mome.grouped_adapter_sorted(
            x, expert_offsets, w_down, b_down, w_up, b_up, scale, gate, residual
        )
        return y
    y = reference.grouped_adapter_sorted(x, expert_offsets, w_down, b_down, w_up, b_up, scale, gate)
    return y if residual is None else residual + y


def _check_residual(x, residual):
    if residual is None:
        return
    _checks.tensor("residual", residual, 2, "(T, D)")
    if tuple(residual.shape) != tuple(x.shape):
        raise ValueError(f"residual must have the shape of x {tuple(x.shape)}, got {tuple(residual.shape)}")
    _checks.same_dtype("residual", residual, "x", x)
    _checks.same_device("residual", residual, "x", x)


def _check_offsets(x, expert_offsets, w_down, b_down, w_up, b_up, scale, gate, read_values=True):
    _checks.tensor("x", x, 2, "(T, D)")
    _checks.tensor("expert_offsets", expert_offsets, 1, "(K + 1,)")
    expert_offsets = _checks.index("expert_offsets", expert_offsets)
    _check_params(x, w_down, b_down, w_up, b_up, scale, gate)
    K = w_down.shape[0]
    _checks.size("expert_offsets", expert_offsets, 0, K + 1, "the number of experts w_down.shape[0] + 1")
    _checks.same_device("expert_offsets", expert_offsets, "x", x)
    if read_values and _checks.can_read_values(expert_offsets):
        off = expert_offsets.tolist()
        if off[0] != 0:
            raise ValueError(f"expert_offsets[0] must be 0, got {off[0]}")
        for e in range(K):
            if off[e + 1] < off[e]:
                raise ValueError(
                    f"expert_offsets must be non-decreasing, got expert_offsets[{e + 1}] = {off[e + 1]} "
                    f"< expert_offsets[{e}] = {off[e]}"
                )
        if off[K] != x.shape[0]:
            raise ValueError(f"expert_offsets[K] must equal the number of rows x.shape[0] ({x.shape[0]}), got {off[K]}")
    return expert_offsets


def _check(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate, read_values=True):
    _checks.tensor("x", x, 2, "(T, D)")
    _checks.tensor("expert_ids", expert_ids, 1, "(T,)")
    expert_ids = _checks.index("expert_ids", expert_ids)
    _check_params(x, w_down, b_down, w_up, b_up, scale, gate)
    T = x.shape[0]
    K = w_down.shape[0]
    _checks.size("expert_ids", expert_ids, 0, T, "the number of rows x.shape[0]")
    _checks.same_device("expert_ids", expert_ids, "x", x)
    if read_values and _checks.can_read_values(expert_ids) and T > 0:
        lo, hi = int(expert_ids.min()), int(expert_ids.max())
        if lo < 0 or hi >= K:
            bad = int(((expert_ids < 0) | (expert_ids >= K)).nonzero()[0])
            raise ValueError(
                f"expert_ids[{bad}] = {int(expert_ids[bad])} is out of range [0, {K}) (K = w_down.shape[0])"
            )
    return expert_ids


def _check_params(x, w_down, b_down, w_up, b_up, scale, gate):
    _checks.tensor("w_down", w_down, 3, "(K, D, R)")
    _checks.tensor("b_down", b_down, 2, "(K, R)")
    _checks.tensor("w_up", w_up, 3, "(K, R, D)")
    _checks.tensor("b_up", b_up, 2, "(K, D)")
    _checks.tensor("scale", scale, 1, "(K,)")
    _checks.floating("x", x)
    T, D = x.shape
    K, _, R = w_down.shape
    if K < 1:
        raise ValueError(f"w_down must hold at least one expert, got shape {tuple(w_down.shape)}")
    _checks.size("w_down", w_down, 1, D, "the model width x.shape[1]")
    for name, t, dim, expected, what in (
        ("b_down", b_down, 0, K, "the number of experts w_down.shape[0]"),
        ("b_down", b_down, 1, R, "the rank w_down.shape[2]"),
        ("w_up", w_up, 0, K, "the number of experts w_down.shape[0]"),
        ("w_up", w_up, 1, R, "the rank w_down.shape[2]"),
        ("w_up", w_up, 2, D, "the model width x.shape[1]"),
        ("b_up", b_up, 0, K, "the number of experts w_down.shape[0]"),
        ("b_up", b_up, 1, D, "the model width x.shape[1]"),
        ("scale", scale, 0, K, "the number of experts w_down.shape[0]"),
    ):
        _checks.size(name, t, dim, expected, what)
    params = [("w_down", w_down), ("b_down", b_down), ("w_up", w_up), ("b_up", b_up), ("scale", scale)]
    if gate is not None:
        _checks.tensor("gate", gate, 1, "(T,)")
        _checks.size("gate", gate, 0, T, "the number of rows x.shape[0]")
        params.append(("gate", gate))
    for name, t in params:
        _checks.same_dtype(name, t, "x", x)
    for name, t in params:
        _checks.same_device(name, t, "x", x)


# ---------------------------------------------------------------------------------------------------------------------
# The kernels behind the mome:: ops: checks (for callers of torch.ops.mome.* too), outputs, then the launchers.
# CPU: the core groups the rows (and validates ids / offsets, raising ValueError), gathers and scatters them and runs
# the element-wise passes; the per-expert GEMMs are torch's own addmm/mm on the same slices as the TORCH_LIBRARY
# build had (so its BLAS, and the bits, are unchanged: tests/ops/test_golden.py). CUDA: one launcher per direction.

def _fine(device_type, x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate) -> bool:
    """One cheap expression that is True for valid kernel arguments; when False, `_check_kernel` runs the checks that
    name the argument."""
    xs, ws = x.shape, w_down.shape
    if len(xs) != 2 or len(ws) != 3:
        return False
    T, D = xs
    K, _, R = ws
    dev = x.get_device()
    return (K >= 1 and ws[1] == D and b_down.shape == (K, R) and w_up.shape == (K, R, D) and b_up.shape == (K, D)
            and scale.shape == (K,) and routing.dim() == 1 and routing.dtype == torch.int64
            and routing.shape[0] == (T if routing_name == "expert_ids" else K + 1)
            and x.dtype in _library.KERNEL_DTYPES[device_type]["grouped_adapter"]
            and w_down.dtype == b_down.dtype == w_up.dtype == b_up.dtype == scale.dtype == x.dtype
            and w_down.get_device() == b_down.get_device() == w_up.get_device() == b_up.get_device()
            == scale.get_device() == routing.get_device() == dev
            and (gate is None or (gate.shape == (T,) and gate.dtype == x.dtype and gate.get_device() == dev))
            and x.device.type == device_type)


def _check_kernel(device_type, x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate):
    if _fine(device_type, x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate):
        return
    if routing_name == "expert_ids":
        _check(x, routing, w_down, b_down, w_up, b_up, scale, gate, read_values=False)
    else:
        _check_offsets(x, routing, w_down, b_down, w_up, b_up, scale, gate, read_values=False)
    if routing.dtype != torch.int64:
        raise TypeError(f"{routing_name} must be an int64 index tensor, got {routing.dtype}")
    _checks.kernel_input("x", x, device_type, _library.KERNEL_DTYPES[device_type]["grouped_adapter"],
                         op="grouped_adapter")
    # CUDA size limits (D, R multiples of 8 for 16-bit types, K < 4096, ...) are checked by the launchers' workspace
    # query, with messages naming x.size(1) / w_down.size(2); mome.ops routes such sizes to the reference first.


def _check_grads(grad_output, x, hidden, R):
    T, D = x.shape
    _checks.tensor("grad_output", grad_output, 2, "(T, D)")
    if tuple(grad_output.shape) != (T, D):
        raise ValueError(f"grad_output must have shape ({T}, {D}), got {tuple(grad_output.shape)}")
    _checks.same_dtype("grad_output", grad_output, "x", x)
    _checks.same_device("grad_output", grad_output, "x", x)
    _checks.tensor("hidden", hidden, 2, "(T, R)")
    if tuple(hidden.shape) != (T, R):
        raise ValueError(f"hidden must have shape ({T}, {R}), got {tuple(hidden.shape)}")
    _checks.same_dtype("hidden", hidden, "x", x)
    _checks.same_device("hidden", hidden, "x", x)


def _group_cpu(routing_name, routing, K, T):
    """(perm or None, offsets (K + 1,), offsets as a list) on the CPU; perm[i] is the original row of grouped row i."""
    routing = routing.contiguous()
    if routing_name == "expert_offsets":
        _library._C.grouped_adapter_check_offsets_cpu(routing.data_ptr(), K, T)
        return None, routing, routing.tolist()
    perm, offsets = routing.new_empty(T), routing.new_empty(K + 1)
    _library._C.grouped_adapter_group_rows_cpu(routing.data_ptr(), T, K, perm.data_ptr(), offsets.data_ptr())
    return perm, offsets, offsets.tolist()


def _gather_cpu(t, perm):
    """t[perm] for a 2-D tensor, rows copied in parallel (contiguous t when perm is None)."""
    src = t.contiguous()
    if perm is None:
        return src
    out = torch.empty_like(src)
    T = src.shape[0]
    _library._C.gather_rows_cpu(src.data_ptr(), perm.data_ptr(), out.data_ptr(), T,
                                src.numel() // max(T, 1) * src.element_size(), torch.get_num_threads())
    return out


def _ptr(t):
    return 0 if t is None else t.data_ptr()


def _forward_cpu(routing_name, x, routing, w_down, b_down, w_up, b_up, scale, gate, residual):
    _check_kernel("cpu", x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate)
    _check_residual(x, residual)
    T, D = x.shape
    K, _, R = w_down.shape
    perm, offsets, offs = _group_cpu(routing_name, routing, K, T)
    y, hidden = x.new_empty(T, D), x.new_empty(T, R)
    if T == 0:
        return y, hidden
    wd, bd, wu, bu = w_down.contiguous(), b_down.contiguous(), w_up.contiguous(), b_up.contiguous()
    xs = _gather_cpu(x, perm)  # (T, D) grouped by expert
    hs, us = x.new_empty(T, R), x.new_empty(T, D)
    for e in range(K):
        o, n = offs[e], offs[e + 1] - offs[e]
        if n == 0:
            continue
        hs_e = hs[o:o + n]
        torch.addmm(bd[e], xs[o:o + n], wd[e], out=hs_e)
        hs_e.relu_()
        torch.mm(hs_e, wu[e], out=us[o:o + n])  # b_up is added in the epilogue: one pass over (T, D) fewer
    sc = scale.contiguous()
    gt = None if gate is None else gate.contiguous()
    res = None if residual is None else residual.contiguous()
    _library._C.grouped_adapter_epilogue_cpu(
        _library.DTYPE_TAG[x.dtype], _ptr(perm), offsets.data_ptr(), sc.data_ptr(), _ptr(gt), _ptr(res),
        us.data_ptr(), bu.data_ptr(), hs.data_ptr(), y.data_ptr(), hidden.data_ptr(), T, D, R, K,
        torch.get_num_threads())
    return y, hidden


def _backward_cpu(routing_name, grad_output, x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate):
    _check_kernel("cpu", x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate)
    T, D = x.shape
    K, _, R = w_down.shape
    _check_grads(grad_output, x, hidden, R)
    perm, offsets, offs = _group_cpu(routing_name, routing, K, T)
    grad_x = x.new_empty(T, D)
    grad_wd, grad_bd, grad_wu, grad_bu, grad_scale = (
        torch.zeros_like(t, memory_format=torch.contiguous_format) for t in (w_down, b_down, w_up, b_up, scale))
    grad_gate = x.new_empty(T) if gate is not None else x.new_empty(0)
    if T == 0:
        return grad_x, grad_wd, grad_bd, grad_wu, grad_bu, grad_scale, grad_gate
    wd = w_down.contiguous()
    dys, xs, hs = _gather_cpu(grad_output, perm), _gather_cpu(x, perm), _gather_cpu(hidden, perm)
    # One GEMM per expert gives both dy @ w_upᵀ and <dy, b_up>: w_up is extended by b_up as an (R+1)-th column.
    wut = x.new_empty(K, D, R + 1)  # [w_upᵀ | b_up]
    wut.narrow(2, 0, R).copy_(w_up.transpose(1, 2))
    wut.select(2, R).copy_(b_up)
    gs = x.new_empty(T, R + 1)  # [g | <dy, b_up>], g = dy @ w_upᵀ
    for e in range(K):
        o, n = offs[e], offs[e + 1] - offs[e]
        if n:
            torch.mm(dys[o:o + n], wut[e], out=gs[o:o + n])
    hc = x.new_empty(T, R + 1)  # [c·h | c]: one GEMM with dy gives dW_up and db_up
    dz = x.new_empty(T, R)  # c·g·[h > 0]
    ss = x.new_empty(T)  # s, grouped
    sc = scale.contiguous()
    gt = None if gate is None else gate.contiguous()
    _library._C.grouped_adapter_backward_rows_cpu(
        _library.DTYPE_TAG[x.dtype], _ptr(perm), offsets.data_ptr(), sc.data_ptr(), _ptr(gt), gs.data_ptr(),
        hs.data_ptr(), hc.data_ptr(), dz.data_ptr(), ss.data_ptr(), 0 if gt is None else grad_gate.data_ptr(),
        grad_scale.data_ptr(), T, R, K, torch.get_num_threads())
    dxs = x.new_empty(T, D)
    gwb = x.new_zeros(K, R + 1, D)  # [dW_up; db_up] per expert
    for e in range(K):
        o, n = offs[e], offs[e + 1] - offs[e]
        if n == 0:
            continue
        dy_e, dz_e = dys[o:o + n], dz[o:o + n]
        torch.mm(hc[o:o + n].t(), dy_e, out=gwb[e])
        torch.mm(xs[o:o + n].t(), dz_e, out=grad_wd[e])
        torch.sum(dz_e, 0, out=grad_bd[e])
        torch.mm(dz_e, wd[e].t(), out=dxs[o:o + n])
    grad_wu.copy_(gwb.narrow(1, 0, R))
    grad_bu.copy_(gwb.select(1, R))
    if perm is None:
        grad_x = dxs
    else:
        _library._C.scatter_rows_cpu(dxs.data_ptr(), perm.data_ptr(), grad_x.data_ptr(), T, D * dxs.element_size(),
                                     torch.get_num_threads())
    return grad_x, grad_wd, grad_bd, grad_wu, grad_bu, grad_scale, grad_gate


def _dense(t):
    """Contiguous and 16-byte aligned (CUTLASS's vector accesses): a view with an odd storage offset is copied."""
    c = t.contiguous()
    return c.clone() if c.data_ptr() % 16 else c


def _forward_cuda(routing_name, x, routing, w_down, b_down, w_up, b_up, scale, gate, residual):
    _check_kernel("cuda", x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate)
    _check_residual(x, residual)
    T, D = x.shape
    K, _, R = w_down.shape
    y, hidden = x.new_empty(T, D), x.new_empty(T, R)
    if T == 0:
        return y, hidden
    tag, sorted_rows = _library.DTYPE_TAG[x.dtype], routing_name == "expert_offsets"
    routing = routing.contiguous()
    workspace = torch.empty(_library._C.grouped_adapter_forward_workspace_cuda(tag, T, D, R, K, sorted_rows),
                            dtype=torch.uint8, device=x.device)
    xd, wd, bd, wu, bu, sc = (_dense(t) for t in (x, w_down, b_down, w_up, b_up, scale))
    gt = None if gate is None else _dense(gate)
    res = None if residual is None else _dense(residual)
    _library._C.grouped_adapter_forward_cuda(
        tag, 0 if sorted_rows else routing.data_ptr(), routing.data_ptr() if sorted_rows else 0, xd.data_ptr(),
        wd.data_ptr(), bd.data_ptr(), wu.data_ptr(), bu.data_ptr(), sc.data_ptr(), _ptr(gt), _ptr(res),
        y.data_ptr(), hidden.data_ptr(), workspace.data_ptr(), workspace.numel(), T, D, R, K, x.device.index,
        _library.cuda_stream(x.device))
    return y, hidden


def _backward_cuda(routing_name, grad_output, x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate):
    _check_kernel("cuda", x, routing_name, routing, w_down, b_down, w_up, b_up, scale, gate)
    T, D = x.shape
    K, _, R = w_down.shape
    _check_grads(grad_output, x, hidden, R)
    grad_x = x.new_empty(T, D)
    grad_wd, grad_bd, grad_wu, grad_bu = x.new_empty(K, D, R), x.new_empty(K, R), x.new_empty(K, R, D), \
        x.new_empty(K, D)
    grad_scale = x.new_empty(K)
    grad_gate = x.new_empty(T) if gate is not None else x.new_empty(0)
    if T == 0:  # no rows: every weight gradient is zero, and no GEMM needs to run
        return grad_x, grad_wd.zero_(), grad_bd.zero_(), grad_wu.zero_(), grad_bu.zero_(), grad_scale.zero_(), \
            grad_gate
    tag, sorted_rows = _library.DTYPE_TAG[x.dtype], routing_name == "expert_offsets"
    routing = routing.contiguous()
    workspace = torch.empty(_library._C.grouped_adapter_backward_workspace_cuda(tag, T, D, R, K, sorted_rows),
                            dtype=torch.uint8, device=x.device)
    go, xd, hd, wd, wu, bu, sc = (_dense(t) for t in (grad_output, x, hidden, w_down, w_up, b_up, scale))
    gt = None if gate is None else _dense(gate)
    _library._C.grouped_adapter_backward_cuda(
        tag, 0 if sorted_rows else routing.data_ptr(), routing.data_ptr() if sorted_rows else 0, go.data_ptr(),
        xd.data_ptr(), hd.data_ptr(), wd.data_ptr(), wu.data_ptr(), bu.data_ptr(), sc.data_ptr(), _ptr(gt),
        grad_x.data_ptr(), grad_wd.data_ptr(), grad_bd.data_ptr(), grad_wu.data_ptr(), grad_bu.data_ptr(),
        grad_scale.data_ptr(), 0 if gt is None else grad_gate.data_ptr(), workspace.data_ptr(), workspace.numel(),
        T, D, R, K, x.device.index, _library.cuda_stream(x.device))
    return grad_x, grad_wd, grad_bd, grad_wu, grad_bu, grad_scale, grad_gate


def _register(op, routing_name, device_type, forward, backward, launcher):
    def fwd(x, routing, w_down, b_down, w_up, b_up, scale, gate, residual=None):
        return forward(routing_name, x, routing, w_down, b_down, w_up, b_up, scale, gate, residual)

    def bwd(grad_output, x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate):
        return backward(routing_name, grad_output, x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate)

    _library.impl(op, device_type, launcher)(fwd)
    _library.impl(f"{op}_backward", device_type, launcher)(bwd)


for _op, _routing in (("grouped_adapter", "expert_ids"), ("grouped_adapter_sorted", "expert_offsets")):
    _register(_op, _routing, "cpu", _forward_cpu, _backward_cpu, "grouped_adapter_epilogue_cpu")
    _register(_op, _routing, "cuda", _forward_cuda, _backward_cuda, "grouped_adapter_forward_cuda")


# The fakes use new_empty, not empty_like: the kernels return contiguous tensors whatever the inputs' strides, and a
# fake that kept a transposed x's strides would fail opcheck and torch.compile's stride assertions.
@_library.register_fake("grouped_adapter")
def _(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate, residual=None):
    return x.new_empty(x.shape), x.new_empty(x.shape[0], w_down.shape[2])


@_library.register_fake("grouped_adapter_sorted")
def _(x, expert_offsets, w_down, b_down, w_up, b_up, scale, gate, residual=None):
    return x.new_empty(x.shape), x.new_empty(x.shape[0], w_down.shape[2])


def _fake_backward(grad_output, x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate):
    grad_gate = gate.new_empty(gate.shape) if gate is not None else x.new_empty(0)
    return (*(t.new_empty(t.shape) for t in (x, w_down, b_down, w_up, b_up, scale)), grad_gate)


_library.register_fake("grouped_adapter_backward")(_fake_backward)
_library.register_fake("grouped_adapter_sorted_backward")(_fake_backward)


def _setup_context(ctx, inputs, output):
    x, routing, w_down, b_down, w_up, b_up, scale, gate, *rest = inputs
    _, hidden = output
    ctx.has_gate = gate is not None
    ctx.has_residual = bool(rest) and rest[0] is not None
    ctx.save_for_backward(x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate)


def _make_backward(backward_op: str):
    def backward(ctx, grad_y, grad_hidden):
        x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(x)
        gx, gwd, gbd, gwu, gbu, gscale, ggate = getattr(torch.ops.mome, backward_op)(
            grad_y.contiguous(), x, routing, hidden, w_down, b_down, w_up, b_up, scale, gate
        )
        grad_residual = grad_y if ctx.has_residual else None  # d(residual + y) / d residual = identity
        return gx, None, gwd, gbd, gwu, gbu, gscale, (ggate if ctx.has_gate else None), grad_residual

    return backward


_library.register_autograd("grouped_adapter", _make_backward("grouped_adapter_backward"), _setup_context)
_library.register_autograd("grouped_adapter_sorted", _make_backward("grouped_adapter_sorted_backward"), _setup_context)
