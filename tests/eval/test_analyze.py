"""`python -m mome.analyze` on the tiny preset: every figure is written as a PNG, and the JSON behind it agrees with
the routing and features `MoME.generate` returns for the same samples."""

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from mome import analyze as an
from mome.data import load_records, synth
from mome.eval.harness import collapse_warnings, dataset_key
from mome.model.mome import instruction_text

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, n_train=0, n_test=12)
    return load_records(root / "test.jsonl"), root


@pytest.fixture(scope="module")
def model():
    from mome.model import MoME, MoMEConfig

    return MoME(MoMEConfig.preset("tiny"))


@pytest.fixture(scope="module")
def run(model, bench, tmp_path_factory):
    records, root = bench
    out = tmp_path_factory.mktemp("analysis")
    summary = an.analyze(model, records, root, out, cards=3, batch_size=5, max_new_tokens=2, min_samples=5,
                         progress=False)
    return out, summary


@pytest.fixture(scope="module")
def reference(model, bench):
    """What the model says about each sample when asked directly, one batch for all."""
    from PIL import Image

    records, root = bench
    images = [Image.open(root / r["image"]).convert("RGB") for r in records]
    prompts = [r["conversations"][0]["value"] for r in records]
    gens = model.generate(images, prompts, max_new_tokens=2)
    return {r["id"]: g.routing for r, g in zip(records, gens)}


def _load(out, name):
    return json.loads((out / name).read_text())


def test_files_are_written(run):
    out, summary = run
    for name in ("vision_importance.png", "language_load.png", "pca_image.png", "pca_instruction.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    cards = _load(out, "cards.json")
    assert len(cards) == 3 and len({c["dataset"] for c in cards}) == 3  # round-robin over datasets
    for c in cards:
        assert (out / c["file"]).read_bytes()[:8] == PNG
    assert set(summary["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {
        "analysis.json"}
    assert _load(out, "analysis.json") == summary
    assert summary["samples"] == 12 and len(summary["datasets"]) == 7


def test_vision_importance_matches_the_model(run, bench, reference):
    out, _ = run
    records, _ = bench
    data = _load(out, "vision_importance.json")
    per = defaultdict(list)
    for r in records:
        per[dataset_key(r)].append(reference[r["id"]])
    assert set(data["datasets"]) == set(per)
    for name, routings in per.items():
        d = data["datasets"][name]
        assert d["samples"] == len(routings)
        for enc in data["encoders"]:
            imp = np.mean([x["vision_importance"][enc] for x in routings])
            w = np.mean([x["vision"][enc] for x in routings])
            assert d["mean_importance"][enc] == pytest.approx(imp, rel=1e-5)
            assert d["mean_weight"][enc] == pytest.approx(w, rel=1e-5)
        assert sum(d["importance_share"].values()) == pytest.approx(1.0)
        total = sum(d["mean_importance"].values())
        assert d["importance_share"] == pytest.approx({e: v / total for e, v in d["mean_importance"].items()})


def test_language_load_matches_the_model(run, bench, reference, model):
    out, _ = run
    records, _ = bench
    data = _load(out, "language_load.json")
    K = model.config.num_experts
    assert data["num_experts"] == K and data["layers"] == model.config.language.num_layers
    for name, d in data["datasets"].items():
        chosen = [reference[r["id"]]["language"] for r in records if dataset_key(r) == name]
        for layer in range(data["layers"]):
            expected = [sum(c[layer] == k for c in chosen) / len(chosen) for k in range(K)]
            assert d["per_layer"][layer] == pytest.approx(expected)
        assert d["mean"] == pytest.approx(np.mean(d["per_layer"], axis=0).tolist())
    # the collapse check of analysis.json is the harness's, on the same routing
    expected = collapse_warnings([{"routing": reference[r["id"]]} for r in records], min_samples=5, num_experts=K)
    assert _load(out, "analysis.json")["collapse"]["warnings"] == expected


def test_cards_show_the_models_routing(run, bench, reference):
    out, _ = run
    records = {r["id"]: r for r in bench[0]}
    for card in _load(out, "cards.json"):
        ref = reference[card["id"]]
        assert card["routing"]["language"] == ref["language"]
        assert card["routing"]["vision_importance"] == pytest.approx(ref["vision_importance"], rel=1e-5)
        rec = records[card["id"]]
        assert card["reference"] == rec["conversations"][1]["value"]
        assert card["instruction"] == instruction_text(rec["conversations"][0]["value"])


def test_pca_of_the_instruction_embeddings(run, bench, model):
    out, _ = run
    records, _ = bench
    data = _load(out, "pca.json")
    assert data["ids"] == [r["id"] for r in records]
    assert data["groups"] == [r["group"] for r in records]
    assert set(data["image"]) == {"fused", *model.move.names}
    emb = model.instruction_embeddings([r["conversations"][0]["value"] for r in records]).numpy()
    coords, ratio = an.pca(emb)
    assert np.allclose(data["instruction"]["coords"], coords, atol=1e-5)
    assert data["instruction"]["explained"] == pytest.approx(ratio.tolist(), abs=1e-6)
    for block in data["image"].values():
        assert np.asarray(block["coords"]).shape == (len(records), 2)


def test_pca_by_svd():
    rng = np.random.default_rng(0)
    # points on a line in 5-D plus a little noise in one other direction: PC1 takes almost all the variance
    t = rng.normal(size=50)
    noise = rng.normal(size=50)
    noise -= noise.mean() + (noise @ (t - t.mean())) / ((t - t.mean()) @ (t - t.mean())) * (t - t.mean())
    x = np.outer(t, [1, 2, 0, 0, 0]) + np.outer(0.1 * noise, [0, 0, 1, 0, 0]) + 3.0  # noise ⟂ t: PC1 is the line
    coords, ratio = an.pca(x)
    assert ratio[0] > 0.99 and ratio.sum() == pytest.approx(1.0)
    along = (t - t.mean()) * np.sqrt(5)  # the centred coordinate along the unit direction (1, 2, 0, 0, 0)/√5
    assert np.allclose(np.abs(coords[:, 0]), np.abs(along), atol=1e-9)
    assert abs(np.corrcoef(coords[:, 0], coords[:, 1])[0, 1]) < 1e-8  # uncorrelated components
    assert np.allclose(an.pca(x)[0], coords)  # signs fixed: reproducible
    one, r1 = an.pca(x[:1])
    assert one.shape == (1, 2) and np.allclose(one, 0) and np.allclose(r1, 0)


def test_cli(bench, tmp_path):
    _, root = bench
    out = tmp_path / "cli"
    assert an.main(["--preset", "tiny", "--data", str(root), "--out", str(out), "--limit", "1", "--cards", "2",
                    "--max-new-tokens", "2", "--quiet"]) == 0
    summary = _load(out, "analysis.json")
    assert summary["samples"] == 7 and summary["collapse"]["checked"] is False
    assert len(list((out / "cards").glob("*.png"))) == 2
    with pytest.raises(ValueError, match="--data .*no such records file"):
        an.main(["--preset", "tiny", "--data", str(tmp_path / "x.jsonl"), "--out", str(out)])
