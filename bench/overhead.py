"""Eager per-call overhead of the mome ops on the CPU: tiny shapes, so the time is the call path, not the kernel.

    python bench/overhead.py [--before-commit 3178211] [--rounds 5]

One run measures two builds, each in its own process (the old core registers `mome::` from C++, the new one from
Python: they cannot share a process):
  before  the TORCH_LIBRARY build of `--before-commit` (ATen C++ ops, checks in C++), checked out with `git archive`
          into a temporary folder and built there against the running torch (`pip install --no-build-isolation`:
          needs scikit-build-core, pybind11, cmake and ninja in this environment);
  after   the installed mome (the torch-free core; ops defined in Python with torch.library).
The processes alternate for `--rounds` rounds and each number is the median over rounds of the median µs per call,
so the slow periods of a shared machine hit both builds alike. Per op: the public function (`mome.ops.<op>`, argument
checks + dispatch + kernel), the raw forward op (`torch.ops.mome.<op>`) and the raw backward op. Also, in the `after`
process, the cost of the op-definition route alone: a trivial op defined with `torch.library.Library(...).define` +
`impl` (what mome uses) against the same op made with `torch.library.custom_op`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = ("deform_attn", "router_mix", "grouped_adapter", "grouped_adapter_sorted")


def _per_call_us(fn, calls: int = 200, repeats: int = 15) -> float:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t0) / calls / 1e3)
    return statistics.median(samples)


def measure() -> dict[str, float]:
    """µs per call of every case, in this process (whichever mome it imports)."""
    import torch

    import mome.ops as ops

    torch.manual_seed(0)
    dt = torch.float32
    out: dict[str, float] = {}
    # deform_attn: B=1, Q=2, H=1, D=4, one 2x2 level, P=1
    v = torch.randn(1, 4, 1, 4, dtype=dt)
    shapes, starts = torch.tensor([[2, 2]]), torch.tensor([0])
    loc, attn = torch.rand(1, 2, 1, 1, 1, 2, dtype=dt), torch.rand(1, 2, 1, 1, 1, dtype=dt)
    go = torch.randn(1, 2, 4, dtype=dt)
    out["deform_attn"] = _per_call_us(lambda: ops.deform_attn(v, shapes, starts, loc, attn))
    out["deform_attn raw"] = _per_call_us(lambda: torch.ops.mome.deform_attn(v, shapes, starts, loc, attn))
    out["deform_attn_backward raw"] = _per_call_us(
        lambda: torch.ops.mome.deform_attn_backward(go, v, shapes, starts, loc, attn))
    # router_mix: N=2, B=1, L=2, D=4
    f, w = torch.randn(2, 1, 2, 4, dtype=dt), torch.rand(1, 2, dtype=dt)
    gr = torch.randn(1, 2, 4, dtype=dt)
    out["router_mix"] = _per_call_us(lambda: ops.router_mix(f, w))
    out["router_mix raw"] = _per_call_us(lambda: torch.ops.mome.router_mix(f, w))
    out["router_mix_backward raw"] = _per_call_us(lambda: torch.ops.mome.router_mix_backward(gr, f, w))
    # grouped_adapter: T=4, D=8, R=4, K=2
    x = torch.randn(4, 8, dtype=dt)
    ids, offsets = torch.tensor([1, 0, 1, 0]), torch.tensor([0, 2, 4])
    wd, bd = torch.randn(2, 8, 4, dtype=dt), torch.randn(2, 4, dtype=dt)
    wu, bu = torch.randn(2, 4, 8, dtype=dt), torch.randn(2, 8, dtype=dt)
    s, g = torch.rand(2, dtype=dt), torch.rand(4, dtype=dt)
    for op, routing in (("grouped_adapter", ids), ("grouped_adapter_sorted", offsets)):
        public, raw = getattr(ops, op), getattr(torch.ops.mome, op)
        out[op] = _per_call_us(lambda: public(x, routing, wd, bd, wu, bu, s, g))
        out[f"{op} raw"] = _per_call_us(lambda: raw(x, routing, wd, bd, wu, bu, s, g))
        _, h = raw(x, routing, wd, bd, wu, bu, s, g)
        bwd = getattr(torch.ops.mome, f"{op}_backward")
        out[f"{op}_backward raw"] = _per_call_us(lambda: bwd(x, x, routing, h, wd, bd, wu, bu, s, g))
    return out


def measure_routes() -> dict[str, float]:
    """µs per call of a trivial op (returns an empty tensor) defined by each torch.library route."""
    import torch

    lib = torch.library.Library("mome_bench", "DEF")
    lib.define("low(Tensor x) -> Tensor")
    lib.impl("low", lambda x: x.new_empty(0), "CPU")

    @torch.library.custom_op("mome_bench::high", mutates_args=(), schema="(Tensor x) -> Tensor")
    def high(x):
        return x.new_empty(0)

    x = torch.randn(4)
    return {
        "trivial op, Library.define + impl": _per_call_us(lambda: torch.ops.mome_bench.low(x)),
        "trivial op, torch.library.custom_op": _per_call_us(lambda: torch.ops.mome_bench.high(x)),
        "x.new_empty(0) alone": _per_call_us(lambda: x.new_empty(0)),
    }


def build_before(commit: str, folder: Path) -> Path:
    """The package of `commit` built against the running torch into folder/site; returns that folder."""
    src, site = folder / "src", folder / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    env = dict(os.environ, MOME_WITH_CUDA="OFF", CMAKE_BUILD_PARALLEL_LEVEL="2")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), "-C", f"build-dir={folder / 'build'}", str(src)],
                   check=True, env=env)
    print(f"built {commit} in {time.time() - t0:.0f} s", file=sys.stderr)
    return site


def _child(site: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site
    # An editable install's import hook would win over PYTHONPATH: drop it in the `before` process.
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]);\n"
            "if sys.argv[2]: sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
            "import overhead, mome; r = overhead.measure(); print(mome.__file__); print(json.dumps(r))")
    res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), site or ""], env=env,
                         cwd=tempfile.gettempdir(), check=True, capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    expected = site or str(ROOT)
    if not lines[-2].startswith(expected) and site:
        raise RuntimeError(f"the `before` process imported {lines[-2]}, not the build in {site}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-commit", default="3178211")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--before-site", help="reuse this build of the old commit (a folder left by --keep-before)")
    p.add_argument("--keep-before", help="build the old commit into this folder and keep it")
    a = p.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="mome-before-") as tmp:
        if a.before_site:
            site = a.before_site
        else:
            site = str(build_before(a.before_commit, Path(a.keep_before or tmp)))
        before, after = [], []
        for _ in range(a.rounds):
            before.append(_child(site))
            after.append(_child(None))
    med = {k: (statistics.median(r[k] for r in before), statistics.median(r[k] for r in after)) for k in before[0]}
    routes = measure_routes()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; µs per call, median of {a.rounds} rounds")
    print(f"{'call':34s} {'before':>8s} {'after':>8s} {'added':>8s}")
    for k, (b, f) in med.items():
        print(f"{k:34s} {b:8.1f} {f:8.1f} {f - b:+8.1f}")
    for k, t in routes.items():
        print(f"{k:44s} {t:8.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"before_commit": a.before_commit, "torch": torch.__version__,
                                            "us_per_call": med, "routes": routes}, indent=1))


if __name__ == "__main__":
    main()
