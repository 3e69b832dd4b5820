"""Shared benchmark harness: timing, the memory-bandwidth floor, a table printer and JSON results with provenance.

Every measurement is a median over repetitions after warm-up, in milliseconds. Beside each time the harness puts the
bytes-moved floor (bytes the op must read and write / the bandwidth measured in the same run by a large copy), so a
number is read as a fraction of what the memory system allows.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int = 3, reps: int = 10, min_time_s: float = 0.2) -> float:
    """Median wall time of fn() in ms (CUDA: synchronised around each call)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    start = time.perf_counter()
    while len(samples) < reps or (time.perf_counter() - start < min_time_s and len(samples) < 1000):
        t0 = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def time_interleaved(fns: dict, device: torch.device, reps: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median wall time (ms) of each fn, measured in rounds that call every fn once in turn, so the slow periods of a
    shared machine fall on every implementation alike and the ratios between them stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def measure_bandwidth_gbs(device: torch.device, mib: int = 256) -> float:
    """Achievable memory bandwidth (GB/s) from a large tensor copy: read + write of `mib` MiB."""
    n = mib * 2**20 // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=2, reps=10)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


@dataclass
class Row:
    """One measured case: an op, a shape label, a pass (fwd / bwd / fwd+bwd) and the time of each implementation."""

    op: str
    case: str
    direction: str
    times_ms: dict[str, float]
    bytes_moved: float = 0.0
    floor_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    def ratio(self, slow: str, fast: str) -> float:
        return self.times_ms[slow] / self.times_ms[fast]


def provenance(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "torch": torch.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(rows: list[Row], ours: str = "mome", baselines: tuple[str, ...] = ("reference",)) -> None:
    names = list(dict.fromkeys(name for row in rows for name in row.times_ms))
    header = f"{'op':16s} {'case':34s} {'pass':8s}" + "".join(f"{n + ' ms':>16s}" for n in names)
    header += "".join(f"{b + '/' + ours:>18s}" for b in baselines) + f"{'floor ms':>10s}{'% of floor':>11s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row.op:16s} {row.case:34s} {row.direction:8s}"
        line += "".join(f"{row.times_ms[n]:16.3f}" if n in row.times_ms else f"{'-':>16s}" for n in names)
        for b in baselines:
            ok = b in row.times_ms and ours in row.times_ms
            line += f"{row.ratio(b, ours):17.2f}x" if ok else f"{'-':>18s}"
        if row.floor_ms and ours in row.times_ms:
            line += f"{row.floor_ms:10.3f}{100 * row.floor_ms / row.times_ms[ours]:10.1f}%"
        print(line)


def write_json(path: str | os.PathLike, device: torch.device, rows: list[Row], **meta) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"provenance": provenance(device), **meta, "rows": [asdict(r) for r in rows]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    print(f"results written to {path}")


def run_cases(op: str, impls: dict, cases: list, bench_case, args, device: torch.device,
              baselines: tuple[str, ...] = ("reference",)) -> list[Row]:
    """The CPU (or generic) path of every op benchmark: report the backend, measure the bandwidth, time each case
    with `bench_case(case, device, impls, reps, bandwidth)`, print the table and write the JSON."""
    from mome import ops

    print(f"mome.ops.{op} backend on {device}: {ops.backend(op, device, torch.float32)}")
    bandwidth = measure_bandwidth_gbs(device)
    print(f"measured copy bandwidth: {bandwidth:.1f} GB/s")
    rows = []
    for case in cases:
        rows += bench_case(case, device, impls, args.reps, bandwidth)
    print_table(rows, baselines=baselines)
    path = args.json or Path(__file__).parent / "results" / f"{op}-{device.type}.json"
    write_json(path, device, rows, bandwidth_gbs=bandwidth)
    return rows


def add_common_args(parser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write results here (default bench/results/<op>-<device>.json)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true",
                        help="CPU: one tiny case, to check that the script runs (tools/gpu_check.sh --dry-run)")
