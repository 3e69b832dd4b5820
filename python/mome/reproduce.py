"""`python -m mome.reproduce`: every ablation row of the paper's Tables 1 and 2, scaled to the tiny preset and the
synthetic benchmark, over several seeds; the tables in the paper's layout, bar charts and routing figures.

    python -m mome.reproduce all [--jobs 2]                       # both tables, seeds 0, 1, 2, into runs/reproduce
    python -m mome.reproduce table1 --seeds 0 --rows 't1_clip*,t1_move_adt_router'
    python -m mome.reproduce table2 --out runs/rep2 train.stage1.steps=500 --dry-run

A row is one file of configs/ablations/ (t1_*: Table 1, t2_*: Table 2). Its run is the embedded default run
(`mome.train.DEFAULT_RUN`: tiny preset, synthetic benchmark) with only the row's ablation switches taken from the file
(`SWITCHES`), then `REPRODUCE_BUDGET`, the seed (train.seed, model.seed) and the trailing key=value overrides. Each
(row, seed) is `python -m mome.train --config <out>/runs/<row>/seed<s>/reproduce.yaml --resume auto` (one thread;
`--jobs N` runs N at a time), its output in that folder's train.log. A run whose eval/final.json exists is not run
again, so rerunning resumes; a failed run is reported with its log and the others go on (exit status 1 at the end). Rows with the same resolved config (e.g.
t2_clip_adapter = t1_clip_avgpool) share one run, in the folder of the first in paper order.

Writes into --out: <table>.md/.json/.png for table1 and/or table2 (`all`: both, plus reproduce.md and reproduce.json),
routing/<row>_vision_importance.png (Fig. 4, soft-router rows) and routing/<row>_language_load.png (Fig. 5, MoLE
rows), averaged over seeds. docs/reproduce.md has the row mapping and the JSON schema.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mome.cli import UsageError, need_dir, parse, run
from mome.configtree import parse_overrides

__all__ = ["REPRODUCE_BUDGET", "ROWS", "SWITCHES", "load_rows", "row_overrides", "plan", "summarize", "main"]

SCHEMA = "mome.reproduce/1"
ABLATIONS = Path(__file__).resolve().parents[2] / "configs" / "ablations"

# Train overrides applied to every row so that one row-seed takes about 1–2 min on 2 CPU cores (two at a time). The one
# place to tune. Every test record is read (100 for REC and REG, 33–60 for the others): with 30 per dataset, one REC
# answer moved a row's REC by 3.3 points.
REPRODUCE_BUDGET: dict = {
    "train.stage1.steps": 250,
    "train.stage1.warmup_steps": 25,
    "train.stage2.steps": 100,
    "train.stage2.warmup_steps": 10,
    "data.eval_limit": None,  # test records per dataset (None: all)
    "train.evaluate_untrained": False,  # the tables use the trained model only
    "train.threads": 1,  # one thread per run: the same numbers with any --jobs
}

# The ablation switches a row takes from its file; everything else (sizes, paths, batches) stays the tiny default's.
SWITCHES = ("model.vision.use", "model.vision.aggregator", "model.vision.router", "model.mole.router",
            "model.mole.gumbel", "model.mole.load_balance", "train.stages")

# stem: (label, the paper's Avg.) in the paper's row order; the numbers are PAPER.md "Results to reproduce" (Tables 1
# and 2 of the paper). A file not listed here still runs, after these rows, labelled by its stem.
ROWS: dict[str, tuple[str, float]] = {
    "t1_clip_avgpool": ("CLIP + AvgPool", 56.52),
    "t1_dino_avgpool": ("DINOv2 + AvgPool", 53.82),
    "t1_pix2struct_avgpool": ("Pix2Struct + AvgPool", 39.79),
    "t1_move_avgpool_add": ("MoVE: AvgPool + addition", 58.91),
    "t1_move_adt_add": ("MoVE: ADT + addition", 62.88),
    "t1_move_adt_router": ("MoVE: ADT + router", 69.39),
    "t2_clip_adapter": ("CLIP + Adapter", 57.32),
    "t2_clip_mole_it": ("CLIP + MoLE-IT", 58.22),
    "t2_clip_mole_t": ("CLIP + MoLE-T", 57.91),
    "t2_clip_mole_i": ("CLIP + MoLE-I", 58.94),
    "t2_clip_mole_i_gs": ("CLIP + MoLE-I + GS", 57.38),
    "t2_clip_mole_i_lb": ("CLIP + MoLE-I + LB", 57.92),
    "t2_move_adapter": ("MoVE + Adapter", 69.39),
    "t2_mome": ("MoVE + MoLE-I (MoME)", 69.94),
}
TABLES = {"table1": ("t1_", "Table 1: MoVE, vision experts and their aggregation (single adapter)"),
          "table2": ("t2_", "Table 2: MoLE, language experts and their routers")}
GROUPS = ("general", "rec", "reg", "document", "avg")  # the keys of eval/final.json's summary
TITLES = ("Gen.", "REC", "REG", "Doc.", "Avg.")
# Overrides the runner sets itself: the user gives these as flags.
OWN_KEYS = {"train.out_dir": "--out", "train.name": "--out", "train.seed": "--seeds", "model.seed": "--seeds"}


@dataclass
class Row:
    stem: str
    table: str
    label: str
    paper_avg: float | None
    switches: dict  # dotted key -> value, the row's ablation switches only


@dataclass
class Run:
    row: Row
    seed: int
    overrides: list[str]  # key=value, in the order applied
    config: dict  # the resolved run config (mome.train.run_config_yaml as a tree)
    run_dir: Path
    weight: int  # optimizer steps it trains: the ETA's unit of work
    shared_with: str | None = None  # the row whose run folder this is, when it is another row's (same config)


# ---- rows and runs ---------------------------------------------------------------------------------------------------

def row_overrides(path: Path) -> dict:
    """The ablation switches of one row file (`SWITCHES` present in it), as {dotted key: value}."""
    tree = yaml.safe_load(path.read_text()) or {}
    out = {}
    for key in SWITCHES:
        node = tree
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, dict) else None
        if node is not None:
            out[key] = node
    return out


def load_rows(folder: Path = ABLATIONS, tables=tuple(TABLES)) -> list[Row]:
    """The rows of `tables` in paper order (the known ones first, then unknown files by name); a listed row whose
    file is missing is an error naming the file."""
    rows = []
    for table in tables:
        prefix = TABLES[table][0]
        files = {p.stem: p for p in sorted(folder.glob(f"{prefix}*.yaml"))}
        for stem in (s for s in ROWS if s.startswith(prefix)):
            if stem not in files:
                raise UsageError(f"{folder / (stem + '.yaml')}: missing (the row {ROWS[stem][0]!r} of "
                                 f"Table {table[-1]})")
        for stem in [s for s in ROWS if s.startswith(prefix)] + [s for s in files if s not in ROWS]:
            label, paper = ROWS.get(stem, (stem, None))
            rows.append(Row(stem, table, label, paper, row_overrides(files[stem])))
    return rows


def _fmt(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def _resolve(overrides: list[str]) -> tuple[dict, object]:
    from mome.train import resolve_config, run_config_yaml

    run_cfg, model_cfg = resolve_config(None, overrides)
    return yaml.safe_load(run_config_yaml(run_cfg, model_cfg)), model_cfg


def _config_diff(a: dict, b: dict, prefix: str = "") -> str | None:
    """Where two run configs differ ("key: a vs b"), None for the same run (train.out_dir and train.name aside)."""
    for k in dict.fromkeys([*a, *b]):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            if (d := _config_diff(x, y, f"{prefix}{k}.")) is not None:
                return d
        elif x != y and f"{prefix}{k}" not in ("train.out_dir", "train.name"):
            return f"{prefix}{k}: {x!r} vs {y!r}"
    return None


def plan(rows: list[Row], all_rows: list[Row], seeds: list[int], user: list[str], out: Path) -> list[Run]:
    """Every (row, seed) of `rows` with its overrides and resolved config (bad overrides fail here, before any run).
    A row whose config equals an earlier row's in `all_rows` (paper order) runs in that row's folder."""
    for key, value in parse_overrides(user):
        if key in OWN_KEYS:
            raise UsageError(f"override {key}={value}: set by {OWN_KEYS[key]}, not as an override")
    budget = [f"{k}={_fmt(v)}" for k, v in REPRODUCE_BUDGET.items()]
    resolved = {}  # (stem, seed) -> (overrides, config tree, model config)
    for row in all_rows:
        for seed in seeds:
            o = ([f"{k}={_fmt(v)}" for k, v in row.switches.items()] + budget + list(user)
                 + [f"train.seed={seed}", f"model.seed={seed}"])
            try:
                resolved[row.stem, seed] = (o, *_resolve(o))
            except ValueError as e:  # a row not asked for need not take the overrides
                if row in rows:
                    raise UsageError(f"{row.stem}: {e}") from None
    runs = []
    for row in rows:
        for seed in seeds:
            o, config, model_cfg = resolved[row.stem, seed]
            owner = next(r for r in all_rows if (r.stem, seed) in resolved
                         and _config_diff(resolved[r.stem, seed][1], config) is None)
            run_dir = out / "runs" / owner.stem / f"seed{seed}"
            config["train"].update(out_dir=str(run_dir.parent), name=run_dir.name)
            stages = [s for s in config["train"]["stages"] if s == 1 or model_cfg.num_experts > 1]
            runs.append(Run(row, seed, o + [f"train.out_dir={run_dir.parent}", f"train.name={run_dir.name}"],
                            config, run_dir, sum(config["train"][f"stage{s}"]["steps"] for s in stages),
                            None if owner is row else owner.stem))
    for r in runs:  # a finished run made with another config would mix budgets in one table
        saved = r.run_dir / "config.yaml"
        diff = _config_diff(yaml.safe_load(saved.read_text()), r.config) if saved.is_file() else None
        if diff is not None:
            raise UsageError(f"--out {out}: {r.run_dir} was made with another config ({diff}, there vs now); "
                             "choose another --out or remove that folder")
    return runs


# ---- running ---------------------------------------------------------------------------------------------------------

def _write_atomic(path: Path, write) -> None:
    """`write(tmp)` into a temp file beside `path` (same suffix, so matplotlib picks the format), fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the temp file, not for the result
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def _finished(r: Run) -> dict | None:
    final = r.run_dir / "eval" / "final.json"
    if not final.is_file():
        return None
    record = r.run_dir / "reproduce_run.json"  # our wall time of the run (absent if mome.train ran it by hand)
    wall = json.loads(record.read_text())["wall_s"] if record.is_file() else None
    return {"final": final, "wall_s": wall}


