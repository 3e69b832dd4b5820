"""Every converter on a small fixture written in its dataset's official annotation layout.

Each test builds the fixture folder, runs the converter (through the CLI for one of them) and checks the exact
records: ids, images, targets, evaluation fields, group/task/metric; plus split selection and bad arguments.
"""

import json
import pickle

import pytest

from mome.data import instruction_of, load_records, parse_box
from mome.data.converters import REGISTRY, convert
from mome.data.converters.refcoco import SafeUnpickler, load_refs


def _write(root, files: dict):
    """files: {relative path: json-able object | bytes | str}; .jsonl values are lists written one per line."""
    for rel, obj in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, bytes):
            p.write_bytes(obj)
        elif rel.endswith(".jsonl"):
            p.write_text("".join(json.dumps(o) + "\n" for o in obj))
        else:
            p.write_text(json.dumps(obj))
    return root


def _run(name, src, tmp_path, split=None):
    out = tmp_path / f"{name}.jsonl"
    n = convert(name, src, out, split=split)
    recs = load_records(out)  # validates every record
    assert n == len(recs)
    conv = REGISTRY[name]
    for r in recs:
        assert (r["group"], r["metric"]) == (conv.group, conv.metric)
    return recs


def _target(r):
    return r["conversations"][1]["value"]


# -- captions ------------------------------------------------------------------------------------------------------
KARPATHY = {"dataset": "coco", "images": [
    {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "imgid": 0, "split": "test", "cocoid": 42,
     "sentences": [{"raw": "A dog on a couch.", "tokens": ["a", "dog"], "sentid": 1},
                   {"raw": " A brown dog sleeping. ", "tokens": [], "sentid": 2}]},
    {"filepath": "train2014", "filename": "COCO_train2014_000000000007.jpg", "imgid": 1, "split": "restval",
     "cocoid": 7, "sentences": [{"raw": "Two cats.", "sentid": 3}, {"raw": "Cats on a bed.", "sentid": 4}]},
    {"filepath": "train2014", "filename": "COCO_train2014_000000000008.jpg", "imgid": 2, "split": "train",
     "cocoid": 8, "sentences": [{"raw": "A bus.", "sentid": 5}]},
    {"filepath": "val2014", "filename": "COCO_val2014_000000000009.jpg", "imgid": 3, "split": "val", "cocoid": 9,
     "sentences": [{"raw": "A tree.", "sentid": 6}]},
]}


def test_coco_karpathy_test_and_train(tmp_path):
    src = _write(tmp_path / "coco", {"dataset_coco.json": KARPATHY})
    recs = _run("coco-caption", src, tmp_path)  # default: Karpathy test
    assert len(recs) == 1
    r = recs[0]
    assert r["id"] == "coco-caption-test-42" and r["image"] == "val2014/COCO_val2014_000000000042.jpg"
    assert r["captions"] == ["A dog on a couch.", "A brown dog sleeping."] and _target(r) == "A dog on a couch."
    assert (r["dataset"], r["task"]) == ("coco-caption", "caption")
    train = _run("coco-caption", src, tmp_path, split="train")  # train + restval, one record per caption
    assert [(x["id"], _target(x)) for x in train] == [
        ("coco-caption-train-7-0", "Two cats."), ("coco-caption-train-7-1", "Cats on a bed."),
        ("coco-caption-train-8-0", "A bus.")]


def test_flickr30k_karpathy(tmp_path):
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "test", "sentences": [{"raw": "Two men."},
                                                                                   {"raw": "Men outside."}]},
        {"filename": "10002456.jpg", "imgid": 1, "split": "train", "sentences": [{"raw": "Workers."}]}]}
    recs = _run("flickr30k", _write(tmp_path / "f", {"dataset_flickr30k.json": data}), tmp_path)
    assert [(r["id"], r["image"], r["captions"]) for r in recs] == [
        ("flickr30k-test-1000092795", "flickr30k-images/1000092795.jpg", ["Two men.", "Men outside."])]


