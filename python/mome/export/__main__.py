"""Export a part of MoME's vision side to ONNX and check it against PyTorch with onnxruntime.

    python -m mome.export onnx --preset tiny --part vision-tower --out tower.onnx
    python -m mome.export onnx --model DIR --part dino --out dino.onnx [key=value ...]

Parts: eva, clip, dino, pix2struct (one encoder's features) and vision-tower (encoders, ADT, projectors, soft
router → fused visual tokens); see `mome.export.onnx`. Exit status 0 when onnx.checker passes and onnxruntime matches
PyTorch within 1e-4 on inputs of shapes other than the export example, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mome.cli import UsageError, need_model_dir, parse_command, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mome.export", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="format", required=True)
    p = sub.add_parser("onnx", help="export to ONNX and check with onnxruntime")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a directory written by MoME.save_pretrained")
    source.add_argument("--preset", help="build a fresh model from a preset (e.g. tiny)")
    p.add_argument("--part", required=True, choices=["eva", "clip", "dino", "pix2struct", "vision-tower"])
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (flags and overrides in any order)")
    args = parse_command(parser, "onnx", p, argv)
    if args.model:
        need_model_dir("--model", args.model)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {args.out}: must end in .onnx")
    if out.parent != Path("") and not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {out.parent} does not exist")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mome.export.onnx import MissingDependency, export, require_onnx

    try:
        require_onnx()
    except MissingDependency as err:
        raise UsageError(str(err)) from None
    from mome.model import MoME, MoMEConfig

    if args.model:
        model = MoME.from_pretrained(args.model, args.overrides or None)
    else:
        model = MoME(MoMEConfig.preset(args.preset, args.overrides or None))
    report = export(model, args.part, args.out, log=lambda msg: print(msg, file=sys.stderr))
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.export"))
