"""Pretraining of the tiny preset's specialist encoders (`mome.model.specialists`): one objective per encoder.

    python -m mome.data pretrain-encoders [--out DIR] [--seed S] [--steps N] [--check]

Each tiny encoder (the `tiny` preset's sizes) is trained from random weights with small linear heads on the feature
MoVE reads (EVA: its last block's patch tokens and CLS; DINOv2: the final-norm patch tokens; Pix2Struct: its last
hidden state on each image's own rows × cols map), on images drawn like the synthetic benchmark's but from their
own seeds (``mome-pretrain/<seed>/...``, never the benchmark's):

    eva_clip    scenes squashed to 32 px, image-level only (as CLIP): which of the 15 (colour, shape) pairs are in the
                image, how many objects, which pair is k-th from the left — from the CLS token and the mean patch token
    dinov2      scenes at 64 px, 8 × 8 patches: the object covering each patch most (16-way CE, ≥ 25 % of the
                patch, else background) and, on object patches, that object's normalised box (L1) and the first two
                decimals of each coordinate as the box text writes them (8 × 10-way CE)
    pix2struct  documents (word lists, tables, bar charts) at their aspect ratio, ≤ 64 patches: the text item or bar
                covering each patch most (CE over words, names, numbers 0-99, bar labels and "bar:<value>")

Why these: the synthetic benchmark's General tasks need the scene's content and coarse layout, REC/REG exact boxes
and object identity at a place, Document tasks reading — the same split of skills as the paper's CLIP / DINOv2 /
Pix2Struct. Deterministic: fixed seeds, one thread, a fixed image set; the same machine kind gives the same bits.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["pretrain", "pretrain_one", "LABELS", "PAIRS", "Objective", "OBJECTIVES", "DEFAULT_STEPS"]

from mome.data import synth

PAIRS = [(c, s) for c in synth.COLORS for s in synth.SHAPES]  # 15 object kinds; class 0 = background
LABELS = (["<bg>"] + list(synth.WORDS) + list(synth.ROW_NAMES) + list(synth.COL_NAMES) + [str(i) for i in range(100)]
          + list(synth.BAR_LABELS) + [f"bar:{v}" for v in range(1, 10)])
_LABEL_ID = {x: i for i, x in enumerate(LABELS)}
DEFAULT_STEPS = {"eva_clip": 1500, "dinov2": 1500, "pix2struct": 1500}
BATCH = 64


def _overlap(a: tuple, b: tuple) -> float:
    """Area of the intersection of two boxes (x0, y0, x1, y1), exclusive upper corners, float."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def _px(box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Inclusive pixel corners → exclusive float box."""
    return (box[0], box[1], box[2] + 1, box[3] + 1)


def _box_digits(box: list[float]) -> list[int]:
    """The first two decimals of each coordinate as the box text writes them: ``0.347`` → 3, 4."""
    from mome.data.records import format_box

    coords = format_box(box)[1:-1].split(", ")
    return [int(x[i]) if x[0] == "0" else 9 for x in coords for i in (2, 3)]


# ---- the objectives: images, targets, heads and losses -------------------------------------------------------------