def test_nocaps(tmp_path):
    data = {"licenses": [], "info": {}, "images": [
        {"id": 0, "file_name": "0013ea2087020901.jpg", "open_images_id": "0013ea2087020901", "height": 10,
         "width": 10, "domain": "in-domain"},
        {"id": 1, "file_name": "00223fe3ba10b7b7.jpg", "domain": "out-domain"}],
        "annotations": [{"image_id": 1, "id": 10, "caption": "A toy."}, {"image_id": 0, "id": 11, "caption": "A car."},
                        {"image_id": 0, "id": 12, "caption": "Red car."}]}
    recs = _run("nocaps", _write(tmp_path / "n", {"nocaps_val_4500_captions.json": data}), tmp_path)
    assert [(r["id"], r["image"], r["captions"]) for r in recs] == [
        ("nocaps-val-0", "val/0013ea2087020901.jpg", ["A car.", "Red car."]),
        ("nocaps-val-1", "val/00223fe3ba10b7b7.jpg", ["A toy."])]


def test_textcaps(tmp_path):
    refs = ["A sign says STOP.", "A red STOP sign."]
    data = {"dataset_type": "val", "dataset_name": "textcaps", "data": [
        {"image_id": "011e7e629fb9ae7b", "caption_id": 1, "caption_str": refs[0], "reference_strs": refs,
         "image_path": "train/011e7e629fb9ae7b.jpg"},
        {"image_id": "011e7e629fb9ae7b", "caption_id": 2, "caption_str": refs[1], "reference_strs": refs,
         "image_path": "train/011e7e629fb9ae7b.jpg"}]}
    recs = _run("textcaps", _write(tmp_path / "t", {"TextCaps_0.1_val.json": data}), tmp_path)
    assert len(recs) == 1
    assert recs[0]["image"] == "train_images/011e7e629fb9ae7b.jpg" and recs[0]["captions"] == refs
    assert recs[0]["group"] == "document"


# -- VQA -----------------------------------------------------------------------------------------------------------
def _vqa_files(qfile, afile, split):
    qs = {"questions": [{"image_id": 262148, "question": "Where is he?", "question_id": 262148000}]}
    ans = {"annotations": [{"question_id": 262148000, "image_id": 262148, "multiple_choice_answer": "park",
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                        for i, a in enumerate(["park"] * 7 + ["field"] * 3)],
                            "answer_type": "other", "question_type": "where is"}]}
    return {qfile.format(split=split): qs, afile.format(split=split): ans}


@pytest.mark.parametrize("name,qfile,afile,split", [
    ("vqav2", "v2_OpenEnded_mscoco_{split}2014_questions.json", "v2_mscoco_{split}2014_annotations.json", "train"),
    ("okvqa", "OpenEnded_mscoco_{split}2014_questions.json", "mscoco_{split}2014_annotations.json", "val"),
])
def test_vqa_api_layout(tmp_path, name, qfile, afile, split):
    recs = _run(name, _write(tmp_path / name, _vqa_files(qfile, afile, split)), tmp_path)
    assert len(recs) == 1
    r = recs[0]
    assert r["id"] == f"{name}-{split}-262148000"
    assert r["image"] == f"{split}2014/COCO_{split}2014_000000262148.jpg"
    assert _target(r) == "park" and r["answers"] == ["park"] * 7 + ["field"] * 3
    assert instruction_of(r).startswith("Where is he?\n")


def test_aokvqa_multiple_choice(tmp_path):
    data = [{"split": "val", "image_id": 461751, "question_id": "22jbM6gDxdaMaunuzgrsBB",
             "question": "What is in the motorcyclist's mouth?", "choices": ["toothpick", "food", "popsicle stick",
                                                                              "cigarette"],
             "correct_choice_idx": 3, "direct_answers": ["cigarette"] * 10, "difficult_direct_answer": False,
             "rationales": ["He's smoking."]}]
    recs = _run("aokvqa", _write(tmp_path / "a", {"aokvqa_v1p0_val.json": data}), tmp_path)
    r = recs[0]
    assert r["image"] == "val2017/000000461751.jpg" and _target(r) == "D" and r["answers"] == ["D"]
    assert "A. toothpick\nB. food\nC. popsicle stick\nD. cigarette" in instruction_of(r)
    assert r["direct_answers"] == ["cigarette"] * 10


