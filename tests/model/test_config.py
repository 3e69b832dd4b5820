"""MoMEConfig: presets, YAML round trip, overrides, and loud errors naming the offending key."""

import re

import pytest
import yaml

from mome.model.config import PRESETS, ConfigError, MoMEConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_yaml_round_trip(name, tmp_path):
    cfg = MoMEConfig.preset(name)
    cfg.save(tmp_path / "c.yaml")
    assert MoMEConfig.load(tmp_path / "c.yaml") == cfg


CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def test_paper_preset_is_the_released_architecture():
    cfg = MoMEConfig.preset("paper")
    v = cfg.vision
    assert v.use == ["eva_clip", "dinov2", "pix2struct"]
    assert (v.eva_clip.hidden_size, v.dinov2.hidden_size, v.pix2struct.hidden_size) == (1408, 1024, 768)
    assert (v.eva_clip.num_layers, v.eva_clip.feature_layer) == (39, -1)  # block 39 of 40, no final norm
    assert (v.eva_clip.image_size, v.eva_clip.patch_size) == (224, 14)  # CLS + 16 × 16 tokens
    assert (v.dinov2.image_size, v.dinov2.pos_embed_size, v.dinov2.resize) == (448, 518, "squash")
    assert all(e.mean == CLIP_MEAN and e.std == CLIP_STD for e in (v.eva_clip, v.dinov2))
    assert v.adt_encoders == ["dinov2", "pix2struct"] and v.cls_token and v.projector == "linear"
    assert (v.num_tokens, v.adt_layers, v.adt_heads, v.adt_points, v.adt_ffn_dim, v.adt_dropout) == (
        256, 6, 8, 4, 1024, 0.1)
    assert (v.aggregator, v.router, v.router_hidden) == ("adt", "soft", 384)
    m = cfg.mole
    assert (m.router, m.num_experts, m.rank, m.router_hidden, m.gate, m.router_grad) == (
        "instance", 4, 64, 384, "straight_through", "dense")
    lang = cfg.language
    assert lang.hidden_size == 4096 and not lang.train and (lang.template, lang.max_length) == ("mome", 600)


def test_tiny_preset_is_the_same_architecture():
    tiny, paper = MoMEConfig.preset("tiny").to_dict(), MoMEConfig.preset("paper").to_dict()
    for key in ("use", "adt_encoders", "aggregator", "cls_token", "projector", "router", "router_hidden"):
        assert tiny["vision"][key] == paper["vision"][key], key
    v = MoMEConfig.preset("tiny").vision
    assert (v.eva_clip.image_size // v.eva_clip.patch_size) ** 2 == v.num_tokens  # EVA keeps its own tokens
    assert v.dinov2.pos_embed_size != v.dinov2.image_size  # the interpolated position table is exercised
    assert tiny["mole"]["router_grad"] == paper["mole"]["router_grad"] and tiny["language"]["template"] == "mome"


def test_partial_mapping_keeps_field_defaults():
    cfg = MoMEConfig.from_dict({"vision": {"dinov2": {"hidden_size": 32, "num_heads": 4}}})
    assert cfg.vision.dinov2.image_size == 448 and cfg.vision.dinov2.pos_embed_size == 518  # defaults survive
    assert cfg.vision.dinov2.hidden_size == 32


def test_overrides():
    cfg = MoMEConfig.preset("tiny", ["vision.use=clip,dinov2", "mole.router=token", "mole.gumbel=true",
                                     "mole.load_balance=0.01", "vision.aggregator=avgpool"])
    assert cfg.vision.use == ["clip", "dinov2"]
    assert cfg.mole.router == "token" and cfg.mole.gumbel and cfg.mole.load_balance == 0.01
    assert cfg.vision.aggregator == "avgpool"
    assert cfg.override({"mole.num_experts": 2}).num_experts == 2
    assert MoMEConfig.preset("tiny", ["mole.router=single"]).num_experts == 1
    assert MoMEConfig.preset("tiny", ["mole.router=none"]).num_experts == 0


@pytest.mark.parametrize("override, message", [
    ("vision.nope=1", "unknown config key 'vision.nope'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("mole.rank=abc", "mole.rank must be an int"),
    ("mole.gumbel=3", "mole.gumbel must be a bool"),
    ("vision.use=7", "vision.use must be a list"),
    ("mole.router=moe", "mole.router must be one of"),
    ("vision.use=clip,clip", "names an encoder twice"),
    ("vision.use=resnet", "vision.use must be one of"),
    ("vision.num_tokens=15", "vision.num_tokens must be a positive square"),
    ("mole.rank=0", "mole.rank must be > 0"),
    ("vision.adt_heads=3", "must be divisible by vision.adt_heads"),
    ("mole.load_balance=-1", "mole.load_balance must be >= 0"),
    ("language.dtype=float8", "language.dtype must be one of"),
    ("language.template=llava", "language.template must be one of"),
    ("vision.projector=conv", "vision.projector must be one of"),
    ("mole.router_grad=sparse", "mole.router_grad must be one of"),
    ("vision.adt_encoders=[resnet]", "vision.adt_encoders must be one of"),
    ("vision.adt_encoders=[dinov2]", "must include pix2struct"),
    ("vision.eva_clip.image_size=64", "(64 / 8)² patch tokens must equal vision.num_tokens (16)"),
    ("vision.adt_dropout=1.5", "vision.adt_dropout must be in [0, 1)"),
    ("novalue", "must look like key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MoMEConfig.preset("tiny", [override])


def test_bad_yaml_names_the_key(tmp_path):
    data = MoMEConfig.preset("tiny").to_dict()
    data["vision"]["eva_clip"]["hidden"] = 3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"unknown config key 'vision\.eva_clip\.hidden'"):
        MoMEConfig.load(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        MoMEConfig.preset("huge")
