"""Answer one image + prompt with a MoME model and show its routing.

    python -m mome.generate --model DIR --image PATH --prompt TEXT [--json]
    python -m mome.generate --preset tiny --image PATH --prompt TEXT --json
    python -m mome.generate --model DIR --image PATH --prompt TEXT --vision-backend onnx [--onnx tower.onnx]

``--vision-backend onnx`` runs MoVE with onnxruntime (`mome.export.runtime`) from ``--onnx``, a ``vision-tower``
export of this model (`python -m mome.export onnx --part vision-tower`); without ``--onnx`` the tower is exported
to a temporary file first.

``--json`` prints one object ``{"text": ..., "routing": {"vision": {encoder: weight}, "vision_importance":
{encoder: mean |G_s(I)_i · f̂_i|}, "language": [MoLE expert per layer] or null}}``. Flags and ``key=value``
overrides may come in any order; bad input exits with status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mome.cli import UsageError, need_file, need_model_dir, parse, positive, read_image, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mome.generate", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a directory written by MoME.save_pretrained")
    source.add_argument("--preset", help="build a fresh model from a preset (e.g. tiny)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--vision-backend", choices=["torch", "onnx"], default="torch",
                        help="run the vision side (MoVE) with PyTorch or with onnxruntime")
    parser.add_argument("--onnx", help="with --vision-backend onnx: the vision-tower .onnx of this model")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (with --preset)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    # Every input is checked before a model is built.
    if not args.prompt.strip():
        raise UsageError("--prompt is empty")
    positive("--max-new-tokens", args.max_new_tokens)
    positive("--temperature", args.temperature)
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.model:
        need_model_dir("--model", args.model)
    if args.onnx:
        need_file("--onnx", args.onnx)
    image = read_image("--image", args.image)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mome.model import MoME, MoMEConfig

    if args.model:
        model = MoME.from_pretrained(args.model, args.overrides or None, device=args.device)
    else:
        model = MoME(MoMEConfig.preset(args.preset, args.overrides or None)).to(args.device)
    from mome.export.runtime import vision_backend

    with vision_backend(model, args.vision_backend, args.onnx):
        result = model.generate([image], [args.prompt], max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)[0]
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        r = result.routing
        print(result.text)
        print("vision router:    " + ", ".join(f"{k} {v:.3f}" for k, v in r["vision"].items()), file=sys.stderr)
        print("vision importance: " + ", ".join(f"{k} {v:.3f}" for k, v in r["vision_importance"].items()),
              file=sys.stderr)
        print(f"language experts per layer: {r['language']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.generate"))
