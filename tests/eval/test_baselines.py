"""The constant-answer baseline the default run's table is read against."""

from mome.data.records import make_record
from mome.eval.baselines import constant_answers, constant_baseline


def _rec(i, dataset, group, task, metric, answer, **ev):
    return make_record(id=f"{dataset}-{i}", image="x.png", instruction="<image>\nq", answer=answer, dataset=dataset,
                       group=group, task=task, metric=metric, **ev)


def test_most_frequent_answer_and_mean_box():
    train = [_rec(0, "v", "general", "vqa", "exact_match", "yes", answers=["yes"]),
             _rec(1, "v", "general", "vqa", "exact_match", "no", answers=["no"]),
             _rec(2, "v", "general", "vqa", "exact_match", "no", answers=["no"]),
             _rec(3, "r", "rec", "rec", "iou_acc", "[0.000, 0.000, 0.200, 0.200]", bbox=[0, 0, 0.2, 0.2]),
             _rec(4, "r", "rec", "rec", "iou_acc", "[0.200, 0.200, 0.400, 0.400]", bbox=[0.2, 0.2, 0.4, 0.4])]
    answers = constant_answers(train)
    assert answers == {"v": "no", "r (REC)": "[0.100, 0.100, 0.300, 0.300]"}
    test = [_rec(9, "v", "general", "vqa", "exact_match", "no", answers=["no"]),
            _rec(8, "v", "general", "vqa", "exact_match", "yes", answers=["yes"]),
            _rec(7, "r", "rec", "rec", "iou_acc", "[0.100, 0.100, 0.300, 0.300]", bbox=[0.1, 0.1, 0.3, 0.3]),
            _rec(6, "r", "rec", "rec", "iou_acc", "[0.600, 0.600, 0.900, 0.900]", bbox=[0.6, 0.6, 0.9, 0.9])]
    result = constant_baseline(train, test)
    assert result["scores"]["v"] == 50.0
    assert result["scores"]["r (REC)"] == 50.0
    assert set(result["summary"]) == {"general", "rec", "avg"}
