"""ChartQA relaxed accuracy, as Pix2Struct's `relaxed_correctness` computes it (google-research/pix2struct,
pix2struct/metrics.py; the scorer published ChartQA numbers come from, also in lmms-eval's ChartQA task).

Masry et al. (ACL Findings 2022, §5.1, after Methani et al. 2020): a numeric answer is correct within 5 % relative
error, any other answer needs an exact match. "Numeric" is exactly what Python's ``float`` reads, after a trailing
"%" is taken as "divide by 100":

    num(s) = float(s.rstrip("%")) / 100  if s ends with "%"  else float(s)        (None when float refuses)
    correct(p, t) = |num(p) − num(t)| ≤ 0.05 · |num(t)|   if num(p) is not None and num(t) ∉ {None, 0}
                  = p.lower() == t.lower()                  otherwise

So "12%" is 0.12 (wrong against the label "12"), "$5" and "1,234" are not numbers (exact match only), " 7 " and
"1e3" are, and a 0 target needs the same string ("0.0" is wrong against "0"). The per-question score is the best
over the answers (Pix2Struct's `aggregate_metrics`).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["relaxed_correctness", "relaxed_accuracy"]


def _to_float(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """One target, one prediction: the rule of the module docstring."""
    p, t = _to_float(prediction), _to_float(target)
    if p is not None and t:
        return abs(p - t) / abs(t) <= max_relative_change   # NaN (from inf or nan) compares False
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """1.0 if `relaxed_correctness` holds for some answer, else 0.0."""
    if isinstance(answers, str):
        answers = [answers]
    return float(any(relaxed_correctness(t, prediction, tolerance) for t in answers))
