"""Synthetic benchmark: determinism, groups/metrics, REC boxes match the drawn pixels, answers match the drawing."""

import hashlib
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mome.data import GROUPS, MultimodalDataset, load_records, parse_box
from mome.data.synth import COLORS, DATASETS, generate


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "bench"
    counts = generate(out, n_train=140, n_test=35, seed=7)
    return out, counts


def test_layout_counts_and_validity(bench):
    out, counts = bench
    assert counts == {"train": 140, "test": 35}
    train, test = load_records(out / "train.jsonl"), load_records(out / "test.jsonl")  # validates each
    assert len(train) == 140 and len(test) == 35
    by_ds = Counter(r["dataset"] for r in train)
    assert set(by_ds) == set(DATASETS)
    for name, (group, task, metric, share) in DATASETS.items():
        assert by_ds[name] == pytest.approx(140 * share, abs=1)
    for r in train + test:
        group, task, metric, _ = DATASETS[r["dataset"]]
        assert (r["group"], r["task"], r["metric"]) == (group, task, metric)
    assert {r["group"] for r in train} == set(GROUPS)
    assert len({r["id"] for r in train + test}) == 175
    ds = MultimodalDataset(test, out)  # every image exists and decodes
    assert all(ds[i]["image"].mode == "RGB" for i in range(len(ds)))


def test_deterministic_and_seed_dependent(bench, tmp_path):
    out, _ = bench
    generate(tmp_path / "again", n_train=140, n_test=35, seed=7)
    assert _digest(tmp_path / "again") == _digest(out)
    generate(tmp_path / "other", n_train=140, n_test=35, seed=8)
    a = (out / "train.jsonl").read_text()
    b = (tmp_path / "other" / "train.jsonl").read_text()
    assert a != b


def test_train_and_test_images_differ(bench):
    out, _ = bench
    train = {(out / r["image"]).read_bytes() for r in load_records(out / "train.jsonl")}
    test = [(out / r["image"]).read_bytes() for r in load_records(out / "test.jsonl")
            if r["dataset"] not in ("synth-doc-text",)]  # two-word documents may coincide by chance
    assert not any(t in train for t in test)


def _colour_mask(img, colour):
    return np.all(np.asarray(img, dtype=np.int16) == np.array(COLORS[colour]), axis=-1)


def test_rec_box_matches_drawn_object(bench):
    out, _ = bench
    recs = [r for r in load_records(out / "train.jsonl") if r["dataset"] == "synth-rec"]
    assert len(recs) >= 30
    for r in recs:
        img = Image.open(out / r["image"]).convert("RGB")
        W, H = img.size
        box = parse_box(r["conversations"][1]["value"])
        assert box == pytest.approx(r["bbox"], abs=1e-9)
        colour, shape = re.search(r"the (\w+) (circle|square|triangle)", r["conversations"][0]["value"]).groups()
        ys, xs = np.nonzero(_colour_mask(img, colour))
        # Other shapes may share the colour: keep the pixels inside the box and check they span it exactly.
        x1, y1, x2, y2 = (round(box[0] * W), round(box[1] * H), round(box[2] * W), round(box[3] * H))
        inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        assert inside.any(), r["id"]
        assert (xs[inside].min(), ys[inside].min(), xs[inside].max() + 1, ys[inside].max() + 1) == (x1, y1, x2, y2)


def test_reg_answer_names_the_boxed_object(bench):
    out, _ = bench
    for r in load_records(out / "train.jsonl"):
        if r["dataset"] != "synth-reg":
            continue
        colour, shape = r["conversations"][1]["value"].split()
        assert r["captions"][0] == f"{colour} {shape}"
        img = Image.open(out / r["image"]).convert("RGB")
        W, H = img.size
        box = parse_box(r["conversations"][0]["value"])
        crop = img.crop((round(box[0] * W), round(box[1] * H), round(box[2] * W), round(box[3] * H)))
        frac = _colour_mask(crop, colour).mean()
        # filled fraction of the box: square 1, circle ~pi/4, triangle ~1/2
        expected = {"square": (0.97, 1.0), "circle": (0.6, 0.9), "triangle": (0.35, 0.65)}[shape]
        assert expected[0] <= frac <= expected[1], (r["id"], frac)


def _components(mask):
    """Number of 4-connected components of a boolean mask."""
    seen = np.zeros_like(mask)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return n


def test_vqa_colour_counts_match_pixels(bench):
    out, _ = bench
    checked = 0
    for r in load_records(out / "train.jsonl") + load_records(out / "test.jsonl"):
        m = re.search(r"How many (\w+) shapes", r["conversations"][0]["value"])
        if r["dataset"] != "synth-vqa" or not m:
            continue
        img = Image.open(out / r["image"]).convert("RGB")
        assert str(_components(_colour_mask(img, m.group(1)))) == r["answers"][0] == r["conversations"][1]["value"]
        checked += 1
    assert checked >= 2


def test_answers_short(bench):
    out, _ = bench
    for r in load_records(out / "train.jsonl"):
        limit = 12 if r["task"] == "caption" else 4  # a REC box '[x1, y1, x2, y2]' is 4 words
        assert len(r["conversations"][1]["value"].split()) <= limit, r


def test_cli_synth(tmp_path):
    from mome.data.__main__ import main
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "14", "--seed", "3", "--quiet"]) == 0
    assert len(load_records(tmp_path / "s" / "train.jsonl")) == 14
    assert len(load_records(tmp_path / "s" / "test.jsonl")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder moved into place
    # regenerating over a previous benchmark replaces it; a folder with anything else is refused, untouched
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "7", "--quiet"]) == 0
    assert len(load_records(tmp_path / "s" / "train.jsonl")) == 7
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds other files"):
        main(["synth", "--out", str(tmp_path / "mine"), "--n", "7", "--quiet"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_stamp_says_what_a_folder_holds(tmp_path):
    from mome.data import synth

    out = tmp_path / "b"
    assert not synth.is_current(out, 14, 7, 0)
    generate(out, n_train=14, n_test=7, seed=0)
    assert synth.is_current(out, 14, 7, 0)
    assert not synth.is_current(out, 28, 7, 0) and not synth.is_current(out, 14, 7, 1)
    generate(out, n_train=28, n_test=7, seed=0)  # a folder holding only a benchmark (and its stamp) is replaced
    assert synth.is_current(out, 28, 7, 0) and len(load_records(out / "train.jsonl")) == 28


def test_document_layouts_name_what_is_drawn():
    import random

    from mome.data import synth

    img, words, items = synth.draw_doc_text(random.Random(0))
    assert [it.label for it in items] == words
    px = np.asarray(img.convert("L"))
    for it in items:  # every item box holds dark (text) pixels and lies inside the image
        x0, y0, x1, y1 = it.box
        assert 0 <= x0 <= x1 < img.width and 0 <= y0 <= y1 < img.height
        assert px[y0:y1 + 1, x0:x1 + 1].min() < 128
    img, labels, values, items = synth.draw_chart(random.Random(1))
    assert sorted(it.label for it in items if it.label.startswith("bar:")) == sorted(f"bar:{v}" for v in values)
