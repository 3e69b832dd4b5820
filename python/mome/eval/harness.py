"""Evaluation harness: batched generation over records, the paper's metric per dataset, its tables, and a summary
of the routing (which vision experts and which MoLE experts each dataset used).

`evaluate` works on one process or shards the records across ranks (rank r takes records r, r+W, …). Under
torchrun (a process group is initialised) rank 0 gathers every shard and scores; predictions are put back in the
records' order, so predictions and scores do not depend on the world size. Without a process group (shards run as
separate jobs) each rank returns its shard's predictions; `merge_shards` + `score_predictions` finish the job.

Greedy decoding by default, so results are reproducible. With sampling, `seed` fixes them for a given batch size
and world size (the model samples a batch with one generator, so the batch composition matters).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from mome.eval import metrics, tables

__all__ = ["evaluate", "predict", "merge_shards", "score_predictions", "write_results", "routing_summary",
           "collapse_warnings", "routing_text", "dataset_key", "load_benchmark", "limit_per_dataset", "load_model"]


def evaluate(model, records: list[dict], image_root, batch_size: int = 32, max_new_tokens: int = 32,
             progress: bool = True, do_sample: bool = False, seed: int = 0, on_missing: str = "error",
             rank: int = 0, world_size: int = 1, protocol: str = "official") -> dict:
    """Generate an answer for every record and score each dataset with its record's metric, by the evaluator
    `metrics.evaluator_for(metric, dataset, protocol)` names (the table says which).

    Returns {"scores": {dataset: score}, "summary": {"general"?, "rec"?, "reg"?, "document"?, "avg"},
    "table": tables.aggregate(...), "markdown": str, "routing": routing_summary(...), "routing_text": str,
    "predictions": [{"id", "dataset", "group", "prediction", "routing"}]} in the records' order. When sharded, only
    rank 0 gets the scores; the other ranks (and every rank without a process group) get {"predictions": ...}.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size = {world_size}), got {rank}")
    _check_ids(records)
    local = predict(model, records[rank::world_size], image_root, batch_size, max_new_tokens, progress=progress,
                    do_sample=do_sample, seed=seed, on_missing=on_missing, offset=rank, stride=world_size)
    num_experts = getattr(getattr(model, "config", None), "num_experts", None)
    if world_size == 1:
        return score_predictions(local, records, num_experts, protocol)
    if not _dist_ready():
        return {"predictions": local}
    merged = merge_shards(_all_gather(local, world_size), records)
    if rank != 0:
        return {"predictions": merged}
    return score_predictions(merged, records, num_experts, protocol)


def predict(model, records: list[dict], image_root, batch_size: int = 32, max_new_tokens: int = 32, *,
            progress: bool = True, do_sample: bool = False, seed: int = 0, on_missing: str = "error",
            offset: int = 0, stride: int = 1) -> list[dict]:
    """Batched generation over `records`: [{"id", "dataset", "group", "prediction", "routing"}] in their order
    (records whose image is missing or unreadable are left out when on_missing="skip").

    `offset`/`stride` say where these records sit in the full list (a shard r::W has offset r, stride W); with
    sampling, batch k's generator is seeded with `seed` + the full-list index of the batch's first record.
    """
    from tqdm import tqdm

    from mome.data import MultimodalDataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not records and stride == 1:
        raise ValueError("evaluate: no records")
    dataset = MultimodalDataset(records, image_root, on_missing=on_missing) if records else []
    predictions = []
    bar = tqdm(total=len(dataset), desc="evaluating" if stride == 1 else f"evaluating (shard {offset}/{stride})",
               disable=not progress or offset != 0, dynamic_ncols=True, mininterval=1.0, unit="rec")
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        items = [it for it in items if it is not None]
        if not items:
            continue
        prompts = [it["record"]["conversations"][0]["value"] for it in items]
        gens = model.generate([it["image"] for it in items], prompts, max_new_tokens=max_new_tokens,
                              do_sample=do_sample, seed=seed + offset + start * stride if do_sample else None)
        for it, g in zip(items, gens):
            rec = it["record"]
            predictions.append({"id": rec["id"], "dataset": rec["dataset"], "group": rec["group"],
                                "prediction": g.text.strip(), "routing": g.routing})
        bar.update(len(items))
    bar.close()
    return predictions