def test_gqa(tmp_path):
    data = {"201307251": {"imageId": "n161313", "question": "Is it overcast?", "answer": "no",
                          "fullAnswer": "No, it is clear.", "isBalanced": True}}
    recs = _run("gqa", _write(tmp_path / "g", {"testdev_balanced_questions.json": data}), tmp_path)
    assert [(r["id"], r["image"], _target(r), r["answers"]) for r in recs] == [
        ("gqa-testdev-201307251", "images/n161313.jpg", "no", ["no"])]
    with pytest.raises(FileNotFoundError, match="train_balanced_questions.json"):
        _run("gqa", tmp_path / "g", tmp_path, split="train")


def test_vsr_val_reads_dev(tmp_path):
    lines = [{"image": "000000085637.jpg", "caption": "The umbrella is at the side of the bed.", "label": 1,
              "relation": "at the side of", "subj": "umbrella", "obj": "bed"},
             {"image": "000000001.jpg", "caption": "The cat is under the table.", "label": 0}]
    recs = _run("vsr", _write(tmp_path / "v", {"splits/random/dev.jsonl": lines}), tmp_path)
    assert [(r["image"], _target(r)) for r in recs] == [("images/000000085637.jpg", "true"),
                                                        ("images/000000001.jpg", "false")]
    assert "The umbrella is at the side of the bed." in instruction_of(recs[0])


def test_iconqa(tmp_path):
    problems = {
        "1": {"question": "Which is bigger?", "choices": ["3", "5"], "answer": 1, "ques_type": "choose_txt",
              "grade": "kindergarten", "label": "comparing", "split": "test"},
        "2": {"question": "How many dots?", "choices": None, "answer": "7", "ques_type": "fill_in_blank",
              "split": "test"},
        "3": {"question": "Pick the circle.", "choices": ["choice_0.png", "choice_1.png"], "answer": 0,
              "ques_type": "choose_img", "split": "test"},
        "4": {"question": "How many?", "answer": "2", "ques_type": "fill_in_blank", "split": "train"}}
    recs = _run("iconqa", _write(tmp_path / "i", {"iconqa_data/problems.json": problems}), tmp_path)
    assert [(r["id"], r["image"], _target(r), r["task"]) for r in recs] == [
        ("iconqa-test-1", "iconqa_data/iconqa/test/choose_txt/1/image.png", "B", "multiple_choice"),
        ("iconqa-test-2", "iconqa_data/iconqa/test/fill_in_blank/2/image.png", "7", "vqa")]
    assert "A. 3\nB. 5" in instruction_of(recs[0])


def test_textvqa(tmp_path):
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question": "what brand is this?", "image_id": "003a8ae2ef43b901", "question_id": 34602,
         "answers": ["nokia"] * 6 + ["toshiba"] * 4, "image_classes": ["Mobile phone"], "set_name": "val"}]}
    recs = _run("textvqa", _write(tmp_path / "t", {"TextVQA_0.5.1_val.json": data}), tmp_path)
    r = recs[0]
    assert (r["id"], r["image"], _target(r)) == ("textvqa-val-34602", "train_images/003a8ae2ef43b901.jpg", "nokia")
    assert len(r["answers"]) == 10 and r["metric"] == "vqa_acc"


# -- RefCOCO ---------------------------------------------------------------------------------------------------------
INSTANCES = {"images": [{"id": 581857, "width": 640, "height": 480, "file_name": "COCO_train2014_000000581857.jpg"}],
             "annotations": [{"id": 1719310, "image_id": 581857, "bbox": [64.0, 48.0, 320.0, 240.0],
                              "category_id": 1}],
             "categories": [{"id": 1, "name": "person"}]}
