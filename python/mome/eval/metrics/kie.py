"""Set-based F1 as the DUE benchmark evaluator computes it (due-benchmark/evaluator, `deval -m F1`, scorers/fscorer.py):
DeepForm with ``-i`` (case-insensitive, the README's setting), TabFact without (its README: F1, which then equals
accuracy).

DUE compares (key, value) annotations. Every predicted annotation is a true positive if an unused reference
annotation has the same key and the same value, or the predicted value is one of the reference's value variants;
precision = TP / #predicted, recall = TP / #reference, F1 = 2PR / (P + R) (0 when P = R = 0), micro-averaged over the
corpus. Values are compared as they are (with ``-i`` both are upper-cased, Python's ``str.upper``): no whitespace or
punctuation is normalised.

Our records hold one key each (the converters: ``answers`` = the value followed by its variants) and the model
answers that key, so per record: a non-empty prediction is one predicted annotation, a non-empty answer list one
reference annotation, and it is a hit when the prediction equals one of the answers. An empty prediction predicts
nothing (DUE has no empty annotation: a model with no answer leaves the key out).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["kie_hits", "deepform_f1", "due_f1"]


def kie_hits(predictions: Sequence[str], references: Sequence[Sequence[str]], ignore_case: bool = True
             ) -> tuple[list[int], int, int]:
    """Per record whether its value was extracted (1/0), the number of predicted and of reference annotations."""
    if len(predictions) != len(references):
        raise ValueError(f"f1: {len(predictions)} predictions but {len(references)} reference lists")
    fold = str.upper if ignore_case else (lambda s: s)
    hits, n_pred, n_ref = [], 0, 0
    for pred, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        n_pred += pred != ""
        n_ref += len(refs) > 0
        hits.append(int(pred != "" and fold(pred) in {fold(r) for r in refs}))
    return hits, n_pred, n_ref


def due_f1(predictions: Sequence[str], references: Sequence[Sequence[str]], ignore_case: bool = True) -> float:
    """Corpus F1 (module docstring) in [0, 1]."""
    hits, n_pred, n_ref = kie_hits(predictions, references, ignore_case)
    tp = sum(hits)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision or recall else 0.0


def deepform_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """DeepForm: `due_f1` case-insensitively (``deval -m F1 -i``)."""
    return due_f1(predictions, references, ignore_case=True)
