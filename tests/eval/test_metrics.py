"""Hand-checked cases for every metric but CIDEr (tests/eval/test_cider.py), one per rule of each evaluator, and the
edge cases issue 15 lists. Each value's comment says how it follows from the evaluator's rule; the values the
evaluators themselves produced are in tests/eval/test_golden.py."""

import math

import pytest

from mome.eval.metrics import (anls, deepform_f1, describe, due_f1, evaluator_for, exact_match, iou, levenshtein,
                               normalize_evalai_answer, normalize_vqa_answer, parse_box_text, rec_accuracy,
                               relaxed_accuracy, sample_scores, score, textvqa_accuracy, vqa_accuracy, wtq_accuracy,
                               wtq_normalize)


# -- VQA accuracy (vqaEval.py 2021, vqaEval 2016 / LAVIS, EvalAI / M4C) ---------------------------------------------


@pytest.mark.parametrize("raw,norm", [
    ("Two dogs.", "2 dogs"),       # number word → digit; final period deleted
    ("The Cat!", "cat"),           # "!" touches no space → space; lower-case; article dropped
    ("hot-dog", "hot dog"),        # "-" inside a word → space
    ("yes, sir", "yes sir"),       # ", " touches a space → deleted
    ("1,000", "1000"),             # digit,digit present → every listed mark deleted
    ("3.5 ft.", "3.5 ft"),         # a period before a digit stays
    ("dont", "don't"),             # contraction table
    ("  an   apple\n", "apple"),   # whitespace collapsed, "an" dropped
    ("none", "0"),                 # "none" is a number word in the official map
    ("", ""),
])
def test_normalize_vqa_answer(raw, norm):
    assert normalize_vqa_answer(raw) == norm


def test_normalize_evalai_answer():
    assert normalize_evalai_answer("The man's hat?") == "man 's hat"   # "'s" split off, "?" deleted
    assert normalize_evalai_answer("1,000") == "1000"                  # commas deleted first
    assert normalize_evalai_answer("red,white") == "redwhite"          # ... even between words (vqaEval: "red white")
    assert normalize_vqa_answer("red,white") == "red white"


@pytest.mark.parametrize("pred,answers,expected", [
    # 10 answers, not all equal (so both sides are normalised):
    ("Two.", ["2"] * 3 + ["3"] * 7, 0.9),            # 3 matches: (3 · 2/3 + 7 · 1) / 10
    ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),          # 2 matches: (2 · 1/3 + 8 · 2/3) / 10
    ("yes", ["yes"] + ["no"] * 9, 0.3),              # 1 match: (1 · 0 + 9 · 1/3) / 10
    ("a dog", ["dog"] * 9 + ["cat"], 1.0),           # article
    ("hot-dog", ["hot dog"] * 9 + ["x"], 1.0),       # punctuation
    ("1,000", ["1000"] * 9 + ["x"], 1.0),            # thousands comma
    ("", ["yes"] * 5 + ["no"] * 5, 0.0),             # empty prediction
    # unanimous answers: the official script normalises neither side (issue 15's VQA differences)
    ("Two.", ["2"] * 10, 0.0),
    ("Yes", ["yes"] * 10, 0.0),
    (" yes\n", ["yes"] * 10, 1.0),                   # ... but still strips and turns line breaks into spaces
    ("2", ["2"] * 10, 1.0),
    # other N: the same formula, so one answer can never be matched by the others
    ("cat", ["cat"], 0.0),
    ("cat", ["cat", "dog"], (0 + 1 / 3) / 2),       # leave out "cat": 0 matches; leave out "dog": 1 → 1/3
])
def test_vqa_accuracy(pred, answers, expected):
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


