"""`python -m mome.data convert official`: the authors' released training files (OFFICIAL.md) on files written here
in their format: groups, `Datasets/` stripping, REC/REG boxes in awkward number formats, missing images, bad files,
and the CLI end to end."""

import json
import os
import subprocess
import sys
import warnings

import pytest
from PIL import Image

from mome.data import MultimodalDataset, load_records, parse_box
from mome.data.converters import REGISTRY, convert
from mome.data.converters.official import parse_boxes

# As in their files: image_path with a leading "Datasets/", relative to their vis_root after it.
GENERAL = [
    {"image_path": "Datasets/coco/images/train2014/COCO_train2014_000000000009.jpg",
     "question": "Please describe this image in short.", "answer": "A plate of food on a table."},
    {"image_path": "Datasets/gqa/images/2354786.jpg", "question": "Is the sky blue?", "answer": "yes"},
]
REC = [
    {"image_path": "Datasets/coco/images/train2014/COCO_train2014_000000000009.jpg",
     "question": "In the given image, can you find the blue car right and tell me its coordinates?",
     "answer": "[0.616,0.602,0.987,0.864]"},
    {"image_path": "Datasets/coco/images/train2014/COCO_train2014_000000000025.jpg",
     "question": "Where is the giraffe on the left?", "answer": "[ .1 , 0.20,1., 1 ]"},
]
REG = [
    {"image_path": "Datasets/coco/images/train2014/COCO_train2014_000000000025.jpg",
     "question": "In your own words, what sets the designated area [0.616,0.602,0.987,0.864] in image apart?",
     "answer": "giraffe on the left"},
]
DOC = [
    {"image_path": "Datasets/ureader-instruction-1.0/images/chart_1.jpg",
     "question": "What is the value of the red bar?", "answer": "42"},
    {"image_path": "Datasets/ureader-instruction-1.0/images/doc_7.jpg",
     "question": "Which is the micro blogging social site that limits each post to 140 characters?",
     "answer": "twitter"},
]
FILES = {"General_data.json": GENERAL, "REC_data.json": REC, "REG_data.json": REG, "Doc_data.json": DOC}


def _write(folder, files=FILES):
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in files.items():
        (folder / name).write_text(items if isinstance(items, str) else json.dumps(items))
    return folder


def _images(root, files=FILES):
    """Tiny real images at every image_path (minus Datasets/) under `root`."""
    for items in files.values():
        for d in items:
            path = root / d["image_path"][len("Datasets/"):]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6), (120, 30, 200)).save(path, format="PNG")
    return root


def _convert(tmp_path, files=FILES, **options):
    src = _write(tmp_path / "MoME-data-train", files)
    out = tmp_path / "train.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = convert("official", src, out, **options)
    records = load_records(out)
    assert n == len(records)
    return records


def _text(rec, turn):
    return rec["conversations"][turn]["value"]


def test_all_four_groups_ids_images_and_evaluation_fields(tmp_path):
    recs = _convert(tmp_path)
    assert [r["id"] for r in recs] == ["official-general-0", "official-general-1", "official-rec-0", "official-rec-1",
                                       "official-reg-0", "official-document-0", "official-document-1"]
    assert [r["group"] for r in recs] == ["general"] * 2 + ["rec"] * 2 + ["reg"] + ["document"] * 2
    assert {r["dataset"] for r in recs} == {"official-general", "official-rec", "official-reg", "official-document"}
    assert recs[0]["image"] == "coco/images/train2014/COCO_train2014_000000000009.jpg"
    assert recs[-1]["image"] == "ureader-instruction-1.0/images/doc_7.jpg"
    assert _text(recs[1], 0) == "<image>\nIs the sky blue?" and _text(recs[1], 1) == "yes"
    assert recs[1]["metric"] == "exact_match" and recs[1]["answers"] == ["yes"]
    assert recs[2]["metric"] == "iou_acc" and recs[2]["task"] == "rec"
    assert recs[4]["metric"] == "cider" and recs[4]["captions"] == ["giraffe on the left"]
    assert recs[5]["metric"] == "anls" and recs[5]["answers"] == ["42"]
    assert REGISTRY["official"].default_split == "train"


def test_rec_and_reg_boxes_parsed_and_written_in_our_format(tmp_path):
    recs = {r["id"]: r for r in _convert(tmp_path)}
    rec0, rec1, reg = recs["official-rec-0"], recs["official-rec-1"], recs["official-reg-0"]
    assert rec0["bbox"] == [0.616, 0.602, 0.987, 0.864]
    assert _text(rec0, 1) == "[0.616, 0.602, 0.987, 0.864]"
    assert rec1["bbox"] == [0.1, 0.2, 1.0, 1.0] and _text(rec1, 1) == "[0.100, 0.200, 1.000, 1.000]"
    assert parse_box(_text(rec1, 1)) == rec1["bbox"]
    assert _text(reg, 0) == ("<image>\nIn your own words, what sets the designated area "
                             "[0.616, 0.602, 0.987, 0.864] in image apart?")
    assert _text(reg, 1) == "giraffe on the left"


