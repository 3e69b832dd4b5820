"""Command line: ``python -m mome.data {convert,synth,pretrain-encoders,pretrain-llm,list}``.

    python -m mome.data convert NAME --src DIR --out FILE [--split SPLIT] [--quiet]
    python -m mome.data convert official --src DIR --out FILE [--images ROOT [--on-missing skip]] [--verbatim]
    python -m mome.data synth --out DIR [--n N] [--n-test M] [--seed S] [--quiet]
    python -m mome.data pretrain-encoders [--out DIR] [--seed S] [--steps N] [--kinds K,...] [--check]
    python -m mome.data pretrain-llm [--out DIR] [--seed S] [--steps N] [--check]
    python -m mome.data list                      # the converters, their groups and default splits
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from mome.cli import UsageError, run


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def main(argv: list[str] | None = None) -> int:
    from mome.data import converters, synth

    parser = argparse.ArgumentParser(prog="python -m mome.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a dataset's official annotation files to our record format")
    p.add_argument("name", choices=sorted(converters.REGISTRY), metavar="NAME",
                   help="dataset; one of: " + ", ".join(sorted(converters.REGISTRY)))
    p.add_argument("--src", required=True, help="the dataset's folder, in its official layout")
    p.add_argument("--out", required=True, help="output records file (.jsonl or .json)")
    p.add_argument("--split", default=None, help="split to convert (default: the paper's evaluation split)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--images", default=None, metavar="ROOT",
                   help="official only: the image root their image_path is relative to (after 'Datasets/'); "
                        "every image is checked to be there")
    p.add_argument("--on-missing", choices=("error", "skip"), default=None,
                   help="official only, with --images: a missing image is an error (default) or its record is "
                        "skipped (counted)")
    p.add_argument("--verbatim", action="store_true",
                   help="official only: keep their question/answer text exactly (default: boxes rewritten in our "
                        "format)")

    p = sub.add_parser("synth", help="generate the built-in synthetic benchmark")
    p.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl, images/)")
    p.add_argument("--n", type=int, default=2000, help="train records (default 2000)")
    p.add_argument("--n-test", type=int, default=None, help="test records (default n / 5)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    p = sub.add_parser("pretrain-encoders", help="pretrain the tiny preset's specialist encoders (the shipped ones)")
    p.add_argument("--out", default=None,
                   help="output folder (default: the package's own weights folder, replacing the shipped files)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0: the shipped weights)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per encoder (default: the shipped ones)")
    p.add_argument("--kinds", default=None, help="comma-separated subset of eva_clip,dinov2,pix2struct")
    p.add_argument("--check", action="store_true",
                   help="regenerate into a temporary folder and compare with the shipped files' SHA-256 (exit 1 if "
                        "they differ)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("pretrain-llm", help="pretrain the tiny preset's LLM on text (the shipped mome:tiny-llm)")
    p.add_argument("--out", default=None,
                   help="output folder for tiny-llm/ and tiny-llm.json (default: the package's own weights folder, "
                        "replacing the shipped files)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0: the shipped weights)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped ones)")
    p.add_argument("--check", action="store_true",
                   help="regenerate into a temporary folder and compare with the shipped file's SHA-256 (exit 1 if "
                        "they differ)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("list", help="list the converters")

    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    args = parser.parse_args(argv)
    if args.command == "convert":
        src = Path(args.src)
        if not src.exists():
            raise UsageError(f"--src {args.src}: no such folder or file")
        if Path(args.out).suffix not in (".json", ".jsonl"):
            raise UsageError(f"--out {args.out}: must end in .jsonl or .json")
        conv = converters.REGISTRY[args.name]
        if args.on_missing is not None and args.images is None:
            parser.error("--on-missing needs --images")
        options = {k: v for k, v in (("images", args.images), ("on_missing", args.on_missing),
                                     ("verbatim", args.verbatim or None)) if v is not None}
        for key in sorted(set(options) - set(conv.options)):
            takers = [c.name for c in converters.REGISTRY.values() if key in c.options]
            parser.error(f"--{key.replace('_', '-')} applies to {', '.join(takers)} only, not {args.name}")
        t0 = time.time()
        n = conv.run(args.src, args.out, split=args.split, progress=_progress(args), **options)
        if not args.quiet:
            print(f"{args.name} ({args.split or conv.default_split}): wrote {n} records to {args.out} "
                  f"in {time.time() - t0:.1f} s", file=sys.stderr)
    elif args.command == "synth":
        if args.n < 0 or (args.n_test is not None and args.n_test < 0):
            parser.error("--n and --n-test must be >= 0")
        n_test = args.n // 5 if args.n_test is None else args.n_test
        t0 = time.time()
        counts = synth.generate(args.out, n_train=args.n, n_test=n_test, seed=args.seed, progress=_progress(args))
        if not args.quiet:
            print(f"synth: wrote {counts['train']} train + {counts['test']} test records to {args.out} "
                  f"in {time.time() - t0:.1f} s", file=sys.stderr)
    elif args.command == "pretrain-encoders":
        return _pretrain_encoders(args)
    elif args.command == "pretrain-llm":
        return _pretrain_llm(args)
    else:
        for name in sorted(converters.REGISTRY):
            c = converters.REGISTRY[name]
            print(f"{name:22s} {c.group:9s} {c.task:16s} {c.metric:12s} default split: {c.default_split:9s} "
                  f"splits: {', '.join(c.splits)}")
    return 0


def _pretrain_args(args):
    """The checks and settings `pretrain-encoders` and `pretrain-llm` share: --steps, the --out folder (default the
    package's weights folder) and the log."""
    from mome.model import specialists

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps}: must be >= 1")
    out = Path(args.out) if args.out else specialists.WEIGHTS_DIR
    if not args.check and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: not a folder")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    return out, log


