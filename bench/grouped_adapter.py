"""Benchmark of mome.ops.grouped_adapter against a per-expert PyTorch loop (the reference) and a dense
all-experts einsum (compute every expert for every row, then select), at MoLE shapes.

    python bench/grouped_adapter.py [--device cpu|cuda] [--json PATH]

CPU case (ops issue): T = 2048, D = 512, R = 64, K = 4, balanced and skewed routing.
GPU cases (MoLE-on-GPU issue): T ∈ {1024, 4096, 8192, 16384}, D = 4096, R = 64, K ∈ {4, 8}, balanced and skewed,
bfloat16, forward and backward, for the unsorted and the sorted (rows pre-grouped) entry points against the per-expert
loop, the dense all-experts einsum and torch._grouped_mm where this torch has it; times by CUDA events and (mome)
by CUDA-graph replay, next to the bytes floor (bytes_moved / copy bandwidth measured in the same run).

    python bench/grouped_adapter.py --device cuda [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mome import ops  # noqa: E402
from mome.ops import reference  # noqa: E402

CPU_CASES = [dict(T=2048, D=512, R=64, K=4, routing="balanced"), dict(T=2048, D=512, R=64, K=4, routing="skewed")]
SMOKE_CASES = [dict(T=64, D=32, R=8, K=2, routing="balanced")]


def dense_all_experts(x, expert_ids, w_down, b_down, w_up, b_up, scale, gate=None):
    """Every expert on every row, then a one-hot select (what mixture-of-adapters code without grouping does)."""
    h = torch.relu(torch.einsum("td,kdr->ktr", x, w_down) + b_down[:, None])  # (K, T, R)
    u = torch.einsum("ktr,krd->ktd", h, w_up) + b_up[:, None]  # (K, T, D)
    onehot = torch.nn.functional.one_hot(expert_ids, w_down.shape[0]).to(x.dtype).T  # (K, T)
    c = onehot * scale[:, None] * (gate if gate is not None else 1)
    return torch.einsum("kt,ktd->td", c, u)


def routing_ids(T, K, routing, device):
    if routing == "balanced":
        return torch.arange(T, device=device) % K
    # skewed: half the rows to expert 0, the rest split geometrically, the last expert empty
    probs = torch.tensor([0.5] + [0.5 / 2 ** (k + 1) for k in range(K - 2)] + [0.0])
    probs = probs / probs.sum()
    return torch.multinomial(probs, T, replacement=True, generator=torch.Generator().manual_seed(0)).to(device)


def bytes_moved(T, D, R, K, elem=4):
    """Forward reads x and the weights, writes y (hidden R-vectors are small and counted once each way);
    backward reads grad_y, x, hidden and the weights, writes grad_x and the weight gradients."""
    weights = K * (2 * D * R + R + D + 1) * elem
    fwd = 2 * T * D * elem + weights + T * R * elem
    bwd = 3 * T * D * elem + T * R * elem + 2 * weights
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def bench_case(case, device, impls, reps, bandwidth, dtype=torch.float32):
    T, D, R, K = case["T"], case["D"], case["R"], case["K"]
    ids = routing_ids(T, K, case["routing"], device)
    x = torch.randn(T, D, device=device, dtype=dtype, requires_grad=True)
    params = [
        torch.randn(K, D, R, device=device, dtype=dtype) / D**0.5,
        torch.zeros(K, R, device=device, dtype=dtype),
        torch.randn(K, R, D, device=device, dtype=dtype) / R**0.5,
        torch.zeros(K, D, device=device, dtype=dtype),
        torch.ones(K, device=device, dtype=dtype),
    ]
    for p in params:
        p.requires_grad_()
    gate = torch.rand(T, device=device, dtype=dtype, requires_grad=True)
    diff = [x, *params, gate]
    grad = torch.randn(T, D, device=device, dtype=dtype)
    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn(x, ids, *params, gate)
        return run

    outs = {name: fn(x, ids, *params, gate) for name, fn in impls.items()}
    times = {
        "fwd": common.time_interleaved({n: no_grad(fn) for n, fn in impls.items()}, device, reps),
        "bwd": common.time_interleaved(
            {n: (lambda o=outs[n]: torch.autograd.grad(o, diff, grad, retain_graph=True, allow_unused=True))
             for n in impls}, device, reps),
        "fwd+bwd": common.time_interleaved(
            {n: (lambda fn=fn: torch.autograd.grad(fn(x, ids, *params, gate), diff, grad, allow_unused=True))
             for n, fn in impls.items()}, device, reps),
    }
    moved = bytes_moved(T, D, R, K, torch.finfo(dtype).bits // 8)
    label = f"T{T} D{D} R{R} K{K} {case['routing']}"
    return [
        common.Row("grouped_adapter", label, d, t, moved[d], moved[d] / (bandwidth * 1e9) * 1e3)
        for d, t in times.items()
    ]


GPU_CASES = [
    dict(T=T, D=4096, R=64, K=K, routing=routing)
    for K in (4, 8)
    for T in (1024, 4096, 8192, 16384)
    for routing in ("balanced", "skewed")
]


def grouped_mm_adapter(xs, offsets, w_down, b_down, w_up, b_up, scale, gate=None):
    """The adapter on rows grouped by expert through torch._grouped_mm (cuBLAS/CUTLASS grouped GEMMs in torch);
    biases, ReLU, scale and gate are separate elementwise passes."""
    K = w_down.shape[0]
    ends = offsets[1:].to(torch.int32)
    expert = torch.repeat_interleave(torch.arange(K, device=xs.device), offsets.diff(), output_size=xs.shape[0])
    h = torch.relu(torch._grouped_mm(xs, w_down, offs=ends) + b_down[expert])
    u = torch._grouped_mm(h, w_up, offs=ends) + b_up[expert]
    c = scale[expert] * (gate if gate is not None else 1)
    return c.unsqueeze(1) * u


def bench_gpu_case(case, reps, bandwidth, dtype=torch.bfloat16):
    """One GPU case: unsorted inputs for mome / reference / dense, pre-grouped inputs for mome-sorted / grouped_mm."""
    from gpu_timing import events_ms, graph_ms

    T, D, R, K = case["T"], case["D"], case["R"], case["K"]
    dev = torch.device("cuda")
    ids = routing_ids(T, K, case["routing"], dev)
    perm = torch.argsort(ids, stable=True)
    offsets = torch.nn.functional.pad(torch.bincount(ids, minlength=K).cumsum(0), (1, 0))
    x = torch.randn(T, D, device=dev, dtype=dtype, requires_grad=True)
    params = [
        (torch.randn(K, D, R, device=dev, dtype=dtype) / D**0.5).requires_grad_(),
        (torch.randn(K, R, device=dev, dtype=dtype) * 0.1).requires_grad_(),
        (torch.randn(K, R, D, device=dev, dtype=dtype) / R**0.5).requires_grad_(),
        (torch.randn(K, D, device=dev, dtype=dtype) * 0.1).requires_grad_(),
        (torch.rand(K, device=dev, dtype=dtype) + 0.5).requires_grad_(),
    ]
    gate = torch.rand(T, device=dev, dtype=dtype, requires_grad=True)
    xs = x.detach()[perm].requires_grad_()
    gs = gate.detach()[perm].requires_grad_()
    grad = torch.randn(T, D, device=dev, dtype=dtype)
    impls = {
        "mome": (lambda: ops.grouped_adapter(x, ids, *params, gate), [x, *params, gate]),
        "mome-sorted": (lambda: ops.grouped_adapter_sorted(xs, offsets, *params, gs), [xs, *params, gs]),
        "reference": (lambda: reference.grouped_adapter(x, ids, *params, gate), [x, *params, gate]),
        "dense": (lambda: dense_all_experts(x, ids, *params, gate), [x, *params, gate]),
    }
    if hasattr(torch, "_grouped_mm"):
        impls["grouped_mm"] = (lambda: grouped_mm_adapter(xs, offsets, *params, gs), [xs, *params, gs])
    times = {"fwd": {}, "bwd": {}, "fwd+bwd": {}}
    notes = {}
    for name, (fn, diff) in impls.items():
        try:
            with torch.no_grad():
                times["fwd"][name] = events_ms(fn, reps=reps)
            out = fn()
            times["bwd"][name] = events_ms(
                lambda: torch.autograd.grad(out, diff, grad, retain_graph=True, allow_unused=True), reps=reps
            )
            times["fwd+bwd"][name] = events_ms(lambda: torch.autograd.grad(fn(), diff, grad, allow_unused=True), reps=reps)
            del out
        except (RuntimeError, NotImplementedError) as err:  # e.g. _grouped_mm unsupported here, or out of memory
            notes[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            torch.cuda.empty_cache()
    for name, fn, diff in (("mome-graph", *impls["mome"]), ("mome-sorted-graph", *impls["mome-sorted"])):
        with torch.no_grad():
            times["fwd"][name] = graph_ms(fn, reps=reps)
        times["fwd+bwd"][name] = graph_ms(lambda: torch.autograd.grad(fn(), diff, grad), reps=reps)
    moved = bytes_moved(T, D, R, K, torch.finfo(dtype).bits // 8)
    label = f"T{T} D{D} R{R} K{K} {case['routing']}"
    return [
        common.Row("grouped_adapter", label, d, t, moved[d], moved[d] / (bandwidth * 1e9) * 1e3, extra=dict(notes))
        for d, t in times.items()
    ]


def gpu_main(args):
    from gpu_timing import copy_bandwidth_gbs

    device = torch.device("cuda")
    for op in ("grouped_adapter", "grouped_adapter_sorted"):
        print(f"mome.ops.{op} backend on cuda/bfloat16: {ops.backend(op, device, torch.bfloat16)}")
    print(f"torch._grouped_mm: {'available' if hasattr(torch, '_grouped_mm') else 'absent'} in torch {torch.__version__}")
    bandwidth = copy_bandwidth_gbs()
    print(f"measured copy bandwidth: {bandwidth:.1f} GB/s")
    cases = [c for c in GPU_CASES if c["T"] == 8192] if args.quick else GPU_CASES
    rows = []
    for case in cases:
        rows += bench_gpu_case(case, args.reps, bandwidth)
        torch.cuda.empty_cache()
    common.print_table(rows, baselines=("reference", "dense", "grouped_mm"))
    for row in rows:
        for name, note in row.extra.items():
            print(f"  {row.case} {row.direction} {name}: {note}")
    path = args.json or Path(__file__).parent / "results" / "grouped_adapter-cuda.json"
    common.write_json(path, device, rows, bandwidth_gbs=bandwidth, dtype="bfloat16")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--quick", action="store_true", help="GPU: only the T = 8192 cases")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        return gpu_main(args)
    impls = {"mome": ops.grouped_adapter, "reference": reference.grouped_adapter, "dense": dense_all_experts}
    cases = SMOKE_CASES if args.smoke else CPU_CASES
    return common.run_cases("grouped_adapter", impls, cases, bench_case, args, device, baselines=("reference", "dense"))


if __name__ == "__main__":
    main()
