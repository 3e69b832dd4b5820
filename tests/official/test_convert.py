"""`python -m mome.convert official` on files written in the released formats, and the whole vision tower of the
release reproduced through it: the `vision_tower` fixture's EVA (LAVIS names), DINOv2 (Meta names) and Pix2Struct
(transformers) weights become ``eva_vit_g.pth`` / ``dinov2_vitl14_pretrain.pth`` / a Pix2Struct folder, its
trainable tensors (plus MoLE tensors for a tiny LLM) a ``MoME_ckpt.pth``; the converted folder loads with
`MoME.from_pretrained` and its MoVE gives the fixture's 257 visual tokens."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mome.cli import run
from mome.convert import main
from mome.model import MoME
from mome.model.mole import attach_mole, mole_modules
from mome.model.official import ENCODER_PREFIXES, mome_to_official
from mome.model.tokenizer import Tokenizer

from .conftest import FIXTURES, assert_close, fixture, prefixed

pytestmark = pytest.mark.slow


class Payload:
    """A pickle that needs a global of ours: ``torch.load(weights_only=True)`` refuses it."""


def convert_main(argv: list[str]) -> int:
    """The program as ``python -m mome.convert`` runs it: bad input → status 2 and a message."""
    return run(main, "python -m mome.convert", argv)


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.clone() for k, v in tensors.items() if k.startswith(prefix)}


def _tiny_llm(width: int, folder, seed: int = 0):
    import transformers as tf

    tok = Tokenizer.tiny()
    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    llm = tf.LlamaForCausalLM(cfg)
    llm.save_pretrained(folder)
    tok.save(folder)
    return llm


def _mole_tensors(llm, rank: int, stage: int) -> dict[str, torch.Tensor]:
    """Random MoLE tensors for ``llm`` under the release's names (stage 1: one adapter per MLP)."""
    import copy

    donor = attach_mole(copy.deepcopy(llm), 4 if stage == 2 else 1, rank, "instance" if stage == 2 else "single",
                        instruction_dim=384, router_hidden=384)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in mole_modules(donor):
            for p in (m.w_up, m.b_up, m.b_down):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    state = {"llm." + k: v for k, v in donor.state_dict().items() if ".mole." in k}
    theirs = mome_to_official(state)
    if stage == 1:
        theirs = {k.replace(".adapter.adapters.0.", ".adapter."): v for k, v in theirs.items()}
    return theirs


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """The vision_tower fixture written as a user of the release holds it."""
    import transformers as tf

    entry, t = fixture("vision_tower")
    root = tmp_path_factory.mktemp("release")
    vt = entry["vt_config"]
    torch.save(_strip(t, "visual_encoder."), root / "eva_vit_g.pth")
    torch.save(_strip(t, "dino_encoder."), root / "dinov2_vitl14_pretrain.pth")
    pix_cfg = tf.Pix2StructVisionConfig(**entry["how_built"]["pix2struct_encoder"]["config"])
    pix = tf.Pix2StructVisionModel(pix_cfg)
    pix.load_state_dict(_strip(t, "pix2struct_encoder."), strict=True)
    pix.save_pretrained(root / "pix2struct")
    llm = _tiny_llm(vt["llm"], root / "llm")
    trainable = {k: v for k, v in t.items() if not k.startswith(tuple(ENCODER_PREFIXES))
                 and k.split(".")[0] in ("dino_selector", "pix_selector", "dino_llm_proj", "pix_llm_proj",
                                         "clip_ln", "clip_proj", "move_router")}
    for stage in (1, 2):
        ckpt = {**trainable, **_mole_tensors(llm, 16, stage)}
        torch.save({"model": ckpt, "optimizer": {}} if stage == 2 else ckpt, root / f"stage{stage}.pth")
    return root, entry, t


def _overrides(entry: dict) -> list[str]:
    """The release's architecture at the fixture's sizes: what the manifest says was built."""
    vt, hb = entry["vt_config"], entry["how_built"]
    return [f"vision.num_tokens={hb['dino_selector']['kwargs']['num_queries']}", f"vision.adt_layers={vt['adt_layers']}",
            f"vision.eva_clip.num_heads={vt['eva_heads']}", f"vision.dinov2.num_heads={vt['dino_heads']}",
            f"vision.eva_clip.num_layers={hb['visual_encoder']['kwargs']['depth']}",
            f"vision.dinov2.num_layers={hb['dino_encoder']['kwargs']['depth']}",
            f"vision.pix2struct.num_layers={hb['pix2struct_encoder']['config']['num_hidden_layers']}", "mole.rank=16", "language.dtype=float32"]  # the fixtures are float32


