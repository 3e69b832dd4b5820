"""Helpers shared by the converters: locating and reading annotation files with errors that name them."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["find", "read_json", "read_jsonl", "letters"]


def find(src: Path, *candidates: str) -> Path:
    """The first of `candidates` (paths relative to `src`) that exists; else an error listing all of them."""
    for c in candidates:
        if (src / c).is_file():
            return src / c
    raise FileNotFoundError(f"none of {list(candidates)} found in {str(src)!r} (is --src the dataset's folder, in its "
                            f"official layout?)")


def read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (not a JSON file?): {e}") from None


def read_jsonl(path: Path) -> list:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from None
    return out


def letters(choices: list[str]) -> str:
    """Multiple-choice options as lines ``A. first``, ``B. second``, ..."""
    return "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))
