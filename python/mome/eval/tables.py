"""The paper's result tables from per-dataset scores (PAPER.md, "The multitask benchmark"; Tables 1–2 of the paper).

    group score  G_g = (1 / |D_g|) Σ_{d ∈ D_g} score_d          (a group's score is the mean of its datasets)
    Avg.         = (1 / |groups present|) Σ_g G_g              (the mean of the group scores, not of all datasets)

so a group with many datasets (General has eight) weighs as much in Avg. as one with few. Groups with no dataset are
left out of Avg. (and shown as "–"), so a partial run still gets a well-defined average of what it measured.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

from mome.data.records import GROUPS

__all__ = ["GROUP_TITLES", "aggregate", "markdown_table", "write_tables"]

GROUP_TITLES = {"general": "Gen.", "rec": "REC", "reg": "REG", "document": "Doc."}


def aggregate(scores: Mapping[str, float], groups: Mapping[str, str],
              metrics: Mapping[str, str] | None = None, evaluators: Mapping[str, str] | None = None) -> dict:
    """Per-dataset scores (paper units, e.g. 130.8 CIDEr, 57.2 %) → the table's numbers.

    `scores` maps a dataset name (e.g. ``"refcoco-testA"``) to its score, `groups` maps it to one of
    ``general, rec, reg, document``, `metrics` optionally to its metric name and `evaluators` to the evaluator that
    produced the score (`mome.eval.metrics.describe`; both shown in the table). Returns::

        {"datasets": {name: {"group": g, "score": s, "metric": m?, "evaluator": e?}},   # in the order of `scores`
         "groups": {g: mean of its datasets},                          # only groups present, in GROUPS order
         "avg": mean of the group scores (None if there are none)}
    """
    datasets: dict[str, dict] = {}
    members: dict[str, list[float]] = {g: [] for g in GROUPS}
    for name, value in scores.items():
        if name not in groups:
            raise ValueError(f"aggregate: dataset {name!r} has no group")
        group = groups[name]
        if group not in members:
            raise ValueError(f"aggregate: dataset {name!r} has group {group!r}, not one of {GROUPS}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"aggregate: dataset {name!r} has a non-finite score {value!r}")
        datasets[name] = {"group": group, "score": value}
        if metrics is not None and name in metrics:
            datasets[name]["metric"] = metrics[name]
        if evaluators is not None and name in evaluators:
            datasets[name]["evaluator"] = evaluators[name]
        members[group].append(value)
    group_scores = {g: sum(v) / len(v) for g, v in members.items() if v}
    avg = sum(group_scores.values()) / len(group_scores) if group_scores else None
    return {"datasets": datasets, "groups": group_scores, "avg": avg}


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown_table(result: Mapping) -> str:
    """The summary row as in the paper's Tables 1–2 (Gen. / REC / REG / Doc. / Avg.), then one table per group with
    its datasets (metric, score with 2 decimals, and the evaluator that produced it when known)."""
    heads = [GROUP_TITLES[g] for g in GROUPS] + ["Avg."]
    row = [_fmt(result["groups"].get(g)) for g in GROUPS] + [_fmt(result["avg"])]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---:|" * len(heads), "| " + " | ".join(row) + " |"]
    for g in GROUPS:
        names = [n for n, d in result["datasets"].items() if d["group"] == g]
        if not names:
            continue
        lines += ["", f"**{GROUP_TITLES[g]}** (mean {_fmt(result['groups'][g])})", "",
                  "| dataset | metric | score | evaluator |", "|---|---|---:|---|"]
        lines += [f"| {n} | {d.get('metric', '')} | {_fmt(d['score'])} | {d.get('evaluator', '')} |"
                  for n, d in ((n, result["datasets"][n]) for n in names)]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    # A reader (or a crashed run) never sees a half-written file: write a temp file beside it, then rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_tables(result: Mapping, out_dir: str | os.PathLike, name: str = "results") -> tuple[Path, Path]:
    """Write `result` (from `aggregate`) as ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``, each atomically.
    Returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    _write_atomic(json_path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(md_path, markdown_table(result))
    return json_path, md_path
