"""The evaluation harness on the tiny model and a small synthetic benchmark: sharded = unsharded, seeded sampling is
reproducible, scores are the metrics' and the tables' arithmetic, routing summary and collapse warnings."""

import pytest
import torch

from mome.data import load_records, synth
from mome.eval import metrics, tables
from mome.eval.harness import (collapse_warnings, dataset_key, evaluate, limit_per_dataset, load_benchmark,
                               merge_shards, routing_summary, score_predictions)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The tiny model's matmuls are small: one thread is several times faster on a shared 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, n_train=0, n_test=12)  # the smallest split with every dataset: 1 to 3 records each
    return load_records(root / "test.jsonl"), root


@pytest.fixture(scope="module")
def model():
    from mome.model import MoME, MoMEConfig

    return MoME(MoMEConfig.preset("tiny"))


@pytest.fixture(scope="module")
def full(model, bench):
    records, root = bench
    return evaluate(model, records, root, batch_size=6, max_new_tokens=3, progress=False)


def _texts(predictions):
    return [(p["id"], p["prediction"]) for p in predictions]


def test_sharded_equals_unsharded(model, bench, full):
    records, root = bench
    W = 3
    parts = [evaluate(model, records, root, batch_size=2, max_new_tokens=3, progress=False, rank=r, world_size=W)
             for r in range(W)]
    # Without a process group every rank returns its shard only, unscored.
    assert all(set(p) == {"predictions"} for p in parts)
    assert [p["id"] for p in parts[1]["predictions"]] == [r["id"] for r in records[1::W]]
    merged = merge_shards([p["predictions"] for p in parts], records)
    assert _texts(merged) == _texts(full["predictions"])  # same texts, in the records' order
    for a, b in zip(merged, full["predictions"]):
        assert a["routing"]["language"] == b["routing"]["language"]
        for key in ("vision", "vision_importance"):
            assert a["routing"][key] == pytest.approx(b["routing"][key], rel=1e-5, abs=1e-6)
    rescored = score_predictions(merged, records)
    assert rescored["scores"] == pytest.approx(full["scores"])
    assert rescored["summary"] == pytest.approx(full["summary"])


def test_seeded_sampling_is_reproducible(model, bench):
    records, root = bench
    subset = records[::4]
    run = lambda seed: evaluate(model, subset, root, batch_size=3, max_new_tokens=5, progress=False,  # noqa: E731
                                do_sample=True, seed=seed)
    a, b, c = run(1), run(1), run(2)
    assert _texts(a["predictions"]) == _texts(b["predictions"])
    assert a["scores"] == b["scores"]
    assert _texts(a["predictions"]) != _texts(c["predictions"])


def test_scores_are_the_metrics_and_the_tables(bench, full):
    records, _ = bench
    by_id = {r["id"]: r for r in records}
    assert [p["id"] for p in full["predictions"]] == [r["id"] for r in records]
    per = {}
    for p in full["predictions"]:
        rec = by_id[p["id"]]
        per.setdefault(dataset_key(rec), []).append((p["prediction"], rec))
    assert set(full["scores"]) == set(per)
    assert {"synth-rec (REC)", "synth-reg (REG)"} <= set(per)  # REC / REG kept apart as in the paper's tables
    for key, pairs in per.items():
        metric = pairs[0][1]["metric"]
        expected = metrics.score(metric, [p for p, _ in pairs], [r for _, r in pairs])
        assert full["scores"][key] == pytest.approx(expected)
    groups = {k: pairs[0][1]["group"] for k, pairs in per.items()}
    table = tables.aggregate(full["scores"], groups)
    assert full["table"]["groups"] == pytest.approx(table["groups"])
    assert full["summary"] == pytest.approx({**table["groups"], "avg": table["avg"]})
    assert full["markdown"] == tables.markdown_table(full["table"])


def test_routing_summary_matches_the_predictions(full):
    routing = full["routing"]
    preds = [p for p in full["predictions"] if dataset_key(p) == "synth-vqa"]
    d = routing["datasets"]["synth-vqa"]
    assert d["samples"] == len(preds) and d["group"] == "general"
    for enc in preds[0]["routing"]["vision"]:
        assert d["vision_importance"][enc] == pytest.approx(
            sum(p["routing"]["vision_importance"][enc] for p in preds) / len(preds))
    layer0 = [p["routing"]["language"][0] for p in preds]
    assert d["language_load"]["0"] == {str(e): layer0.count(e) / len(preds) for e in sorted(set(layer0))}