def _pretrain_encoders(args) -> int:
    import tempfile

    from mome.model import specialists
    from mome.training.specialists import pretrain

    kinds = specialists.KINDS if args.kinds is None else [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in specialists.KINDS]
    if bad or not kinds:
        raise UsageError(f"--kinds {args.kinds}: expected a subset of {','.join(specialists.KINDS)}")
    steps = {k: args.steps for k in kinds} if args.steps is not None else {}
    out, log = _pretrain_args(args)
    if not args.check:
        t0 = time.time()
        pretrain(out, seed=args.seed, steps=steps, kinds=kinds, progress=_progress(args), log=log)
        log(f"pretrain-encoders: wrote {', '.join(specialists.file_name(k) for k in kinds)} to {out} "
            f"in {time.time() - t0:.0f} s")
        return 0
    shipped = specialists.manifest()
    with tempfile.TemporaryDirectory() as tmp:
        want = {k: shipped["encoders"][k]["steps"] for k in kinds}
        man = pretrain(tmp, seed=shipped["seed"], steps={**want, **steps}, kinds=kinds, progress=_progress(args),
                       log=log)
    differ = [k for k in kinds if man["encoders"][k]["sha256"] != shipped["encoders"][k]["sha256"]]
    for k in kinds:
        print(f"{k}: {'same bits as the shipped file' if k not in differ else 'DIFFERS from the shipped file'} "
              f"({man['encoders'][k]['sha256'][:16]}…)")
    if differ:
        print(f"shipped on {shipped['machine']} with torch {shipped['torch']}; here {man['machine']} with torch "
              f"{man['torch']} (bit-exactness needs the same kind of machine)", file=sys.stderr)
    return 1 if differ else 0


def _pretrain_llm(args) -> int:
    import json
    import tempfile

    from mome.model import specialists
    from mome.training import llm_pretrain

    out, log = _pretrain_args(args)
    if not args.check:
        t0 = time.time()
        llm_pretrain.pretrain(out, seed=args.seed, steps=args.steps or llm_pretrain.DEFAULT_STEPS,
                              progress=_progress(args), log=log)
        log(f"pretrain-llm: wrote {out / specialists.LLM} and {llm_pretrain.MANIFEST} in {time.time() - t0:.0f} s")
        return 0
    shipped = json.loads((specialists.WEIGHTS_DIR / llm_pretrain.MANIFEST).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        man = llm_pretrain.pretrain(tmp, seed=shipped["seed"], steps=args.steps or shipped["steps"],
                                    progress=_progress(args), log=log)
    same = man["sha256"] == shipped["sha256"]
    print(f"tiny-llm: {'same bits as the shipped file' if same else 'DIFFERS from the shipped file'} "
          f"({man['sha256'][:16]}…)")
    if not same:
        print(f"shipped on {shipped['machine']} with torch {shipped['torch']}; here {man['machine']} with torch "
              f"{man['torch']} (bit-exactness needs the same kind of machine)", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    # Warnings (skipped records, absent files) are messages for the user here, not code locations.
    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
    sys.exit(run(main, "python -m mome.data"))