def _convert(root, out, ckpt, *extra: str) -> int:
    return convert_main(["official", "--ckpt", str(root / ckpt), "--eva", str(root / "eva_vit_g.pth"),
                         "--dinov2", str(root / "dinov2_vitl14_pretrain.pth"), "--pix2struct",
                         str(root / "pix2struct"), "--llm", str(root / "llm"), "--out", str(out), *extra])


def _square(u8: torch.Tensor, mean, std) -> torch.Tensor:
    """The manifest's square formula: ((u8 / 255) − mean) / std, as (3, H, W) float32."""
    x = torch.from_numpy(u8.numpy().astype(np.float32) / np.float32(255))
    return ((x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)).permute(2, 0, 1)


def _tower_inputs(entry: dict) -> dict:
    pre_entry, pre = fixture("preprocess")
    from safetensors.torch import load_file

    inputs = load_file(str(FIXTURES / entry["inputs_file"]))
    norm = pre_entry["square_normalisation"]
    idx = inputs["batch_image_indices"].tolist()
    image = torch.stack([_square(pre[f"clip_resized_uint8.{i}"], norm["mean"], norm["std"]) for i in idx])
    dino = torch.stack([_square(pre[f"dino_resized_uint8.{i}"], norm["mean"], norm["std"]) for i in idx])
    if "image.0" in pre and 0 in idx:
        assert torch.equal(image[idx.index(0)], pre["image.0"])  # the formula is the release's tensor
    return {"eva_clip": {"pixel_values": image}, "dinov2": {"pixel_values": dino},
            "pix2struct": {"flattened_patches": inputs["flattened_patches_f16"].float(),
                           "attention_mask": inputs["attention_mask"]}}


def test_converted_release_reproduces_the_vision_tower(release_files, tmp_path):
    root, entry, t = release_files
    out = tmp_path / "mome"
    assert _convert(root, out, "stage2.pth", *_overrides(entry)) == 0
    assert (out / "encoders" / "eva_clip.safetensors").is_file() and (out / "conversion.json").is_file()
    model = MoME.from_pretrained(out).eval()
    vt = entry["vt_config"]
    assert [e.hidden_size for e in model.move.encoders.values()] == [vt["eva"], vt["dino"], vt["pix"]]
    with torch.no_grad():
        vis = model.move(_tower_inputs(entry), t["question_embedding"])
    assert_close(vis.tokens, t["inputs_llm"], "visual tokens (encode_img)")
    assert_close(vis.importance, t["routing_outcome"], "importance (routing_outcome)")


def test_stage1_checkpoints_replicate_or_stay_single(release_files, tmp_path):
    root, entry, t = release_files
    assert _convert(root, tmp_path / "s2", "stage1.pth", *_overrides(entry)) == 0
    two = MoME.from_pretrained(tmp_path / "s2")
    moles = mole_modules(two.llm)
    assert moles[0].num_experts == 4
    assert all(torch.equal(m.w_down[0], m.w_down[k]) and torch.equal(m.w_up[0], m.w_up[k])
               for m in moles for k in range(4))  # the release's replication rule
    assert _convert(root, tmp_path / "s1", "stage1.pth", "--stage", "1", *_overrides(entry)) == 0
    one = MoME.from_pretrained(tmp_path / "s1")
    assert mole_modules(one.llm)[0].num_experts == 1 and one.config.mole.router == "single"
    torch.testing.assert_close(mole_modules(one.llm)[0].w_down[0], moles[0].w_down[0], rtol=0, atol=0)


def test_convert_refuses_bad_inputs_naming_them(release_files, tmp_path, capsys):
    root, entry, t = release_files
    assert _convert(root, tmp_path / "a", "missing.pth") == 2
    assert "--ckpt" in capsys.readouterr().err
    assert _convert(root, tmp_path / "b", "stage2.pth", "--stage", "1") == 2
    assert "--stage 1" in capsys.readouterr().err
    bad = torch.load(root / "stage2.pth", weights_only=True)["model"]
    bad["dino_selector.layers.0.fc1.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    assert _convert(root, tmp_path / "c", tmp_path / "bad.pth", *_overrides(entry)) == 2
    assert "move.aggregators.dinov2.layers.0.fc1.weight" in capsys.readouterr().err

    torch.save({"model": {"x": torch.zeros(1)}, "step": Payload()}, tmp_path / "evil.pth")
    assert _convert(root, tmp_path / "d", tmp_path / "evil.pth") == 2
    assert "evil.pth: not a weights-only torch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing written
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_convert_help_lists_every_input():
    out = subprocess.run([sys.executable, "-m", "mome.convert", "official", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--ckpt", "--eva", "--dinov2", "--pix2struct", "--llm", "--sbert", "--out"):
        assert flag in out
