"""ANLS for DocVQA and InfographicsVQA, as the official RRC evaluation script computes it (rrc.cvc.uab.es, DocVQA
tasks 1 and 3; the same function is in lmms-eval's `lmms_eval/api/metrics.py::anls`).

For a prediction o and the answers a_1..a_M:

    NL_i = Lev(norm(a_i), norm(o)) / max(|upper(a_i)|, |upper(o)|)       (0 when that length is 0)
    s    = 1 − min_i NL_i,  kept if s ≥ τ = 0.5, else 0                   (the dataset score is the mean of s)

with norm(x) = lower-case, strip, runs of whitespace collapsed to one space. Two details differ from the textbook
formula and from the `anls` PyPI package: a similarity of exactly 0.5 is kept ("abcd" vs "abxx" scores 0.5), and the
length in the denominator is that of the *raw* strings (upper-cased), not of the normalised ones, so extra spaces in
the prediction raise the denominator while the distance ignores them.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["levenshtein", "anls", "due_anls"]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], tau: float = 0.5) -> float:
    """Per-question ANLS (module docstring). An empty answer list raises ValueError (test splits whose answers are on
    the server cannot be scored here)."""
    if isinstance(answers, str):
        answers = [answers]
    if len(answers) == 0:
        raise ValueError("anls needs a non-empty list of answers")
    det = _norm(prediction)
    distances = []
    for ans in answers:
        length = max(len(ans.upper()), len(prediction.upper()))
        distances.append(levenshtein(_norm(ans), det) / length if length else 0.0)
    s = 1.0 - min(distances)
    return s if s >= tau else 0.0


def due_anls(prediction: str, answers: Sequence[str], ignore_case: bool = True) -> float:
    """ANLS as DUE's `AnlsScorer` computes it (``deval -m ANLS -i``; what UReader reported DocVQA and
    InfographicsVQA with): s = max_i (1 − Lev(o, a_i) / max(|o|, |a_i|)) on the raw strings (upper-cased with
    ``-i``; 1 for two empty strings), and s ≤ 0.5 scores 0. No stripping or whitespace collapsing."""
    if isinstance(answers, str):
        answers = [answers]
    if len(answers) == 0:
        raise ValueError("anls needs a non-empty list of answers")
    fold = str.upper if ignore_case else (lambda s: s)
    o = fold(prediction)
    best = max(_similarity(o, fold(a)) for a in answers)
    return 0.0 if best <= 0.5 else best


def _similarity(a: str, b: str) -> float:
    return 1.0 - levenshtein(a, b) / max(len(a), len(b)) if (a or b) else 1.0
