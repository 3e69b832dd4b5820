"""The built-in synthetic benchmark: procedurally drawn images in the paper's four task groups, no download.

Sized so that a tiny model learns it on a 2-core CPU in minutes: small images (scenes 64×64; documents 24–140 px
per side, wide, tall and square), a vocabulary of a few dozen words, answers of 1–4 tokens.
Each task needs a different visual skill:

| dataset          | group    | task    | metric      | skill                                                   |
|------------------|----------|---------|-------------|---------------------------------------------------------|
| synth-caption    | general  | caption | cider       | colours and shapes of the whole scene, left to right    |
| synth-vqa        | general  | vqa     | exact_match | colour / shape / count / left-right relation            |
| synth-rec        | rec      | rec     | iou_acc     | localise a described shape: answer its box as text      |
| synth-reg        | reg      | reg     | cider       | name the shape inside a given box                       |
| synth-doc-text   | document | docvqa  | anls        | read the k-th word (wide: one line; tall: one per line) |
| synth-table      | document | table   | anls        | read a table cell by row and column name                |
| synth-chart      | document | chart   | relaxed_acc | read a bar's value (vertical or horizontal bars)        |

Every record has its own image, drawn from a generator seeded by ``(seed, split, index)``: the output is a pure
function of the arguments, and train and test images differ.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mome.data.records import format_box, make_record, write_records
from mome.data.templates import render

__all__ = ["generate", "ensure", "make_record_parts", "describe_scene", "describe_table", "is_current", "stamp", "STAMP", "DATASETS", "COLORS", "SHAPES", "SCENE_SIZE", "Shape", "Item", "scene", "draw_doc_text",
           "draw_table", "draw_chart"]

SCENE_SIZE = 64
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
          "purple": (140, 60, 180)}
SHAPES = ("circle", "square", "triangle")
WORDS = ("apple", "river", "stone", "cloud", "tiger", "paper", "house", "music", "light", "table", "horse",
         "ocean", "bread", "chair", "plant", "train")
ROW_NAMES = ("cat", "dog", "fox", "owl", "bee")
COL_NAMES = ("age", "size", "cost", "score")
BAR_LABELS = ("A", "B", "C", "D", "E")
ORDINALS = ("first", "second", "third", "fourth")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

# Share of records per dataset: the four groups get a quarter each (as the sampler will weight them).
DATASETS = {
    "synth-caption": ("general", "caption", "cider", 0.10),
    "synth-vqa": ("general", "vqa", "exact_match", 0.15),
    "synth-rec": ("rec", "rec", "iou_acc", 0.25),
    "synth-reg": ("reg", "reg", "cider", 0.25),
    "synth-doc-text": ("document", "docvqa", "anls", 0.25 / 3),
    "synth-table": ("document", "table", "anls", 0.25 / 3),
    "synth-chart": ("document", "chart", "relaxed_acc", 0.25 / 3),
}


def _font(size: int = 10):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


_FONT = None


def font():
    global _FONT
    if _FONT is None:
        _FONT = _font()
    return _FONT


# -- scenes of coloured shapes ---------------------------------------------------------------------------------
@dataclass
class Shape:
    color: str
    shape: str
    box: tuple[int, int, int, int]  # pixel corners, inclusive: (x0, y0, x1, y1)

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    def norm_box(self, w: int, h: int) -> list[float]:
        """Normalised [x1, y1, x2, y2] covering exactly the drawn pixels, rounded like the text form."""
        x0, y0, x1, y1 = self.box
        return [round(x0 / w, 3), round(y0 / h, 3), round((x1 + 1) / w, 3), round((y1 + 1) / h, 3)]


def _draw_shape(draw: ImageDraw.ImageDraw, s: Shape):
    x0, y0, x1, y1 = s.box
    fill = COLORS[s.color]
    if s.shape == "circle":
        draw.ellipse(s.box, fill=fill)
    elif s.shape == "square":
        draw.rectangle(s.box, fill=fill)
    else:  # apex at the top centre; base spans the whole box so the box stays tight
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def scene(rng: random.Random, n_min: int = 1, n_max: int = 4) -> tuple[Image.Image, list[Shape]]:
    """A 64×64 scene of 1–4 non-overlapping shapes with distinct (colour, shape) pairs, so names are unique."""
    W = H = SCENE_SIZE
    n = rng.randint(n_min, n_max)
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)
    while True:  # rejection sampling; restart in the rare case the last shape finds no room
        shapes: list[Shape] = []
        for color, kind in kinds:
            for _ in range(100):
                size = rng.randint(12, 20)
                x0, y0 = rng.randint(1, W - size - 1), rng.randint(1, H - size - 1)
                box = (x0, y0, x0 + size - 1, y0 + size - 1)
                # 2 px gap between shapes, so every object's pixels are its own
                if all(box[2] + 2 < o.box[0] or o.box[2] + 2 < box[0] or box[3] + 2 < o.box[1]
                       or o.box[3] + 2 < box[1] for o in shapes):
                    shapes.append(Shape(color, kind, box))
                    break
        if len(shapes) == n:
            break
    bg = rng.choice([(255, 255, 255), (235, 235, 235)])
    img = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        _draw_shape(draw, s)
    return img, shapes


def _left_to_right(shapes):
    return sorted(shapes, key=lambda s: (s.cx, s.box[1]))


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_scene(shapes: list[Shape]) -> str:
    """A scene as text, left to right, each object's name and box written as the answers write them (the tiny
    LLM's pretraining text, `mome.data.corpus`)."""
    return "; ".join(f"{s.name} {format_box(s.norm_box(SCENE_SIZE, SCENE_SIZE))}" for s in _left_to_right(shapes))