def test_verbatim_keeps_their_text(tmp_path):
    recs = {r["id"]: r for r in _convert(tmp_path, verbatim=True)}
    assert _text(recs["official-rec-1"], 1) == "[ .1 , 0.20,1., 1 ]"
    assert recs["official-rec-1"]["bbox"] == [0.1, 0.2, 1.0, 1.0]
    assert "[0.616,0.602,0.987,0.864]" in _text(recs["official-reg-0"], 0)


@pytest.mark.parametrize("text,boxes,written", [
    ("[0.616,0.602,0.987,0.864]", [[0.616, 0.602, 0.987, 0.864]], "[0.616, 0.602, 0.987, 0.864]"),
    ("[0,0,1,1]", [[0, 0, 1, 1]], "[0.000, 0.000, 1.000, 1.000]"),
    ("[.5,.25,1.,1.0]", [[0.5, 0.25, 1, 1]], "[0.500, 0.250, 1.000, 1.000]"),
    ("[5e-1, 2.5E-1, +0.75, 1e0]", [[0.5, 0.25, 0.75, 1]], "[0.500, 0.250, 0.750, 1.000]"),
    ("[0.1 0.2 0.3 0.4]", [[0.1, 0.2, 0.3, 0.4]], "[0.100, 0.200, 0.300, 0.400]"),
    ("[0.123456,0.2,0.3,0.4]", [[0.123456, 0.2, 0.3, 0.4]], "[0.123, 0.200, 0.300, 0.400]"),
    ("[0.3,0.4,0.1,0.2]", [[0.1, 0.2, 0.3, 0.4]], "[0.100, 0.200, 0.300, 0.400]"),  # reversed corners: swapped
    ("two: [0.1,0.1,0.2,0.2;0.5,0.5,0.9,0.9].", [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]],
     "two: [0.100, 0.100, 0.200, 0.200; 0.500, 0.500, 0.900, 0.900]."),
    ("a [0.1,0.1,0.2,0.2] and b [0.3,0.3,0.4,0.4]", [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]],
     "a [0.100, 0.100, 0.200, 0.200] and b [0.300, 0.300, 0.400, 0.400]"),
    ("no box [0.1,0.2,0.3] here (0.1,0.2,0.3,0.4)", [], "no box [0.1,0.2,0.3] here (0.1,0.2,0.3,0.4)"),
])
def test_parse_boxes_awkward_formats(text, boxes, written):
    got, out = parse_boxes(text)
    assert len(got) == len(boxes) and all(g == pytest.approx(b) for g, b in zip(got, boxes))
    assert out == written


@pytest.mark.parametrize("text", ["[12,30,200,180]", "[0.1,0.2,1.5,0.9]", "[-0.1,0.2,0.5,0.9]"])
def test_parse_boxes_rejects_unnormalised(text):
    with pytest.raises(ValueError, match=r"not normalised to \[0, 1\]"):
        parse_boxes(text)


def test_datasets_prefix_only_at_the_start(tmp_path):
    files = {"General_data.json": [
        {"image_path": "Datasets/a/Datasets/b.jpg", "question": "q", "answer": "a"},
        {"image_path": "flickr30K/images/x.jpg", "question": "q", "answer": "a"},  # no prefix: kept
        {"image_path": "/abs/images/y.jpg", "question": "q", "answer": "a"},  # absolute: kept (their loader too)
    ]}
    recs = _convert(tmp_path, files)
    assert [r["image"] for r in recs] == ["a/Datasets/b.jpg", "flickr30K/images/x.jpg", "/abs/images/y.jpg"]


def test_some_files_absent_warns_none_fails(tmp_path):
    src = _write(tmp_path / "part", {"REC_data.json": REC})
    with pytest.warns(UserWarning, match="General_data.json, REG_data.json, Doc_data.json not in"):
        assert convert("official", src, tmp_path / "rec.jsonl") == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of .*General_data.json"):
        convert("official", tmp_path / "empty", tmp_path / "none.jsonl")


