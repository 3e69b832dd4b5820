"""The tiny preset's shipped specialist encoders: the files, their provenance, the objectives that made them."""

import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mome.data import synth
from mome.model import specialists
from mome.model.config import MoMEConfig
from mome.model.encoders import build_encoder
from mome.training.specialists import LABELS, PAIRS, Localisation, Reading, SceneSemantics, pretrain


def test_shipped_files_are_the_ones_the_manifest_records():
    man = specialists.manifest()
    assert man["schema"] == "mome.specialists/1"
    assert man["command"] == "python -m mome.data pretrain-encoders"
    assert set(man["encoders"]) == set(specialists.KINDS)
    for kind, entry in man["encoders"].items():
        path = specialists.WEIGHTS_DIR / specialists.file_name(kind)
        assert path.stat().st_size < 4_000_000
        assert specialists.sha256(path) == entry["sha256"], f"{path} holds other tensors than the pretraining wrote"
        assert entry["steps"] >= 100 and entry["heldout"]


def test_tiny_preset_uses_the_shipped_weights():
    cfg = MoMEConfig.preset("tiny")
    for kind in specialists.KINDS:
        enc_cfg = cfg.encoders()[kind]
        assert enc_cfg.path == f"mome:tiny-{kind}"
        enc = build_encoder(enc_cfg)
        shipped = load_file(str(specialists.resolve_path(enc_cfg.path)))
        state = enc.model.state_dict()
        for key, value in shipped.items():
            assert torch.equal(state[key], value), (kind, key)
        assert not any(p.requires_grad for p in enc.parameters())  # frozen, as in the paper


def test_resolve_path_errors_name_the_path():
    with pytest.raises(FileNotFoundError, match="mome:tiny-clip"):
        specialists.resolve_path("mome:tiny-clip")
    assert str(specialists.resolve_path("/some/file.pth")) == "/some/file.pth"


def test_pretraining_is_deterministic_and_changes_the_weights(tmp_path):
    a = pretrain(tmp_path / "a", steps={"dinov2": 3}, kinds=["dinov2"], progress=False, log=lambda m: None,
                 n_images=64, n_eval=16)
    b = pretrain(tmp_path / "b", steps={"dinov2": 3}, kinds=["dinov2"], progress=False, log=lambda m: None,
                 n_images=64, n_eval=16)
    assert a["encoders"]["dinov2"]["sha256"] == b["encoders"]["dinov2"]["sha256"]
    c = pretrain(tmp_path / "c", seed=1, steps={"dinov2": 3}, kinds=["dinov2"], progress=False,
                 log=lambda m: None, n_images=64, n_eval=16)
    assert c["encoders"]["dinov2"]["sha256"] != a["encoders"]["dinov2"]["sha256"]
    cfg = MoMEConfig.preset("tiny", {"vision.dinov2.path": str(tmp_path / "a" / "tiny-dinov2.safetensors")})
    trained = build_encoder(cfg.vision.dinov2).model.state_dict()
    torch.manual_seed(0)
    random_init = build_encoder(MoMEConfig.preset("tiny", {"vision.dinov2.path": None}).vision.dinov2)
    assert any(not torch.equal(v, random_init.model.state_dict()[k]) for k, v in trained.items())


def test_localisation_targets_are_the_objects_boxes():
    rng = random.Random(3)
    img, t = Localisation().sample(rng)
    _, shapes = synth.scene(random.Random(3))
    for s in shapes:
        cls = 1 + PAIRS.index((s.color, s.shape))
        patches = (t["object"] == cls).nonzero().flatten().tolist()
        assert patches, f"{s.name} covers no patch"
        for i in patches:
            r, c = divmod(i, 8)
            assert s.box[0] - 8 < c * 8 + 4 < s.box[2] + 8 and s.box[1] - 8 < r * 8 + 4 < s.box[3] + 8
            assert t["box"][i].tolist() == pytest.approx(s.norm_box(64, 64))
    assert (t["box"][t["object"] == 0] == 0).all()


def test_scene_and_reading_targets():
    img, t = SceneSemantics().sample(random.Random(5))
    _, shapes = synth.scene(random.Random(5))
    assert int(t["count"]) == len(shapes) and int(t["present"].sum()) == len(shapes)
    named = [PAIRS[i - 1] for i in t["order"].tolist() if i > 0]
    assert named == [(s.color, s.shape) for s in sorted(shapes, key=lambda s: (s.cx, s.box[1]))]
    img, t = Reading().sample(random.Random(7))
    rng = random.Random(7)
    draw = rng.choice([synth.draw_doc_text, synth.draw_table, synth.draw_chart])
    *_, items = draw(rng)
    seen = {LABELS[i] for i in t["item"].unique().tolist()} - {"<bg>"}
    assert seen and seen <= {it.label for it in items}


def test_cli_rejects_unknown_kinds():
    out = subprocess.run([sys.executable, "-m", "mome.data", "pretrain-encoders", "--kinds", "dinov3"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--kinds dinov3" in out.stderr
