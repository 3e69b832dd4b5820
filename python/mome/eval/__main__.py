"""`python -m mome.eval`: evaluate a MoME model on the multitask benchmark (PAPER.md, The multitask benchmark).

    python -m mome.eval --model runs/tiny-synth/stage2/final --data synth --out runs/tiny-synth/eval
    python -m mome.eval --preset tiny --data data/mybench --out eval/ --limit 50 [key=value ...]
    torchrun --nproc-per-node 8 -m mome.eval --model DIR --data records.jsonl --image-root /images --out DIR

`--data` is ``synth`` (the synthetic benchmark's test split, generated into --synth-dir on first use), a folder
(``<dir>/test.jsonl``, images under ``<dir>``) or a .json / .jsonl records file (images under its folder unless
--image-root says otherwise). Every dataset is scored with its records' metric by its benchmark's own evaluator (named
in the table's last column, docs/metrics.md); the table has the group means and Avg. = the mean of the group means,
as the paper's tables. Writes ``<out>/<tag>.json`` (meta, summary, scores,
table, routing, predictions) and ``<out>/<tag>.md`` (the tables and the routing summary), and prints the markdown.

Under torchrun every rank generates for records rank::WORLD_SIZE and rank 0 gathers, scores and writes; the results
equal a one-process run's. Greedy decoding by default; with --sample, --seed fixes the results (for a given batch
size and world size).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mome.cli import need_benchmark, need_file, parse, positive, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mome.eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved model folder (runs/<name>/stage<k>/final) or a checkpoint folder")
    source.add_argument("--preset", help="a fresh model from a preset (e.g. tiny; weights fixed by its seed)")
    p.add_argument("--data", required=True, help="synth, a folder holding test.jsonl, or a .json/.jsonl records file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-root", help="folder the records' image paths are relative to (default: the data's)")
    p.add_argument("--tag", default="eval", help="output file stem (default: eval)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records of every dataset")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--skip-missing", action="store_true", help="skip records whose image is missing (default: fail)")
    p.add_argument("--device", default="auto", help="auto (cuda if visible), cpu or cuda")
    p.add_argument("--synth-dir", default=None, help="where --data synth is generated (default: data/synth)")
    p.add_argument("--synth-n", type=int, default=2000,
                   help="train records of a newly generated synthetic benchmark; test = N / 5 (default 2000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed table")
    p.add_argument("--vision-backend", choices=["torch", "onnx"], default="torch",
                   help="run MoVE with PyTorch or with onnxruntime (mome.export.runtime)")
    p.add_argument("--onnx", help="with --vision-backend onnx: the model's vision-tower .onnx "
                                  "(python -m mome.export onnx --part vision-tower); default: exported on the fly")
    p.add_argument("--metric-protocol", choices=["official", "lavis", "ureader", "paper"], default="official",
                   help="official (default): every dataset scored by its benchmark's evaluator; what the MoME paper "
                        "followed instead: lavis (OK-VQA, GQA as InstructBLIP), ureader (Document group as UReader), "
                        "paper (both); docs/metrics.md")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="model config overrides key=value (flags and overrides in any order)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    # Every input is checked before anything is generated, built or written.
    positive("--batch-size", args.batch_size)
    positive("--max-new-tokens", args.max_new_tokens)
    positive("--limit", args.limit, allow_none=True)
    positive("--synth-n", args.synth_n)
    need_benchmark(args)
    if args.onnx:
        need_file("--onnx", args.onnx)
    if args.overrides:
        from mome.model import MoMEConfig

        saved = Path(args.model or "") / "config.yaml"
        base = MoMEConfig.load(saved) if args.model and saved.is_file() else (
            MoMEConfig.preset(args.preset) if args.preset else None)
        if base is not None:
            base.override(args.overrides)  # unknown keys / bad values fail here, naming the key
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mome import distributed
    from mome.eval import harness

    env = distributed.setup(args.device)  # a process group when launched by torchrun (WORLD_SIZE > 1)
    try:
        torch.manual_seed(args.seed)
        records, image_root = harness.load_benchmark(
            args.data, args.image_root, args.limit, synth_dir=args.synth_dir or harness.SYNTH_DIR,
            synth_n=args.synth_n, is_main=env.is_main, barrier=env.barrier)
        model = harness.load_model(args.model, args.preset, args.overrides, device=env.device)
        t0 = time.perf_counter()
        from mome.export.runtime import vision_backend

        with vision_backend(model, args.vision_backend, args.onnx):
            result = harness.evaluate(model, records, image_root, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                                      do_sample=args.sample, seed=args.seed,
                                      on_missing="skip" if args.skip_missing else "error",
                                      rank=env.rank, world_size=env.world_size,
                                      protocol=args.metric_protocol)
        if env.is_main:
            result["meta"] = {
                "model": args.model or f"preset:{args.preset}", "overrides": args.overrides, "data": args.data,
                "image_root": str(image_root), "records": len(records),
                "predicted": len(result["predictions"]), "limit": args.limit, "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens, "sample": args.sample, "seed": args.seed,
                "world_size": env.world_size, "seconds": round(time.perf_counter() - t0, 2),
                "vision_backend": args.vision_backend, "metric_protocol": args.metric_protocol,
            }
            json_path, md_path = harness.write_results(result, args.out, args.tag)
            if not args.quiet:
                print(f"{result['markdown']}\n{result['routing_text']}", flush=True)
            for w in result["routing"]["collapsed"]:
                print(f"warning: router collapse: {w}", file=sys.stderr)
            print(f"wrote {json_path} and {md_path}", file=sys.stderr)
        env.barrier()
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.eval"))