REFS = [{"ref_id": 0, "ann_id": 1719310, "image_id": 581857, "split": "val", "category_id": 1, "sent_ids": [0, 1],
         "file_name": "COCO_train2014_000000581857_16.jpg",
         "sentences": [{"sent_id": 0, "sent": "the lady with the blue shirt", "raw": "THE lady", "tokens": []},
                       {"sent_id": 1, "sent": "lady on left", "raw": "lady on left", "tokens": []}]},
        {"ref_id": 1, "ann_id": 1719310, "image_id": 581857, "split": "testA", "sentences": [
            {"sent_id": 2, "sent": "woman"}]}]


@pytest.fixture
def refcoco_src(tmp_path):
    return _write(tmp_path / "refcoco", {"instances.json": INSTANCES,
                                         "refs(unc).p": pickle.dumps(REFS, protocol=2)})


def test_refcoco_rec(refcoco_src, tmp_path):
    recs = _run("refcoco-rec", refcoco_src, tmp_path)
    assert [r["id"] for r in recs] == ["refcoco-rec-val-0-0", "refcoco-rec-val-0-1"]
    for r in recs:
        assert r["image"] == "train2014/COCO_train2014_000000581857.jpg"
        assert r["bbox"] == [0.1, 0.1, 0.6, 0.6]
        assert _target(r) == "[0.100, 0.100, 0.600, 0.600]" and parse_box(_target(r)) == r["bbox"]
        assert (r["group"], r["task"], r["dataset"]) == ("rec", "rec", "refcoco")
    assert "the lady with the blue shirt" in instruction_of(recs[0])
    assert [r["id"] for r in _run("refcoco-rec", refcoco_src, tmp_path, split="testA")] == ["refcoco-rec-testA-1-2"]


def test_refcoco_reg(refcoco_src, tmp_path):
    recs = _run("refcoco-reg", refcoco_src, tmp_path)
    assert len(recs) == 1
    r = recs[0]
    assert r["captions"] == ["the lady with the blue shirt", "lady on left"] and r["group"] == "reg"
    assert "[0.100, 0.100, 0.600, 0.600]" in instruction_of(r)