def _prepare_synth(runs: list[Run], bar) -> None:
    """Generate the synthetic benchmark(s) the runs read, once, before any run starts: parallel runs must not each
    find it missing and write it at the same time."""
    from mome.data import synth

    wanted = {(d["synth_dir"], d["synth_train"], d["synth_test"], d["synth_seed"])
              for d in (r.config["data"] for r in runs) if "synth" in (d["train"], d["test"])}
    for folder, n_train, n_test, seed in sorted(wanted):
        synth.ensure(folder, n_train, n_test, seed, lambda msg: bar.write(msg, file=sys.stderr))


def execute(runs: list[Run], jobs: int = 1) -> list[Run]:
    """Run what is not finished, in order, `jobs` processes at a time; returns the failed runs. Every run has
    ``train.threads=1`` (`REPRODUCE_BUDGET`), so its numbers do not depend on `jobs`."""
    from tqdm import tqdm

    failed, todo = [], list({r.run_dir: r for r in reversed(runs)}.values())[::-1]  # one per run folder
    done_weight = done_wall = 0.0
    bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True, desc="reproduce")
    pending = [r for r in todo if not _finished(r)]
    bar.update(len(todo) - len(pending))
    _prepare_synth(pending, bar)
    active: dict = {}  # Popen -> (run, start, log file)

    def start(r: Run) -> None:
        r.run_dir.mkdir(parents=True, exist_ok=True)
        config = r.run_dir / "reproduce.yaml"
        _write_text(config, yaml.safe_dump(r.config, sort_keys=False))
        cmd = [sys.executable, "-m", "mome.train", "--config", str(config), "--resume", "auto"]
        log = open(r.run_dir / "train.log", "a", encoding="utf-8")
        log.write(f"== mome.reproduce {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n")
        log.flush()
        active[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)] = (r, time.perf_counter(), log)

    while pending or active:
        while pending and len(active) < jobs:
            start(pending.pop(0))
        bar.set_description(" | ".join(f"{r.row.label} · seed {r.seed}" for r, _, _ in active.values()))
        done = [proc for proc in active if proc.poll() is not None]
        if not done:
            time.sleep(0.5)
            continue
        for proc in done:
            r, t0, log = active.pop(proc)
            log.close()
            wall = time.perf_counter() - t0
            if proc.returncode == 0 and (r.run_dir / "eval" / "final.json").is_file():
                _write_text(r.run_dir / "reproduce_run.json", json.dumps({"wall_s": wall}) + "\n")
                avg = json.loads((r.run_dir / "eval" / "final.json").read_text())["summary"].get("avg")
                bar.write(f"{r.row.label} seed {r.seed}: Avg {avg:.2f} in {wall:.0f} s", file=sys.stderr)
                done_weight, done_wall = done_weight + r.weight, done_wall + wall
            else:
                failed.append(r)
                bar.write(f"FAILED {r.row.label} seed {r.seed} (exit status {proc.returncode}): see "
                          f"{r.run_dir / 'train.log'}", file=sys.stderr)
            left = sum(x.weight for x in pending) + sum(x.weight for x, _, _ in active.values())
            if done_weight:  # tqdm's ETA counts runs; this one weighs them by their optimizer steps
                bar.set_postfix_str(f"eta by steps {left * done_wall / done_weight / jobs / 60:.1f} min")
            bar.update()
    bar.close()
    return failed


