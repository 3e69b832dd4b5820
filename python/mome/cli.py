"""What every ``python -m mome.*`` program shares: flags and ``key=value`` overrides in any order, and bad input
reported as one or two lines with exit status 2 instead of a traceback.

    def main(argv=None) -> int:
        args = parse(build_parser(), argv)          # argparse, but overrides may sit between flags
        ...
    if __name__ == "__main__":
        sys.exit(run(main, "python -m mome.x"))

``--debug`` (any program) or ``MOME_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

__all__ = ["UsageError", "parse", "parse_command", "run", "need_file", "need_dir", "need_model_dir", "need_benchmark",
           "positive", "read_image"]


class UsageError(ValueError):
    """Bad input named by the message: exits with status 2, no traceback."""


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_intermixed_args``: positional ``key=value`` overrides may come before, between or after the
    flags (``train.name=x --resume auto train.stages=[1]``)."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    return parser.parse_intermixed_args(argv)


def parse_command(parser: argparse.ArgumentParser, command: str, sub: argparse.ArgumentParser,
                  argv: list[str] | None = None) -> argparse.Namespace:
    """`parse` for a program with one subcommand (``python -m mome.export onnx …``): ``argv[0]`` must name it,
    the rest is parsed intermixed by its subparser ``sub``; anything else is the top parser's help or usage error."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    if not argv or argv[0] != command:
        parser.parse_args(argv)  # prints the help, or exits 2 naming the missing / unknown command
        raise UsageError(f"expected the command {command!r}")
    return parse(sub, argv[1:])


def need_benchmark(args: argparse.Namespace) -> None:
    """The inputs of a program that evaluates on a benchmark: ``--model`` (if given), ``--data``, ``--image-root``."""
    if getattr(args, "model", None):
        need_model_dir("--model", args.model)
    if args.data != "synth" and not Path(args.data).exists():
        raise UsageError(f"--data {args.data}: no such records file or folder (or give: synth)")
    if getattr(args, "image_root", None):
        need_dir("--image-root", args.image_root)


def _error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UsageError, FileNotFoundError, NotADirectoryError, PermissionError,
                                        IsADirectoryError, json.JSONDecodeError, ValueError, KeyError]
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:
        pass
    try:
        from PIL import UnidentifiedImageError

        types.append(UnidentifiedImageError)
    except ImportError:
        pass
    from mome.checkpoint import CheckpointError  # a training checkpoint that does not fit (a RuntimeError)

    types.append(CheckpointError)
    return tuple(types)


def _message(e: BaseException) -> str:
    mark = getattr(e, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        where = f"{mark.name}: " if mark.name and not mark.name.startswith("<") else ""
        return (f"{where}invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                f"{getattr(e, 'problem', None) or e}")
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in str(e):
        return f"{e.filename}: no such file or folder"
    return str(e) or type(e).__name__


def run(main: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; an expected error becomes ``prog: error: message`` on stderr and status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("MOME_DEBUG", "") not in ("", "0")
    try:
        return main([a for a in argv if a != "--debug"])
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`… | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _error_types() as e:
        if debug:
            traceback.print_exc()
        lines = _message(e).strip().splitlines() or [type(e).__name__]
        print(f"{prog}: error: " + "\n  ".join(lines[:2]), file=sys.stderr)
        if not debug:
            print(f"{prog}: (run with --debug or MOME_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


def need_file(flag: str, path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"{flag} {path}: not a file")
    return p


def need_dir(flag: str, path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such folder")
    if not p.is_dir():
        raise UsageError(f"{flag} {path}: not a folder")
    return p


def need_model_dir(flag: str, path: str | os.PathLike) -> Path:
    """A folder written by `MoME.save_pretrained` / ``python -m mome.convert``, or a training checkpoint folder."""
    p = need_dir(flag, path)
    saved = (p / "config.yaml").is_file() and (p / "model.safetensors").is_file()
    if not saved and not (p / "MANIFEST.json").is_file():
        raise UsageError(f"{flag} {path}: not a MoME model folder (expected config.yaml and model.safetensors, "
                         "as MoME.save_pretrained and python -m mome.convert write them, or a training "
                         "checkpoint's MANIFEST.json)")
    return p


def positive(flag: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise UsageError(f"{flag} must be > 0, got {value}")


def read_image(flag: str, path: str | os.PathLike):
    """An RGB PIL image, or a `UsageError` naming the flag and file."""
    from PIL import Image, UnidentifiedImageError

    p = need_file(flag, path)
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"{flag} {path}: not an image file PIL can read ({type(e).__name__})") from None
