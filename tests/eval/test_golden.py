"""Our metrics against golden values produced by each benchmark's own evaluator (tools/metrics_golden.py ran the
evaluators' code at the commits each tests/eval/golden/*.json names; docs/metrics.md lists them)."""

import json
import math
import shutil
from pathlib import Path

import pytest

from mome.eval import metrics as M

GOLDEN = Path(__file__).parent / "golden"


def _golden(name):
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert doc["produced_by"] == "tools/metrics_golden.py" and doc["cases"]
    return doc["cases"]


PER_ANSWER = {  # golden file: our function (prediction, answers) -> score in [0, 1]
    "vqaeval_2021": lambda p, a: M.vqa_accuracy(p, a, "vqaeval"),
    "vqaeval_2016_lavis": lambda p, a: M.vqa_accuracy(p, a, "vqaeval-2016"),
    "textvqa_m4c": M.textvqa_accuracy,
    "aokvqa_mc": M.exact_match,
    "gqa_lavis": M.gqa_lavis_accuracy,
    "chartqa_pix2struct": M.relaxed_accuracy,
    "anls_rrc": M.anls,
    "wtq_due": M.wtq_accuracy,
    "wtq_official": M.wtq_accuracy,
    # protocol "ureader": UReader's clean-up in front of its scorers
    "ureader_chartqa": M.ureader_relaxed,
    "ureader_tabfact": M.ureader_exact,
    "ureader_anls": M.ureader_anls,
    "ureader_wtq": M.ureader_wtq,
}


@pytest.mark.parametrize("name", sorted(PER_ANSWER))
def test_per_answer_metrics_equal_the_official_evaluator(name):
    fn = PER_ANSWER[name]
    bad = [(c["prediction"], c["answers"], c["expected"], fn(c["prediction"], c["answers"])) for c in _golden(name)
           if not math.isclose(fn(c["prediction"], c["answers"]), c["expected"], rel_tol=0, abs_tol=1e-12)]
    assert not bad, "\n".join(f"{p!r} vs {a!r}: evaluator {e}, ours {o}" for p, a, e, o in bad)


@pytest.mark.parametrize("name,ignore_case", [("deepform_due_f1", True), ("tabfact_due_f1", False)])
def test_f1_equals_due_deval(name, ignore_case):
    for c in _golden(name):
        assert M.due_f1(c["predictions"], c["references"], ignore_case) == pytest.approx(c["expected"], abs=1e-12), c
        assert M.kie_hits(c["predictions"], c["references"], ignore_case)[0] == c["expected_hits"], c


def test_ureader_deepform_f1_equals_its_due_run():
    for c in _golden("ureader_deepform"):
        recs = [{"id": str(i), "dataset": "deepform", "answers": a} for i, a in enumerate(c["references"])]
        assert M.score("f1", c["predictions"], recs, protocol="ureader") == pytest.approx(100 * c["expected"]), c


def test_rec_equals_lmms_eval_where_it_reads_the_box():
    cases = [c for c in _golden("rec_lmms_eval") if c["lmms_eval_reads"]]
    assert len(cases) >= 8
    for c in cases:
        assert M.rec_accuracy(c["prediction"], c["bbox"]) == c["expected"], c


def test_dataset_dispatch_uses_the_golden_evaluators():
    # score() picks the evaluator by the records' dataset: the same golden cases through the public entry point
    for name, metric, dataset, protocol in [("vqaeval_2021", "vqa_acc", "okvqa", "official"),
                                            ("vqaeval_2016_lavis", "vqa_acc", "okvqa", "lavis"),
                                            ("textvqa_m4c", "vqa_acc", "textvqa", "official"),
                                            ("aokvqa_mc", "exact_match", "aokvqa", "official"),
                                            ("gqa_lavis", "exact_match", "gqa", "lavis"),
                                            ("chartqa_pix2struct", "relaxed_acc", "chartqa", "official"),
                                            ("anls_rrc", "anls", "docvqa", "official"),
                                            ("wtq_due", "exact_match", "wikitablequestions", "official"),
                                            ("ureader_anls", "anls", "infographicsvqa", "paper"),
                                            ("ureader_tabfact", "exact_match", "tabfact", "ureader"),
                                            ("ureader_chartqa", "relaxed_acc", "chartqa", "paper"),
                                            ("ureader_wtq", "exact_match", "wikitablequestions", "ureader")]:
        cases = _golden(name)
        recs = [{"id": str(i), "dataset": dataset, "answers": c["answers"]} for i, c in enumerate(cases)]
        preds = [c["prediction"] for c in cases]
        assert M.sample_scores(metric, preds, recs, protocol) == pytest.approx([c["expected"] for c in cases]), name
    for c in _golden("deepform_due_f1"):
        recs = [{"id": str(i), "dataset": "deepform", "answers": a} for i, a in enumerate(c["references"])]
        assert M.score("f1", c["predictions"], recs) == pytest.approx(100 * c["expected"])


def test_python_tokenizer_equals_java_on_the_plain_captions():
    from tests.eval.captions_corpus import ADVERSARIAL, CAPTIONS

    golden = {c["caption"]: c["expected"] for c in _golden("coco_ptb_tokens")}
    assert set(golden) == set(CAPTIONS + ADVERSARIAL)
    assert [M.ptb_tokenize(c) for c in CAPTIONS] == [golden[c] for c in CAPTIONS]
    # issue 15's cases (a!b, c#, '90s, ½, emoji, 5'11", URLs, …) now agree too; one known difference remains
    assert [c for c in ADVERSARIAL if M.ptb_tokenize(c) != golden[c]] == ["a cat's-eye view"]


@pytest.mark.skipif(not M.java_tokenizer_available(), reason="needs java and pycocoevalcap's CoreNLP jar")
def test_java_tokenizer_and_cider_equal_pycocoevalcap_golden():
    cases = _golden("coco_ptb_tokens")
    assert M.java_ptb_tokenize([c["caption"] for c in cases]) == [c["expected"] for c in cases]
    for c in _golden("coco_cider"):
        per = M.cider_scores(c["predictions"], c["references"], tokenize="java")
        assert per == pytest.approx(c["expected_per_sample"], rel=1e-9, abs=1e-12)
        assert M.cider(c["predictions"], c["references"]) == pytest.approx(c["expected"], rel=1e-9)  # auto → java


def test_cider_without_java_warns_once_and_uses_the_port(monkeypatch):
    from mome.eval.metrics import captions

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(captions, "_warned_python", False)
    assert M.tokenizer_name("auto") == "python"
    with pytest.warns(UserWarning, match="Java PTB tokenizer unavailable") as record:
        a = M.cider(["a dog runs", "a cat"], [["a dog runs fast"], ["the cat"]])
        M.cider(["a dog runs", "a cat"], [["a dog runs fast"], ["the cat"]])
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert a == M.cider(["a dog runs", "a cat"], [["a dog runs fast"], ["the cat"]], tokenize="python")
    with pytest.raises(RuntimeError, match="needs `java`"):
        M.java_ptb_tokenize(["a"])
    assert "Python PTB port" in M.describe("cider", "coco-caption")