def merge_shards(parts: list[list[dict]], records: list[dict]) -> list[dict]:
    """The predictions of all shards, in the order of `records` (each shard's list as `predict` returned it)."""
    order = {r["id"]: i for i, r in enumerate(records)}
    merged = [p for part in parts for p in part]
    unknown = [p["id"] for p in merged if p["id"] not in order]
    if unknown:
        raise ValueError(f"merge_shards: predictions for ids not in the records, e.g. {unknown[0]!r}")
    if len({p["id"] for p in merged}) != len(merged):
        raise ValueError("merge_shards: a record was predicted by more than one shard")
    return sorted(merged, key=lambda p: order[p["id"]])


def _check_ids(records: list[dict]) -> None:
    if not records:
        raise ValueError("evaluate: no records")
    seen = set()
    for r in records:
        if r["id"] in seen:
            raise ValueError(f"evaluate: record id {r['id']!r} occurs more than once; ids must be unique")
        seen.add(r["id"])


def score_predictions(predictions: list[dict], records: list[dict], num_experts: int | None = None,
                      protocol: str = "official") -> dict:
    """Scores, tables and routing summary from predictions (as `predict` returns them) and their records."""
    by_id = {r["id"]: r for r in records}
    per_dataset: dict[str, tuple[list[str], list[dict]]] = defaultdict(lambda: ([], []))
    for p in predictions:
        rec = by_id[p["id"]]
        key = dataset_key(rec)
        per_dataset[key][0].append(p["prediction"])
        per_dataset[key][1].append(rec)
    scores, groups, metric_names, evaluators = {}, {}, {}, {}
    for key, (preds, recs) in per_dataset.items():
        metric = recs[0]["metric"]
        scores[key] = metrics.score(metric, preds, recs, protocol)
        groups[key] = recs[0]["group"]
        metric_names[key] = metric
        evaluators[key] = metrics.describe(metric, recs[0].get("dataset"), protocol)
    table = tables.aggregate(scores, groups, metric_names, evaluators)
    summary = {**table["groups"], "avg": table["avg"]}
    routing = routing_summary(predictions, num_experts=num_experts)
    return {"scores": scores, "summary": summary, "table": table, "markdown": tables.markdown_table(table),
            "routing": routing, "routing_text": routing_text(routing), "predictions": predictions}


def dataset_key(rec: dict) -> str:
    """The name a dataset gets in the tables: REC and REG records of RefCOCO share a dataset name, so those two
    groups get a suffix, as the paper's tables keep them apart. Works on records and on predictions."""
    return rec["dataset"] if rec["group"] not in ("rec", "reg") else f"{rec['dataset']} ({rec['group'].upper()})"


