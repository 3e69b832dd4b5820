"""Benchmark of mome.ops.deform_attn against its PyTorch reference (grid_sample per level), at ADT shapes.

    python bench/deform_attn.py [--device cpu|cuda] [--json PATH] [--dtypes bfloat16,float32]

CPU cases (ops issue): B = 2, Q = 256, H = 8, D = 32, P = 4, one level of 16×16, 37×37 and 35×58.
GPU cases (CUDA issue): B = 8, Q = 256 and 576, H = 8, P = 4; D = 176 on 16×16, D = 128 on 16×16 and 37×37, D = 96
on 32×32 and 35×58; values in bfloat16 (and float32), locations and weights in float32. On the GPU each pass is timed
three ways: `mome`, `reference` and `transformers` (Deformable DETR's pure-PyTorch MultiScaleDeformableAttention from
transformers.models.deformable_detr) through autograd by CUDA events; `mome-graph`, mome's raw ops replayed from a
CUDA graph (kernels only), whose time is the one held against the bytes floor.
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

CPU_CASES = [dict(B=2, Q=256, H=8, D=32, P=4, hw=hw) for hw in [(16, 16), (37, 37), (35, 58)]]
SMOKE_CASES = [dict(B=1, Q=16, H=2, D=8, P=2, hw=(5, 7))]
GPU_CASES = [
    dict(B=8, Q=Q, H=8, D=D, P=4, hw=hw)
    for Q in (256, 576)
    for D, hw in ((176, (16, 16)), (128, (16, 16)), (128, (37, 37)), (96, (32, 32)), (96, (35, 58)))
]


def make_inputs(B, Q, H, D, P, hw, device, dtype=torch.float32, loc_dtype=torch.float32):
    h, w = hw
    value = torch.randn(B, h * w, H, D, device=device, dtype=dtype, requires_grad=True)
    shapes = torch.tensor([[h, w]], device=device)
    starts = torch.zeros(1, dtype=torch.int64, device=device)
    loc = torch.rand(B, Q, H, 1, P, 2, device=device, dtype=loc_dtype, requires_grad=True)
    attn = torch.softmax(torch.randn(B, Q, H, 1, P, device=device, dtype=loc_dtype), -1).requires_grad_()
    return value, shapes, starts, loc, attn


def bytes_moved(B, Q, H, D, P, hw, elem=4, loc_elem=4):
    """Bytes an ideal implementation must move: forward reads value, locations, weights and writes the output;
    backward reads grad_out, value, locations, weights and writes the three gradients."""
    S = hw[0] * hw[1]
    value = B * S * H * D * elem
    loc = B * Q * H * P * 2 * loc_elem
    attn = B * Q * H * P * loc_elem
    out = B * Q * H * D * elem
    fwd = value + loc + attn + out
    bwd = out + value + loc + attn + value + loc + attn
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def bench_case(case, device, impls, reps, bandwidth, dtype=torch.float32):
    rows = []
    inputs = make_inputs(**case, device=device, dtype=dtype)
    value, shapes, starts, loc, attn = inputs
    diff = (value, loc, attn)
    grad = torch.randn(case["B"], case["Q"], case["H"] * case["D"], device=device, dtype=dtype)
    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn(*inputs)
        return run

    outs = {name: fn(*inputs) for name, fn in impls.items()}
    times = {
        "fwd": common.time_interleaved({n: no_grad(fn) for n, fn in impls.items()}, device, reps),
        "bwd": common.time_interleaved(
            {n: (lambda o=outs[n]: torch.autograd.grad(o, diff, grad, retain_graph=True)) for n in impls}, device, reps),
        "fwd+bwd": common.time_interleaved(
            {n: (lambda fn=fn: torch.autograd.grad(fn(*inputs), diff, grad)) for n, fn in impls.items()}, device, reps),
    }
    label = f"B{case['B']} Q{case['Q']} H{case['H']} D{case['D']} {case['hw'][0]}x{case['hw'][1]}"
    moved = bytes_moved(**case, elem=torch.finfo(dtype).bits // 8)
    for direction, t in times.items():
        floor = moved[direction] / (bandwidth * 1e9) * 1e3
        rows.append(common.Row("deform_attn", label, direction, t, moved[direction], floor))
    return rows


def transformers_deform_attn(hw):
    """transformers' pure-PyTorch multi-scale deformable attention (Deformable DETR) for one level of shape hw, with
    mome's argument order; None when transformers is not installed. It needs locations in the value dtype."""
    try:
        from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention
    except ImportError:
        return None
    module = MultiScaleDeformableAttention()
    shapes_list = [tuple(hw)]

    def fn(value, shapes, starts, loc, attn):
        return module(value, shapes, shapes_list, starts, loc.to(value.dtype), attn.to(value.dtype), 64)

    return fn