# ---- tables and figures ----------------------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    return (statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None)


def summarize(runs: list[Run], table: str, seeds: list[int], budget: dict, out: Path) -> dict:
    """The table's JSON (docs/reproduce.md, schema mome.reproduce/1) from the finished runs; writes the routing
    figures of its soft-router and MoLE rows into <out>/routing/."""
    from mome import analyze
    from mome.eval.harness import dataset_key

    rows, routing = [], {}
    for stem in dict.fromkeys(r.row.stem for r in runs if r.row.table == table):
        mine = [r for r in runs if r.row.stem == stem]
        row, entries, predictions = mine[0].row, [], []
        for r in mine:
            done = _finished(r)
            if done is None:
                continue
            final = json.loads(done["final"].read_text())
            entries.append({"seed": r.seed, "scores": {g: final["summary"].get(g) for g in GROUPS},
                            "wall_s": done["wall_s"], "run_dir": str(r.run_dir)})
            predictions += [{**p, "dataset": dataset_key(p)} for p in final["predictions"]]
        stats = {g: _mean_std([e["scores"][g] for e in entries if e["scores"][g] is not None]) for g in GROUPS}
        rows.append({"row": stem, "label": row.label, "paper_avg": row.paper_avg, "overrides": row.switches,
                     "shared_with": mine[0].shared_with, "runs": entries,
                     "mean": {g: m for g, (m, _) in stats.items()}, "std": {g: s for g, (_, s) in stats.items()}})
        model, figures = mine[0].config["model"], {}
        if predictions and model["vision"]["router"] == "soft" and len(model["vision"]["use"]) > 1:  # Fig. 4
            figures["vision_importance"] = analyze.vision_importance(predictions)
        if predictions and model["mole"]["router"] not in ("none", "single") and 2 in mine[0].config["train"]["stages"]:
            figures["language_load"] = analyze.language_load(predictions, model["mole"]["num_experts"])  # Fig. 5
        for name, data in figures.items():
            path = out / "routing" / f"{stem}_{name}.png"
            plot = getattr(analyze, f"plot_{name}")
            _write_atomic(path, lambda p: plot(data, p))
            routing.setdefault(stem, {"files": []})[name] = data
            routing[stem]["files"].append(str(path.relative_to(out)))
    return {"schema": SCHEMA, "table": table, "commit": _commit(), "machine": _machine(), "seeds": seeds,
            "budget": budget, "wall_s": _wall(rows), "rows": rows, "routing": routing}