def describe_table(rows: list[str], cols: list[str], cells: list[list[int]]) -> str:
    """A table as text: a header line of column names, then one line per row, cells separated by " | "."""
    lines = [" | ".join(["", *cols])] + [" | ".join([r, *map(str, c)]) for r, c in zip(rows, cells)]
    return "\n".join(lines)


# A dataset's maker: (rng, record id) -> (image, instruction, answer, evaluation fields, the image's content as text)
def _caption(rng, rid):
    img, shapes = scene(rng, 1, 3)  # at most 3 objects keeps captions under a dozen words
    names = [s.name for s in _left_to_right(shapes)]
    caption = _join([f"a {n}" for n in names])
    refs = [caption, f"there is {caption}", f"{NUMBER_WORDS[len(names)]} shape{'s' if len(names) > 1 else ''}: "
            + _join(names)]
    return img, render("caption", rid), caption, {"captions": refs}, describe_scene(shapes)


def _vqa(rng, rid):
    img, shapes = scene(rng, 2, 4)
    kinds = ["color", "shape", "count", "relation"]
    while True:
        kind = rng.choice(kinds)
        if kind == "color":
            unique = [s for s in shapes if sum(o.shape == s.shape for o in shapes) == 1]
            if not unique:
                continue
            s = rng.choice(unique)
            q, a = f"What colour is the {s.shape}?", s.color
        elif kind == "shape":
            unique = [s for s in shapes if sum(o.color == s.color for o in shapes) == 1]
            if not unique:
                continue
            s = rng.choice(unique)
            q, a = f"What shape is the {s.color} object?", s.shape
        elif kind == "count":
            if rng.random() < 0.5:
                c = rng.choice(list(COLORS))
                q, a = f"How many {c} shapes are there?", str(sum(s.color == c for s in shapes))
            else:
                k = rng.choice(SHAPES)
                q, a = f"How many {k}s are there?", str(sum(s.shape == k for s in shapes))
        else:
            a_, b_ = rng.sample(shapes, 2)
            if abs(a_.cx - b_.cx) < 6:  # too close to call left/right
                continue
            q, a = f"Is the {a_.name} left of the {b_.name}?", "yes" if a_.cx < b_.cx else "no"
        return img, render("vqa", rid, question=q), a, {"answers": [a]}, describe_scene(shapes)


def _rec(rng, rid):
    img, shapes = scene(rng)
    s = rng.choice(shapes)
    box = s.norm_box(*img.size)
    return (img, render("rec", rid, expression=f"the {s.name}"), format_box(box), {"bbox": box},
            describe_scene(shapes))


def _reg(rng, rid):
    img, shapes = scene(rng)
    s = rng.choice(shapes)
    box = format_box(s.norm_box(*img.size))
    return (img, render("reg", rid, box=box), s.name, {"captions": [s.name, f"the {s.name}", f"a {s.name}"]},
            describe_scene(shapes))


# -- documents --------------------------------------------------------------------------------------------------
def _text_size(text: str) -> tuple[int, int]:
    x0, y0, x1, y1 = font().getbbox(text)
    return x1, y1


@dataclass
class Item:
    """One drawn element of a document, for the encoders' pretraining targets (`mome.data.pretrain`)."""

    label: str  # a word, a row/column name, a number, a bar label, or "bar:<value>" for a bar
    box: tuple[int, int, int, int]  # pixel corners, inclusive: (x0, y0, x1, y1)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, items: list[Item]) -> None:
    draw.text(xy, text, fill="black", font=font())
    x0, y0, x1, y1 = font().getbbox(text)
    items.append(Item(text, (xy[0] + x0, xy[1] + y0, xy[0] + x1 - 1, xy[1] + y1 - 1)))