def routing_summary(predictions: list[dict], threshold: float = 0.95, min_samples: int = 20,
                    num_experts: int | None = None) -> dict:
    """Per dataset (named as in the tables): mean soft-router weight and mean importance (Fig. 4) per encoder, and
    the share of samples routed to each MoLE expert per layer (Figs. 5, 8); experts never chosen are left out.

    `collapsed` lists warnings for routers where one expert takes ≥ `threshold` over all samples: the vision router
    (mean weight) and each MoLE layer (share of samples). Fewer than `min_samples` samples give no warning."""
    per = defaultdict(lambda: {"n": 0, "group": None, "vision": defaultdict(float), "importance": defaultdict(float),
                               "language": defaultdict(lambda: defaultdict(int))})
    for p in predictions:
        r = p["routing"]
        d = per[dataset_key(p)]
        d["n"] += 1
        d["group"] = p["group"]
        for enc, w in r["vision"].items():
            d["vision"][enc] += w
        for enc, w in r["vision_importance"].items():
            d["importance"][enc] += w
        for layer, e in enumerate(r["language"] or []):
            d["language"][layer][e] += 1
    out = {}
    for name, d in per.items():
        n = d["n"]
        out[name] = {
            "samples": n,
            "group": d["group"],
            "vision_weight": {k: v / n for k, v in d["vision"].items()},
            "vision_importance": {k: v / n for k, v in d["importance"].items()},
            "language_load": {str(layer): {str(e): c / n for e, c in sorted(counts.items())}
                              for layer, counts in sorted(d["language"].items())},
        }
    return {"datasets": out, "collapsed": collapse_warnings(predictions, threshold, min_samples, num_experts)}


def collapse_warnings(predictions: list[dict], threshold: float = 0.95, min_samples: int = 20,
                      num_experts: int | None = None) -> list[str]:
    """Warnings for routers where one expert takes ≥ `threshold` of everything (see `routing_summary`).
    `num_experts` (MoLE's K, when known): with K = 1 the MoLE layers are not checked."""
    warnings = []
    n = len(predictions)
    if n < max(min_samples, 1):
        return warnings
    encs = list(predictions[0]["routing"]["vision"])
    weights_vary = any(abs(w - 1.0) > 1e-9 for p in predictions for w in p["routing"]["vision"].values())
    if len(encs) > 1 and weights_vary:  # addition (all weights 1) has no router to collapse
        mean = {e: sum(p["routing"]["vision"][e] for p in predictions) / n for e in encs}
        top = max(mean, key=mean.get)
        if mean[top] >= threshold:
            warnings.append(f"vision router: {top} takes {100 * mean[top]:.1f}% of the weight over {n} samples")
    layers = predictions[0]["routing"]["language"]
    if num_experts is not None and num_experts <= 1:  # a single adapter (stage 1) has nothing to route
        layers = None
    for layer in range(len(layers or [])):
        counts = defaultdict(int)
        for p in predictions:
            counts[p["routing"]["language"][layer]] += 1
        e, c = max(counts.items(), key=lambda kv: kv[1])
        if c / n >= threshold:
            warnings.append(f"MoLE router of layer {layer}: expert {e} takes {100 * c / n:.1f}% of {n} samples")
    return warnings


def routing_text(routing: dict) -> str:
    """The routing summary as a small markdown table (vision importance shares and the layer-0 MoLE load)."""
    datasets = routing["datasets"]
    if not datasets:
        return ""
    encs = list(next(iter(datasets.values()))["vision_weight"])
    lines = ["routing (per dataset): soft-router weight per encoder | importance share | MoLE expert load (layer 0)",
             "| dataset | " + " | ".join(f"w({e})" for e in encs) + " | " + " | ".join(f"imp({e})" for e in encs)
             + " | experts (layer 0) |",
             "|---|" + "---:|" * (2 * len(encs)) + "---|"]
    for name, d in sorted(datasets.items()):
        imp = d["vision_importance"]
        total = sum(imp.values()) or 1.0
        load = d["language_load"].get("0", {})
        load_s = " ".join(f"{e}:{100 * s:.0f}%" for e, s in load.items()) or "–"
        lines.append(f"| {name} | " + " | ".join(f"{d['vision_weight'][e]:.2f}" for e in encs) + " | "
                     + " | ".join(f"{imp[e] / total:.2f}" for e in encs) + f" | {load_s} |")
    for w in routing["collapsed"]:
        lines.append(f"WARNING: router collapse: {w}")
    return "\n".join(lines)


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _all_gather(predictions: list[dict], world_size: int) -> list[list[dict]]:
    import torch.distributed as dist

    if dist.get_world_size() != world_size:
        raise ValueError(f"evaluate: world_size = {world_size} but the process group has {dist.get_world_size()}")
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, predictions)
    return gathered


