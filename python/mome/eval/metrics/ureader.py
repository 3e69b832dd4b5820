"""The Document group as UReader scores it (LukeForeverYoung/UReader, pipeline/eval_utils/tools.py at e3d52e0), which
the MoME paper follows for its document metrics (App. B). A named alternative (``protocol="ureader"``), not the
default: UReader post-processes the texts before the evaluators, and scores TabFact by exact match.

* ChartQA, TabFact (`llm_answer_eval`): line breaks deleted from both texts, one final "." dropped from the gold
  answer, then Pix2Struct's relaxed correctness (ChartQA) or string equality (TabFact, "ExactAccuracy").
* DocVQA, InfographicsVQA, DeepForm, WikiTableQuestions (`postprocess_llm_vqa` → DUE with ``ignore_case=True``):
  line breaks deleted from the prediction; DUE's ANLS, F1 and WTQ scorers on upper-cased values; for DeepForm the
  answer "None" is no prediction.
"""

from __future__ import annotations

from typing import Sequence

from mome.eval.metrics.anls import due_anls
from mome.eval.metrics.chartqa import relaxed_correctness
from mome.eval.metrics.wtq import wtq_accuracy

__all__ = ["ureader_prediction", "ureader_gold", "ureader_relaxed", "ureader_exact", "ureader_anls",
           "ureader_kie_prediction", "ureader_wtq"]


def ureader_prediction(text: str) -> str:
    return text.replace("\n", "")


def ureader_gold(text: str) -> str:
    text = text.replace("\n", "")
    return text[:-1] if text.endswith(".") else text


def ureader_relaxed(prediction: str, answers: Sequence[str]) -> float:
    p = ureader_prediction(prediction)
    return float(any(relaxed_correctness(ureader_gold(a), p) for a in answers))


def ureader_exact(prediction: str, answers: Sequence[str]) -> float:
    p = ureader_prediction(prediction)
    return float(any(ureader_gold(a) == p for a in answers))


def ureader_anls(prediction: str, answers: Sequence[str]) -> float:
    return due_anls(ureader_prediction(prediction), answers, ignore_case=True)


def ureader_kie_prediction(text: str) -> str:
    """The value UReader hands DUE for a key: "" (no annotation) for the answer "None"."""
    text = ureader_prediction(text)
    return "" if text == "None" else text


def ureader_wtq(prediction: str, answers: Sequence[str]) -> float:
    return wtq_accuracy(ureader_prediction(prediction).upper(), [a.upper() for a in answers])
