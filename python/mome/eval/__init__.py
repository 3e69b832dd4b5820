"""`mome.eval`: the benchmark's metrics (`mome.eval.metrics`) and the paper's result tables (`mome.eval.tables`)."""

from mome.eval.metrics import (anls, cider, cider_scores, deepform_f1, describe, evaluator_for, exact_match, iou,
                               ptb_tokenize, rec_accuracy, relaxed_accuracy, sample_scores, score, textvqa_accuracy,
                               vqa_accuracy, wtq_accuracy)

__all__ = [
    "anls", "cider", "cider_scores", "deepform_f1", "describe", "evaluator_for", "exact_match", "iou", "ptb_tokenize",
    "rec_accuracy", "relaxed_accuracy", "sample_scores", "score", "textvqa_accuracy", "vqa_accuracy", "wtq_accuracy",
]
