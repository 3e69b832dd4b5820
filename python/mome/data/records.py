"""The record format shared by training, evaluation and the converters (LLaVA conversation style).

A record is a plain dict::

    {"id": "vqav2-val-262148000",
     "image": "coco/val2014/COCO_val2014_000000262148.jpg",      # relative to an image root
     "conversations": [{"from": "human", "value": "<image>\\nWhat is on the table? Answer briefly."},
                       {"from": "gpt", "value": "pizza"}],
     "dataset": "vqav2", "group": "general", "task": "vqa", "metric": "vqa_acc",
     "answers": ["pizza", "pizza", ...]}                             # evaluation field(s), see EVAL_FIELD

Boxes in text are ``[x1, y1, x2, y2]`` normalised to [0, 1] with 3 decimals (PAPER.md, Shikra style).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "IMAGE_TOKEN", "GROUPS", "METRICS", "EVAL_FIELD",
    "format_box", "parse_box", "normalize_box", "make_record", "validate_record",
    "instruction_of", "answer_of", "load_records", "write_records",
]

IMAGE_TOKEN = "<image>"
GROUPS = ("general", "rec", "reg", "document")
METRICS = ("cider", "vqa_acc", "exact_match", "relaxed_acc", "anls", "f1", "iou_acc")

# Which evaluation field each metric reads: references for CIDEr, a gold box for Acc@IoU, accepted answers otherwise.
EVAL_FIELD = {
    "cider": "captions",
    "iou_acc": "bbox",
    "vqa_acc": "answers",
    "exact_match": "answers",
    "relaxed_acc": "answers",
    "anls": "answers",
    "f1": "answers",
}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# Four numbers separated by commas (or whitespace) inside square or round brackets.
_BOX_RE = re.compile(
    r"[\[\(]\s*(" + _NUMBER + r")\s*[,;\s]\s*(" + _NUMBER + r")\s*[,;\s]\s*(" + _NUMBER + r")\s*[,;\s]\s*("
    + _NUMBER + r")\s*[\]\)]"
)


def format_box(box: Sequence[float]) -> str:
    """Write a normalised box as text: ``[x1, y1, x2, y2]`` with 3 decimals, each clamped to [0, 1]."""
    if len(box) != 4:
        raise ValueError(f"format_box: box must have 4 numbers [x1, y1, x2, y2], got {list(box)!r}")
    vals = []
    for v in box:
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"format_box: box has a non-finite coordinate: {list(box)!r}")
        vals.append(min(1.0, max(0.0, v)))
    return "[" + ", ".join(f"{v:.3f}" for v in vals) + "]"


def parse_box(text: str) -> list[float] | None:
    """Read the first box ``[x1, y1, x2, y2]`` in `text`; None if there is none or it is not a valid box.

    Tolerant of what a model may write: round brackets, missing spaces, extra text around the box. Coordinates
    are clamped to [0, 1]; a box with x2 < x1 or y2 < y1 has its corners swapped (it still names a region).
    Never raises on any string input.
    """
    if not isinstance(text, str):
        return None
    m = _BOX_RE.search(text)
    if m is None:
        return None
    try:
        x1, y1, x2, y2 = (float(g) for g in m.groups())
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [min(1.0, max(0.0, v)) for v in (x1, y1, x2, y2)]


def normalize_box(xywh: Sequence[float], width: float, height: float) -> list[float]:
    """COCO-style pixel box ``[x, y, w, h]`` in an image of `width` × `height` → normalised ``[x1, y1, x2, y2]``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"normalize_box: image size must be positive, got {width}x{height}")
    x, y, w, h = (float(v) for v in xywh)
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    return [round(min(1.0, max(0.0, v)), 6) for v in box]


def make_record(*, id: str, image: str, instruction: str, answer: str, dataset: str, group: str, task: str,
                metric: str, **eval_fields) -> dict:
    """Build a validated single-turn record; `instruction` gets the ``<image>`` placeholder on its own first line."""
    rec = {
        "id": str(id),
        "image": str(image),
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{instruction.strip()}"},
            {"from": "gpt", "value": str(answer)},
        ],
        "dataset": dataset,
        "group": group,
        "task": task,
        "metric": metric,
    }
    rec.update(eval_fields)
    validate_record(rec)
    return rec