def test_vqa_versions():
    # the 2016 script (LAVIS / InstructBLIP) always normalises the prediction: "Two." matches ten "2"
    assert vqa_accuracy("Two.", ["2"] * 10, "vqaeval-2016") == 1.0
    # ... but only the punctuation of the answers: "two" among them stays a word, the prediction becomes "2"
    assert vqa_accuracy("two", ["two"] * 9 + ["x"], "vqaeval-2016") == 0.0
    assert vqa_accuracy("two", ["two"] * 9 + ["x"], "vqaeval") == 1.0
    # EvalAI (TextVQA): always normalised, "'s" split
    assert textvqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert textvqa_accuracy("the man's", ["man 's"] * 10) == 1.0
    with pytest.raises(ValueError, match="version"):
        vqa_accuracy("a", ["a"] * 10, "v3")


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError, match="non-empty"):
        vqa_accuracy("yes", [])


# -- label accuracy (A-OKVQA, GQA, VSR, IconQA) -----------------------------------------------------------------------


@pytest.mark.parametrize("pred,answers,expected", [
    ("A", ["A"], 1.0),
    ("a", ["A"], 0.0),            # the official scripts compare the strings as they are
    ("A.", ["A"], 0.0),
    ("Yes", ["yes"], 0.0),
    ("yes", ["no", "yes"], 1.0),  # any answer
    ("", ["yes"], 0.0),
])
def test_exact_match(pred, answers, expected):
    assert exact_match(pred, answers) == expected


def test_ureader_anls_drops_exactly_half():
    # RRC keeps a similarity of 0.5, DUE's AnlsScorer (UReader's) drops it; DUE does not collapse whitespace either
    recs = [{"id": "q", "dataset": "docvqa", "answers": ["abcd"]}]
    assert score("anls", ["abxx"], recs) == 50.0 and score("anls", ["abxx"], recs, protocol="ureader") == 0.0
    assert score("anls", [" abcd"], recs, protocol="ureader") == pytest.approx(80.0)   # 1 − 1/5


def test_gqa_lavis_option():
    recs = [{"id": "q", "dataset": "gqa", "answers": ["traffic light"]}]
    assert score("exact_match", ["The traffic-light."], recs) == 0.0               # official: raw equality
    assert score("exact_match", ["The traffic-light."], recs, protocol="lavis") == 100.0
    assert "LAVIS" in describe("exact_match", "gqa", "lavis") and "eval.py" in describe("exact_match", "gqa")


# -- ChartQA relaxed accuracy (Pix2Struct relaxed_correctness) --------------------------------------------------------


@pytest.mark.parametrize("pred,answers,expected", [
    ("104", ["100"], 1.0),            # |104 − 100| = 4 ≤ 0.05 · 100
    ("95.2", ["100"], 1.0),           # 4.8 ≤ 5
    ("94.9", ["100"], 0.0),           # 5.1 > 5
    ("106", ["100"], 0.0),
    ("-5", ["-5.2"], 1.0),            # 0.2 ≤ 0.26
    ("Yes", ["yes"], 1.0),            # non-numeric: case-insensitive exact
    ("yes", ["no"], 0.0),
    ("five", ["5"], 0.0),             # no number words
    ("", ["5"], 0.0),                 # empty prediction
    ("7", ["3", "7.2"], 1.0),         # best over answers: 0.2 ≤ 0.36
    # issue 15's cases: what float() does not read is compared as a string
    ("12%", ["12"], 0.0),             # "12%" is 0.12
    ("12%", ["0.12"], 1.0),
    ("$5", ["5"], 0.0),
    ("1,234", ["1234"], 0.0),
    ("1,234", ["1,234"], 1.0),        # equal strings
    ("0", ["0"], 1.0),                # a 0 target is not compared numerically...
    ("0.0", ["0"], 0.0),              # ... so only the same string matches
    (" 7 ", ["7"], 1.0),              # float() reads surrounding spaces
    ("1e3", ["1000"], 1.0),
])
def test_relaxed_accuracy(pred, answers, expected):
    assert relaxed_accuracy(pred, answers) == expected


# -- ANLS (DocVQA RRC) ------------------------------------------------------------------------------------------------


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3   # k→s, e→i, +g
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