def test_refcocog_umd_splits(tmp_path):
    refs = [dict(REFS[0], split="test")]
    src = _write(tmp_path / "refcocog", {"instances.json": INSTANCES, "refs(umd).p": pickle.dumps(refs, protocol=2)})
    assert len(_run("refcocog-rec", src, tmp_path, split="test")) == 2
    with pytest.raises(ValueError, match="--split 'testA'"):
        convert("refcocog-rec", src, tmp_path / "x.jsonl", split="testA")
    assert len(_run("refcoco+-reg", _write(tmp_path / "refcoco+", {
        "instances.json": INSTANCES, "refs(unc).p": pickle.dumps(REFS, protocol=0)}), tmp_path)) == 1


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    payload = pickle.dumps([{"ref_id": 0, "x": _Evil()}], protocol=2)
    assert b"system" in payload
    path = tmp_path / "refs(unc).p"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=r"refusing to load global (posix|os|nt)\.system"):
        load_refs(path)
    src = _write(tmp_path / "evil", {"instances.json": INSTANCES, "refs(unc).p": payload})
    with pytest.raises(ValueError, match="refusing"):
        convert("refcoco-rec", src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_safe_unpickler_admits_plain_data():
    import io
    obj = {"a": [1, 2.5, None, True], "b": ("x", b"y"), "c": {"d": "é"}}
    assert SafeUnpickler(io.BytesIO(pickle.dumps(obj))).load() == obj
    with pytest.raises(pickle.UnpicklingError):
        SafeUnpickler(io.BytesIO(pickle.dumps({1, 2}, protocol=2))).load()  # set() is a global before protocol 4


# -- documents ---------------------------------------------------------------------------------------------------------
def test_chartqa_human_and_augmented(tmp_path):
    src = _write(tmp_path / "c", {
        "test/test_human.json": [{"imgname": "41699051005347.png", "query": "What is the peak value?",
                                  "label": "24.2"}],
        "test/test_augmented.json": [{"imgname": "two_col_1.png", "query": "Which year is lowest?", "label": 2011}]})
    recs = _run("chartqa", src, tmp_path)
    assert [(r["id"], r["image"], _target(r)) for r in recs] == [
        ("chartqa-test-human-0", "test/png/41699051005347.png", "24.2"),
        ("chartqa-test-augmented-0", "test/png/two_col_1.png", "2011")]


def test_docvqa_val_and_test_without_answers(tmp_path):
    val = {"dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0", "data": [
        {"questionId": 49153, "question": "What is the date?", "question_types": ["form"], "docId": 14465,
         "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81", "answers": ["0.28", "0.28 %"],
         "image": "documents/pybv0228_81.png", "data_split": "val"}]}
    test = {"dataset_name": "docvqa", "dataset_split": "test", "data": [
        {"questionId": 57344, "question": "What is the title?", "image": "documents/flpp0227_20.png",
         "docId": 1}]}
    src = _write(tmp_path / "d", {"val_v1.0.json": val, "test_v1.0.json": test})
    r = _run("docvqa", src, tmp_path, split="val")[0]
    assert (r["id"], r["image"], _target(r), r["answers"]) == ("docvqa-val-49153", "documents/pybv0228_81.png",
                                                                "0.28", ["0.28", "0.28 %"])
    t = _run("docvqa", src, tmp_path)[0]  # default: test, answers held by the server
    assert t["answers"] == [] and _target(t) == ""


def test_infographicsvqa(tmp_path):
    data = {"dataset_name": "infographicVQA", "dataset_split": "val", "data": [
        {"questionId": 98313, "question": "Which social platform has heavy female audience?",
         "image_local_name": "37313.jpeg", "image_url": "https://x", "ocr_output_file": "37313.json",
         "answers": ["pinterest"], "data_split": "val"}]}
    r = _run("infographicsvqa", _write(tmp_path / "i", {"infographicsVQA_val_v1.0.json": data}), tmp_path,
             split="val")[0]
    assert (r["image"], _target(r), r["metric"]) == ("images/37313.jpeg", "pinterest", "anls")


def test_visualmrc(tmp_path):
    docs = [{"id": "d1", "url": "https://x", "image_filename": "images/d1.png", "bounding_boxes": [],
             "qa_data": [{"id": 0, "question": {"text": "What is it about?"},
                          "answer": {"text": "It is about cats."}},
                         {"id": 1, "question": {"text": "Who wrote it?"}, "answer": {"text": "Bob wrote it."}}]}]
    recs = _run("visualmrc", _write(tmp_path / "m", {"train.jsonl": docs}), tmp_path)
    assert [(r["id"], r["image"], _target(r), r["captions"]) for r in recs] == [
        ("visualmrc-train-d1-0", "images/d1.png", "It is about cats.", ["It is about cats."]),
        ("visualmrc-train-d1-1", "images/d1.png", "Bob wrote it.", ["Bob wrote it."])]


def _due_doc(name, annotations):
    return {"name": name, "language": "en", "split": "test", "annotations": annotations}


def test_deepform_due(tmp_path):
    doc = _due_doc("0a1b2c", [
        {"id": "a", "key": "advertiser", "values": [{"value": "Smith for Senate", "value_variants": ["SMITH"]}]},
        {"id": "b", "key": "gross_amount", "values": [{"value": "1200.00"}]}])
    recs = _run("deepform", _write(tmp_path / "df", {"test/document.jsonl": [doc]}), tmp_path)
    assert [(r["id"], r["image"], _target(r), r["answers"]) for r in recs] == [
        ("deepform-test-0a1b2c-0", "png/0a1b2c.png", "Smith for Senate", ["Smith for Senate", "SMITH"]),
        ("deepform-test-0a1b2c-1", "png/0a1b2c.png", "1200.00", ["1200.00"])]
    assert "gross amount" in instruction_of(recs[1])


def test_tabfact_due(tmp_path):
    doc = _due_doc("2-1859269-1.html.csv", [
        {"key": "the team won 3 games", "values": [{"value": "1"}]},
        {"key": "the team lost 5 games", "values": [{"value": "0"}]}])
    recs = _run("tabfact", _write(tmp_path / "tf", {"test/document.jsonl": [doc]}), tmp_path)
    assert [_target(r) for r in recs] == ["entailed", "refuted"]
    assert "the team won 3 games" in instruction_of(recs[0])
    bad = _due_doc("x", [{"key": "s", "values": [{"value": "maybe"}]}])
    with pytest.raises(ValueError, match="not 0 or 1"):
        _run("tabfact", _write(tmp_path / "tf2", {"test/document.jsonl": [bad]}), tmp_path)


def test_wikitablequestions_due(tmp_path):
    doc = _due_doc("csv_204-csv_590", [
        {"key": "which players scored?", "values": [{"value": "Ann"}, {"value": "Bo"}]},
        {"key": "how many games?", "values": [{"value": "12", "value_variants": ["twelve"]}]}])
    recs = _run("wikitablequestions", _write(tmp_path / "w", {"test/document.jsonl": [doc]}), tmp_path)
    assert [(_target(r), r["answers"]) for r in recs] == [("Ann, Bo", ["Ann, Bo"]), ("12", ["12", "twelve"])]


# -- registry and CLI ------------------------------------------------------------------------------------------------
def test_registry_covers_the_suite():
    expected = {"coco-caption", "flickr30k", "nocaps", "vqav2", "okvqa", "aokvqa", "gqa", "vsr", "iconqa",
                "refcoco-rec", "refcoco+-rec", "refcocog-rec", "refcoco-reg", "refcoco+-reg", "refcocog-reg",
                "chartqa", "tabfact", "deepform", "docvqa", "infographicsvqa", "wikitablequestions", "textcaps",
                "textvqa", "visualmrc"}
    assert set(REGISTRY) == expected | {"official"}  # + the authors' released training files (test_official_data)
    # the paper's evaluation splits (PAPER.md)
    assert {n: c.default_split for n, c in REGISTRY.items() if n in (
        "coco-caption", "nocaps", "gqa", "vsr", "iconqa", "okvqa", "textvqa", "docvqa", "refcocog-rec")} == {
        "coco-caption": "test", "nocaps": "val", "gqa": "testdev", "vsr": "val", "iconqa": "test", "okvqa": "val",
        "textvqa": "val", "docvqa": "test", "refcocog-rec": "val"}


def test_cli_convert_and_errors(tmp_path, capsys):
    from mome.data.__main__ import main
    src = _write(tmp_path / "g", {"testdev_balanced_questions.json": {
        "1": {"imageId": "n1", "question": "Q?", "answer": "a"}}})
    out = tmp_path / "out" / "gqa.jsonl"
    assert main(["convert", "gqa", "--src", str(src), "--out", str(out), "--quiet"]) == 0
    assert len(load_records(out)) == 1
    with pytest.raises(ValueError, match="--src .*no such folder"):
        main(["convert", "gqa", "--src", str(tmp_path / "nope"), "--out", str(out), "--quiet"])
    with pytest.raises(SystemExit):
        main(["convert", "not-a-dataset", "--src", str(src), "--out", str(out)])
    empty = _write(tmp_path / "e", {"testdev_balanced_questions.json": {}})
    with pytest.raises(ValueError, match="no records"):
        main(["convert", "gqa", "--src", str(empty), "--out", str(tmp_path / "e.jsonl"), "--quiet"])
    assert not (tmp_path / "e.jsonl").exists()


def test_cli_list(capsys):
    from mome.data.__main__ import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == len(REGISTRY) and "refcocog-rec" in out