@dataclass
class Objective:
    kind: str
    heads: dict[str, int]  # head name → output width

    def sample(self, rng: random.Random):
        """(PIL image, target dict) for one image."""
        raise NotImplementedError

    def loss(self, out, heads: nn.ModuleDict, targets: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class SceneSemantics(Objective):
    """EVA, as CLIP: image-level semantics only, from the CLS token and from the mean patch token alike — which
    (colour, shape) pairs are in the scene, how many objects, and which pair is k-th from the left (the caption).
    No per-place target: like CLIP's, its patch tokens are not trained to localise."""

    SLOTS = 4

    def __init__(self):
        super().__init__("eva_clip", {"present": len(PAIRS), "count": 5, "order": self.SLOTS * (1 + len(PAIRS))})

    def sample(self, rng):
        img, shapes = synth.scene(rng)
        present = torch.zeros(len(PAIRS))
        order = torch.zeros(self.SLOTS, dtype=torch.long)  # 0: no k-th object
        for k, s in enumerate(synth._left_to_right(shapes)):
            present[PAIRS.index((s.color, s.shape))] = 1
            order[k] = 1 + PAIRS.index((s.color, s.shape))
        return img, {"present": present, "count": torch.tensor(len(shapes)), "order": order}

    def loss(self, out, heads, t):
        loss, order_acc = 0.0, 0.0
        for feat in (out.cls, out.features.mean(1)):
            order = heads["order"](feat).unflatten(-1, (self.SLOTS, 1 + len(PAIRS)))
            loss = loss + (F.binary_cross_entropy_with_logits(heads["present"](feat), t["present"])
                           + F.cross_entropy(heads["count"](feat), t["count"])
                           + F.cross_entropy(order.flatten(0, 1), t["order"].flatten()))
            order_acc = (order.argmax(-1) == t["order"]).all(-1).float().mean().item()
        count = heads["count"](out.cls)
        return loss, {"order_acc": order_acc, "count_acc": (count.argmax(-1) == t["count"]).float().mean().item()}


class Localisation(Objective):
    """DINOv2: per 8 px patch, the object covering it most (≥ 25 % of the patch) and that object's box."""

    def __init__(self):
        super().__init__("dinov2", {"object": 1 + len(PAIRS), "box": 4, "digits": 8 * 10})

    def sample(self, rng):
        img, shapes = synth.scene(rng)
        side, grid = synth.SCENE_SIZE, 8
        step = side / grid
        obj = torch.zeros(grid * grid, dtype=torch.long)
        box = torch.zeros(grid * grid, 4)
        digits = torch.zeros(grid * grid, 8, dtype=torch.long)
        for r in range(grid):
            for c in range(grid):
                patch = (c * step, r * step, (c + 1) * step, (r + 1) * step)
                best, area = None, 0.25 * step * step
                for s in shapes:
                    a = _overlap(_px(s.box), patch)
                    if a >= area:
                        best, area = s, a
                if best is not None:
                    obj[r * grid + c] = 1 + PAIRS.index((best.color, best.shape))
                    box[r * grid + c] = torch.tensor(best.norm_box(side, side))
                    digits[r * grid + c] = torch.tensor(_box_digits(best.norm_box(side, side)))
        return img, {"object": obj, "box": box, "digits": digits}

    def loss(self, out, heads, t):
        logits = heads["object"](out.features)  # (B, 64, 16)
        box = heads["box"](out.features)
        on = t["object"] > 0
        l_box = (box - t["box"]).abs()[on].mean() if on.any() else box.sum() * 0
        digits = heads["digits"](out.features).unflatten(-1, (8, 10))  # (B, 64, 8, 10)
        l_digits = F.cross_entropy(digits[on].flatten(0, 1), t["digits"][on].flatten()) if on.any() else l_box
        loss = F.cross_entropy(logits.flatten(0, 1), t["object"].flatten()) + 10 * l_box + l_digits
        digit_acc = (digits.argmax(-1) == t["digits"])[on].float().mean().item() if on.any() else 0.0
        return loss, {"object_acc": (logits.argmax(-1) == t["object"]).float().mean().item(),
                      "box_l1_px": l_box.item() * synth.SCENE_SIZE, "digit_acc": digit_acc}


class Reading(Objective):
    """Pix2Struct: per patch of a document, the text item or bar covering it most; background elsewhere."""

    def __init__(self, max_patches: int = 64, patch: int = 8):
        from mome.model.config import EncoderConfig
        from mome.model.encoders import Pix2StructPreprocessor

        super().__init__("pix2struct", {"item": len(LABELS)})
        self.preprocessor = Pix2StructPreprocessor(EncoderConfig(kind="pix2struct", patch_size=patch,
                                                                 max_patches=max_patches))

    def sample(self, rng):
        draw = rng.choice([synth.draw_doc_text, synth.draw_table, synth.draw_chart])
        img, *_, items = draw(rng)
        W, H = img.size
        rows, cols = self.preprocessor.grid(H, W)  # the grid the encoder will see this image on
        sh, sw = H / rows, W / cols
        label = torch.zeros(rows, cols, dtype=torch.long)
        for r in range(rows):
            for c in range(cols):
                patch = (c * sw, r * sh, (c + 1) * sw, (r + 1) * sh)
                best, area = 0, 0.2 * sw * sh
                for it in items:
                    a = _overlap(_px(it.box), patch)
                    if a >= area:
                        best, area = _LABEL_ID[it.label], a
                label[r, c] = best
        return img, {"item": label}

    def loss(self, out, heads, t):
        logits = heads["item"](out.features)  # (B, Hm·Wm, V) on the common grid
        Hm, Wm = out.grid
        target = torch.full((len(t["item"]), Hm, Wm), -100, dtype=torch.long)
        for b, lab in enumerate(t["item"]):
            target[b, : lab.shape[0], : lab.shape[1]] = lab
        target = target.flatten(1)
        valid = target >= 0
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        hit = (logits.argmax(-1) == target) & valid
        text = valid & (target > 0)
        return loss, {"patch_acc": (hit.sum() / valid.sum()).item(),
                      "text_acc": ((hit & text).sum() / text.sum().clamp(min=1)).item()}


OBJECTIVES = {"eva_clip": SceneSemantics, "dinov2": Localisation, "pix2struct": Reading}


def _collate(targets: list[dict]) -> dict:
    out = {}
    for k in targets[0]:
        vals = [t[k] for t in targets]
        out[k] = vals if k == "item" else torch.stack(vals)
    return out


def _heads(objective: Objective, width: int) -> nn.ModuleDict:
    return nn.ModuleDict({k: nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n))
                          for k, n in objective.heads.items()})