@pytest.mark.parametrize("pred,answers,expected", [
    ("abcd", ["abxx"], 0.5),                  # NL = 2/4 = 0.5: the similarity 0.5 is kept (issue 15)
    ("abcd", ["abcx"], 0.75),                 # NL = 1/4 → 1 − 0.25
    (" ABCD ", ["abcd"], 1.0),                # the distance of the normalised strings is 0
    ("New  York", ["new york"], 1.0),         # inner whitespace collapsed for the distance (issue 15)
    ("a b c", ["abc"], 1 - 2 / 5),            # the denominator is the raw length, 5
    ("kitten", ["sitting"], 1 - 3 / 7),       # NL = 3/7 < 0.5
    ("kitten", ["sitting", "Kitten"], 1.0),   # max over answers
    ("ab", ["abcde"], 0.0),                   # NL = 3/5: similarity 0.4 < 0.5
    ("", ["abc"], 0.0),                       # empty prediction: NL = 1
    ("", [""], 1.0),                          # both empty: NL = 0
])
def test_anls(pred, answers, expected):
    assert anls(pred, answers) == pytest.approx(expected)


def test_anls_needs_answers():
    with pytest.raises(ValueError, match="non-empty"):
        anls("x", [])


# -- F1 (DUE deval) ---------------------------------------------------------------------------------------------------


def test_deepform_f1_golden():
    preds = ["ACME corp", "", "123", "foo", "$1,000"]
    refs = [["acme corp"],       # TP (case only)                            pred 1, ref 1
            ["x"],               # nothing predicted: a false negative       ref 2
            ["124"],             # wrong value: FP and FN                    pred 2, ref 3
            [],                  # no value in the document: FP              pred 3
            ["1000", "$1,000"]]  # matches a value variant: TP               pred 4, ref 4
    # TP = 2, P = 2/4, R = 2/4 → F1 = 0.5
    assert deepform_f1(preds, refs) == pytest.approx(0.5)
    # TP = 1 of 1 predicted (P = 1), 1 of 2 reference values (R = 1/2) → F1 = 2 · 1 · 0.5 / 1.5 = 2/3
    assert deepform_f1(["a", ""], [["a"], ["b"]]) == pytest.approx(2 / 3)
    assert deepform_f1(["", ""], [["a"], ["b"]]) == 0.0     # nothing predicted
    assert deepform_f1([], []) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        deepform_f1(["a", "b"], [["a"]])


def test_f1_whitespace_and_case_as_deval():
    # DUE compares values as they are: no whitespace is collapsed or stripped (issue 15's DeepForm differences)
    assert deepform_f1(["ACME  corp"], [["acme corp"]]) == 0.0
    assert deepform_f1(["acme corp "], [["ACME CORP"]]) == 0.0
    assert deepform_f1(["acme corp"], [["ACME CORP"]]) == 1.0      # -i: case folded
    assert due_f1(["Entailed"], [["entailed"]], ignore_case=False) == 0.0   # TabFact: case kept


# -- WikiTableQuestions (denotation evaluator) ------------------------------------------------------------------------


@pytest.mark.parametrize("pred,answer,expected", [
    ("1000.0", "1000", 1.0),          # numbers compare by value
    ("1,000", "1000", 0.0),           # "1,000" is not a number to int()/float(): a string
    ("2010-xx-xx", "2010", 1.0),      # a year-only date is the number 2010
    ("Café", "cafe", 1.0),            # diacritics removed
    ("Smith [1]", "smith", 1.0),      # citation removed
    ("USA (country)", "usa", 1.0),    # trailing parenthesis removed
    ("b, a", "a, b", 1.0),            # a list is a set
    ("a", "a, b", 0.0),               # sizes differ
    ("three", "3", 0.0),
])
def test_wtq_accuracy(pred, answer, expected):
    assert wtq_accuracy(pred, [answer]) == expected


def test_wtq_normalize():
    assert wtq_normalize(" “Hello”  World. ") == '"hello" world'
    assert wtq_normalize('"Quoted"') == "quoted"


# -- REC: boxes and IoU -----------------------------------------------------------------------------------------------


