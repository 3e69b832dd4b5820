"""The authors' released training data (OFFICIAL.md; the Hub dataset ``daybreaksly/MoME-data-train``).

Layout (``--src``): ``General_data.json``, ``REC_data.json``, ``REG_data.json``, ``Doc_data.json``, one per task
group, each a JSON list of ``{"image_path", "question", "answer"}`` (their ``datasets/jsonl_vqa.py`` reads these).
``image_path`` starts with ``Datasets/``, which their loader removes; the rest is relative to their ``vis_root``, the
folder holding ``coco/``, ``coco_2017/``, ``flickr30K/``, ``gqa/``, ``iconqa/``, ``ureader-instruction-1.0/``. We
strip a leading ``Datasets/`` and keep the rest as the record's image path, so that folder is the image root
(``--images ROOT``, optional, checks that every image is there).

Boxes are Shikra-style text, ``[x1,y1,x2,y2]`` normalised to [0, 1] (3 decimals and no spaces in their examples;
several boxes as ``[b1;b2]``: their ``demo_mome.py`` parses that pattern and draws ``x·width``, ``y·height``; the
data files themselves are not in the release's repository): in the answer for REC
("... can you find the blue car right and tell me its coordinates?" → ``[0.616,0.602,0.987,0.864]``), in the question
for REG ("... what sets the designated area [0.616,0.602,0.987,0.864] in image apart?" → a phrase). We read the first
box of the answer (REC: the record's ``bbox``) or of the question (REG) and, unless ``verbatim``, rewrite every box
of a REC/REG record in our text format (``[x1, y1, x2, y2]``, 3 decimals; ``; `` between boxes of one bracket).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from mome.data.converters import register
from mome.data.converters._common import read_json
from mome.data.records import format_box, make_record

__all__ = ["FILES", "parse_boxes", "strip_prefix"]

FILES = {"general": "General_data.json", "rec": "REC_data.json", "reg": "REG_data.json", "document": "Doc_data.json"}
# Their files carry no metric: each group gets the evaluation field its metric needs, filled from the answer.
_TASK = {"general": ("vqa", "exact_match", "answers"), "rec": ("rec", "iou_acc", "bbox"),
         "reg": ("reg", "cider", "captions"), "document": ("docvqa", "anls", "answers")}
_KEYS = ("image_path", "question", "answer")
PREFIX = "Datasets/"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SEP = r"(?:\s*,\s*|\s+)"
_ONE = rf"{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}"
_GROUP_RE = re.compile(rf"\[\s*({_ONE}(?:\s*;\s*{_ONE})*)\s*\]")  # "[b]" or "[b1;b2;...]"


def strip_prefix(image_path: str) -> str:
    """Their ``image_path`` without its leading ``Datasets/``. (Their loader removes every occurrence; we remove only
    the prefix, so a folder of that name deeper in a path survives.)"""
    return image_path[len(PREFIX):] if image_path.startswith(PREFIX) else image_path


def parse_boxes(text: str) -> tuple[list[list[float]], str]:
    """(every box in `text`, in order; `text` with each bracket of boxes rewritten in our format).

    A box is four numbers (``0.5``, ``.5``, ``1``, ``1.``, ``5e-1``; commas or spaces between them) in square
    brackets, several separated by ``;``. Coordinates must lie in [0, 1] (ValueError otherwise: pixel boxes are a
    different format); reversed corners are swapped, as `mome.data.parse_box` does.
    """
    boxes: list[list[float]] = []

    def rewrite(m: re.Match) -> str:
        written = []
        for part in m.group(1).split(";"):
            vals = [float(v) for v in re.split(_SEP, part.strip())]
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
                raise ValueError(f"box {m.group(0)!r} is not normalised to [0, 1]")
            x1, x2 = sorted(vals[0::2])
            y1, y2 = sorted(vals[1::2])
            boxes.append([round(v, 6) for v in (x1, y1, x2, y2)])
            written.append(format_box(boxes[-1])[1:-1])
        return "[" + "; ".join(written) + "]"

    return boxes, _GROUP_RE.sub(rewrite, text)


def _items(path: Path) -> list[dict]:
    """The records of one released file, checked: a list of dicts with string image_path, question, answer."""
    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of {{image_path, question, answer}}, got "
                         f"{type(items).__name__}")
    for i, d in enumerate(items):
        if not isinstance(d, dict):
            raise ValueError(f"{path}[{i}]: expected an object {{image_path, question, answer}}, got "
                             f"{type(d).__name__}")
        for key in _KEYS:
            if key not in d:
                raise ValueError(f"{path}[{i}]: missing key {key!r} (has {sorted(d)})")
            if not isinstance(d[key], str):
                raise ValueError(f"{path}[{i}]: {key!r} must be a string, got {type(d[key]).__name__}")
        if not strip_prefix(d["image_path"]):
            raise ValueError(f"{path}[{i}]: empty image_path")
    return items


def _record(group: str, i: int, d: dict, verbatim: bool) -> dict:
    question, answer = d["question"], d["answer"]
    fields = {}
    if group in ("rec", "reg"):
        q_boxes, q_text = parse_boxes(question)
        a_boxes, a_text = parse_boxes(answer)
        where, boxes = ("answer", a_boxes) if group == "rec" else ("question", q_boxes)
        if not boxes:
            raise ValueError(f"no box [x1, y1, x2, y2] in the {where}: {(answer if group == 'rec' else question)!r}")
        if group == "rec":
            fields["bbox"] = boxes[0]
        if not verbatim:
            question, answer = q_text, a_text
    task, metric, field = _TASK[group]
    if field != "bbox":
        fields[field] = [answer]
    return make_record(id=f"official-{group}-{i}", image=strip_prefix(d["image_path"]), instruction=question,
                       answer=answer, dataset=f"official-{group}", group=group, task=task, metric=metric, **fields)


@register("official", "all", "instruction", "by group", ("train",), "train",
          options=("images", "on_missing", "verbatim"))
def official(src: Path, split: str, images: str | None = None, on_missing: str = "error", verbatim: bool = False):
    """The four released files (those present; at least one): record ``i`` of ``REC_data.json`` becomes
    ``official-rec-i`` in group ``rec``, and so on. `images`: the image root, checked (`on_missing`: ``"error"`` or
    ``"skip"``, counted). `verbatim`: keep their question and answer text exactly (boxes are still parsed)."""
    if on_missing not in ("error", "skip"):
        raise ValueError(f"official: on_missing must be 'error' or 'skip', got {on_missing!r}")
    root = None if images is None else Path(images)
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"official: --images {str(root)!r} is not a folder")
    present = {g: src / name for g, name in FILES.items() if (src / name).is_file()}
    if not present:
        raise FileNotFoundError(f"official: none of {list(FILES.values())} found in {str(src)!r}")
    absent = [name for g, name in FILES.items() if g not in present]
    if absent:
        warnings.warn(f"official: {', '.join(absent)} not in {src}; converting {len(present)} of the 4 files",
                      stacklevel=2)
    skipped, first = 0, None
    for group, path in present.items():
        for i, d in enumerate(_items(path)):
            try:
                rec = _record(group, i, d, verbatim)
            except ValueError as e:
                raise ValueError(f"{path}[{i}]: {e}") from None
            if root is not None and not (root / rec["image"]).is_file():
                if on_missing == "error":
                    raise FileNotFoundError(f"{path}[{i}]: image {rec['image']!r} not found under --images "
                                            f"{str(root)!r}")
                skipped += 1
                first = first or f"{path.name}[{i}] {rec['image']}"
                continue
            yield rec
    if skipped:
        warnings.warn(f"official: skipped {skipped} records whose image is missing under {root} (first: {first})",
                      stacklevel=2)