# ---- training -----------------------------------------------------------------------------------------------------


def pretrain_one(kind: str, steps: int, seed: int = 0, n_images: int = 4096, n_eval: int = 512,
                 progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Train the tiny ``kind`` encoder; returns (its state dict, a report with the held-out scores)."""
    from tqdm import tqdm

    from mome.model.config import MoMEConfig
    from mome.model.encoder_weights import random_model
    from mome.model.encoders import VisionEncoder

    cfg = MoMEConfig.preset("tiny", {f"vision.{kind}.path": None}).encoders()[kind]
    objective = OBJECTIVES[kind]()
    torch.manual_seed(seed)
    model, width = random_model(cfg)
    enc = VisionEncoder(cfg, model.float(), width)
    enc.model.requires_grad_(True)
    heads = _heads(objective, width)

    def images(split: str, n: int):
        pairs = [objective.sample(random.Random(f"mome-pretrain/{seed}/{kind}/{split}/{i}")) for i in range(n)]
        return enc.preprocess([p[0] for p in pairs]), [p[1] for p in pairs]

    t0 = time.time()
    train_x, train_t = images("train", n_images)
    eval_x, eval_t = images("eval", n_eval)
    params = list(enc.model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(s / steps * 3.14159265)).item()))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc=f"pretrain {kind}", disable=not progress, unit="step")
    for _ in bar:
        idx = torch.randint(0, n_images, (BATCH,), generator=gen)
        x = {k: v[idx] for k, v in train_x.items()}
        t = _collate([train_t[i] for i in idx.tolist()])
        loss, stats = objective.loss(enc.features(**x), heads, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in stats.items()})
    bar.close()
    with torch.no_grad():
        scores = {}
        for i in range(0, n_eval, 128):
            x = {k: v[i:i + 128] for k, v in eval_x.items()}
            loss, stats = objective.loss(enc.features(**x), heads, _collate(eval_t[i:i + 128]))
            for k, v in {"loss": loss.item(), **stats}.items():
                scores[k] = scores.get(k, 0.0) + v * len(x[next(iter(x))]) / n_eval
    state = {k: v.detach().contiguous().clone() for k, v in enc.model.state_dict().items()}
    report = {"objective": type(objective).__name__, "steps": steps, "batch": BATCH, "train_images": n_images,
              "eval_images": n_eval, "heldout": {k: round(v, 4) for k, v in scores.items()},
              "wall_s": round(time.time() - t0, 1)}
    return state, report


def pretrain(out_dir: str | Path, seed: int = 0, steps: dict[str, int] | None = None, kinds=None,
             progress: bool = True, log=print, n_images: int = 4096, n_eval: int = 512) -> dict:
    """Pretrain every specialist and write ``tiny-<kind>.safetensors`` + the manifest into ``out_dir`` (each file
    staged and renamed into place, so a crash never leaves a half-written one). Returns the manifest."""
    from mome.model import specialists
    from mome.model.encoders import save_encoder_safetensors

    steps = {**DEFAULT_STEPS, **(steps or {})}
    kinds = list(kinds or specialists.KINDS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same bits whatever the core count
    try:
        entries = {}
        for kind in kinds:
            state, report = pretrain_one(kind, steps[kind], seed, n_images, n_eval, progress=progress)
            path = out_dir / specialists.file_name(kind)
            tmp = path.with_suffix(".tmp")
            save_encoder_safetensors(state, tmp, kind)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            tmp.replace(path)
            entries[kind] = {"file": path.name, "sha256": specialists.sha256(path), **report}
            log(f"{kind}: {report['heldout']} in {report['wall_s']} s -> {path}")
    finally:
        torch.set_num_threads(threads)
    man = {"schema": "mome.specialists/1", "command": "python -m mome.data pretrain-encoders", "seed": seed,
           "torch": torch.__version__, "machine": platform.machine(), "encoders": entries}
    old = out_dir / specialists.MANIFEST
    if old.is_file():  # keep the other encoders' entries when only some were regenerated
        prev = json.loads(old.read_text()).get("encoders", {})
        man["encoders"] = {**{k: v for k, v in prev.items() if k not in entries}, **entries}
    tmp = old.with_suffix(".tmp")
    tmp.write_text(json.dumps(man, indent=2) + "\n")
    tmp.replace(old)
    return man