def test_iou():
    assert iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)               # 0.5 / 1
    assert iou([0, 0, .5, .5], [.25, .25, .75, .75]) == pytest.approx(1 / 7)     # 0.0625 / (0.25 + 0.25 − 0.0625)
    assert iou([0, 0, .2, .2], [.5, .5, 1, 1]) == 0.0                            # disjoint
    assert iou([.3, .3, .3, .3], [.3, .3, .3, .3]) == 0.0                        # zero-area union


@pytest.mark.parametrize("text,size,expected", [
    ("[0.100, 0.250, 0.500, 1.000]", None, [0.1, 0.25, 0.5, 1.0]),
    ("The box is (0.1,0.2,0.3,0.4).", None, [0.1, 0.2, 0.3, 0.4]),             # round brackets, extra words
    ("region 2 is at [0.1, 0.1, 0.6, 0.6]", None, [0.1, 0.1, 0.6, 0.6]),       # a bracketed box beats loose numbers
    ("x1=0.1 y1=0.2 x2=0.5 y2=0.6", None, [0.1, 0.2, 0.5, 0.6]),               # no brackets: first 4 numbers
    ("[0.1, 0.2, 0.5, 0.6", None, [0.1, 0.2, 0.5, 0.6]),                       # missing closing bracket
    ("[.5 .25 .75 1]", None, [0.5, 0.25, 0.75, 1.0]),
    ("[1, 1, 0, 0]", None, [0.0, 0.0, 1.0, 1.0]),                              # corners reordered
    # issue 15: a normalised box a little outside the image is normalised, and kept as written (not clamped)
    ("[-0.04, 0.19, 1.01, 0.54]", None, [-0.04, 0.19, 1.01, 0.54]),
    ("[-0.04, 0.19, 1.01, 0.54]", (640, 480), [-0.04, 0.19, 1.01, 0.54]),      # even with an image size
    # issue 15: square brackets win over round ones, wherever they are
    ("(0.5, 0.5, 0.9, 0.9) or [0.1, 0.1, 0.6, 0.6]", None, [0.1, 0.1, 0.6, 0.6]),
    ("[64, 48, 320, 480]", (640, 480), [0.1, 0.1, 0.5, 1.0]),                  # pixels ÷ (width, height)
    ("[0, 0, 1.6, 1]", (2, 2), [0.0, 0.0, 0.8, 0.5]),                          # past 1.5: pixels
    ("[64, 48, 320, 480]", None, None),                                        # pixels without an image size
    ("[0.1, 0.2, 0.3]", None, None),                                           # three numbers
    ("no box here", None, None),
    ("", None, None),
    (None, None, None),
    ("[0.1, 0.2, 0.3, 1e999]", None, None),                                    # infinite
])
def test_parse_box_text(text, size, expected):
    got = parse_box_text(text, size)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize("text,size,expected", [
    ("[0.000, 0.000, 0.500, 1.000]", None, 1.0),     # IoU 0.5 with [0, 0, 1, 1]: the threshold is inclusive
    ("It is at (0, 0, 0.49, 1).", None, 0.0),        # IoU 0.49
    ("[0, 0, 320, 480]", (640, 480), 1.0),           # pixels → [0, 0, 0.5, 1] → IoU 0.5
    ("[0, 0, 320, 480]", None, 0.0),                 # unreadable without the size
    ("[-0.04, 0.19, 1.01, 0.54]", None, 1.0),        # issue 15's box against a gold box spanning the image width
    ("[0.1, 0.2, 0.3]", None, 0.0),                  # malformed
    ("", None, 0.0),
])
def test_rec_accuracy(text, size, expected):
    gold = [0, 0.19, 1, 0.54] if text.startswith("[-0.04") else [0, 0, 1, 1]
    assert rec_accuracy(text, gold, image_size=size) == expected


# -- dispatcher --------------------------------------------------------------------------------------------------------


def _recs(field, values, **extra):
    return [{"id": f"r{i}", field: v, **extra} for i, v in enumerate(values)]


