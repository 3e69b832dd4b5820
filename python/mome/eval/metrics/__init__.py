"""The benchmark's metrics, each implemented to agree with its benchmark's own evaluator (docs/metrics.md).

A record carries a ``metric`` family and its ``dataset``; `evaluator_for(metric, dataset)` picks the evaluator:

| metric (records) | dataset(s)                                        | evaluator (module)                          |
|------------------|---------------------------------------------------|---------------------------------------------|
| ``cider``        | COCO, Flickr30K, NoCaps, TextCaps, VisualMRC, REG | pycocoevalcap PTBTokenizer + CIDEr-D        |
| ``vqa_acc``      | OK-VQA, VQAv2                                     | VQA project vqaEval.py, 2021 (vqa)          |
|                  | TextVQA                                           | M4C TextVQAAccuracyEvaluator (vqa)          |
| ``exact_match``  | A-OKVQA (MC), GQA, VSR, IconQA                    | label equality, as their scripts (accuracy) |
|                  | TabFact                                           | DUE ``deval -m F1`` (kie)                   |
|                  | WikiTableQuestions                                | WTQ denotation evaluator via DUE (wtq)      |
| ``relaxed_acc``  | ChartQA                                           | Pix2Struct relaxed_correctness (chartqa)    |
| ``anls``         | DocVQA, InfographicsVQA                           | DocVQA RRC ANLS (anls)                      |
| ``f1``           | DeepForm                                          | DUE ``deval -m F1 -i`` (kie)                |
| ``iou_acc``      | RefCOCO, RefCOCO+, RefCOCOg                       | Acc@IoU≥0.5, our box parser (rec)           |

`score` gives a dataset's number in the units of the paper's tables (×100: accuracy, ANLS and F1 in %, CIDEr-D ×100
so 1.308 prints as 130.8); `sample_scores` each sample's contribution in [0, 1]. ``protocol`` swaps in what the MoME
paper followed: ``"lavis"`` for OK-VQA and GQA (InstructBLIP's scorers), ``"ureader"`` for the Document group, and
``"paper"`` both; the default is ``"official"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from mome.eval.metrics.accuracy import exact_match, gqa_lavis_accuracy
from mome.eval.metrics.anls import anls, due_anls, levenshtein
from mome.eval.metrics.captions import (cider, cider_scores, java_ptb_tokenize, java_tokenizer_available, ptb_tokenize,
                                        tokenize_captions, tokenizer_name)
from mome.eval.metrics.chartqa import relaxed_accuracy, relaxed_correctness
from mome.eval.metrics.kie import deepform_f1, due_f1, kie_hits
from mome.eval.metrics.rec import iou, parse_box_text, rec_accuracy
from mome.eval.metrics.ureader import (ureader_anls, ureader_exact, ureader_kie_prediction, ureader_relaxed,
                                       ureader_wtq)
from mome.eval.metrics.vqa import (normalize_evalai_answer, normalize_vqa_answer, textvqa_accuracy, vqa_accuracy)
from mome.eval.metrics.wtq import check_denotation, wtq_accuracy, wtq_normalize

__all__ = [
    "ptb_tokenize", "java_ptb_tokenize", "java_tokenizer_available", "tokenize_captions", "tokenizer_name",
    "cider", "cider_scores",
    "normalize_vqa_answer", "normalize_evalai_answer", "vqa_accuracy", "textvqa_accuracy",
    "exact_match", "gqa_lavis_accuracy",
    "relaxed_correctness", "relaxed_accuracy",
    "levenshtein", "anls", "due_anls",
    "due_f1", "deepform_f1",
    "wtq_normalize", "check_denotation", "wtq_accuracy",
    "parse_box_text", "iou", "rec_accuracy",
    "ureader_relaxed", "ureader_exact", "ureader_anls", "ureader_wtq",
    "Evaluator", "PROTOCOLS", "evaluator_for", "describe", "sample_scores", "score",
]

# (predictions, records) → (dataset score in [0, 1], per-sample scores in [0, 1])
ScoreFn = Callable[[Sequence[str], Sequence[Mapping]], "tuple[float, list[float]]"]


@dataclass(frozen=True)
class Evaluator:
    """One benchmark evaluator: what it is called, where its definition lives, and our implementation of it."""
    name: str      # short, for tables: "vqaEval.py (2021)"
    source: str    # repository · file · commit (docs/metrics.md has the full table)
    fn: ScoreFn


def _field(records: Sequence[Mapping], name: str, metric: str) -> list:
    try:
        return [r[name] for r in records]
    except KeyError:
        missing = next(r.get("id", "<no id>") for r in records if name not in r)
        raise ValueError(f"metric {metric!r} reads the field {name!r}, missing from record {missing!r}") from None


def _answers(records: Sequence[Mapping], metric: str) -> list:
    answers = _field(records, "answers", metric)
    empty = [r.get("id", "<no id>") for r, a in zip(records, answers) if not a]
    if empty:
        raise ValueError(f"metric {metric!r}: {len(empty)} record(s) have no reference answers (e.g. {empty[0]!r}); "
                         "their split's answers are not public, score it on the official server")
    return answers


def _mean(xs: list[float]) -> tuple[float, list[float]]:
    return sum(xs) / len(xs), xs


def _per_answer(fn: Callable[[str, Sequence[str]], float], metric: str) -> ScoreFn:
    return lambda preds, recs: _mean([fn(p, a) for p, a in zip(preds, _answers(recs, metric))])


def _cider(preds, recs):
    return _mean(cider_scores(preds, _field(recs, "captions", "cider")))


def _f1(ignore_case: bool, prepare: Callable[[str], str] = lambda p: p) -> ScoreFn:
    def fn(preds, recs):
        preds = [prepare(p) for p in preds]
        refs = _field(recs, "answers", "f1")
        hits, _, _ = kie_hits(preds, refs, ignore_case)
        return due_f1(preds, refs, ignore_case), [float(h) for h in hits]
    return fn


def _rec(preds, recs):
    boxes = _field(recs, "bbox", "iou_acc")
    sizes = [(r["width"], r["height"]) if "width" in r and "height" in r else None for r in recs]
    return _mean([rec_accuracy(p, b, image_size=s) for p, b, s in zip(preds, boxes, sizes)])


_VQA = "GT-Vision-Lab/VQA · PythonEvaluationTools/vqaEvaluation/vqaEval.py"
_DUE = "due-benchmark/evaluator · due_evaluator/scorers"
CIDER = Evaluator("pycocoevalcap CIDEr-D", "salaniz/pycocoevalcap 1.2 · pycocoevalcap/{tokenizer,cider} · ad63453",
                  _cider)
VQAEVAL = Evaluator("vqaEval.py (2021)", f"{_VQA} · a013f00",
                    _per_answer(lambda p, a: vqa_accuracy(p, a, "vqaeval"), "vqa_acc"))
VQAEVAL_2016 = Evaluator("vqaEval.py (2016, LAVIS)", f"{_VQA} · 458a8b2 (salesforce/LAVIS vqa_tools/vqa_eval.py)",
                         _per_answer(lambda p, a: vqa_accuracy(p, a, "vqaeval-2016"), "vqa_acc"))
TEXTVQA = Evaluator("M4C TextVQAAccuracyEvaluator", "facebookresearch/mmf · mmf/utils/m4c_evaluators.py · b0ffc7f",
                    _per_answer(textvqa_accuracy, "vqa_acc"))
EXACT = Evaluator("exact match", "label equality (no normalisation)", _per_answer(exact_match, "exact_match"))
AOKVQA = Evaluator("A-OKVQA eval_predictions.py (MC)", "allenai/aokvqa · evaluation/eval_predictions.py · 83786de",
                   EXACT.fn)
GQA = Evaluator("GQA eval.py", "GQA eval.py (gqadataset.org, eval.zip; no repository)", EXACT.fn)
GQA_LAVIS = Evaluator("LAVIS GQATask", "salesforce/LAVIS · lavis/tasks/vqa.py · 506965b",
                      _per_answer(gqa_lavis_accuracy, "exact_match"))
VSR = Evaluator("VSR eval.py", "cambridgeltl/visual-spatial-reasoning · src/eval.py · b27a0af", EXACT.fn)
ICONQA = Evaluator("IconQA eval.py", "lupantech/IconQA · run_*/eval.py · 4b053f3", EXACT.fn)
TABFACT = Evaluator("DUE deval -m F1", f"{_DUE}/fscorer.py · 75c0f55", _f1(ignore_case=False))
WTQ = Evaluator("DUE deval -m WTQ", f"{_DUE}/wtq_scorer.py · 75c0f55 (ppasupat/WikiTableQuestions evaluator.py 1.0.2)",
                _per_answer(wtq_accuracy, "exact_match"))
CHARTQA = Evaluator("Pix2Struct relaxed_correctness", "google-research/pix2struct · pix2struct/metrics.py · 945f27e",
                    _per_answer(relaxed_accuracy, "relaxed_acc"))
ANLS = Evaluator("DocVQA RRC ANLS", "rrc.cvc.uab.es DocVQA script (= EvolvingLMMs-Lab/lmms-eval 0.7.3 "
                 "api/metrics.py)", _per_answer(anls, "anls"))
DEEPFORM = Evaluator("DUE deval -m F1 -i", f"{_DUE}/fscorer.py · 75c0f55", _f1(ignore_case=True))
REC = Evaluator("Acc@IoU≥0.5 (mome box parser)", "mome.eval.metrics.rec (= lmms-eval 0.7.3 refcoco utils_rec.py on "
                "its boxes)", _rec)

_UREADER = "LukeForeverYoung/UReader · pipeline/eval_utils/tools.py · e3d52e0"
UREADER_CHARTQA = Evaluator("UReader RelaxedAccuracy", _UREADER, _per_answer(ureader_relaxed, "relaxed_acc"))
UREADER_TABFACT = Evaluator("UReader ExactAccuracy", _UREADER, _per_answer(ureader_exact, "exact_match"))
UREADER_ANLS = Evaluator("UReader → DUE deval -m ANLS -i", f"{_UREADER}; {_DUE}/anls_scorer.py · 75c0f55",
                         _per_answer(ureader_anls, "anls"))
UREADER_DEEPFORM = Evaluator("UReader → DUE deval -m F1 -i", f"{_UREADER}; {_DUE}/fscorer.py · 75c0f55",
                             _f1(ignore_case=True, prepare=ureader_kie_prediction))
UREADER_WTQ = Evaluator("UReader → DUE deval -m WTQ -i", f"{_UREADER}; {_DUE}/wtq_scorer.py · 75c0f55",
                        _per_answer(ureader_wtq, "exact_match"))

_DEFAULT = {"cider": CIDER, "vqa_acc": VQAEVAL, "exact_match": EXACT, "relaxed_acc": CHARTQA, "anls": ANLS,
            "f1": DEEPFORM, "iou_acc": REC}
_BY_DATASET = {
    ("vqa_acc", "textvqa"): TEXTVQA,
    ("exact_match", "aokvqa"): AOKVQA, ("exact_match", "gqa"): GQA, ("exact_match", "vsr"): VSR,
    ("exact_match", "iconqa"): ICONQA, ("exact_match", "tabfact"): TABFACT,
    ("exact_match", "wikitablequestions"): WTQ,
}
# Named alternatives; "official" is the default and changes nothing. The MoME paper (App. B) follows InstructBLIP
# (whose numbers come from LAVIS) for the General group and UReader for the Document group; "paper" is both.
_LAVIS = {("vqa_acc", "okvqa"): VQAEVAL_2016, ("vqa_acc", "vqav2"): VQAEVAL_2016, ("exact_match", "gqa"): GQA_LAVIS}
_UREADER_DOCS = {("relaxed_acc", "chartqa"): UREADER_CHARTQA, ("exact_match", "tabfact"): UREADER_TABFACT,
                 ("anls", "docvqa"): UREADER_ANLS, ("anls", "infographicsvqa"): UREADER_ANLS,
                 ("f1", "deepform"): UREADER_DEEPFORM, ("exact_match", "wikitablequestions"): UREADER_WTQ}
PROTOCOLS: dict[str, dict[tuple[str, str], Evaluator]] = {
    "official": {}, "lavis": _LAVIS, "ureader": _UREADER_DOCS, "paper": {**_LAVIS, **_UREADER_DOCS},
}


def evaluator_for(metric: str, dataset: str | None = None, protocol: str = "official") -> Evaluator:
    """The evaluator that scores `dataset` under `metric` (a record's ``metric`` and ``dataset`` fields)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown metric protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if metric not in _DEFAULT:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(_DEFAULT)}")
    key = (metric, dataset)
    return PROTOCOLS[protocol].get(key) or _BY_DATASET.get(key) or _DEFAULT[metric]


def describe(metric: str, dataset: str | None = None, protocol: str = "official") -> str:
    """One line naming the evaluator (and, for CIDEr, the tokenizer this run uses), for result tables."""
    ev = evaluator_for(metric, dataset, protocol)
    if ev is CIDER:
        tok = tokenizer_name("auto")
        return f"{ev.name} ({'Java PTBTokenizer' if tok == 'java' else 'Python PTB port'}) [{ev.source}]"
    return f"{ev.name} [{ev.source}]"


def _dataset(records: Sequence[Mapping]) -> str | None:
    return records[0].get("dataset") if records else None


def _check(metric: str, predictions: Sequence[str], records: Sequence[Mapping]) -> None:
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    if len(predictions) == 0:
        raise ValueError(f"score({metric!r}): no predictions")


def sample_scores(metric: str, predictions: Sequence[str], records: Sequence[Mapping],
                  protocol: str = "official") -> list[float]:
    """Each sample's score in [0, 1] under its dataset's evaluator. For the corpus-level metrics these are
    per-sample contributions: CIDEr-D per caption (with the set's document frequencies; their mean is the corpus
    score), and for F1 whether the record's value was extracted (the corpus F1 is not their mean)."""
    ev = evaluator_for(metric, _dataset(records), protocol)
    _check(metric, predictions, records)
    return ev.fn(list(predictions), list(records))[1]


def score(metric: str, predictions: Sequence[str], records: Sequence[Mapping], protocol: str = "official") -> float:
    """A dataset's score in the units of the paper's tables (×100). An empty dataset raises ValueError."""
    ev = evaluator_for(metric, _dataset(records), protocol)
    _check(metric, predictions, records)
    return 100.0 * ev.fn(list(predictions), list(records))[0]