def write_results(result: dict, out_dir, tag: str) -> tuple[Path, Path]:
    """`<out_dir>/<tag>.json` (summary, scores, table, routing, predictions, and `meta` when the result has it, e.g.
    the command line's settings) and `<tag>.md`, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {k: result[k] for k in ("meta", "summary", "scores", "table", "routing", "predictions") if k in result}
    md = f"# {tag}\n\n{result['markdown']}\n\n{result['routing_text']}\n"
    paths = (out / f"{tag}.json", out / f"{tag}.md")
    for path, text in zip(paths, (json.dumps(payload, indent=1, ensure_ascii=False), md)):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return paths


# ---- inputs shared by `python -m mome.eval` and `python -m mome.analyze` ---------------------------------------------

SYNTH_DIR = "data/synth"  # the same cache folder as `python -m mome.train` (data.synth_dir)


def load_benchmark(data: str, image_root=None, limit: int | None = None, synth_dir=SYNTH_DIR, synth_n: int = 2000,
                   is_main: bool = True, barrier=None) -> tuple[list[dict], Path]:
    """(test records, image root) for a data argument: ``synth`` (the synthetic benchmark's test split in
    `synth_dir`, generated there with `synth_n` train + `synth_n` / 5 test records on first use, by the main process
    only; `barrier` is then called so the other processes wait for it), a records folder (``<dir>/test.jsonl``,
    images under ``<dir>``) or a .json / .jsonl records file (images under its folder). `image_root` overrides the
    image folder; `limit` keeps the first `limit` records of every dataset."""
    from mome.data import load_records

    if data == "synth":
        folder = Path(synth_dir)
        if is_main and not (folder / "test.jsonl").is_file():
            from mome.data import synth

            print(f"generating the synthetic benchmark in {folder} (first use) ...", file=sys.stderr, flush=True)
            synth.generate(folder, n_train=synth_n, n_test=synth_n // 5)
        if barrier is not None:
            barrier()
        path = folder / "test.jsonl"
    else:
        path = Path(data)
        if path.is_dir():
            if not (path / "test.jsonl").is_file():
                raise FileNotFoundError(f"--data {data!r} is a folder without a test.jsonl")
            path = path / "test.jsonl"
        elif not path.is_file():
            raise FileNotFoundError(f"--data {data!r}: no such records file or folder")
    root = Path(image_root) if image_root is not None else path.parent
    if not root.is_dir():
        raise FileNotFoundError(f"image root {str(root)!r} is not a folder")
    records = load_records(path)
    if not records:
        raise ValueError(f"{path} holds no records")
    return limit_per_dataset(records, limit), root


def limit_per_dataset(records: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` records of every (dataset, group), in their original order (all when limit is None)."""
    if limit is None:
        return records
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    seen: dict = defaultdict(int)
    out = []
    for r in records:
        key = (r["dataset"], r["group"])
        if seen[key] < limit:
            seen[key] += 1
            out.append(r)
    return out


def load_model(model_dir=None, preset: str | None = None, overrides: list[str] | None = None, device="cpu"):
    """A MoME from a saved model folder (`save_pretrained`, e.g. runs/<name>/stage2/final) or a training checkpoint
    folder, or a fresh one from a preset (its weights are fixed by the config's seed)."""
    from mome.model import MoME, MoMEConfig

    if (model_dir is None) == (preset is None):
        raise ValueError("give exactly one of a model folder and a preset")
    if preset is not None:
        return MoME(MoMEConfig.preset(preset, overrides or None)).to(device)
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"--model {str(path)!r}: no such folder")
    if overrides:
        return MoME.from_pretrained(path, overrides, device=device)
    from mome.training.checkpointing import load_model as load_saved

    return load_saved(path).to(device)
