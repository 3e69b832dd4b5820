"""Label accuracy: A-OKVQA (multiple choice), GQA, VSR, IconQA, and any dataset without an evaluator of its own.

Every one of these benchmarks' own evaluators scores a question 1 when the predicted answer *is* the gold answer
and 0 otherwise, with no normalisation: A-OKVQA `eval_predictions.py` (``pred == choices[correct_choice_idx]``),
GQA `eval.py` (``predicted == gold``), VSR `src/eval.py` and IconQA `run_*/eval.py` (predicted label == gold label).
For a generative model the prediction is the decoded text (the harness strips its ends), so "Yes." does not match
"yes". `gqa_lavis_accuracy` is the named alternative the MoME paper followed for GQA (InstructBLIP, via LAVIS).
"""

from __future__ import annotations

from typing import Sequence

from mome.eval.metrics.vqa import digits_articles, normalize_vqa_punctuation

__all__ = ["exact_match", "gqa_lavis_accuracy"]


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1 if the prediction equals one of the answers character for character, else 0."""
    if isinstance(answers, str):
        answers = [answers]
    return float(any(prediction == a for a in answers))


def gqa_lavis_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """GQA as LAVIS's `GQATask` scores it (InstructBLIP's numbers): the prediction and the gold answer each go
    through vqaEval's punctuation step and word step (`normalize_vqa_answer` without its first strip: LAVIS calls
    the two steps directly), then must be equal."""
    if isinstance(answers, str):
        answers = [answers]

    def norm(s: str) -> str:
        return digits_articles(normalize_vqa_punctuation(s))

    return float(any(norm(prediction) == norm(a) for a in answers))