@pytest.mark.parametrize("name,content,message", [
    ("REC_data.json", "{not json", r"REC_data.json: not valid JSON"),
    ("General_data.json", b"\xff\xfe\x00garbage", r"General_data.json: not UTF-8"),
    ("Doc_data.json", json.dumps({"data": DOC}), r"Doc_data.json: expected a JSON list"),
    ("Doc_data.json", json.dumps(DOC + ["oops"]), r"Doc_data.json\[2\]: expected an object"),
    ("General_data.json", json.dumps(GENERAL + [{"image_path": "Datasets/x.jpg", "question": "q"}]),
     r"General_data.json\[2\]: missing key 'answer'"),
    ("REG_data.json", json.dumps([{"image_path": "Datasets/x.jpg", "question": "q", "answer": 3}]),
     r"REG_data.json\[0\]: 'answer' must be a string"),
    ("General_data.json", json.dumps([{"image_path": "Datasets/", "question": "q", "answer": "a"}]),
     r"General_data.json\[0\]: empty image_path"),
    ("REC_data.json", json.dumps(REC + [{"image_path": "Datasets/x.jpg", "question": "the cat", "answer": "left"}]),
     r"REC_data.json\[2\]: no box \[x1, y1, x2, y2\] in the answer"),
    ("REC_data.json", json.dumps([REC[0], {"image_path": "Datasets/x.jpg", "question": "q",
                                           "answer": "[12,30,200,180]"}]),
     r"REC_data.json\[1\]: box '\[12,30,200,180\]' is not normalised"),
    ("REG_data.json", json.dumps([{"image_path": "Datasets/x.jpg", "question": "Describe the region.",
                                   "answer": "a cat"}]), r"REG_data.json\[0\]: no box .* in the question"),
])
def test_bad_files_name_the_file_and_record(tmp_path, name, content, message):
    src = _write(tmp_path / "bad")
    (src / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        convert("official", src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written


def test_missing_images_error_or_skip_with_count(tmp_path):
    root = _images(tmp_path / "image_folder")
    recs = _convert(tmp_path, images=root)
    assert len(recs) == 7
    ds = MultimodalDataset(recs, image_root=root)  # the converted paths resolve under the image root
    assert ds[0]["image"].size == (8, 6) and ds[0]["instruction"] == "Please describe this image in short."

    (root / "gqa/images/2354786.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"General_data.json\[1\]: image 'gqa/images/2354786.jpg' not found "
                                                r"under --images"):
        _convert(tmp_path, images=root)
    src = tmp_path / "MoME-data-train"
    with pytest.warns(UserWarning, match=r"skipped 1 records whose image is missing .*General_data.json\[1\] "
                                         r"gqa/images/2354786.jpg"):
        assert convert("official", src, tmp_path / "skip.jsonl", images=root, on_missing="skip") == 6
    assert "official-general-1" not in {r["id"] for r in load_records(tmp_path / "skip.jsonl")}
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        convert("official", src, tmp_path / "x.jsonl", images=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not take images"):
        convert("vqav2", src, tmp_path / "x.jsonl", images=root)


def _cli(*args):
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "mome.data", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_end_to_end(tmp_path):
    src = _write(tmp_path / "MoME-data-train")
    root = _images(tmp_path / "image_folder")
    out = tmp_path / "out" / "train.jsonl"
    proc = _cli("convert", "official", "--src", str(src), "--out", str(out), "--images", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "official (train): wrote 7 records" in proc.stderr
    recs = load_records(out)
    assert [r["group"] for r in recs].count("rec") == 2 and recs[2]["bbox"] == [0.616, 0.602, 0.987, 0.864]

    (root / "coco/images/train2014/COCO_train2014_000000000025.jpg").unlink()  # used by REC[1] and REG[0]
    proc = _cli("convert", "official", "--src", str(src), "--out", str(out), "--images", str(root),
                "--on-missing", "skip", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "warning: official: skipped 2 records whose image is missing" in proc.stderr
    assert len(load_records(out)) == 5

    proc = _cli("list")
    assert proc.returncode == 0 and "official " in proc.stdout


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    src = _write(tmp_path / "MoME-data-train")
    (src / "REC_data.json").write_text(json.dumps([REC[0], {"image_path": "Datasets/x.jpg", "question": "q"}]))
    proc = _cli("convert", "official", "--src", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[0] == (
        f"python -m mome.data: error: {src / 'REC_data.json'}[1]: missing key 'answer' (has ['image_path', "
        f"'question'])")
    (src / "REC_data.json").write_text("[1, 2")
    proc = _cli("convert", "official", "--src", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "REC_data.json: not valid JSON" in proc.stderr
    proc = _cli("convert", "coco-caption", "--src", str(src), "--out", str(tmp_path / "o.jsonl"), "--images", "x")
    assert proc.returncode == 2 and "--images applies to official only" in proc.stderr
    proc = _cli("convert", "official", "--src", str(src), "--out", str(tmp_path / "o.jsonl"), "--on-missing", "skip")
    assert proc.returncode == 2 and "--on-missing needs --images" in proc.stderr