def _wall(rows: list[dict]) -> float:
    """The summed wall time of the distinct runs behind `rows` (a shared run counts once)."""
    return sum({e["run_dir"]: e["wall_s"] or 0.0 for row in rows for e in row["runs"]}.values())


def _cell(mean, std, bold=False) -> str:
    text = "—" if mean is None else f"{mean:.2f} ± {'—' if std is None else f'{std:.2f}'}"
    return f"**{text}**" if bold else text


def markdown(result: dict) -> str:
    """The table in the paper's layout: Gen. / REC / REG / Doc. / Avg. as mean ± std over seeds, the best Avg. in
    bold, the paper's Avg. and the number of seeds finished."""
    means = [r["mean"]["avg"] for r in result["rows"] if r["mean"]["avg"] is not None]
    best = max(means) if means else None
    lines = [f"## {TABLES[result['table']][1]}", "",
             f"tiny preset, synthetic benchmark; budget {' '.join(f'{k}={v}' for k, v in result['budget'].items())}; "
             f"mean ± sample std over seeds {', '.join(map(str, result['seeds']))}; "
             f"commit {result['commit'] or 'unknown'}.", "",
             "| Method | " + " | ".join(TITLES) + " | Paper Avg. | seeds |", "|---|" + "---:|" * (len(TITLES) + 2)]
    for r in result["rows"]:
        cells = [_cell(r["mean"][g], r["std"][g], g == "avg" and best is not None and r["mean"][g] == best)
                 for g in GROUPS]
        mark = "†" if r["shared_with"] else ""
        paper = "—" if r["paper_avg"] is None else f"{r['paper_avg']:.2f}"
        lines.append(f"| {r['label']}{mark} | " + " | ".join(cells)
                     + f" | {paper} | {len(r['runs'])}/{len(result['seeds'])} |")
    lines += [f"\n† {r['label']}: the same run as {ROWS.get(r['shared_with'], (r['shared_with'],))[0]} (the same "
              "config at this scale)" for r in result["rows"] if r["shared_with"]]
    files = [f for d in result["routing"].values() for f in d["files"]]
    if files:
        lines += ["", "Routing, averaged over seeds: " + ", ".join(f"[{Path(f).stem}]({f})" for f in files)]
    return "\n".join(lines) + "\n"


