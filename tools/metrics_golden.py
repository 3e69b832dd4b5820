"""Produce tests/eval/golden/*.json: expected scores computed by each benchmark's own evaluator.

    python tools/metrics_golden.py [--mirrors /work/.mirror] [--lmms-eval /tmp/lmms_site] [--gqa-eval eval.py]

Nothing here implements a metric: every expected value comes from running the evaluator's own code, read at the
commit named in the JSON (``git show <commit>:<file>`` from a local mirror of its repository), so the tests check
mome.eval.metrics against the evaluators, not against themselves. Where an evaluator is a class method or a
script, the smallest harness around it is written below (a fake dataset object, one question per run); where its
source is Python 2 (vqaEval.py, the WikiTableQuestions evaluator) the few Python 2-only tokens are rewritten before it
is executed (``print x`` statements, ``ur""`` literals, ``unicode`` / ``basestring`` / ``long``).

Sources: the repositories in docs/metrics.md, cloned (or fetched) under --mirrors as ``<owner>+<name>/repo``
(a bare git dir); lmms-eval 0.7.3 installed with ``pip install --no-deps --target DIR lmms-eval==0.7.3
textdistance`` (the wheel, without pulling torch); pycocoevalcap 1.2 from the test extra, with Java for its tokenizer;
GQA's eval.py (from gqadataset.org's eval.zip) is optional: without it GQA's golden file is not rewritten.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "eval" / "golden"

COMMITS = {  # repository: (mirror folder, commit)
    "GT-Vision-Lab/VQA": ("GT-Vision-Lab+VQA", "a013f0043c1e2cdc995922dfe257f7149aa9af06"),
    "salesforce/LAVIS": ("salesforce+LAVIS", "506965b9c4a18c1e565bd32acaccabe0198433f7"),
    "facebookresearch/mmf": ("facebookresearch+mmf", "b0ffc7fba39f210f833c127362146aec01a2f259"),
    "allenai/aokvqa": ("allenai+aokvqa", "83786de0b24c4fef0bfe39420684f6f73d9f3581"),
    "google-research/pix2struct": ("google-research+pix2struct", "945f27e936c9464d9d7c133f1bd1f4f383be9e99"),
    "due-benchmark/evaluator": ("due-benchmark+evaluator", "75c0f550f5b7c0104a86993d5f307794687493ac"),
    "ppasupat/WikiTableQuestions": ("ppasupat+WikiTableQuestions", "7d455a5a707b96341ef72aff9428749d443d8aa9"),
    "LukeForeverYoung/UReader": ("LukeForeverYoung+UReader", "e3d52e0006b7ab9bbd5bea2ba4c02f3e1bcf6d4c"),
}


class Sources:
    def __init__(self, mirrors: Path):
        self.mirrors = mirrors

    def read(self, repo: str, path: str) -> str:
        folder, commit = COMMITS[repo]
        git_dir = self.mirrors / folder / "repo"
        if not (git_dir / "HEAD").exists() and (git_dir / ".git").exists():
            git_dir = git_dir / ".git"
        return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    def cite(self, repo: str, path: str) -> dict:
        return {"repository": repo, "file": path, "commit": COMMITS[repo][1]}


def functions(source: str, names: list[str], header: str = "") -> dict:
    """Execute only the named top-level functions/classes of a module (its other imports may be unavailable)."""
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    for n in keep:
        n.decorator_list = []   # registries of the host framework (lmms-eval's @register_metric)
    ns: dict = {}
    exec(compile(header + "\n" + ast.unparse(ast.Module(body=keep, type_ignores=[])), "<evaluator>", "exec"), ns)
    return ns


def py2_to_3(source: str) -> str:
    source = re.sub(r"^(\s*)print (.*)$", r"\1print(\2)", source, flags=re.M)
    source = re.sub(r"print\(>> sys.stderr, (.*)\)$", r"print(\1, file=sys.stderr)", source, flags=re.M)
    source = re.sub(r'\bur"', 'r"', source).replace("ur'", "r'")
    source = re.sub(r"\bbasestring\b", "str", source)
    source = re.sub(r"\bunicode\b", "str", source)
    return re.sub(r"\blong\b", "int", source)


def write(name: str, evaluator: dict, cases: list, note: str = "") -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"evaluator": evaluator, "produced_by": "tools/metrics_golden.py", "note": note, "cases": cases}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {name}.json: {len(cases)} cases", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs (shared by several evaluators). Hand-picked edge cases first, then seeded random ones.

def vqa_cases(rng: random.Random) -> list[tuple[str, list[str]]]:
    hand = [
        ("Two.", ["2"] * 10), ("2", ["2"] * 10), ("two", ["2"] * 9 + ["3"]), ("Yes", ["yes"] * 10),
        ("yes", ["yes"] * 3 + ["no"] * 7), ("yes", ["yes"] * 2 + ["no"] * 8), ("yes", ["yes"] + ["no"] * 9),
        ("hot-dog", ["hot dog"] * 5 + ["hotdog"] * 5), ("1,000", ["1000"] * 4 + ["one thousand"] * 6),
        ("don't", ["dont"] * 5 + ["do not"] * 5), ("a dog", ["dog"] * 6 + ["puppy"] * 4),
        ("The man's hat?", ["man's hat"] * 6 + ["hat"] * 4), ("3.5 ft.", ["3.5 ft"] * 5 + ["3.5"] * 5),
        ("  an   apple\n", ["apple"] * 7 + ["apples"] * 3), ("none", ["0"] * 5 + ["none"] * 5),
        ("", ["yes"] * 5 + ["no"] * 5), ("red, white", ["red white"] * 5 + ["red and white"] * 5),
        ("e.g.", ["eg"] * 5 + ["example"] * 5), ("5:30", ["530"] * 5 + ["5:30"] * 5),
        ("DOG", ["dog"] * 5 + ["Dog"] * 5), ("\tyes", ["yes "] * 10), ("it's", ["its"] * 5 + ["it is"] * 5),
        ("Yes.", ["yes"] * 10), ("yes.", ["yes", "yes."] * 5), ("10", ["ten"] * 4 + ["10"] * 6),
        ("(a) cat", ["cat"] * 8 + ["a cat"] * 2), ("cat?", ["cat"] * 10), ("1/2", ["1/2"] * 5 + ["half"] * 5),
        ("u.s.a.", ["usa"] * 5 + ["us"] * 5), ("im", ["I'm"] * 5 + ["im"] * 5),
    ]
    words = ["yes", "no", "two", "2", "dog", "the dog", "Dog.", "hot-dog", "hot dog", "1,000", "1000", "don't",
             "dont", "a cat", "cats", "man's", "none", "0", "3.5", "e.g.", "red, blue", "ten", "10", "it's", " x "]
    rand = []
    for _ in range(150):
        pool = rng.sample(words, rng.randint(1, 4))
        answers = [rng.choice(pool) for _ in range(10)]
        rand.append((rng.choice(pool + words[:3]), answers))
    return hand + rand


LABEL_CASES = [("A", "A"), ("A.", "A"), ("a", "A"), ("(A)", "A"), ("A) cat", "A"), ("B", "A"), ("yes", "yes"),
               ("Yes", "yes"), ("yes.", "yes"), ("", "yes"), ("traffic light", "traffic light"),
               ("traffic  light", "traffic light"), ("the cat", "cat"), ("2", "two"), ("true", "true"),
               ("True", "true"), ("false", "true"), ("entailed", "entailed"), ("Refuted", "refuted"), ("1", "1")]

CHARTQA_CASES = [("12%", "12"), ("12%", "0.12"), ("12", "12%"), ("12%", "12%"), ("$5", "5"), ("$5", "$5"),
                 ("1,234", "1234"), ("1,234", "1,234"), ("0", "0"), ("0.0", "0"), ("0", "0.0"), ("104", "100"),
                 ("105", "100"), ("105.0001", "100"), ("95", "100"), ("94.9", "100"), (" 7 ", "7"), ("1e3", "1000"),
                 ("inf", "inf"), ("nan", "nan"), ("Yes", "yes"), ("-5", "-5.2"), ("five", "5"), ("", "5"), ("", ""),
                 ("1_000", "1000"), ("12 %", "0.12"), ("%", "%"), ("12%%", "0.12"), ("٣", "3"), ("5.", "5"),
                 ("+5", "5"), ("0.001", "0"), ("-0", "0"), ("7", "7.2"), ("1.04e2", "100"), ("100", "-100"),
                 ("-96", "-100"), ("Infinity", "1e999"), ("0.05", "5%"), ("5%", "0.05"), ("2018", "2018"),
                 ("2,018", "2018"), ("12.5 ", "12.5"), ("12.50", "12.5"), ("Canada", "canada"), ("USA ", "USA")]

ANLS_CASES = [("abcd", ["abxx"]), ("abcd", ["abcx"]), ("New  York", ["new york"]), ("  ABCD ", ["abcd"]),
              ("kitten", ["sitting"]), ("", ["abc"]), ("", [""]), ("abc", ["abd", "abc"]), ("a b c", ["abc"]),
              ("ß", ["ss"]), ("straße", ["STRASSE"]), ("x", ["xxx"]), ("ab", ["abcd"]), ("abc", ["abcdef"]),
              ("new york city", ["new  york"]), ("  ", ["a"]), ("1,000", ["1000"]), ("$ 5", ["$5"]),
              ("İstanbul", ["istanbul"]), ("ab\tcd", ["ab cd"]), ("abcdefghij", ["abcdefghxx", "zz"]),
              ("the answer", ["answer"]), ("12/05/2019", ["12-05-2019"])]

KIE_CASES = [  # corpora of (prediction, answers)
    [("ACME corp", ["acme corp"]), ("", ["x"]), ("123", ["124"]), ("foo", []), ("$1,000", ["1000", "$1,000"])],
    [("ACME  corp", ["acme corp"]), ("acme corp ", ["ACME CORP"]), (" 5", ["5"])],
    [("a", ["a"]), ("", ["b"])],
    [("", ["a"]), ("", ["b"])],
    [("x", []), ("y", [])],
    [("Entailed", ["entailed"]), ("refuted", ["refuted"]), ("", ["entailed"])],
    [("ß", ["SS"]), ("straße", ["STRASSE"]), ("Ünïcödé", ["ÜNÏCÖDÉ"])],
    [("01/02/2020", ["1/2/2020", "01/02/2020"]), ("$ 1,200.00", ["$1,200.00"]), ("12.5", ["12.50"])],
]

WTQ_CASES = [("1,000", "1000"), ("1000", "1000"), ("1000.0", "1000"), ("2010-xx-xx", "2010"),
             ("2010-05-xx", "2010-05-xx"), ("May 2010", "2010-05-xx"), ("Café", "cafe"), ("“Hello”", "hello"),
             ('"Hello"', "hello"), ("Smith [1]", "smith"), ("USA (country)", "usa"), ("b, a", "a, b"),
             ("a, a", "a"), ("a", "a, b"), ("3.0", "3"), ("three", "3"), ("1e3", "1000"), ("inf", "inf"),
             ("Yes.", "yes"), ("  x  y ", "x y"), ("—", "-"), ("+5", "5"), ("05", "5"), ("5", "5.0000001"),
             ("5", "5.001"), ("1_000", "1000"), ("2010-13-01", "2010-13-01"), ("xx-01-02", "1990-01-02"),
             ("1990-01-02", "1990-01-02"), ("1990-1-2", "1990-01-02"), ("Paris, France", "Paris, France"),
             ("France, Paris", "Paris, France"), ("", "x"), ("", ""), ("†", ""), ("London*", "london"),
             ("naïve", "naive"), ("a.", "a"), ("A B", "a  b"), ("10 (approx.)", "10"), ("12 ", "12"),
             ("Zürich, Bern, Basel", "basel, bern, zurich"), ("7, 7.0", "7")]

# (text, gold box): lmms-eval's parser reads square-bracketed plain decimals; the others are there to show where it
# reads nothing (the tests only compare the cases it reads with corners in order).
REC_CASES = [("[0.1, 0.2, 0.5, 0.6]", [0.1, 0.2, 0.5, 0.6]), ("[0.000, 0.000, 0.500, 1.000]", [0, 0, 1, 1]),
             ("[0.000, 0.000, 0.490, 1.000]", [0, 0, 1, 1]), ("[-0.04, 0.19, 1.01, 0.54]", [0.0, 0.19, 1.0, 0.54]),
             ("[0.1,0.1,0.6,0.6] and (0.5,0.5,0.9,0.9)", [0.1, 0.1, 0.6, 0.6]),
             ("(0.5, 0.5, 0.9, 0.9) then [0.1, 0.1, 0.6, 0.6]", [0.1, 0.1, 0.6, 0.6]),
             ("It is at [0.25, 0.25, 0.75, 0.75].", [0.0, 0.0, 0.5, 0.5]), ("[0.2, 0.3, 0.4, 0.5]", [0.5, 0.5, 1, 1]),
             ("[0.3, 0.3, 0.8, 0.9]", [0.3, 0.3, 0.8, 0.9]), ("[0, 0, 1, 1]", [0.1, 0.1, 0.9, 0.9]),
             ("[0.10, 0.20, 1.20, 0.80]", [0.1, 0.2, 1.0, 0.8]), ("no box", [0, 0, 1, 1]),
             ("(0.1, 0.2, 0.5, 0.6)", [0.1, 0.2, 0.5, 0.6])]


def random_strings(rng: random.Random, pieces: list[str], n: int, k: int = 3) -> list[str]:
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, k))) for _ in range(n)]


_NUMBER_PIECES = ["1", "0", "5", "12", ".", ",", "%", "-", "+", "e3", " ", "$", "100", "0.05", "a", "inf", "_0"]
_TEXT_PIECES = ["a", "b", "A", "ab", " ", "  ", "x", "ß", "é", "\t", "1", ",", ".", "-", "the ", "(c)", "[1]", '"',
                "“", "”", "2010-05-", "xx", "01", ", "]


def random_pairs(rng: random.Random, pieces: list[str], n: int) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(n):
        t = random_strings(rng, pieces, 1)[0]
        # half the predictions are a small edit of the target, so matches and near misses both occur
        p = t if rng.random() < 0.2 else (t + rng.choice(pieces) if rng.random() < 0.5 else
                                         random_strings(rng, pieces, 1)[0])
        pairs.append((p, t))
    return pairs


def random_boxes(rng: random.Random, n: int) -> list[tuple[str, list[float]]]:
    """Boxes as a model writes them (``[x1, y1, x2, y2]`` with 1–3 decimals, a little outside the image at times),
    each against a random gold box near it, so IoU falls on both sides of 0.5."""
    out = []
    for _ in range(n):
        x1, y1 = rng.uniform(-0.05, 0.8), rng.uniform(-0.05, 0.8)
        gold = [x1, y1, x1 + rng.uniform(0.05, 0.3), y1 + rng.uniform(0.05, 0.3)]
        pred = [v + rng.gauss(0, 0.05) for v in gold]
        pred = [min(pred[0], pred[2]), min(pred[1], pred[3]), max(pred[0], pred[2]), max(pred[1], pred[3])]
        d = rng.randint(1, 3)
        sep = rng.choice([", ", ",", ",  "])
        out.append(("[" + sep.join(f"{v:.{d}f}" for v in pred) + "]", [round(v, 4) for v in gold]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The evaluators

def _vqaeval_scores(VQAEval, cases):
    """Each (prediction, answers) case through a vqaEval.py-style VQAEval class, one question at a time, keeping its
    unrounded per-question accuracy (setEvalQA rounds to 2 decimals of %)."""

    class Capture(VQAEval):
        def setEvalQA(self, quesId, acc):
            self.raw = acc

        def updateProgress(self, progress):
            pass

    out = []
    for pred, answers in cases:
        gts = types.SimpleNamespace(qa={1: {"answers": [{"answer": a, "answer_id": i + 1} for i, a in
                                                        enumerate(answers)],
                                            "question_type": "t", "answer_type": "other"}}, getQuesIds=lambda: [1])
        ev = Capture(gts, types.SimpleNamespace(qa={1: {"answer": pred}}))
        _quiet(ev.evaluate)
        out.append({"prediction": pred, "answers": answers, "expected": ev.raw})
    return out


def vqaeval_2021(src: Sources, cases):
    ns: dict = {}
    exec(py2_to_3(src.read("GT-Vision-Lab/VQA", "PythonEvaluationTools/vqaEvaluation/vqaEval.py")), ns)
    return _vqaeval_scores(ns["VQAEval"], cases)


def _quiet(fn, *a):
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return fn(*a)
    finally:
        sys.stdout.close()
        sys.stdout = saved


def lavis_vqa(src: Sources, cases):
    ns: dict = {}
    exec(src.read("salesforce/LAVIS", "lavis/common/vqa_tools/vqa_eval.py"), ns)
    return _vqaeval_scores(ns["VQAEval"], cases), ns["VQAEval"]


def lavis_gqa(vqa_eval_cls, cases):
    # lavis/tasks/vqa.py GQATask._report_metrics: both sides through processPunctuation then processDigitArticle,
    # then `vqa_acc = 1 if pred == gt_ans else 0`
    tool = vqa_eval_cls()
    norm = lambda s: tool.processDigitArticle(tool.processPunctuation(s))  # noqa: E731
    return [{"prediction": p, "answers": [g], "expected": float(norm(p) == norm(g))} for p, g in cases]


def m4c_textvqa(src: Sources, cases):
    ns: dict = {}
    exec(src.read("facebookresearch/mmf", "mmf/utils/m4c_evaluators.py"), ns)
    ev = ns["TextVQAAccuracyEvaluator"]()
    return [{"prediction": p, "answers": a,
             "expected": ev.eval_pred_list([{"pred_answer": p, "gt_answers": list(a)}])} for p, a in cases]


def aokvqa_mc(src: Sources, cases):
    sys.modules["load_aokvqa"] = types.SimpleNamespace(load_aokvqa=None)
    ns: dict = {"__name__": "eval_predictions"}
    exec(src.read("allenai/aokvqa", "evaluation/eval_predictions.py"), ns)
    out = []
    for pred, gold in cases:
        choices = ["A", "B", "C", "D"] if gold in "ABCD" else [gold, "other"]
        data = [{"question_id": "q", "choices": choices, "correct_choice_idx": choices.index(gold),
                 "direct_answers": [gold] * 10, "difficult_direct_answer": False}]
        acc = ns["eval_aokvqa"](data, {"q": pred}, multiple_choice=True, strict=False)
        out.append({"prediction": pred, "answers": [gold], "expected": acc / 100})
    return out


def gqa_eval(script: Path, cases):
    out = []
    for pred, gold in cases:
        with tempfile.TemporaryDirectory() as tmp:
            q = {"q1": {"answer": gold, "isBalanced": True, "question": "what is it", "semantic": [],
                        "types": {"structural": "query", "semantic": "obj", "detailed": "x"},
                        "groups": {"global": None}, "entailed": []}}
            Path(tmp, "testdev_balanced_questions.json").write_text(json.dumps(q))
            Path(tmp, "testdev_predictions.json").write_text(json.dumps([{"questionId": "q1", "prediction": pred}]))
            run = subprocess.run([sys.executable, str(script), "--tier", "testdev",
                                  "--questions", "{tier}_balanced_questions.json"], cwd=tmp, capture_output=True,
                                 text=True, check=True)
        acc = float(re.search(r"Accuracy: ([\d.]+)%", run.stdout).group(1))
        out.append({"prediction": pred, "answers": [gold], "expected": acc / 100})
    return out


def pix2struct_relaxed(src: Sources, cases):
    ns = functions(src.read("google-research/pix2struct", "pix2struct/metrics.py"),
                   ["relaxed_correctness", "aggregate_metrics"], "from typing import *")
    out = []
    for pred, target in cases:
        acc = ns["aggregate_metrics"]([[target]], [pred], ns["relaxed_correctness"]) / 100
        out.append({"prediction": pred, "answers": [target], "expected": acc})
    return out


def lmms_anls(lmms_dir: Path, cases):
    ns = functions((lmms_dir / "lmms_eval" / "api" / "metrics.py").read_text(), ["anls", "levenshtein_distance"])
    return [{"prediction": p, "answers": a, "expected": ns["anls"](a, [p])["anls"]} for p, a in cases]


def _due_package(src: Sources, tmp: Path, lmms_dir: Path) -> None:
    pkg = tmp / "due_evaluator"
    (pkg / "scorers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for f in ("due_evaluator.py", "scorers/base_scorer.py", "scorers/fscorer.py", "scorers/accuracy_scorer.py",
              "scorers/wtq_scorer.py", "scorers/anls_scorer.py", "scorers/mean_fscorer.py"):
        (pkg / f).write_text(src.read("due-benchmark/evaluator", f"due_evaluator/{f}"))
    # the package's own __init__ also imports GROUP-ANLS / GEVAL scorers (scipy); F1 and WTQ do not need them
    (pkg / "scorers" / "__init__.py").write_text(
        "from .anls_scorer import AnlsScorer\nfrom .base_scorer import BaseScorer\nfrom .fscorer import FScorer\n"
        "from .mean_fscorer import MeanFScorer\nfrom .wtq_scorer import WtqScorer\n"
        "GevalScorer = GroupAnlsScorer = None\n")
    sys.path[:0] = [str(tmp), str(lmms_dir)]


def due_f1(cases, ignore_case: bool):
    from due_evaluator.due_evaluator import DueEvaluator

    out = []
    for corpus in cases:
        ref = [{"name": str(i), "annotations": [{"key": "k", "values": [{"value": a[0], "value_variants": a[1:]}]}]
                if a else []} for i, (_, a) in enumerate(corpus)]
        ans = [{"name": str(i), "annotations": [{"key": "k", "values": [{"value": p}]}] if p != "" else []}
               for i, (p, _) in enumerate(corpus)]
        f1 = DueEvaluator(json.loads(json.dumps(ref)), json.loads(json.dumps(ans)), None, ignore_case, None,
                          "F1").general_scorer.score()
        lines = DueEvaluator(ref, ans, None, ignore_case, None, "F1").line_by_line()
        out.append({"predictions": [p for p, _ in corpus], "references": [a for _, a in corpus], "expected": f1,
                    "expected_hits": [float(x) for x in lines]})
    return out


def due_wtq(cases):
    from due_evaluator.scorers.wtq_scorer import WtqScorer

    scorer = WtqScorer()
    return [{"prediction": p, "answers": [t], "expected":
             float(scorer.check_denotation(p.split(", "), t.split(", ")))} for p, t in cases]


def official_wtq(src: Sources, cases):
    ns: dict = {"__name__": "wtq_evaluator"}
    source = src.read("ppasupat/WikiTableQuestions", "evaluator.py")
    exec(py2_to_3(source[:source.index("\ndef tsv_unescape(")]), ns)   # the definitions, not the TSV/CLI part
    out = []
    for p, t in cases:
        ok = ns["check_denotation"](ns["to_value_list"](t.split(", ")), ns["to_value_list"](p.split(", ")))
        out.append({"prediction": p, "answers": [t], "expected": float(ok)})
    return out


def ureader_llm_answer_eval(src: Sources, cases, metric: str):
    """UReader's `llm_answer_eval` for one question: its text clean-up (transcribed: line breaks deleted, one final
    "." dropped from the gold answer) and its own `metric_calculate` with `relaxed_correctness` / `exact_match`."""
    ns = functions(src.read("LukeForeverYoung/UReader", "pipeline/eval_utils/tools.py"),
                   ["relaxed_correctness", "exact_match", "metric_calculate"], "from typing import *")
    fn = {"RelaxedAccuracy": ns["relaxed_correctness"], "ExactAccuracy": ns["exact_match"]}[metric]
    out = []
    for pred, gold in cases:
        g = str(gold).replace("\n", "")
        g = g[:-1] if g.endswith(".") else g
        score, _ = ns["metric_calculate"]([[g]], [str(pred).replace("\n", "")], fn)
        out.append({"prediction": pred, "answers": [gold], "expected": score / 100})
    return out


def ureader_due(cases, metric: str):
    """UReader's `postprocess_llm_vqa` + `eval_due`: DueEvaluator(ignore_case=True) on the cleaned predictions
    (line breaks deleted; for KIE the answer "None" is no annotation). One document per question (ANLS, WTQ) or per
    corpus (F1)."""
    from due_evaluator.due_evaluator import DueEvaluator

    def clean(p):
        p = p.replace("\n", "")
        return "" if metric == "F1" and p == "None" else p

    out = []
    if metric == "F1":
        for corpus in cases:
            ref = [{"name": str(i), "annotations": [{"key": "k", "values": [{"value": a[0], "value_variants": a[1:]}]}]
                    if a else []} for i, (_, a) in enumerate(corpus)]
            ans = [{"name": str(i), "annotations": [{"key": "k", "values": [{"value": clean(p)}]}]
                    if clean(p) != "" else []} for i, (p, _) in enumerate(corpus)]
            f1 = DueEvaluator(ref, ans, None, True, None, "F1").general_scorer.score()
            out.append({"predictions": [p for p, _ in corpus], "references": [a for _, a in corpus], "expected": f1})
        return out
    for pred, answers in cases:
        if metric == "ANLS":
            ref_values = [{"value": answers[0], "value_variants": list(answers)}]
            out_values = [{"value": clean(pred)}]
        else:   # WTQ: the items of the ", "-joined answer and prediction
            ref_values = [{"value": v} for v in answers[0].split(", ")]
            out_values = [{"value": v} for v in clean(pred).split(", ")]
        ref = [{"name": "d", "annotations": [{"key": "q", "values": ref_values}]}]
        ans = [{"name": "d", "annotations": [{"key": "q", "values": out_values}]}]
        score = DueEvaluator(ref, ans, None, True, None, metric).general_scorer.score()
        out.append({"prediction": pred, "answers": list(answers), "expected": score})
    return out


def lmms_rec(lmms_dir: Path, cases):
    ns = functions((lmms_dir / "lmms_eval" / "tasks" / "refcoco" / "utils_rec.py").read_text(),
                   ["parse_float_sequence_within", "compute_iou", "compute_accuracy"], "import re")
    out = []
    for text, gold in cases:
        box = ns["parse_float_sequence_within"](text)
        reads = box != [0, 0, 0, 0] and box[0] <= box[2] and box[1] <= box[3]
        out.append({"prediction": text, "bbox": gold, "lmms_eval_box": box, "lmms_eval_reads": reads,
                    "expected": float(ns["compute_accuracy"](gold, box)) if reads else None})
    return out


def coco_captions(captions: list[str], rng: random.Random):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    tokens = [{"caption": c, "expected": tok[i][0]} for i, c in enumerate(captions)]
    corpora = []
    for size in (2, 5, 12, 30):
        preds = [rng.choice(captions) for _ in range(size)]
        refs = [[rng.choice(captions) for _ in range(rng.randint(1, 5))] for _ in range(size)]
        gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
        res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
        corpus, per = Cider().compute_score(gts, res)
        corpora.append({"predictions": preds, "references": refs, "expected": float(corpus),
                        "expected_per_sample": [float(x) for x in per]})
    return tokens, corpora


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--lmms-eval", type=Path, default=Path("/tmp/lmms_site"), help="lmms-eval 0.7.3 --target dir")
    ap.add_argument("--gqa-eval", type=Path, default=None, help="GQA's eval.py (optional)")
    args = ap.parse_args()
    src = Sources(args.mirrors)
    rng = random.Random(0)
    lmms = {"repository": "EvolvingLMMs-Lab/lmms-eval", "version": "0.7.3 (PyPI wheel)"}

    vqa = vqa_cases(rng)
    write("vqaeval_2021", src.cite("GT-Vision-Lab/VQA", "PythonEvaluationTools/vqaEvaluation/vqaEval.py"),
          vqaeval_2021(src, vqa), "VQAEval.evaluate on one question per case; per-question accuracy before rounding")
    lavis_cases, lavis_cls = lavis_vqa(src, vqa)
    write("vqaeval_2016_lavis", src.cite("salesforce/LAVIS", "lavis/common/vqa_tools/vqa_eval.py"), lavis_cases,
          "LAVIS's copy of vqaEval.py (the 2016 version, 458a8b2), VQAEval.evaluate on one question per case")
    write("textvqa_m4c", src.cite("facebookresearch/mmf", "mmf/utils/m4c_evaluators.py"), m4c_textvqa(src, vqa),
          "TextVQAAccuracyEvaluator.eval_pred_list on one question per case")
    write("aokvqa_mc", src.cite("allenai/aokvqa", "evaluation/eval_predictions.py"), aokvqa_mc(src, LABEL_CASES),
          "eval_aokvqa(multiple_choice=True, strict=False) on one question per case; choices are the letters A-D "
          "(our records' answers) or [gold, 'other']")
    write("gqa_lavis", src.cite("salesforce/LAVIS", "lavis/tasks/vqa.py"), lavis_gqa(lavis_cls, LABEL_CASES),
          "GQATask._report_metrics's rule with LAVIS VQAEval.processPunctuation/processDigitArticle")
    if args.gqa_eval is not None:
        write("gqa", {"repository": None, "file": "eval.py (gqadataset.org eval.zip)", "commit": None},
              gqa_eval(args.gqa_eval, LABEL_CASES), "eval.py run on a one-question testdev file per case")
    write("chartqa_pix2struct", src.cite("google-research/pix2struct", "pix2struct/metrics.py"),
          pix2struct_relaxed(src, CHARTQA_CASES + random_pairs(rng, _NUMBER_PIECES, 200)),
          "aggregate_metrics(targets, predictions, relaxed_correctness) / 100")
    anls_cases = ANLS_CASES + [(p, [t]) for p, t in random_pairs(rng, _TEXT_PIECES, 200)]
    write("anls_rrc", {**lmms, "file": "lmms_eval/api/metrics.py", "function": "anls"}, lmms_anls(args.lmms_eval,
          anls_cases), "lmms-eval's verbatim copy of the DocVQA RRC script's ANLS (via Qwen-VL's infographicsvqa_eval)")
    wtq_cases = WTQ_CASES + random_pairs(rng, _TEXT_PIECES + _NUMBER_PIECES, 200)
    kie_cases = KIE_CASES + [[(p, [t] if t else []) for p, t in random_pairs(rng, _TEXT_PIECES, 30)] for _ in range(5)]
    with tempfile.TemporaryDirectory() as tmp:
        _due_package(src, Path(tmp), args.lmms_eval)
        write("deepform_due_f1", {**src.cite("due-benchmark/evaluator", "due_evaluator/scorers/fscorer.py"),
                                  "command": "deval -m F1 -i"}, due_f1(kie_cases, True),
              "DueEvaluator(reference, answers, ignore_case=True, metric='F1'): general score and line_by_line; "
              "one document per record, key 'k', value = answers[0], value_variants = answers[1:]; "
              "an empty prediction is no annotation")
        write("tabfact_due_f1", {**src.cite("due-benchmark/evaluator", "due_evaluator/scorers/fscorer.py"),
                                 "command": "deval -m F1"}, due_f1(kie_cases, False), "as deepform, case-sensitive")
        write("wtq_due", {**src.cite("due-benchmark/evaluator", "due_evaluator/scorers/wtq_scorer.py"),
                          "command": "deval -m WTQ"}, due_wtq(wtq_cases),
              "WtqScorer.check_denotation(prediction.split(', '), answer.split(', '))")
        ureader = src.cite("LukeForeverYoung/UReader", "pipeline/eval_utils/tools.py")
        write("ureader_anls", {**ureader, "scorer": "due_evaluator AnlsScorer, ignore_case=True"},
              ureader_due([(p, a) for p, a in ANLS_CASES + [("ab\ncd", ["abcd"]), ("x", ["ab"])]], "ANLS"),
              "postprocess_llm_vqa + eval_due for DocVQA/InfographicsVQA")
        write("ureader_deepform", {**ureader, "scorer": "due_evaluator FScorer, ignore_case=True"},
              ureader_due(kie_cases + [[("None", ["x"]), ("None", []), ("a\nb", ["AB"])]], "F1"),
              "postprocess_llm_vqa + eval_due for DeepForm")
        write("ureader_wtq", {**ureader, "scorer": "due_evaluator WtqScorer, ignore_case=True"},
              ureader_due([(p, [t]) for p, t in wtq_cases + [("Straße", "strasse"), ("a\nb", "ab")]], "WTQ"),
              "postprocess_llm_vqa + eval_due for WikiTableQuestions")
    write("ureader_chartqa", src.cite("LukeForeverYoung/UReader", "pipeline/eval_utils/tools.py"),
          ureader_llm_answer_eval(src, CHARTQA_CASES + [("5", "5."), ("12\n", "12"), ("a.", "a.")],
                                  "RelaxedAccuracy"), "llm_answer_eval(['RelaxedAccuracy']) for one question per case")
    write("ureader_tabfact", src.cite("LukeForeverYoung/UReader", "pipeline/eval_utils/tools.py"),
          ureader_llm_answer_eval(src, LABEL_CASES + [("yes", "yes."), ("yes\n", "yes")], "ExactAccuracy"),
          "llm_answer_eval(['ExactAccuracy']) for one question per case")
    write("wtq_official", src.cite("ppasupat/WikiTableQuestions", "evaluator.py"), official_wtq(src, wtq_cases),
          "evaluator.py 1.0.2 (Python 2 tokens rewritten) check_denotation(to_value_list(target), to_value_list(pred))"
          " without CoreNLP target values")
    rec_cases = REC_CASES + random_boxes(rng, 200)
    write("rec_lmms_eval", {**lmms, "file": "lmms_eval/tasks/refcoco/utils_rec.py"}, lmms_rec(args.lmms_eval,
          rec_cases), "parse_float_sequence_within + compute_accuracy(gold, box, 0.5); only boxes it reads compare")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "eval"))
    from captions_corpus import ADVERSARIAL, CAPTIONS
    tokens, corpora = coco_captions(CAPTIONS + ADVERSARIAL, rng)
    cite = {"repository": "salaniz/pycocoevalcap", "version": "1.2 (PyPI)", "file": "pycocoevalcap/tokenizer/"
            "ptbtokenizer.py, pycocoevalcap/cider/cider.py", "commit": "ad63453cfab57a81a02b2949b17a91fab1c3df77"}
    write("coco_ptb_tokens", cite, tokens, "PTBTokenizer (Java, CoreNLP 3.4.1) per caption")
    write("coco_cider", cite, corpora, "PTBTokenizer on gts and res, then Cider().compute_score (CIDEr-D)")


if __name__ == "__main__":
    main()
