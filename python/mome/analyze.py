"""`python -m mome.analyze`: the routing analyses of the paper (PAPER.md § Analyses; Figs. 1, 4, 5, 6, 8) as PNG
figures, each with the JSON behind it.

    python -m mome.analyze --model runs/tiny-synth/stage2/final --data synth --out runs/tiny-synth/analysis
    python -m mome.analyze --preset tiny --data data/mybench --out analysis/ --limit 20 --cards 8

Writes into --out:
    vision_importance.png/.json   Fig. 4: per dataset, each encoder's share of the importance mean |G_s(I)_i · f̂_i|
                                  (stacked to 1), beside the share of the raw soft-router weight G_s(I)_i
    language_load.png/.json       Figs. 5 and 8: per layer, the share of each dataset's samples routed to each MoLE
                                  expert (the expert chosen on the prompt), and the mean over layers
    pca_image.png, pca_instruction.png, pca.json
                                  Fig. 1b–c: 2-D PCA of the mean-pooled fused visual tokens F and of each encoder's
                                  pooled feature f̂_i (after ADT and projector), and of the Sentence-BERT instruction
                                  embeddings I, coloured by task group
    cards/card_<k>.png, cards.json
                                  Fig. 6: per sample the image, instruction, reference, prediction, both routings
    analysis.json                 what was analysed, the files, and router-collapse warnings (also printed)

The routing comes from `MoME.generate` (the same numbers `python -m mome.eval` reports), and the features from the
same forward pass (hooks on MoVE), so every figure describes the exact generation that was scored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np

GROUP_ORDER = ("general", "rec", "reg", "document")
GROUP_COLORS = {"general": "tab:blue", "rec": "tab:orange", "reg": "tab:green", "document": "tab:red"}

from mome.cli import UsageError, need_benchmark, parse, positive, run

__all__ = ["collect", "pca", "vision_importance", "language_load", "analyze", "main"]


# ---- data ------------------------------------------------------------------------------------------------------------

def collect(model, records: list[dict], image_root, batch_size: int = 16, max_new_tokens: int = 16,
            progress: bool = True) -> list[dict]:
    """Generate for every record and keep, per sample: id, dataset (as named in the tables), group, instruction,
    reference answer, prediction, routing (`Generation.routing`), and the features for the PCA: ``fused`` (D,) the
    mean over tokens of F, ``experts`` {encoder: (D,) mean over tokens of f̂_i}, ``instruction_embedding`` (d,)."""
    from tqdm import tqdm

    from mome.data import MultimodalDataset, answer_of
    from mome.eval.harness import dataset_key
    from mome.model.mome import instruction_text

    dataset = MultimodalDataset(records, image_root)
    captured: dict = {}
    hooks = [model.move.register_forward_hook(lambda m, i, out: captured.__setitem__("fused", out.tokens))]
    for name, proj in model.move.projectors.items():
        hooks.append(proj.register_forward_hook(
            lambda m, i, out, name=name: captured.setdefault("experts", {}).__setitem__(name, out)))
    samples = []
    try:
        for start in tqdm(range(0, len(dataset), batch_size), desc="analysing", disable=not progress, unit="batch"):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            prompts = [it["record"]["conversations"][0]["value"] for it in items]
            captured.clear()
            gens = model.generate([it["image"] for it in items], prompts, max_new_tokens=max_new_tokens)
            emb = model.sentence_encoder.encode([instruction_text(p) for p in prompts]).float().cpu().numpy()
            fused = captured["fused"].float().mean(dim=1).cpu().numpy()  # (B, L, D) → (B, D)
            L = model.config.vision.num_tokens  # the EVA projector also sees the CLS token first: keep the L
            experts = {n: t[:, -L:].float().mean(dim=1).cpu().numpy() for n, t in captured["experts"].items()}
            for b, (it, g) in enumerate(zip(items, gens)):
                rec = it["record"]
                samples.append({
                    "id": rec["id"], "dataset": dataset_key(rec), "group": rec["group"], "image": rec["image"],
                    "instruction": it["instruction"], "reference": answer_of(rec), "prediction": g.text.strip(),
                    "routing": g.routing, "fused": fused[b], "experts": {n: v[b] for n, v in experts.items()},
                    "instruction_embedding": emb[b]})
    finally:
        for h in hooks:
            h.remove()
    return samples


def _dataset_order(samples: list[dict]) -> list[str]:
    """Datasets in the paper's group order, then in order of first appearance."""
    first = {}
    for s in samples:
        first.setdefault(s["dataset"], (GROUP_ORDER.index(s["group"]), len(first)))
    return sorted(first, key=first.get)