def draw_doc_text(rng) -> tuple[Image.Image, list[str], list[Item]]:
    """2-4 distinct words, wide (one line) or tall (one word per line)."""
    n = rng.randint(2, 4)
    words = rng.sample(WORDS, n)
    items: list[Item] = []
    if rng.random() < 0.5:  # wide: one line
        w, h = 8 + sum(_text_size(x)[0] + 6 for x in words), 24
        img = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(img)
        x = 4
        for word in words:
            _text(draw, (x, 5), word, items)
            x += _text_size(word)[0] + 6
    else:  # tall: one word per line
        w, h = 48, 8 + 16 * n + rng.randint(0, 24)
        img = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(img)
        for i, word in enumerate(words):
            _text(draw, (4, 4 + 16 * i), word, items)
    return img, words, items


def _doc_text(rng, rid):
    img, words, _ = draw_doc_text(rng)
    k = rng.randrange(len(words))
    return (img, render("docvqa", rid, question=f"What is the {ORDINALS[k]} word?"), words[k], {"answers": [words[k]]},
            " ".join(words))


def draw_table(rng) -> tuple[Image.Image, list[str], list[str], list[list[int]], list[Item]]:
    """A grid with 2-4 named rows, 1-3 named columns and numbers 0-99 in the cells."""
    rows = rng.sample(ROW_NAMES, rng.randint(2, 4))
    cols = rng.sample(COL_NAMES, rng.randint(1, 3))
    cells = [[rng.randint(0, 99) for _ in cols] for _ in rows]
    cw, ch = 30, 15
    img = Image.new("RGB", (cw * (len(cols) + 1) + 1, ch * (len(rows) + 1) + 1), "white")
    draw = ImageDraw.Draw(img)
    items: list[Item] = []
    for i in range(len(rows) + 2):
        draw.line([(0, i * ch), (img.width, i * ch)], fill=(120, 120, 120))
    for j in range(len(cols) + 2):
        draw.line([(j * cw, 0), (j * cw, img.height)], fill=(120, 120, 120))
    for j, c in enumerate(cols):
        _text(draw, ((j + 1) * cw + 2, 2), c, items)
    for i, r in enumerate(rows):
        _text(draw, (2, (i + 1) * ch + 2), r, items)
        for j in range(len(cols)):
            _text(draw, ((j + 1) * cw + 2, (i + 1) * ch + 2), str(cells[i][j]), items)
    return img, rows, cols, cells, items


def _table(rng, rid):
    img, rows, cols, cells, _ = draw_table(rng)
    i, j = rng.randrange(len(rows)), rng.randrange(len(cols))
    a = str(cells[i][j])
    return (img, render("docvqa", rid, question=f"What is the {cols[j]} of the {rows[i]}?"), a, {"answers": [a]},
            describe_table(rows, cols, cells))


def draw_chart(rng) -> tuple[Image.Image, list[str], list[int], list[Item]]:
    """3-5 labelled bars of values 1-9 on a unit grid, vertical or horizontal."""
    n = rng.randint(3, 5)
    labels = list(BAR_LABELS[:n])
    values = [rng.randint(1, 9) for _ in labels]
    unit, bar, gap, margin = 6, 8, 4, 12
    vertical = rng.random() < 0.5
    length = unit * 10
    items: list[Item] = []
    if vertical:  # bars go up from a baseline, labels under them
        w, h = margin + n * (bar + gap) + gap, length + margin + 4
        img = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(img)
        base = length + 2
        for v in range(0, 10):  # light grid line per unit so values can be read off
            draw.line([(margin, base - v * unit), (w, base - v * unit)], fill=(225, 225, 225))
        draw.line([(margin, 0), (margin, base)], fill="black")
        for i, (lab, v) in enumerate(zip(labels, values)):
            x = margin + gap + i * (bar + gap)
            box = (x, base - v * unit, x + bar - 1, base - 1)
            draw.rectangle(list(box), fill=(60, 110, 200))
            items.append(Item(f"bar:{v}", box))
            _text(draw, (x + 1, base), lab, items)
    else:  # horizontal bars from a left axis, labels left of them
        w, h = length + margin + 4, margin + n * (bar + gap + 6) + gap
        img = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(img)
        for v in range(0, 10):
            draw.line([(margin + v * unit, 0), (margin + v * unit, h)], fill=(225, 225, 225))
        draw.line([(margin, 0), (margin, h)], fill="black")
        for i, (lab, v) in enumerate(zip(labels, values)):
            y = gap + i * (bar + gap + 6)
            box = (margin + 1, y, margin + v * unit, y + bar - 1)
            draw.rectangle(list(box), fill=(60, 110, 200))
            items.append(Item(f"bar:{v}", box))
            _text(draw, (1, y - 2), lab, items)
    return img, labels, values, items


