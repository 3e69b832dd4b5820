"""REC: Acc@IoU ≥ 0.5 of a box read from generated text (Mao et al., CVPR 2016; Shikra and lmms-eval's RefCOCO
tasks score generated boxes this way: a hit when IoU(predicted, gold) ≥ 0.5).

There is no official parser of generated boxes, so ours is specified here and tested case by case
(`parse_box_text`). On what lmms-eval's parser reads (a square-bracketed ``[x1, y1, x2, y2]`` of plain decimals,
corners in order) the score is the same as lmms-eval's (`refcoco_bbox_rec_process_result`); beyond that we read more
(round brackets, loose numbers, pixel boxes with the image size, corners in either order) instead of scoring 0.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

__all__ = ["NORMALISED_LIMIT", "parse_box_text", "iou", "rec_accuracy"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SEP = r"\s*[,;\s]\s*"
_FOUR = r"\s*(" + _NUM + r")" + _SEP + r"(" + _NUM + r")" + _SEP + r"(" + _NUM + r")" + _SEP + r"(" + _NUM + r")\s*"
_SQUARE = re.compile(r"\[" + _FOUR + r"\]")
_ROUND = re.compile(r"\(" + _FOUR + r"\)")
_ANY_NUM = re.compile(r"(?<![\w.])" + _NUM + r"(?![\w])")

# A box whose every coordinate lies in [−0.5, 1.5] is read as normalised: models overshoot the image edge a little
# ([-0.04, 0.19, 1.01, 0.54]), while a pixel box that small would be a box of about one pixel, not an answer.
NORMALISED_LIMIT = 0.5


def parse_box_text(text: str, image_size: tuple[float, float] | None = None) -> list[float] | None:
    """A normalised box ``[x1, y1, x2, y2]`` read from generated text, or None when there is none. Never raises.

    1. Where: the first square-bracketed group of four numbers (``[0.1, 0.2, 0.5, 0.6]``; separators ``,`` ``;`` or
       spaces); if there is none, the first round-bracketed one (``(0.1, 0.2, 0.5, 0.6)``); if none either, the first
       four numbers anywhere (``x1=0.1 y1=0.2 …``). Square brackets win wherever they are in the text, because
       that is the box format the model is trained and prompted to write.
    2. Units: normalised if every coordinate is in [−0.5, 1.5] (`NORMALISED_LIMIT`); otherwise pixels, divided by
       `image_size` = (width, height); a pixel box without an image size is unreadable (None).
    3. Corners are put in order (x1 ≤ x2, y1 ≤ y2); coordinates are **not** clamped to the image (IoU is computed on
       the box as written, as lmms-eval does). Non-finite numbers give None.
    """
    if not isinstance(text, str):
        return None
    m = _SQUARE.search(text) or _ROUND.search(text)
    nums = list(m.groups()) if m is not None else _ANY_NUM.findall(text)[:4]
    if len(nums) < 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in nums)
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    if not all(-NORMALISED_LIMIT <= v <= 1 + NORMALISED_LIMIT for v in (x1, y1, x2, y2)):
        if image_size is None:
            return None
        w, h = (float(v) for v in image_size)
        if not (w > 0 and h > 0):
            return None
        x1, x2, y1, y2 = x1 / w, x2 / w, y1 / h, y2 / h
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [x1, y1, x2, y2]


def iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two ordered ``[x1, y1, x2, y2]`` boxes (continuous coordinates, no +1):
    |A∩B| / |A∪B|; 0 when the union has zero area."""
    ax1, ay1, ax2, ay2 = box_a
    bx1, by1, bx2, by2 = box_b
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def rec_accuracy(prediction_text: str, gold_box: Sequence[float], threshold: float = 0.5,
                 image_size: tuple[float, float] | None = None) -> float:
    """1.0 if the box read from the text (`parse_box_text`) has IoU ≥ `threshold` with the normalised gold box, else
    0.0 (an unreadable prediction scores 0)."""
    box = parse_box_text(prediction_text, image_size)
    return float(box is not None and iou(box, gold_box) >= threshold)
