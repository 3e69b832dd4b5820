"""Trivial baselines: what a model scores that ignores the image (and the question beyond its dataset).

`constant_baseline` answers every test record of a dataset with one answer learnt from the training records:

    rec (boxes)       the mean training box of that dataset (coordinate-wise), written as our box text
    everything else   the most frequent training answer of that dataset (ties: the first in sorted order)

It is scored by the same evaluators as a model (`score_predictions`), so a model's table can be read against it: a
score at or below the baseline's says the model has not used the image.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from mome.data.records import answer_of, format_box, parse_box
from mome.eval.harness import dataset_key, score_predictions

__all__ = ["constant_answers", "constant_baseline"]


def constant_answers(train_records: list[dict]) -> dict[str, str]:
    """Per dataset (named as in the tables): the one answer the baseline gives."""
    answers: dict[str, list[str]] = defaultdict(list)
    tasks: dict[str, str] = {}
    for r in train_records:
        key = dataset_key(r)
        answers[key].append(answer_of(r))
        tasks[key] = r["task"]
    out = {}
    for key, texts in answers.items():
        boxes = [b for b in (parse_box(t) for t in texts) if b is not None] if tasks[key] == "rec" else []
        if boxes:
            out[key] = format_box([sum(b[i] for b in boxes) / len(boxes) for i in range(4)])
        else:
            counts = Counter(texts)
            out[key] = min(counts, key=lambda t: (-counts[t], t))
    return out


def constant_baseline(train_records: list[dict], test_records: list[dict]) -> dict:
    """The constant-answer baseline scored on `test_records` (the result layout of `mome.eval.harness.evaluate`,
    with empty routing). A test dataset absent from the training records gets the empty answer."""
    answers = constant_answers(train_records)
    predictions = [{"id": r["id"], "dataset": r["dataset"], "group": r["group"],
                    "prediction": answers.get(dataset_key(r), ""),
                    "routing": {"vision": {}, "vision_importance": {}, "language": None}} for r in test_records]
    result = score_predictions(predictions, test_records)
    result["answers"] = answers
    return result
