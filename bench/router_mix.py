"""Benchmark of mome.ops.router_mix against its PyTorch reference (einsum), at MoVE shapes.

    python bench/router_mix.py [--device cpu|cuda] [--json PATH]

N = 3 encoders, L = 256 tokens, D = LLM width; the op is purely memory-bound, so the floor is the whole story.
On the GPU (--device cuda): bfloat16 and float32, timed through autograd by CUDA events (`mome`, `reference`) and as
mome's raw ops replayed from a CUDA graph (`mome-graph`, the kernels alone, held against the floor; goal ≤ 1.5×).
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

CPU_CASES = [dict(N=3, B=2, L=256, D=1024), dict(N=3, B=8, L=256, D=512)]
SMOKE_CASES = [dict(N=2, B=1, L=16, D=32)]
GPU_CASES = [dict(N=3, B=8, L=256, D=4096), dict(N=3, B=8, L=576, D=1024), dict(N=4, B=16, L=256, D=2048)]


def bytes_moved(N, B, L, D, elem=4):
    """Forward reads N·B·L·D features and writes B·L·D; backward reads grad_out and features, writes grad_features."""
    fwd = (N + 1) * B * L * D * elem
    bwd = (1 + N + N) * B * L * D * elem
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def bench_case(case, device, impls, reps, bandwidth, dtype=torch.float32):
    N, B, L, D = case["N"], case["B"], case["L"], case["D"]
    features = torch.randn(N, B, L, D, device=device, dtype=dtype, requires_grad=True)
    weights = torch.softmax(torch.randn(B, N, device=device, dtype=dtype), -1).requires_grad_()
    grad = torch.randn(B, L, D, device=device, dtype=dtype)
    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn(features, weights)
        return run

    diff = (features, weights)
    outs = {name: fn(features, weights) for name, fn in impls.items()}
    times = {
        "fwd": common.time_interleaved({n: no_grad(fn) for n, fn in impls.items()}, device, reps),
        "bwd": common.time_interleaved(
            {n: (lambda o=outs[n]: torch.autograd.grad(o, diff, grad, retain_graph=True)) for n in impls}, device, reps),
        "fwd+bwd": common.time_interleaved(
            {n: (lambda fn=fn: torch.autograd.grad(fn(features, weights), diff, grad)) for n, fn in impls.items()},
            device, reps),
    }
    moved = bytes_moved(N, B, L, D, torch.finfo(dtype).bits // 8)
    label = f"N{N} B{B} L{L} D{D} {str(dtype).replace('torch.', '')}"
    return [
        common.Row("router_mix", label, d, t, moved[d], moved[d] / (bandwidth * 1e9) * 1e3) for d, t in times.items()
    ]


def bench_case_cuda(case, reps, bandwidth, dtype):
    from gpu_timing import events_ms, graph_ms

    N, B, L, D = case["N"], case["B"], case["L"], case["D"]
    features = torch.randn(N, B, L, D, device="cuda", dtype=dtype, requires_grad=True)
    weights = torch.softmax(torch.randn(B, N, device="cuda", dtype=dtype), -1).requires_grad_()
    grad = torch.randn(B, L, D, device="cuda", dtype=dtype)
    times = {"fwd": {}, "bwd": {}, "fwd+bwd": {}}
    for name, fn in {"mome": ops.router_mix, "reference": reference.router_mix}.items():
        with torch.no_grad():
            times["fwd"][name] = events_ms(lambda: fn(features, weights), reps=reps)
        out = fn(features, weights)
        times["bwd"][name] = events_ms(
            lambda: torch.autograd.grad(out, (features, weights), grad, retain_graph=True), reps=reps
        )
        times["fwd+bwd"][name] = events_ms(
            lambda: torch.autograd.grad(fn(features, weights), (features, weights), grad), reps=reps
        )
        del out
    f, w = features.detach(), weights.detach()
    fwd = lambda: torch.ops.mome.router_mix(f, w)  # noqa: E731
    bwd = lambda: torch.ops.mome.router_mix_backward(grad, f, w)  # noqa: E731
    times["fwd"]["mome-graph"] = graph_ms(fwd, reps=reps)
    times["bwd"]["mome-graph"] = graph_ms(bwd, reps=reps)
    times["fwd+bwd"]["mome-graph"] = graph_ms(lambda: (fwd(), bwd()), reps=reps)
    moved = bytes_moved(N, B, L, D, torch.finfo(dtype).bits // 8)
    label = f"N{N} B{B} L{L} D{D} {str(dtype).replace('torch.', '')}"
    rows = []
    for d, t in times.items():
        floor = moved[d] / (bandwidth * 1e9) * 1e3
        extra = {"floor_fraction_graph": floor / t["mome-graph"], "speedup_vs_reference": t["reference"] / t["mome"]}
        rows.append(common.Row("router_mix", label, d, t, moved[d], floor, extra))
    return rows


def main_cuda(args):
    from gpu_timing import copy_bandwidth_gbs

    bandwidth = copy_bandwidth_gbs()
    print(f"measured copy bandwidth (1 GiB device-to-device, read + write): {bandwidth:.1f} GB/s")
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        print(f"mome.ops.router_mix backend on cuda, {dtype}: {ops.backend('router_mix', torch.device('cuda'), dtype)}")
        for case in GPU_CASES:
            rows += bench_case_cuda(case, args.reps, bandwidth, dtype)
    common.print_table(rows, ours="mome-graph", baselines=("reference", "mome"))
    print("\nGoal (issue 3, H100): kernels ('mome-graph') within 1.5× of the floor, i.e. floor/kernel ≥ 66.7%.")
    path = args.json or Path(__file__).parent / "results" / "router_mix-cuda.json"
    common.write_json(path, torch.device("cuda"), rows, bandwidth_gbs=bandwidth,
                      bandwidth_method="1 GiB device-to-device copy, CUDA events")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        return main_cuda(args)
    impls = {"mome": ops.router_mix, "reference": reference.router_mix}
    return common.run_cases("router_mix", impls, SMOKE_CASES if args.smoke else CPU_CASES, bench_case, args, device)


if __name__ == "__main__":
    main()