def _chart(rng, rid):
    img, labels, values, _ = draw_chart(rng)
    k = rng.randrange(len(labels))
    a = str(values[k])
    return (img, render("chartqa", rid, question=f"What is the value of bar {labels[k]}?"), a, {"answers": [a]},
            ", ".join(f"{lab}: {v}" for lab, v in zip(labels, values)))


_MAKERS = {"synth-caption": _caption, "synth-vqa": _vqa, "synth-rec": _rec, "synth-reg": _reg,
           "synth-doc-text": _doc_text, "synth-table": _table, "synth-chart": _chart}


def make_record_parts(dataset: str, rng: random.Random, rid: str):
    """One record of ``dataset`` drawn from ``rng``: (image, instruction, answer, evaluation fields, the image's
    content as text). The benchmark draws with ``random.Random(f"mome-synth/{seed}/{split}/{dataset}/{i}")``."""
    return _MAKERS[dataset](rng, rid)


def _counts(n: int) -> dict[str, int]:
    """Records per dataset for a split of n: the shares of DATASETS, remainders to the first datasets."""
    counts = {d: int(n * share) for d, (*_, share) in DATASETS.items()}
    for d in list(DATASETS)[: n - sum(counts.values())]:
        counts[d] += 1
    return counts


def make_split(out_dir: Path, split: str, n: int, seed: int, progress: bool = False) -> list[dict]:
    """Draw the `n` records of one split; images go to ``out_dir/images/<split>/<dataset>/<i>.png``."""
    from tqdm import tqdm

    records = []
    bar = tqdm(total=n, desc=f"synth {split}", disable=not progress, unit="rec")
    for dataset, count in _counts(n).items():
        group, task, metric, _ = DATASETS[dataset]
        folder = out_dir / "images" / split / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rid = f"{dataset}-{split}-{i:05d}"
            rng = random.Random(f"mome-synth/{seed}/{split}/{dataset}/{i}")
            img, instruction, answer, evals, _ = make_record_parts(dataset, rng, rid)
            rel = f"images/{split}/{dataset}/{i:05d}.png"
            img.save(out_dir / rel, optimize=False, compress_level=1)
            records.append(make_record(id=rid, image=rel, instruction=instruction, answer=answer, dataset=dataset,
                                       group=group, task=task, metric=metric, **evals))
            bar.update()
    bar.close()
    return records


STAMP = "synth.json"  # what a folder was generated with; `is_current` compares it with a request
VERSION = 2  # bump when the drawings or the records change, so old folders are regenerated


def stamp(n_train: int, n_test: int, seed: int) -> dict:
    return {"generator": "mome.data.synth", "version": VERSION, "n_train": n_train, "n_test": n_test, "seed": seed}


def is_current(out_dir: str | os.PathLike, n_train: int, n_test: int, seed: int) -> bool:
    """Whether ``out_dir`` holds the benchmark these arguments generate (its stamp matches)."""
    try:
        return json.loads((Path(out_dir) / STAMP).read_text()) == stamp(n_train, n_test, seed)
    except (OSError, ValueError):
        return False


def ensure(out_dir: str | os.PathLike, n_train: int, n_test: int, seed: int, log=None) -> bool:
    """Generate the benchmark into ``out_dir`` unless it already holds this one (`is_current`); True if it did.
    ``log(message)`` is told why before generating."""
    if is_current(out_dir, n_train, n_test, seed):
        return False
    if log is not None:
        why = ("first use" if not (Path(out_dir) / "train.jsonl").exists()
               else "it holds another size, seed or version")
        log(f"generating the synthetic benchmark in {out_dir} ({why}) ...")
    generate(out_dir, n_train=n_train, n_test=n_test, seed=seed)
    return True


def generate(out_dir: str | os.PathLike, n_train: int = 2000, n_test: int = 400, seed: int = 0,
             progress: bool = False) -> dict[str, int]:
    """Write ``out_dir/train.jsonl``, ``out_dir/test.jsonl`` and ``out_dir/images/...`` (PNG).

    Built in a temporary sibling folder and moved into place when complete, so `out_dir` is never half-written.
    An existing `out_dir` is replaced only if it holds nothing but a previous benchmark (train.jsonl, test.jsonl,
    images/): any other content is refused rather than deleted. Returns the record count per split.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        other = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else [out_dir.name]
        other = [n for n in other if n not in ("train.jsonl", "test.jsonl", "images", STAMP)]
        if other:
            raise ValueError(f"synth: --out {str(out_dir)!r} exists and holds other files ({other[:3]}); "
                             f"choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        counts = {}
        for split, n in (("train", n_train), ("test", n_test)):
            counts[split] = write_records(tmp / f"{split}.jsonl", make_split(tmp, split, n, seed, progress))
        (tmp / STAMP).write_text(json.dumps(stamp(n_train, n_test, seed)) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
