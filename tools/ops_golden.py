"""Writes (or checks) tests/ops/golden_cpu.safetensors: the CPU kernels' outputs and gradients on seeded op-test inputs.

The golden file was made with the TORCH_LIBRARY build of commit 3178211 (ATen kernels, torch 2.13.0 CPU):

    python tools/ops_golden.py --write tests/ops/golden_cpu.safetensors

It stores the inputs beside the results, so the check does not depend on torch's random generator staying the same
across versions. tests/ops/test_golden.py reruns every case on the current build and compares with torch.equal:
the torch-free core must give bit-identical results. Torch runs THREADS threads: the grouped adapter's GEMMs are
torch's BLAS, whose results depend on its thread count (seen: 4 threads change grad_scale/grad_gate of adapter_f32).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ops.cases, when run as a script
from tests.ops.cases import adapter_inputs, deform_inputs  # noqa: E402

THREADS = 2  # torch.set_num_threads while the file is written and checked (the default on the 2-core machine used)

# (name, builder kwargs): shapes taken from tests/ops (awkward sizes, empty experts, out-of-range locations).
DEFORM = [
    ("deform_f64", dict(shapes=[(3, 4), (2, 2)], B=2, Q=5, H=3, D=4, P=4)),
    ("deform_f32", dict(shapes=[(7, 5), (3, 3), (1, 1)], B=2, Q=9, H=2, D=16, P=3, dtype=torch.float32)),
    ("deform_far", dict(shapes=[(5, 3)], B=1, Q=4, H=1, D=5, P=2, loc_range=(-2.0, 3.0))),
    ("deform_big", dict(shapes=[(16, 12), (8, 6)], B=3, Q=40, H=4, D=32, P=4, dtype=torch.float32)),
]
ROUTER = [
    ("router_f64", dict(N=3, B=2, L=7, D=5, dtype=torch.float64)),
    ("router_f32", dict(N=4, B=3, L=33, D=64, dtype=torch.float32)),
]
ADAPTER = [
    ("adapter_a", dict(T=37, D=12, R=5, K=3)),
    ("adapter_one", dict(T=1, D=7, R=3, K=4)),
    ("adapter_empty", dict(T=40, D=9, R=4, K=4, counts=[0, 37, 0, 3])),
    ("adapter_nogate", dict(T=25, D=6, R=2, K=2, gate=False)),
    ("adapter_f32", dict(T=300, D=64, R=16, K=5, dtype=torch.float32)),
    ("adapter_rank0", dict(T=13, D=6, R=0, K=3, counts=[5, 0, 8])),
]


def _router_inputs(N, B, L, D, dtype):
    return torch.randn(N, B, L, D, dtype=dtype), torch.softmax(torch.randn(B, N, dtype=dtype), -1)


def compute(inputs: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(inputs, results). With `inputs`, reruns the stored inputs; without, draws them (seed 0)."""
    torch.manual_seed(0)
    new = inputs is None
    inputs = {} if new else inputs
    out: dict[str, torch.Tensor] = {}

    def take(name, tensors):
        if new:
            for i, t in enumerate(tensors):
                if t is not None:
                    inputs[f"{name}.in{i}"] = t.detach().clone()
        return [inputs.get(f"{name}.in{i}") for i in range(len(tensors))]

    for name, kw in DEFORM:
        args = take(name, deform_inputs(**kw))
        y = torch.ops.mome.deform_attn(*args)
        dy = take(name + ".dy", [torch.randn_like(y)])[0]
        out[name + ".y"] = y
        for k, g in zip(("gv", "gl", "ga"), torch.ops.mome.deform_attn_backward(dy, *args)):
            out[f"{name}.{k}"] = g
    for name, kw in ROUTER:
        f, w = take(name, _router_inputs(**kw))
        y = torch.ops.mome.router_mix(f, w)
        dy = take(name + ".dy", [torch.randn_like(y)])[0]
        out[name + ".y"] = y
        gf, gw = torch.ops.mome.router_mix_backward(dy, f, w)
        out[name + ".gf"], out[name + ".gw"] = gf, gw
    for name, kw in ADAPTER:
        gate = kw.get("gate", True)
        x, ids, wd, bd, wu, bu, s, g = take(name, adapter_inputs(**kw))
        if not gate:
            g = None
        res = take(name + ".res", [torch.randn_like(x)])[0]
        K = wd.shape[0]
        perm = torch.argsort(ids, stable=True)
        offsets = F.pad(torch.bincount(ids, minlength=K).cumsum(0), (1, 0))
        gs = None if g is None else g[perm]
        runs = {
            "ids": ("grouped_adapter", x, ids, g),
            "sorted": ("grouped_adapter_sorted", x[perm].contiguous(), offsets, gs),
        }
        for tag, (op, xx, routing, gg) in runs.items():
            for with_res in (False, True):
                r = (res if tag == "ids" else res[perm].contiguous()) if with_res else None
                y, h = getattr(torch.ops.mome, op)(xx, routing, wd, bd, wu, bu, s, gg, r)
                key = f"{name}.{tag}{'.res' if with_res else ''}"
                out[key + ".y"], out[key + ".h"] = y, h
            dy = take(f"{name}.{tag}.dy", [torch.randn_like(xx)])[0]
            grads = getattr(torch.ops.mome, op + "_backward")(dy, xx, routing, h, wd, bd, wu, bu, s, gg)
            for i, t in enumerate(grads):
                out[f"{name}.{tag}.g{i}"] = t
    return inputs, out


def load_inputs(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stored inputs, copied into fresh allocations: a tensor read from the file may sit at an address of another
    alignment, and BLAS results depend on it (seen: adapter_rank0's grad_scale through a 1-column GEMM)."""
    return {k[len("input."):]: v.clone() for k, v in stored.items() if k.startswith("input.")}


def main() -> None:
    import mome.ops  # noqa: F401  (registers the ops)
    from safetensors.torch import load_file, save_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", metavar="PATH", help="draw the inputs, run the kernels, save inputs and results")
    p.add_argument("--check", metavar="PATH", help="rerun the stored inputs and compare with torch.equal")
    a = p.parse_args()
    torch.set_num_threads(THREADS)
    if a.write:
        inputs, results = compute()
        tensors = {f"input.{k}": v.contiguous() for k, v in inputs.items()}
        tensors.update({f"result.{k}": v.contiguous() for k, v in results.items()})
        save_file(tensors, a.write, metadata={"made_by": "tools/ops_golden.py --write", "torch": torch.__version__,
                                                   "threads": str(THREADS)})
        print(f"wrote {len(results)} results to {a.write}")
    if a.check:
        stored = load_file(a.check)
        inputs = load_inputs(stored)
        _, results = compute(inputs)
        bad = [k for k, v in results.items() if not torch.equal(v, stored[f"result.{k}"])]
        print(f"{len(results) - len(bad)}/{len(results)} bit-identical" + (f"; differ: {bad}" if bad else ""))
        raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
