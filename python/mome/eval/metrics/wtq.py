"""WikiTableQuestions accuracy: the official denotation evaluator (ppasupat/WikiTableQuestions evaluator.py 1.0.2)
as the DUE evaluator runs it for the DUE version of the dataset (``deval -m WTQ``, scorers/wtq_scorer.py, which reads
the targets' raw strings where the original reads CoreNLP's canonical values).

A denotation is a set of values; each string becomes a number if Python's ``int`` or ``float`` reads it (finite),
else a date if it is ``yyyy-mm-dd`` (``xx`` for an unknown field; a year alone is a number), else a string.
Strings are compared after `wtq_normalize`. The prediction is correct iff the two sets have the same size and every
target value matches some predicted value: equal normalised strings, or both numbers within 1e-6, or both dates
with the same (year, month, day).

Our records keep the answer list joined with ", " (the DUE converter), so both the reference and the prediction
are split on ", " into their items (a value that itself contains ", " is split on both sides alike).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import NamedTuple, Sequence

__all__ = ["wtq_normalize", "wtq_value", "check_denotation", "wtq_accuracy", "WTQ_SEPARATOR"]

WTQ_SEPARATOR = ", "

_CITATION = re.compile(r"((?<!^)\[[^\]]*\]|\[\d+\]|[•♦†‡*#+])*$")
_PAREN_TAIL = re.compile(r"(?<!^)( \([^)]*\))*$")
_QUOTED = re.compile(r'^"([^"]*)"$')


def wtq_normalize(text: str) -> str:
    """The evaluator's string normalisation: diacritics removed (NFKD, combining marks dropped), smart quotes and
    dashes → ASCII, then repeatedly: trailing citations (``[1]``, ``*``, ``†`` …) and trailing `` (…)`` removed and
    one pair of outer double quotes unwrapped; then one final period dropped, whitespace collapsed, lower-cased."""
    x = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")
    x = re.sub(r"[‘’´`]", "'", x)
    x = re.sub(r"[“”]", '"', x)
    x = re.sub(r"[‐‑‒–—−]", "-", x)
    while True:
        before = x
        x = _CITATION.sub("", x.strip())
        x = _PAREN_TAIL.sub("", x.strip())
        x = _QUOTED.sub(r"\1", x.strip())
        if x == before:
            break
    if x.endswith("."):
        x = x[:-1]
    return re.sub(r"\s+", " ", x).lower().strip()


class Value(NamedTuple):
    kind: str          # "number", "date" or "string"
    key: object        # the amount, (year, month, day) or the normalised string: what set membership compares
    normalized: str    # wtq_normalize of the original string


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        amount = float(text)
    except ValueError:
        return None
    return amount if math.isfinite(amount) else None


def _date(text: str) -> tuple[int, int, int] | None:
    parts = text.lower().split("-")
    if len(parts) != 3:
        return None
    try:
        year = -1 if parts[0] in ("xx", "xxxx") else int(parts[0])
        month = -1 if parts[1] == "xx" else int(parts[1])
        day = -1 if parts[2] == "xx" else int(parts[2])
    except ValueError:
        return None
    if year == month == day == -1 or not (month == -1 or 1 <= month <= 12) or not (day == -1 or 1 <= day <= 31):
        return None
    return year, month, day


def wtq_value(text: str) -> Value:
    """A string as the evaluator reads it (module docstring)."""
    norm = wtq_normalize(text)
    amount = _number(text)
    if amount is None and (ymd := _date(text)) is not None:
        if ymd[1] == ymd[2] == -1:
            amount = ymd[0]
        else:
            return Value("date", ymd, norm)
    if amount is not None:
        # integral amounts are kept as int (the evaluator's 1e-6 rule), so 2 and 2.0 are one value
        return Value("number", int(amount) if abs(amount - round(amount)) < 1e-6 else float(amount), norm)
    return Value("string", norm, norm)


def _value_set(items: Sequence[str]) -> list[Value]:
    seen, out = set(), []
    for v in map(wtq_value, items):
        if (v.kind, v.key) not in seen:   # first one kept, as a Python set keeps it
            seen.add((v.kind, v.key))
            out.append(v)
    return out


def _matches(target: Value, pred: Value) -> bool:
    if target.normalized == pred.normalized:
        return True
    if target.kind == "number" and pred.kind == "number":
        return abs(target.key - pred.key) < 1e-6
    return target.kind == "date" and pred.kind == "date" and target.key == pred.key


def check_denotation(target_items: Sequence[str], predicted_items: Sequence[str]) -> bool:
    """True iff the predicted denotation is correct for the target one (both lists of raw strings)."""
    targets, preds = _value_set(target_items), _value_set(predicted_items)
    return len(targets) == len(preds) and all(any(_matches(t, p) for p in preds) for t in targets)


def wtq_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction's items (split on ``", "``) are a correct denotation for the first answer's items (the
    record's answer list; DUE's WTQ scorer reads the reference values only, not their variants), else 0.0."""
    if isinstance(answers, str):
        answers = [answers]
    if len(answers) == 0:
        raise ValueError("wtq_accuracy needs the reference answer")
    return float(check_denotation(answers[0].split(WTQ_SEPARATOR), prediction.split(WTQ_SEPARATOR)))