def validate_record(rec: dict, where: str = "") -> None:
    """Raise ValueError naming the record (and `where`, e.g. a file:line) if `rec` breaks the format."""
    rid = rec.get("id", "<no id>") if isinstance(rec, dict) else "<not a dict>"
    at = f" ({where})" if where else ""

    def fail(msg: str):
        raise ValueError(f"record {rid!r}{at}: {msg}")

    if not isinstance(rec, dict):
        fail(f"must be a dict, got {type(rec).__name__}")
    for key in ("id", "image", "conversations", "dataset", "group", "task", "metric"):
        if key not in rec:
            fail(f"missing field {key!r}")
    if not isinstance(rec["image"], str) or not rec["image"]:
        fail("field 'image' must be a non-empty path relative to the image root")
    if rec["group"] not in GROUPS:
        fail(f"group {rec['group']!r} is not one of {GROUPS}")
    if rec["metric"] not in METRICS:
        fail(f"metric {rec['metric']!r} is not one of {METRICS}")
    conv = rec["conversations"]
    if not isinstance(conv, list) or len(conv) < 2:
        fail("'conversations' must be a list of at least one human and one gpt turn")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(
                turn.get("value"), str):
            fail(f"conversation turn {i} must be {{'from': 'human'|'gpt', 'value': str}}, got {turn!r}")
        if turn["from"] != ("human" if i % 2 == 0 else "gpt"):
            fail(f"conversation turn {i} should be from {'human' if i % 2 == 0 else 'gpt'}")
    if IMAGE_TOKEN not in conv[0]["value"]:
        fail(f"the first human turn has no {IMAGE_TOKEN} placeholder")
    field = EVAL_FIELD[rec["metric"]]
    if field not in rec:
        fail(f"metric {rec['metric']!r} needs the evaluation field {field!r}")
    val = rec[field]
    if field == "bbox":
        if not (isinstance(val, list) and len(val) == 4 and all(isinstance(v, (int, float)) for v in val)):
            fail(f"'bbox' must be [x1, y1, x2, y2] numbers, got {val!r}")
        if not (0 <= val[0] <= val[2] <= 1 and 0 <= val[1] <= val[3] <= 1):
            fail(f"'bbox' must be normalised with x1 <= x2, y1 <= y2 in [0, 1], got {val!r}")
    elif not (isinstance(val, list) and all(isinstance(v, str) for v in val)):
        # An empty list is allowed: some test splits (DocVQA, InfographicsVQA) keep their answers on a server.
        fail(f"{field!r} must be a list of strings, got {val!r}")


def instruction_of(record: dict) -> str:
    """The first human turn without the ``<image>`` placeholder, stripped: the text the routers embed."""
    try:
        text = record["conversations"][0]["value"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"record {record.get('id', '<no id>')!r} has no first human turn") from None
    return text.replace(IMAGE_TOKEN, "").strip()


def answer_of(record: dict) -> str:
    """The first gpt turn: the training target."""
    return record["conversations"][1]["value"]


def load_records(path: str | os.PathLike, validate: bool = True) -> list[dict]:
    """Read records from a .json (a list of records) or .jsonl (one record per line) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_records: no such file {str(path)!r}")
    if path.suffix == ".jsonl":
        records = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg} at column {e.colno}") from None
                if validate:
                    validate_record(records[-1], f"{path}:{lineno}")
        return records
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: a .json records file must hold a list of records")
        if validate:
            for i, rec in enumerate(records):
                validate_record(rec, f"{path}[{i}]")
        return records
    raise ValueError(f"load_records: {str(path)!r} must end in .json or .jsonl")


def write_records(path: str | os.PathLike, records: Iterable[dict], validate: bool = True) -> int:
    """Write records as .jsonl (or .json) atomically: a temp file in the same folder, renamed when complete.

    Returns the number of records written.
    """
    path = Path(path)
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"write_records: {str(path)!r} must end in .json or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if path.suffix == ".json":
                records = list(records)
                if validate:
                    for rec in records:
                        validate_record(rec)
                json.dump(records, f, ensure_ascii=False)
                n = len(records)
            else:
                for rec in records:
                    if validate:
                        validate_record(rec)
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return n