def test_evaluator_per_dataset():
    assert evaluator_for("vqa_acc", "okvqa").name == "vqaEval.py (2021)"
    assert evaluator_for("vqa_acc", "textvqa").name.startswith("M4C")
    assert evaluator_for("exact_match", "wikitablequestions").name == "DUE deval -m WTQ"
    assert evaluator_for("exact_match", "tabfact").name == "DUE deval -m F1"
    assert evaluator_for("exact_match", "synth-vqa").name == "exact match"      # a dataset without its own
    assert evaluator_for("vqa_acc", "okvqa", "lavis").name.startswith("vqaEval.py (2016")
    # "paper" = what the MoME paper followed: LAVIS for General, UReader for Document; REC/captions unchanged
    assert evaluator_for("vqa_acc", "okvqa", "paper").name.startswith("vqaEval.py (2016")
    assert evaluator_for("anls", "docvqa", "paper").name == "UReader → DUE deval -m ANLS -i"
    assert evaluator_for("exact_match", "tabfact", "ureader").name == "UReader ExactAccuracy"
    assert evaluator_for("iou_acc", "refcoco", "paper") is evaluator_for("iou_acc", "refcoco")
    assert evaluator_for("vqa_acc", "textvqa", "paper") is evaluator_for("vqa_acc", "textvqa")
    with pytest.raises(ValueError, match="protocol"):
        evaluator_for("vqa_acc", "okvqa", "mome")


def test_score_units_and_dispatch():
    # vqa_acc: (1.0 + 0.3) / 2 × 100 = 65
    assert score("vqa_acc", ["yes", "yes"], _recs("answers", [["yes"] * 10, ["yes"] + ["no"] * 9])) == \
        pytest.approx(65.0)
    # exact_match: 1 of 2 → 50
    assert score("exact_match", ["a", "b"], _recs("answers", [["a"], ["c"]])) == pytest.approx(50.0)
    # TabFact goes through DUE's F1: one right, one empty (not predicted): P = 1, R = 1/2 → F1 = 2/3
    assert score("exact_match", ["entailed", ""], _recs("answers", [["entailed"], ["refuted"]], dataset="tabfact")) \
        == pytest.approx(200 / 3)
    # WTQ by denotation: "1000.0" equals 1000
    assert score("exact_match", ["1000.0"], _recs("answers", [["1000"]], dataset="wikitablequestions")) == 100.0
    # relaxed_acc: 1 of 1 → 100
    assert score("relaxed_acc", ["104"], _recs("answers", [["100"]])) == pytest.approx(100.0)
    # anls: (0.75 + 0.5) / 2 × 100 = 62.5
    assert score("anls", ["abcd", "abcd"], _recs("answers", [["abcx"], ["abxx"]])) == pytest.approx(62.5)
    # f1: corpus F1 2/3 (see test_deepform_f1_golden) × 100, not the mean of per-record hits (50)
    assert score("f1", ["a", ""], _recs("answers", [["a"], ["b"]])) == pytest.approx(200 / 3)
    assert sample_scores("f1", ["a", ""], _recs("answers", [["a"], ["b"]])) == [1.0, 0.0]
    # iou_acc with a pixel prediction and the image size on the record: 1 of 2 → 50
    recs = _recs("bbox", [[0, 0, 1, 1], [0, 0, 1, 1]], width=640, height=480)
    assert score("iou_acc", ["[0, 0, 320, 480]", "[0, 0, 0.1, 0.1]"], recs) == pytest.approx(50.0)
    # cider: the golden set of test_cider (3.75) × 100
    assert score("cider", ["a b", "c"], _recs("captions", [["a b"], ["c"]])) == pytest.approx(375.0)


def test_score_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", ["a"], _recs("answers", [["a"]]))
    with pytest.raises(ValueError, match="field 'answers'.*'r0'"):
        score("anls", ["a"], _recs("captions", [["a"]]))
    with pytest.raises(ValueError, match="no reference answers"):
        score("anls", ["a"], _recs("answers", [[]]))
    with pytest.raises(ValueError, match="2 predictions for 1 records"):
        score("exact_match", ["a", "b"], _recs("answers", [["a"]]))
    with pytest.raises(ValueError, match="no predictions"):
        score("exact_match", [], [])
    assert math.isfinite(score("cider", [""], _recs("captions", [["a dog"]])))