def plot_table(result: dict, path: Path) -> None:
    """Grouped bars: per row its five scores (mean over seeds, sample-std error bars); the paper's Avg. as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mome.analyze import GROUP_COLORS

    rows = result["rows"]
    colors = [GROUP_COLORS[g] for g in GROUPS[:-1]] + ["black"]
    x, width = np.arange(len(rows)), 0.8 / len(GROUPS)
    fig, ax = plt.subplots(figsize=(2 + 1.3 * len(rows), 4.2))
    for i, (g, title) in enumerate(zip(GROUPS, TITLES)):
        mean = [r["mean"][g] or 0.0 for r in rows]
        std = [r["std"][g] or 0.0 for r in rows]
        ax.bar(x + (i - 2) * width, mean, width, yerr=std, capsize=2, color=colors[i], label=title)
    paper = [(xi + 2 * width, r["paper_avg"]) for xi, r in zip(x, rows) if r["paper_avg"] is not None]
    if paper:
        ax.scatter(*zip(*paper), marker="o", facecolors="white", edgecolors="black", zorder=3, label="paper Avg.")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.set_title(TABLES[result["table"]][1], fontsize=10)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_COMMIT: list = []


def _commit() -> str | None:
    """The git HEAD when the program started (the code the runs used, not the HEAD when the tables are written)."""
    if not _COMMIT:
        _COMMIT.append(_git_head())
    return _COMMIT[0]


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": importlib.metadata.version("torch")}


# ---- the program -----------------------------------------------------------------------------------------------------

def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: seeds must be distinct and >= 0")
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mome.reproduce", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("table", choices=["table1", "table2", "all"], help="which table(s) to reproduce")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--rows", default="*", help="comma-separated fnmatch patterns on row stems (default: all)")
    p.add_argument("--ablations", default=str(ABLATIONS), help="the folder of row files (default configs/ablations)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time (default 1); each run uses one thread, so e.g. --jobs 2 on 2 cores")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their overrides, run nothing")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every row, after the budget")
    args = parse(p, argv)
    _commit()
    seeds = _seeds(args.seeds)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    tables = list(TABLES) if args.table == "all" else [args.table]
    all_rows = load_rows(need_dir("--ablations", args.ablations))
    patterns = [s.strip() for s in args.rows.split(",") if s.strip()]
    rows = [r for r in all_rows if r.table in tables and any(fnmatch.fnmatchcase(r.stem, pt) for pt in patterns)]
    if not rows:
        raise UsageError(f"--rows {args.rows!r}: matches no row of {args.table} "
                         f"({', '.join(r.stem for r in all_rows if r.table in tables)})")
    out = Path(args.out)
    runs = plan(rows, all_rows, seeds, args.overrides, out)
    if args.dry_run:
        for row in rows:
            mine = [r for r in runs if r.row is row]
            print(f"{row.stem}: {row.label} ({row.table})\n    {' '.join(mine[0].overrides[:-4])}")
            for r in mine:
                state = f"the run of {r.shared_with}: same config" if r.shared_with else "to run"
                print(f"    seed {r.seed} (train.seed, model.seed): {r.run_dir} "
                      f"({'finished' if _finished(r) else state})")
        print(f"{len(rows)} rows × {len(seeds)} seeds = {len(runs)} runs, "
              f"{len({r.run_dir for r in runs if not _finished(r)})} to train")
        return 0
    start = time.perf_counter()
    failed = execute(runs, args.jobs)
    budget = {**REPRODUCE_BUDGET, **dict(parse_overrides(args.overrides))}  # what every row ran with
    results = {t: summarize(runs, t, seeds, budget, out) for t in tables if any(r.table == t for r in rows)}
    for t, result in results.items():
        _write_text(out / f"{t}.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        _write_text(out / f"{t}.md", markdown(result))
        _write_atomic(out / f"{t}.png", lambda path, result=result: plot_table(result, path))
    if args.table == "all":
        both = {k: v for k, v in next(iter(results.values())).items() if k not in ("table", "rows", "routing")}
        both.update(table="all", wall_s=_wall([row for r in results.values() for row in r["rows"]]), tables=results)
        _write_text(out / "reproduce.json", json.dumps(both, indent=1, ensure_ascii=False) + "\n")
        _write_text(out / "reproduce.md", "# MoME ablations, reproduced at small scale\n\n"
                    + "\n".join(markdown(r) for r in results.values()))
    print("\n".join(markdown(r) for r in results.values()))
    print(f"{len(runs)} row-seeds ({len({r.run_dir for r in runs})} runs) in {time.perf_counter() - start:.0f} s; "
          f"{len(failed)} failed; written to {out}", file=sys.stderr)
    for r in failed:
        print(f"failed: {r.row.stem} seed {r.seed}: {r.run_dir / 'train.log'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.reproduce"))