# ---- analyses (pure functions of the collected samples) --------------------------------------------------------------

def vision_importance(samples: list[dict]) -> dict:
    """Fig. 4. Per dataset: the importance mean |G_s(I)_i · f̂_i| per encoder, its share (normalised to sum 1 per dataset)
    and the mean router weight with its share."""
    encoders = list(samples[0]["routing"]["vision"])
    per = defaultdict(list)
    for s in samples:
        per[s["dataset"]].append(s)
    out = {}
    for name in _dataset_order(samples):
        rows = per[name]
        imp = {e: float(np.mean([s["routing"]["vision_importance"][e] for s in rows])) for e in encoders}
        w = {e: float(np.mean([s["routing"]["vision"][e] for s in rows])) for e in encoders}
        ti, tw = sum(imp.values()) or 1.0, sum(w.values()) or 1.0
        out[name] = {"group": rows[0]["group"], "samples": len(rows), "mean_importance": imp,
                     "importance_share": {e: v / ti for e, v in imp.items()}, "mean_weight": w,
                     "weight_share": {e: v / tw for e, v in w.items()}}
    return {"encoders": encoders, "datasets": out}


def language_load(samples: list[dict], num_experts: int) -> dict | None:
    """Figs. 5 and 8. Per dataset and layer, the share of samples routed to each of the K experts (None without
    MoLE), and the mean over layers."""
    if samples[0]["routing"]["language"] is None:
        return None
    layers = len(samples[0]["routing"]["language"])
    per = defaultdict(list)
    for s in samples:
        per[s["dataset"]].append(s["routing"]["language"])
    out = {}
    for name in _dataset_order(samples):
        choices = np.asarray(per[name])  # (n, layers)
        counts = np.stack([(choices == k).sum(axis=0) for k in range(num_experts)], axis=1)  # (layers, K)
        share = counts / len(choices)
        group = next(s["group"] for s in samples if s["dataset"] == name)
        out[name] = {"group": group, "samples": len(choices), "per_layer": share.tolist(),
                     "mean": share.mean(axis=0).tolist()}
    return {"num_experts": num_experts, "layers": layers, "datasets": out}


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows of x (n, d) projected on their first k principal axes, by SVD of the centred data: x_c = U S Vᵀ,
    coordinates = U_k S_k. Each axis's sign is fixed (largest |loading| positive) so results are reproducible.
    Returns (coords (n, k), explained variance ratio (k,)); axes beyond the rank are zero."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)  # u (n, r), s (r,), vt (r, d), r = min(n, d)
    sign = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    sign[sign == 0] = 1
    coords = (u * s * sign)[:, :k]
    total = float((s ** 2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(min(k, len(s)))
    if coords.shape[1] < k:  # fewer samples than k
        coords = np.pad(coords, ((0, 0), (0, k - coords.shape[1])))
        ratio = np.pad(ratio, (0, k - len(ratio)))
    return coords, ratio


def pca_features(samples: list[dict]) -> dict:
    """Fig. 1b–c: 2-D PCA of the fused visual feature, of each encoder's feature, and of the instruction embedding."""
    def one(rows):
        x = np.stack(rows)
        coords, ratio = pca(x)
        # the total variance shows a feature that barely changes between images (then its PCA is noise)
        return {"coords": coords.tolist(), "explained": ratio.tolist(), "total_variance": float(x.var(axis=0).sum())}

    encoders = list(samples[0]["experts"])
    image = {"fused": one([s["fused"] for s in samples])}
    image.update({e: one([s["experts"][e] for s in samples]) for e in encoders})
    return {"ids": [s["id"] for s in samples], "datasets": [s["dataset"] for s in samples],
            "groups": [s["group"] for s in samples], "image": image,
            "instruction": one([s["instruction_embedding"] for s in samples])}


def pick_cards(samples: list[dict], n: int) -> list[dict]:
    """n samples taken round-robin over the datasets (first of each dataset, then second, …)."""
    per = defaultdict(list)
    for s in samples:
        per[s["dataset"]].append(s)
    order, picked, i = _dataset_order(samples), [], 0
    while len(picked) < min(n, len(samples)):
        for name in order:
            if i < len(per[name]) and len(picked) < n:
                picked.append(per[name][i])
        i += 1
    return picked


# ---- figures ---------------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _encoder_colors(encoders):
    return {e: f"C{i}" for i, e in enumerate(encoders)}


def _label(name: str, group: str) -> str:
    """A dataset's axis label with its task group (bar charts use colour for the experts, not the groups)."""
    from mome.eval.tables import GROUP_TITLES

    return f"{GROUP_TITLES[group]}: {name}"


def plot_vision_importance(data: dict, path: Path) -> None:
    """Horizontal stacked bars, one per dataset (so the figure grows in height with the benchmark): each encoder's
    share of the importance (Fig. 4), and beside it its share of the raw router weight."""
    plt = _plt()
    names, encoders = list(data["datasets"]), data["encoders"]
    colors = _encoder_colors(encoders)
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 0.3 * len(names)), sharey=True)
    y = np.arange(len(names))
    for ax, key, title in ((axes[0], "importance_share", "importance mean |G_s(I)_i · f̂_i| (Fig. 4)"),
                           (axes[1], "weight_share", "soft-router weight G_s(I)_i")):
        left = np.zeros(len(names))
        for e in encoders:
            v = np.array([data["datasets"][n][key][e] for n in names])
            ax.barh(y, v, left=left, color=colors[e], label=e, height=0.75)
            for yi, l, vi in zip(y, left, v):
                if vi > 0.06:
                    ax.text(l + vi / 2, yi, f"{100 * vi:.0f}", ha="center", va="center", fontsize=7, color="white")
            left += v
        ax.set_xlim(0, 1)
        ax.set_xlabel("share per dataset", fontsize=9)
        ax.set_title(title, fontsize=10)
    axes[0].set_yticks(y, [f"{_label(n, data['datasets'][n]['group'])} (n={data['datasets'][n]['samples']})"
                           for n in names], fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # first dataset on top, no empty margin
    axes[1].legend(title="vision expert", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle("Vision-expert importance per dataset: each encoder's share (%)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_language_load(data: dict, path: Path) -> None:
    """Left (Fig. 5): per dataset, the share of (sample, layer) pairs routed to each expert, stacked to 1. Right
    (Fig. 8): one heatmap per expert, datasets × layers, the share of samples routed to it."""
    plt = _plt()
    names, K, layers = list(data["datasets"]), data["num_experts"], data["layers"]
    share = np.array([data["datasets"][n]["per_layer"] for n in names])  # (datasets, layers, K)
    height = 1.8 + 0.3 * len(names)
    panel = min(max(0.3 * layers, 1.6), 4.0)  # inches per expert heatmap: cells shrink as layers grow
    fig, axes = plt.subplots(1, K + 1, figsize=(4.2 + K * (panel + 0.3), height), squeeze=False,
                             gridspec_kw={"width_ratios": [4.0] + [panel] * K})
    axes = axes[0]
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for k in range(K):
        v = share[:, :, k].mean(axis=1)
        axes[0].barh(y, v, left=left, color=f"C{k}", label=f"expert {k}", height=0.75)
        left += v
    axes[0].set_yticks(y, [_label(n, data["datasets"][n]["group"]) for n in names], fontsize=8)
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("share (mean over layers)", fontsize=8)
    axes[0].set_title("expert load (Fig. 5)", fontsize=9, pad=18)
    axes[0].legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=K, frameon=False,
                   handlelength=1.0, columnspacing=0.8)
    annotate = layers <= 8
    for k in range(K):
        ax = axes[k + 1]
        m = share[:, :, k]
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"expert {k}", fontsize=9)
        step = max(1, layers // 8)
        ax.set_xticks(range(0, layers, step), [str(i) for i in range(0, layers, step)], fontsize=7)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_yticks(y, [])
        if annotate:
            for r in range(m.shape[0]):
                for c in range(layers):
                    ax.text(c, r, f"{100 * m[r, c]:.0f}", ha="center", va="center", fontsize=6,
                            color="black" if m[r, c] > 0.6 else "white")
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # rows aligned with the heatmaps' (shared y), first on top
    fig.suptitle("MoLE expert load per dataset: share of samples routed to each expert (%), per layer (Fig. 8)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.945, 0.2, 0.012, 0.6))
    fig.colorbar(im, cax=cax).set_label("share of samples", fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _scatter_groups(ax, coords, groups, title, explained, total_variance):
    for g in GROUP_ORDER:
        idx = [i for i, gi in enumerate(groups) if gi == g]
        if idx:
            ax.scatter(coords[idx, 0], coords[idx, 1], s=14, alpha=0.75, color=GROUP_COLORS[g], label=g)
    ax.set_title(f"{title}\n(total variance {total_variance:.2g})", fontsize=10)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f}% var.)", fontsize=8)
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f}% var.)", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_pca(data: dict, image_path: Path, instruction_path: Path) -> None:
    plt = _plt()
    groups = data["groups"]
    keys = list(data["image"])
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 1.2, 3.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        title = "fused visual tokens F" if k == "fused" else f"{k} feature f̂"
        d = data["image"][k]
        _scatter_groups(ax, np.array(d["coords"]), groups, title, d["explained"], d["total_variance"])
    axes[0][-1].legend(title="task group", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle("PCA of image features (mean over tokens), coloured by task group (Fig. 1b)", fontsize=11)
    fig.tight_layout()
    fig.savefig(image_path, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    d = data["instruction"]
    _scatter_groups(ax, np.array(d["coords"]), groups, "Sentence-BERT instruction embeddings I", d["explained"],
                    d["total_variance"])
    ax.legend(title="task group", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle("PCA of instruction embeddings, coloured by task group (Fig. 1c)", fontsize=11)
    fig.tight_layout()
    fig.savefig(instruction_path, dpi=120)
    plt.close(fig)


def plot_card(card: dict, image, num_experts: int, path: Path) -> None:
    """Fig. 6: the image, the texts, the vision routing (weight and importance share) and the MoLE experts."""
    plt = _plt()
    fig = plt.figure(figsize=(11, 3.6))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.0, 1.6, 1.2], height_ratios=[1, 1], wspace=0.3, hspace=0.8)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(image)
    ax.set_title(f"{card['dataset']} ({card['group']})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])

    ax = fig.add_subplot(grid[:, 1])
    ax.axis("off")
    wrap = lambda label, text: textwrap.fill(f"{label}: {text}", 44, max_lines=5, placeholder=" …")  # noqa: E731
    ax.text(0, 1, "\n\n".join([wrap("Instruction", card["instruction"]), wrap("Reference", card["reference"]),
                               wrap("Prediction", card["prediction"] or "(empty)")]),
            va="top", ha="left", fontsize=8, family="monospace", transform=ax.transAxes)
    ax.set_title(card["id"], fontsize=8)

    encoders = list(card["routing"]["vision"])
    imp = np.array([card["routing"]["vision_importance"][e] for e in encoders])
    w = np.array([card["routing"]["vision"][e] for e in encoders])
    ax = fig.add_subplot(grid[0, 2])
    y = np.arange(len(encoders))
    ax.barh(y - 0.2, w / (w.sum() or 1), height=0.4, color="tab:gray", label="router weight")
    ax.barh(y + 0.2, imp / (imp.sum() or 1), height=0.4, color="tab:purple", label="importance")
    ax.set_yticks(y, encoders, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("MoVE routing", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)

    ax = fig.add_subplot(grid[1, 2])
    language = card["routing"]["language"]
    if language is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no MoLE", ha="center", va="center", fontsize=8)
    else:
        m = np.zeros((num_experts, len(language)))
        m[language, np.arange(len(language))] = 1
        ax.imshow(m, cmap="Greens", vmin=0, vmax=1, aspect="auto")
        step = max(1, len(language) // 8)
        ax.set_xticks(range(0, len(language), step), [str(i) for i in range(0, len(language), step)], fontsize=7)
        ax.set_yticks(range(num_experts), [str(k) for k in range(num_experts)], fontsize=7)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("expert", fontsize=8)
        ax.set_title("MoLE expert per layer", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---- the program -----------------------------------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def analyze(model, records: list[dict], image_root, out_dir, cards: int = 8, batch_size: int = 16,
            max_new_tokens: int = 16, min_samples: int = 20, progress: bool = True) -> dict:
    """Run every analysis and write the figures and JSON into `out_dir`. Returns the content of analysis.json."""
    from PIL import Image

    from mome.eval.harness import collapse_warnings

    out = Path(out_dir)
    (out / "cards").mkdir(parents=True, exist_ok=True)
    samples = collect(model, records, image_root, batch_size, max_new_tokens, progress)
    if not samples:
        raise ValueError("analyze: no samples")
    K = model.config.num_experts
    files = []

    vis = vision_importance(samples)
    _write_json(out / "vision_importance.json", vis)
    plot_vision_importance(vis, out / "vision_importance.png")
    files += ["vision_importance.png", "vision_importance.json"]

    lang = language_load(samples, max(K, 1))
    if lang is not None:
        _write_json(out / "language_load.json", lang)
        plot_language_load(lang, out / "language_load.png")
        files += ["language_load.png", "language_load.json"]

    if len(samples) >= 2:
        feats = pca_features(samples)
        _write_json(out / "pca.json", feats)
        plot_pca(feats, out / "pca_image.png", out / "pca_instruction.png")
        files += ["pca_image.png", "pca_instruction.png", "pca.json"]

    card_data = []
    for i, s in enumerate(pick_cards(samples, cards)):
        card = {k: s[k] for k in ("id", "dataset", "group", "image", "instruction", "reference", "prediction",
                                  "routing")}
        card["file"] = f"cards/card_{i:02d}.png"
        with Image.open(Path(image_root) / s["image"]) as im:
            plot_card(card, im.convert("RGB"), max(K, 1), out / card["file"])
        card_data.append(card)
        files.append(card["file"])
    _write_json(out / "cards.json", card_data)
    files.append("cards.json")

    preds = [{"routing": s["routing"]} for s in samples]
    warnings = collapse_warnings(preds, min_samples=min_samples, num_experts=K)
    summary = {"samples": len(samples), "datasets": {n: d["samples"] for n, d in vis["datasets"].items()},
               "num_experts": K, "encoders": vis["encoders"],
               "collapse": {"checked": len(samples) >= min_samples, "threshold": 0.95, "warnings": warnings},
               "files": files}
    _write_json(out / "analysis.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mome.analyze", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved model folder (runs/<name>/stage<k>/final) or a checkpoint folder")
    source.add_argument("--preset", help="a fresh model from a preset (e.g. tiny)")
    p.add_argument("--data", required=True, help="synth, a folder holding test.jsonl, or a .json/.jsonl records file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-root", help="folder the records' image paths are relative to (default: the data's)")
    p.add_argument("--limit", type=int, default=None, help="analyse the first N records of every dataset")
    p.add_argument("--cards", type=int, default=8, help="per-sample cards to draw (default 8)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--min-samples", type=int, default=20, help="samples needed to check for router collapse")
    p.add_argument("--device", default="auto", help="auto (cuda if visible), cpu or cuda")
    p.add_argument("--synth-dir", default=None, help="where --data synth is generated (default: data/synth)")
    p.add_argument("--synth-n", type=int, default=2000, help="train records of a new synthetic benchmark")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOME_DEBUG=1)")
    p.add_argument("overrides", nargs="*", help="model config overrides key=value (flags and overrides in any order)")
    args = parse(p, argv)
    if args.cards < 0:
        raise UsageError(f"--cards must be >= 0, got {args.cards}")
    positive("--batch-size", args.batch_size)
    positive("--max-new-tokens", args.max_new_tokens)
    positive("--limit", args.limit, allow_none=True)
    need_benchmark(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mome.eval import harness

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    records, image_root = harness.load_benchmark(args.data, args.image_root, args.limit,
                                                 synth_dir=args.synth_dir or harness.SYNTH_DIR, synth_n=args.synth_n)
    model = harness.load_model(args.model, args.preset, args.overrides, device=device)
    summary = analyze(model, records, image_root, args.out, cards=args.cards, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, min_samples=args.min_samples, progress=not args.quiet)
    print(f"analysed {summary['samples']} samples of {len(summary['datasets'])} datasets; wrote "
          f"{len(summary['files'])} files to {args.out}", file=sys.stderr)
    if not summary["collapse"]["checked"]:
        print(f"router collapse not checked: fewer than {args.min_samples} samples", file=sys.stderr)
    for w in summary["collapse"]["warnings"]:
        print(f"warning: router collapse: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m mome.analyze"))