def _pred(vision, language):
    return {"id": "x", "dataset": "d", "group": "general", "prediction": "",
            "routing": {"vision": vision, "vision_importance": vision, "language": language}}


def test_collapse_warnings():
    balanced = [_pred({"a": 0.5, "b": 0.5}, [i % 4, (i + 1) % 4]) for i in range(40)]
    assert collapse_warnings(balanced) == []
    vision = [_pred({"a": 0.97, "b": 0.03}, [i % 4, 0]) for i in range(40)]
    warnings = collapse_warnings(vision)
    assert len(warnings) == 2
    assert "vision router: a takes 97.0%" in warnings[0]
    assert "MoLE router of layer 1: expert 0 takes 100.0%" in warnings[1]
    assert collapse_warnings(vision[:10]) == []  # too few samples to judge
    assert len(collapse_warnings(vision[:10], min_samples=5)) == 2
    assert len(collapse_warnings(vision, num_experts=1)) == 1  # a single adapter cannot collapse
    addition = [_pred({"a": 1.0, "b": 1.0}, None) for _ in range(40)]  # no router at all
    assert collapse_warnings(addition) == []
    summary = routing_summary(vision)
    assert summary["collapsed"] == warnings


def test_merge_and_evaluate_errors(model, bench):
    records, root = bench
    with pytest.raises(ValueError, match="more than one shard"):
        merge_shards([[{"id": records[0]["id"]}], [{"id": records[0]["id"]}]], records)
    with pytest.raises(ValueError, match="not in the records"):
        merge_shards([[{"id": "nope"}]], records)
    with pytest.raises(ValueError, match="occurs more than once"):
        evaluate(model, [records[0], records[0]], root, progress=False)
    with pytest.raises(ValueError, match="rank"):
        evaluate(model, records, root, rank=2, world_size=2, progress=False)
    with pytest.raises(ValueError, match="no records"):
        evaluate(model, [], root, progress=False)


def test_load_benchmark(bench, tmp_path):
    records, root = bench
    got, got_root = load_benchmark(str(root))
    assert got == records and got_root == root
    got, _ = load_benchmark(str(root / "test.jsonl"), limit=1)
    assert got == limit_per_dataset(records, 1)
    assert len(got) == 7 and len({(r["dataset"], r["group"]) for r in got}) == 7 and len(records) == 12
    with pytest.raises(FileNotFoundError, match="no such records file"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="without a test.jsonl"):
        load_benchmark(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="image root"):
        load_benchmark(str(root), image_root=tmp_path / "nope")


def test_score_predictions_uses_each_datasets_evaluator_and_protocol():
    """Real dataset names pick their benchmark's evaluator, the protocol swaps in the paper's, the table says which."""
    routing = {"vision": {}, "vision_importance": {}, "language": []}
    records = [{"id": "o1", "dataset": "okvqa", "group": "general", "metric": "vqa_acc", "answers": ["2"] * 10},
               {"id": "d1", "dataset": "docvqa", "group": "document", "metric": "anls", "answers": ["abcd"]}]
    preds = [{"id": "o1", "dataset": "okvqa", "group": "general", "prediction": "Two.", "routing": routing},
             {"id": "d1", "dataset": "docvqa", "group": "document", "prediction": "abxx", "routing": routing}]
    official = score_predictions(preds, records)
    paper = score_predictions(preds, records, protocol="paper")
    assert official["scores"] == {"okvqa": 0.0, "docvqa": 50.0}    # vqaEval 2021: unanimous answers; RRC keeps 0.5
    assert paper["scores"] == {"okvqa": 100.0, "docvqa": 0.0}      # LAVIS normalises "Two."; DUE ANLS drops 0.5
    assert official["table"]["datasets"]["okvqa"]["evaluator"] == metrics.describe("vqa_acc", "okvqa")
    assert "vqaEval.py (2016" in paper["table"]["datasets"]["okvqa"]["evaluator"]
    assert "UReader" in paper["markdown"] and "DocVQA RRC ANLS" in official["markdown"]