def bench_case_cuda(case, reps, bandwidth, dtype):
    """One GPU case: fwd / bwd / fwd+bwd of mome, the reference and transformers by CUDA events through autograd, and
    mome's raw ops from a CUDA graph ('mome-graph', kernels only)."""
    from gpu_timing import events_ms, graph_ms

    device = torch.device("cuda")
    inputs = make_inputs(**case, device=device, dtype=dtype, loc_dtype=torch.float32)
    value, shapes, starts, loc, attn = inputs
    diff = (value, loc, attn)
    grad = torch.randn(case["B"], case["Q"], case["H"] * case["D"], device=device, dtype=dtype)
    impls = {"mome": ops.deform_attn, "reference": reference.deform_attn}
    hf = transformers_deform_attn(case["hw"])
    if hf is not None:
        impls["transformers"] = hf
    times = {"fwd": {}, "bwd": {}, "fwd+bwd": {}}
    for name, fn in impls.items():
        with torch.no_grad():
            times["fwd"][name] = events_ms(lambda: fn(*inputs), reps=reps)
        out = fn(*inputs)
        times["bwd"][name] = events_ms(lambda: torch.autograd.grad(out, diff, grad, retain_graph=True), reps=reps)
        times["fwd+bwd"][name] = events_ms(lambda: torch.autograd.grad(fn(*inputs), diff, grad), reps=reps)
        del out
    raw = [t.detach() for t in inputs]
    fwd = lambda: torch.ops.mome.deform_attn(*raw)  # noqa: E731
    bwd = lambda: torch.ops.mome.deform_attn_backward(grad, *raw)  # noqa: E731
    times["fwd"]["mome-graph"] = graph_ms(fwd, reps=reps)
    times["bwd"]["mome-graph"] = graph_ms(bwd, reps=reps)
    times["fwd+bwd"]["mome-graph"] = graph_ms(lambda: (fwd(), bwd()), reps=reps)
    label = (f"B{case['B']} Q{case['Q']} H{case['H']} D{case['D']} {case['hw'][0]}x{case['hw'][1]} "
             f"{str(dtype).replace('torch.', '')}")
    moved = bytes_moved(**case, elem=torch.finfo(dtype).bits // 8, loc_elem=4)
    rows = []
    for direction, t in times.items():
        floor = moved[direction] / (bandwidth * 1e9) * 1e3
        extra = {"floor_fraction_graph": floor / t["mome-graph"], "speedup_vs_reference": t["reference"] / t["mome"]}
        if "transformers" in t:
            extra["speedup_vs_transformers"] = t["transformers"] / t["mome"]
        rows.append(common.Row("deform_attn", label, direction, t, moved[direction], floor, extra))
    return rows


def main_cuda(args):
    from gpu_timing import copy_bandwidth_gbs

    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    backends = ", ".join(f"{d}: {ops.backend('deform_attn', torch.device('cuda'), d)}" for d in dtypes)
    print(f"mome.ops.deform_attn backend on cuda: {backends}")
    bandwidth = copy_bandwidth_gbs()
    print(f"measured copy bandwidth (1 GiB device-to-device, read + write): {bandwidth:.1f} GB/s")
    rows = []
    for dtype in dtypes:
        for case in GPU_CASES:
            rows += bench_case_cuda(case, args.reps, bandwidth, dtype)
    common.print_table(rows, ours="mome-graph", baselines=("reference", "transformers", "mome"))
    print("\nGoals (issue 3, H100): fwd+bwd ≥ 10× the reference (autograd 'mome' vs 'reference'); kernels "
          "('mome-graph') within 2× of the floor forward, 3× backward.")
    for row in rows:
        e = row.extra
        print(f"  {row.case:40s} {row.direction:8s} vs reference {e['speedup_vs_reference']:7.1f}x"
              + (f"  vs transformers {e['speedup_vs_transformers']:7.1f}x" if "speedup_vs_transformers" in e else "")
              + f"  floor/kernel {100 * e['floor_fraction_graph']:5.1f}%")
    path = args.json or Path(__file__).parent / "results" / "deform_attn-cuda.json"
    common.write_json(path, torch.device("cuda"), rows, bandwidth_gbs=bandwidth,
                      bandwidth_method="1 GiB device-to-device copy, CUDA events")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--dtypes", default="bfloat16,float32", help="GPU only: value dtypes, comma-separated")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        return main_cuda(args)
    impls = {"mome": ops.deform_attn, "reference": reference.deform_attn}
    return common.run_cases("deform_attn", impls, SMOKE_CASES if args.smoke else CPU_CASES, bench_case, args, device)


if __name__ == "__main__":
    main()
