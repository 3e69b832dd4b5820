"""The paper's table arithmetic: group means, Avg. = mean of the group means, and the files written."""

import json

import pytest

from mome.eval.tables import aggregate, markdown_table, write_tables

SCORES = {"coco": 130.0, "okvqa": 50.0, "refcoco-val": 80.0, "docvqa": 40.0, "chartqa": 60.0}
GROUPS = {"coco": "general", "okvqa": "general", "refcoco-val": "rec", "docvqa": "document", "chartqa": "document"}


def test_aggregate_hand_computed():
    r = aggregate(SCORES, GROUPS, {"coco": "cider"})
    # general (130 + 50)/2 = 90; rec 80; document (40 + 60)/2 = 50; reg absent
    assert r["groups"] == {"general": 90.0, "rec": 80.0, "document": 50.0}
    # Avg. = (90 + 80 + 50)/3 = 73.333..., not the mean of the five datasets (72)
    assert r["avg"] == pytest.approx(220 / 3)
    assert r["datasets"]["coco"] == {"group": "general", "score": 130.0, "metric": "cider"}
    assert list(r["datasets"]) == list(SCORES)


def test_aggregate_reproduces_the_papers_average():
    # Table 2, MoME: Gen. 79.65, REC 81.58, REG 64.83, Doc. 53.69 → Avg. (279.75)/4 = 69.9375, printed 69.94
    r = aggregate({"g": 79.65, "rec": 81.58, "reg": 64.83, "doc": 53.69},
                  {"g": "general", "rec": "rec", "reg": "reg", "doc": "document"})
    assert f"{r['avg']:.2f}" == "69.94"


def test_aggregate_errors():
    with pytest.raises(ValueError, match="'x' has no group"):
        aggregate({"x": 1.0}, {})
    with pytest.raises(ValueError, match="not one of"):
        aggregate({"x": 1.0}, {"x": "ocr"})
    with pytest.raises(ValueError, match="non-finite"):
        aggregate({"x": float("nan")}, {"x": "rec"})
    assert aggregate({}, {}) == {"datasets": {}, "groups": {}, "avg": None}


def test_markdown_table():
    md = markdown_table(aggregate(SCORES, GROUPS, {"coco": "cider"}, {"coco": "pycocoevalcap CIDEr-D"}))
    lines = md.splitlines()
    assert lines[0] == "| Gen. | REC | REG | Doc. | Avg. |"
    assert lines[2] == "| 90.00 | 80.00 | – | 50.00 | 73.33 |"
    assert "| dataset | metric | score | evaluator |" in lines
    assert "| coco | cider | 130.00 | pycocoevalcap CIDEr-D |" in lines      # the evaluator that produced the score
    assert "| okvqa |  | 50.00 |  |" in lines
    assert "**REG**" not in md                                  # no table for an absent group


def test_write_tables(tmp_path):
    r = aggregate(SCORES, GROUPS)
    jp, mp = write_tables(r, tmp_path / "out", name="tiny")
    assert json.loads(jp.read_text()) == json.loads(json.dumps(r))
    assert mp.read_text() == markdown_table(r)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.json", "tiny.md"]   # no temp files left
