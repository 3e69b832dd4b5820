"""Converters from each dataset's official annotation files to our record format, and their registry.

A converter is a generator ``fn(src: Path, split: str, **options) -> Iterator[record]`` registered with its group,
task, metric, splits and default split (the paper's evaluation split, PAPER.md), and the keyword options it takes
(e.g. the image root of ``official``). `Converter.run` checks the arguments, converts and writes the records
atomically. One module per dataset family; importing this package registers them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from mome.data.records import GROUPS, METRICS, write_records

__all__ = ["Converter", "REGISTRY", "register", "convert"]


@dataclass(frozen=True)
class Converter:
    name: str
    group: str
    task: str
    metric: str
    splits: tuple[str, ...]
    default_split: str
    fn: Callable[..., Iterator[dict]]
    options: tuple[str, ...] = ()  # keyword options of `fn` beyond (src, split)

    def records(self, src: str | os.PathLike, split: str | None = None, **options) -> Iterator[dict]:
        """Yield the records of `split` (default: the paper's evaluation split) read from the folder `src`."""
        split = self.default_split if split is None else split
        if split not in self.splits:
            raise ValueError(f"{self.name}: --split {split!r} is not one of {list(self.splits)}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"{self.name}: does not take {', '.join(unknown)} (its options: "
                             f"{', '.join(self.options) or 'none'})")
        src = Path(src)
        if not src.is_dir():
            raise FileNotFoundError(f"{self.name}: --src {str(src)!r} is not a folder")
        return self.fn(src, split, **options)

    def run(self, src: str | os.PathLike, out: str | os.PathLike, split: str | None = None,
            progress: bool = False, **options) -> int:
        """Convert and write `out` (.jsonl/.json) atomically; returns the number of records written."""
        from tqdm import tqdm

        records = list(tqdm(self.records(src, split, **options), desc=f"convert {self.name}", unit="rec",
                            disable=not progress))
        if not records:
            raise ValueError(f"{self.name}: no records found for split {split or self.default_split!r} in {src}")
        ids = set()
        for r in records:
            if r["id"] in ids:
                raise ValueError(f"{self.name}: duplicate record id {r['id']!r}")
            ids.add(r["id"])
        return write_records(out, records)


REGISTRY: dict[str, Converter] = {}


def register(name: str, group: str, task: str, metric: str, splits: tuple[str, ...], default_split: str,
             options: tuple[str, ...] = ()):
    """Decorator adding a converter generator to `REGISTRY` under `name`. ``group="all"`` (with ``metric="by group"``):
    the converter's records carry their own group and metric."""
    assert (group in GROUPS and metric in METRICS) or (group, metric) == ("all", "by group"), (name, group, metric)
    assert default_split in splits, (name, default_split)

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"converter {name!r} registered twice")
        REGISTRY[name] = Converter(name, group, task, metric, tuple(splits), default_split, fn, tuple(options))
        return fn

    return wrap


def convert(name: str, src, out, split: str | None = None, progress: bool = False, **options) -> int:
    """Run the converter `name` (see `REGISTRY`)."""
    if name not in REGISTRY:
        raise KeyError(f"no converter {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name].run(src, out, split=split, progress=progress, **options)


# Registration happens on import; keep these at the bottom.
from mome.data.converters import captions, vqa, refcoco, documents, official  # noqa: E402,F401
