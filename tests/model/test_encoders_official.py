"""The frozen encoders and their preprocessing against the authors' release (OFFICIAL.md), and the weight loaders on
files written here in the formats users hold.

Golden values: `tests/official/fixtures/` (or the folder named by ``MOME_OFFICIAL_FIXTURES``), made by running the
release (commit 7d99214) on the CPU in float32; `manifest.json` names the function that produced each tensor. Sizes,
seeds and shapes are read from the manifest and the tensors, so the tests hold for any fixture folder of this format.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mome.model.config import EncoderConfig
from mome.model.dinov2 import meta_interpolate_pos_embed
from mome.model.encoder_files import read_encoder_checkpoint
from mome.model.encoder_weights import EncoderWeightsError, detect_format
from mome.model.encoders import (Pix2StructPreprocessor, Preprocessor, build_encoder, encoder_from_state_dict,
                                 save_encoder_safetensors)

torch.set_num_threads(1)
TOL = 1e-5  # float32 parity with the release: max abs error, and max abs error / max |reference|


def _fixture_dir() -> Path:
    d = Path(os.environ.get("MOME_OFFICIAL_FIXTURES") or Path(__file__).parents[1] / "official" / "fixtures")
    if not (d / "manifest.json").exists():
        pytest.skip(f"no official fixtures at {d}")
    return d


@pytest.fixture(scope="module")
def fixtures():
    from safetensors.torch import load_file

    d = _fixture_dir()
    manifest = json.loads((d / "manifest.json").read_text())["fixtures"]
    return d, manifest, lambda name: load_file(str(d / manifest[name]["file"]))


def _errors(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = (ours.double() - ref.double()).abs().max().item()
    return err, err / ref.abs().max().item()


# ---- preprocessing ------------------------------------------------------------------------------------------------


def _square_cfg(manifest, side: int) -> EncoderConfig:
    norm = manifest["preprocess"]["square_normalisation"]
    return EncoderConfig(kind="eva_clip", image_size=side, mean=norm["mean"], std=norm["std"])


def test_square_preprocessing_is_the_releases(fixtures):
    """EVA's 224² and DINOv2's 448² inputs: the PIL bicubic resize gives the release's uint8 image exactly (a
    tolerance of 0: we run Pillow's two passes in the release's order, see `resize_bicubic`), and the float tensor
    is exactly its ``(u8 / 255 − mean) / std``."""
    d, manifest, load = fixtures
    t = load("preprocess")
    for im in manifest["preprocess"]["images"]:
        k = im["index"]
        image = Image.open(d / im["png"])
        assert np.array_equal(np.asarray(image.convert("RGB")), t[f"source_uint8.{k}"].numpy())
        for name in ("clip_resized_uint8", "dino_resized_uint8"):
            ref = t[f"{name}.{k}"]
            pre = Preprocessor(_square_cfg(manifest, ref.shape[0]))
            assert np.array_equal(pre.resize(image), ref.numpy()), (name, k)
            x = pre([image])["pixel_values"][0]
            mean, std = (torch.tensor(pre.cfg.mean).view(3, 1, 1), torch.tensor(pre.cfg.std).view(3, 1, 1))
            assert torch.equal(x, (ref.permute(2, 0, 1).float() / torch.tensor(255.0) - mean) / std)
        if f"image.{k}" in t:  # the release's float tensor itself
            pre = Preprocessor(_square_cfg(manifest, t[f"image.{k}"].shape[-1]))
            assert torch.equal(pre([image])["pixel_values"][0], t[f"image.{k}"])


def test_pix2struct_preprocessing_is_the_releases(fixtures):
    """Grid, ids, mask and patch values exactly (tolerance 0): the per-image mean and std are float32 sums in the
    release's numpy order (`_np_sum_f32`); a correctly rounded mean differs by one ulp on some images."""
    d, manifest, load = fixtures
    t = load("preprocess")
    for im in manifest["preprocess"]["images"]:
        k = im["index"]
        ids = t[f"flattened_patches_ids.{k}"]
        n_max, width = ids.shape[0], t[f"flattened_patches_subset.{k}"].shape[1]
        patch = math.isqrt((width - 2) // 3)
        cfg = EncoderConfig(kind="pix2struct", patch_size=patch, max_patches=n_max)
        out = Pix2StructPreprocessor(cfg)([Image.open(d / im["png"])])
        fp, mask = out["flattened_patches"][0], out["attention_mask"][0]
        assert fp.shape == (n_max, width)
        assert torch.equal(fp[:, :2], ids)
        assert torch.equal(mask, t[f"attention_mask.{k}"])
        rows, cols = int(fp[:, 0].max()), int(fp[:, 1].max())
        assert [rows, cols] == t[f"image_shape.{k}"].tolist() == im["image_shape_rows_cols"]
        assert torch.equal(fp[t[f"flattened_patches_subset_idx.{k}"]], t[f"flattened_patches_subset.{k}"])
        f64 = fp.double()  # the release's float64 sums of every value (only their summation order may differ)
        close = dict(rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(f64.sum(1), t[f"flattened_patches_rowsum_f64.{k}"], **close)
        torch.testing.assert_close(f64.sum(0), t[f"flattened_patches_colsum_f64.{k}"], **close)
        torch.testing.assert_close(f64.abs().sum().view(1), t[f"flattened_patches_abssum_f64.{k}"], **close)
        if f"debug.pix2struct_norm_mean_std.{k}" in t:
            from mome.model.encoders import _np_sum_f32

            hwc = t[f"source_uint8.{k}"].numpy().astype(np.float32)
            mean = _np_sum_f32(hwc) / np.float32(hwc.size)
            assert float(mean) == t[f"debug.pix2struct_norm_mean_std.{k}"][0].item()


def test_release_order_float32_sum_is_numpys_within_a_block():
    """Up to one 8192-element block every numpy sums the same way: `_np_sum_f32` must then equal ``np.sum``."""
    from mome.model.encoders import _np_sum_f32

    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 127, 128, 129, 1000, 4099, 8191, 8192):
        a = (rng.random(n, dtype=np.float32) * 255).astype(np.float32)
        assert _np_sum_f32(a) == np.sum(a), n


def test_crop_resize_still_works():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8))
    cfg = EncoderConfig(kind="clip", image_size=32, resize="crop", crop_scale=1.0)
    u8 = Preprocessor(cfg).resize(image)
    full = np.asarray(image.resize((58, 32), Image.BICUBIC))  # shorter side to 32, then the central 32 columns
    assert u8.shape == (32, 32, 3) and np.abs(u8.astype(int) - full[:, 13:45].astype(int)).max() <= 1
    assert Preprocessor(cfg)([image])["pixel_values"].shape == (1, 3, 32, 32)


# ---- the encoders on the fixture's weights ------------------------------------------------------------------------


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_vision_tower_encoders_reproduce_the_release(fixtures):
    """EVA (CLS + patch tokens, no final norm), DINOv2 (x_norm_patchtokens at 448 px from a 518-px table) and
    Pix2Struct (last_hidden_state) from the release's state-dict names, on the release's own inputs."""
    d, manifest, load = fixtures
    from safetensors.torch import load_file

    spec = manifest["vision_tower"]
    weights, inputs, pre = load("vision_tower"), load_file(str(d / spec["inputs_file"])), load("preprocess")
    built = spec["how_built"]
    eva_kw, dino_kw = built["visual_encoder"]["kwargs"], built["dino_encoder"]["kwargs"]
    pix_kw = built["pix2struct_encoder"]["config"]
    batch = inputs["batch_image_indices"].tolist()
    assert batch == spec["inputs"]["batch_image_indices"]
    dino_side = pre[f"dino_resized_uint8.{batch[0]}"].shape[0]
    norm = manifest["preprocess"]["square_normalisation"]

    eva_cfg = EncoderConfig(kind="eva_clip", image_size=eva_kw["img_size"], patch_size=eva_kw["patch_size"],
                            num_layers=eva_kw["depth"], num_heads=eva_kw["num_heads"], **norm_kw(norm))
    eva = encoder_from_state_dict(eva_cfg, _strip(weights, "visual_encoder."))
    assert eva.unused_keys == () and eva.report.format == "lavis_eva"
    image = torch.stack([eva.preprocessor.normalize(pre[f"clip_resized_uint8.{i}"].numpy()) for i in batch])
    out = eva(pixel_values=image)
    raw = torch.cat([out.cls[:, None], out.features], dim=1)  # (B, 1 + 256, C), CLS first
    ref = weights["intermediate.visual_encoder_out"]
    assert raw.shape == ref.shape
    err = _errors(raw, ref)
    assert err[0] <= TOL and err[1] <= TOL, err

    dino_cfg = EncoderConfig(kind="dinov2", image_size=dino_side, patch_size=dino_kw["patch_size"],
                             num_layers=dino_kw["depth"], num_heads=dino_kw["num_heads"],
                             pos_embed_size=dino_kw["img_size"], **norm_kw(norm))
    dino = encoder_from_state_dict(dino_cfg, _strip(weights, "dino_encoder."))
    assert dino.unused_keys == () and dino.report.format == "meta_dinov2"
    dino_image = torch.stack([dino.preprocessor.normalize(pre[f"dino_resized_uint8.{i}"].numpy()) for i in batch])
    out = dino(pixel_values=dino_image)
    assert out.cls is None and out.grid == (dino_side // dino_kw["patch_size"],) * 2
    ref = weights["intermediate.dino_x_norm_patchtokens_first256"]
    err = _errors(out.features[:, : ref.shape[1]], ref)
    assert err[0] <= TOL and err[1] <= TOL, err

    pix_cfg = EncoderConfig(kind="pix2struct", patch_size=math.isqrt(pix_kw["patch_embed_hidden_size"] // 3),
                            num_layers=pix_kw["num_hidden_layers"], num_heads=pix_kw["num_attention_heads"])
    pix = encoder_from_state_dict(pix_cfg, _strip(weights, "pix2struct_encoder."))
    assert pix.unused_keys == () and pix.report.format == "hf_pix2struct"
    out = pix(flattened_patches=inputs["flattened_patches_f16"].float(), attention_mask=inputs["attention_mask"])
    assert out.cls is None and out.sizes.tolist() == inputs["image_shape"].tolist()
    ref = weights["intermediate.pix2struct_last_hidden_state_first256"]
    for b, (h, w) in enumerate(out.sizes.tolist()):  # each image's own row-major patch sequence
        own = out.features[b].view(*out.grid, -1)[:h, :w].reshape(h * w, -1)
        err = _errors(own[: ref.shape[1]], ref[b])
        assert err[0] <= TOL and err[1] <= TOL, (b, err)


def norm_kw(norm: dict) -> dict:
    return {"mean": norm["mean"], "std": norm["std"]}


def test_meta_rule_is_a_scale_factor_not_a_size():
    """Meta's DINOv2 samples the table at scale (n + 0.1)/N; resizing to n × n samples elsewhere."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1, 1 + 37 * 37, 8, generator=g)
    ours = meta_interpolate_pos_embed(table, 32)
    grid = table[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    meta = F.interpolate(grid, scale_factor=(32.1 / 37, 32.1 / 37), mode="bicubic", antialias=False)
    assert torch.equal(ours[:, 1:], meta.permute(0, 2, 3, 1).reshape(1, 1024, 8)) and torch.equal(ours[:, :1],
                                                                                                   table[:, :1])
    by_size = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
    assert (by_size - meta).abs().max() > 1e-3
    assert torch.equal(meta_interpolate_pos_embed(table, 37), table)


# ---- loaders: files in the formats users hold ---------------------------------------------------------------------

C, HEADS, PATCH, SIDE = 32, 4, 8, 32  # tiny: 4 × 4 patches


def _lavis_state(blocks: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LAVIS `eva_vit_g.pth` at tiny size (MLP hidden int(C · 4.3637), as LAVIS builds it)."""
    g = torch.Generator().manual_seed(seed)
    hidden = int(C * 4.3637)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    state = {"cls_token": r(1, 1, C, s=0.5), "pos_embed": r(1, 1 + (SIDE // PATCH) ** 2, C, s=0.5),
             "patch_embed.proj.weight": r(C, 3, PATCH, PATCH, s=0.05), "patch_embed.proj.bias": r(C)}
    for i in range(blocks):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": 1 + r(C, s=0.1), b + "norm1.bias": r(C, s=0.1),
                      b + "attn.qkv.weight": r(3 * C, C), b + "attn.q_bias": r(C), b + "attn.v_bias": r(C),
                      b + "attn.proj.weight": r(C, C), b + "attn.proj.bias": r(C),
                      b + "norm2.weight": 1 + r(C, s=0.1), b + "norm2.bias": r(C, s=0.1),
                      b + "mlp.fc1.weight": r(hidden, C), b + "mlp.fc1.bias": r(hidden),
                      b + "mlp.fc2.weight": r(C, hidden, s=0.1), b + "mlp.fc2.bias": r(C)})
    return state


def _eva_cfg(layers: int, path=None) -> EncoderConfig:
    return EncoderConfig(kind="eva_clip", path=str(path) if path else None, image_size=SIDE, patch_size=PATCH,
                         num_layers=layers, num_heads=HEADS)


def _pixels(batch=2, side=SIDE, seed=1):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _reference_eva(state: dict, layers: int, x: torch.Tensor) -> torch.Tensor:
    """LAVIS's EVA forward written out (eva_vit.py): the spec the Blip2 mapping must meet; (B, 1 + N, C)."""
    t = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    t = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), t.flatten(2).transpose(1, 2)], 1)
    t = t + state["pos_embed"]
    for i in range(layers):
        p = lambda n: state[f"blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(t, (C,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        bias = torch.cat([p("attn.q_bias"), torch.zeros(C), p("attn.v_bias")])
        B, N, _ = h.shape
        q, k, v = F.linear(h, p("attn.qkv.weight"), bias).reshape(B, N, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        a = ((q * (C // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        t = t + F.linear((a @ v).transpose(1, 2).reshape(B, N, C), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(t, (C,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"),
                         p("mlp.fc2.bias"))
    return t


def test_lavis_pth_extra_blocks_reported_and_safetensors_roundtrip(tmp_path):
    state = _lavis_state(blocks=3)
    path = tmp_path / "eva_vit_g.pth"
    torch.save(state, path)
    eva = build_encoder(_eva_cfg(2, path))
    assert eva.report.format == "lavis_eva"
    assert sorted(eva.unused_keys) == sorted(k for k in state if k.startswith("blocks.2."))
    x = _pixels()
    out = eva(pixel_values=x)
    ref = _reference_eva(state, 2, x)
    torch.testing.assert_close(torch.cat([out.cls[:, None], out.features], 1), ref, atol=1e-5, rtol=1e-5)
    # .pth → safetensors under the LAVIS names → the same encoder.
    st = tmp_path / "eva.safetensors"
    assert save_encoder_safetensors(read_encoder_checkpoint(path)[0], st) == "lavis_eva"
    again = build_encoder(_eva_cfg(2, st))
    assert again.report.format == "lavis_eva" and len(again.unused_keys) == len(eva.unused_keys)
    assert torch.equal(again(pixel_values=x).features, out.features)
    # {"model": state_dict} (a trainer checkpoint) loads too; fewer blocks than num_layers is an error.
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert torch.equal(build_encoder(_eva_cfg(2, tmp_path / "wrapped.pth"))(pixel_values=x).features, out.features)
    with pytest.raises(EncoderWeightsError, match="3 blocks stored"):
        build_encoder(_eva_cfg(4, path))


def test_eva_position_table_refit_by_lavis_rule():
    state = _lavis_state(blocks=1)
    eva = encoder_from_state_dict(EncoderConfig(kind="eva_clip", image_size=2 * SIDE, patch_size=PATCH, num_layers=1,
                                                num_heads=HEADS), state)
    assert eva(pixel_values=_pixels(side=2 * SIDE)).grid == (2 * SIDE // PATCH,) * 2


def _meta_state(blocks: int, pos_side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    state = {"cls_token": r(1, 1, C, s=0.5), "pos_embed": r(1, 1 + (pos_side // PATCH) ** 2, C, s=0.5),
             "mask_token": r(1, C), "patch_embed.proj.weight": r(C, 3, PATCH, PATCH, s=0.05),
             "patch_embed.proj.bias": r(C), "norm.weight": 1 + r(C, s=0.1), "norm.bias": r(C, s=0.1)}
    for i in range(blocks):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": 1 + r(C, s=0.1), b + "norm1.bias": r(C, s=0.1),
                      b + "attn.qkv.weight": r(3 * C, C), b + "attn.qkv.bias": r(3 * C),
                      b + "attn.proj.weight": r(C, C), b + "attn.proj.bias": r(C), b + "ls1.gamma": 1 + r(C),
                      b + "norm2.weight": 1 + r(C, s=0.1), b + "norm2.bias": r(C, s=0.1),
                      b + "mlp.fc1.weight": r(4 * C, C), b + "mlp.fc1.bias": r(4 * C),
                      b + "mlp.fc2.weight": r(C, 4 * C, s=0.1), b + "mlp.fc2.bias": r(C), b + "ls2.gamma": 1 + r(C)})
    return state


def _dino_cfg(path=None, side=SIDE, pos=None, layers=2) -> EncoderConfig:
    return EncoderConfig(kind="dinov2", path=str(path) if path else None, image_size=side, patch_size=PATCH,
                         num_layers=layers, num_heads=HEADS, pos_embed_size=pos)


def test_meta_dinov2_pth_and_transformers_dinov2_folder(tmp_path):
    import transformers as tf

    # Meta's .pth, its table trained for 40 px (5 × 5), run at 32 px (4 × 4).
    state = _meta_state(blocks=2, pos_side=40)
    torch.save(state, tmp_path / "dinov2.pth")
    dino = build_encoder(_dino_cfg(tmp_path / "dinov2.pth", pos=40))
    assert dino.report.format == "meta_dinov2" and dino.unused_keys == ()
    assert torch.equal(dino.model.pos_embed.data, meta_interpolate_pos_embed(state["pos_embed"], SIDE // PATCH))
    with pytest.raises(EncoderWeightsError, match="pos_embed_size=48"):
        build_encoder(_dino_cfg(tmp_path / "dinov2.pth", pos=48))
    # A transformers Dinov2Model folder gives what transformers computes (at its own size: no interpolation).
    hf = tf.Dinov2Model(tf.Dinov2Config(hidden_size=C, num_hidden_layers=2, num_attention_heads=HEADS, mlp_ratio=4,
                                        image_size=SIDE, patch_size=PATCH, layerscale_value=0.7)).eval()
    hf.save_pretrained(tmp_path / "hf_dinov2")
    ours = build_encoder(_dino_cfg(tmp_path / "hf_dinov2"))
    assert ours.report.format == "hf_dinov2" and ours.unused_keys == ()
    x = _pixels()
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
    torch.testing.assert_close(ours(pixel_values=x).features, ref[:, 1:], atol=1e-5, rtol=1e-5)
    # The same tensors in memory, under transformers 5.x's in-memory names (q_proj …), load to the same module.
    again = encoder_from_state_dict(_dino_cfg(), hf.state_dict())
    assert torch.equal(again(pixel_values=x).features, ours(pixel_values=x).features)


def test_transformers_blip2_folders_whole_and_vision_only(tmp_path):
    import transformers as tf

    vision = dict(hidden_size=C, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=3 * C,
                  image_size=SIDE, patch_size=PATCH, initializer_range=0.2)
    torch.manual_seed(0)
    whole = tf.Blip2ForConditionalGeneration(tf.Blip2Config(
        vision_config=vision, num_query_tokens=4,
        qformer_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            encoder_hidden_size=C),
        text_config=dict(model_type="opt", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                         vocab_size=64, word_embed_proj_dim=16))).eval()
    with torch.no_grad():  # a k bias would be lost in LAVIS's layout: the release has none
        for layer in whole.vision_model.encoder.layers:
            layer.self_attn.qkv.bias[C:2 * C] = 0
    whole.save_pretrained(tmp_path / "blip2")
    whole.vision_model.save_pretrained(tmp_path / "blip2_vision")
    x = _pixels()
    with torch.no_grad():
        ref = whole.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-1]
    for folder in ("blip2", "blip2_vision"):
        eva = build_encoder(_eva_cfg(2, tmp_path / folder))
        assert eva.report.format == "hf_blip2"
        out = eva(pixel_values=x)
        torch.testing.assert_close(torch.cat([out.cls[:, None], out.features], 1), ref, atol=1e-6, rtol=1e-6)
        # Not the vision tower, or not read (the release has no final norm): reported, not dropped silently.
        assert {k.split(".")[0] for k in eva.unused_keys} >= ({"qformer", "language_model"} if folder == "blip2"
                                                              else {"post_layernorm"})
        assert all(".post_layernorm." in f".{k}" or not k.startswith(eva.report.prefix) for k in eva.unused_keys)


def test_transformers_instructblip_folder(tmp_path):
    import transformers as tf

    torch.manual_seed(0)
    whole = tf.InstructBlipForConditionalGeneration(tf.InstructBlipConfig(
        vision_config=dict(hidden_size=C, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=3 * C,
                           image_size=SIDE, patch_size=PATCH, initializer_range=0.2),
        qformer_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            encoder_hidden_size=C),
        text_config=dict(model_type="opt", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                         vocab_size=64, word_embed_proj_dim=16), num_query_tokens=4)).eval()
    with torch.no_grad():
        for layer in whole.vision_model.encoder.layers:
            layer.self_attn.qkv.bias[C:2 * C] = 0
    whole.save_pretrained(tmp_path / "instructblip")
    x = _pixels()
    with torch.no_grad():
        ref = whole.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-1]
    eva = build_encoder(_eva_cfg(2, tmp_path / "instructblip"))
    assert eva.report.format == "hf_blip2" and eva.report.prefix == "vision_model."
    out = eva(pixel_values=x)
    torch.testing.assert_close(torch.cat([out.cls[:, None], out.features], 1), ref, atol=1e-6, rtol=1e-6)


def test_transformers_pix2struct_folders_whole_and_vision_only(tmp_path):
    import transformers as tf

    vision = dict(hidden_size=C, num_hidden_layers=2, num_attention_heads=HEADS, d_ff=48, d_kv=C // HEADS,
                  patch_embed_hidden_size=3 * 16 * 16, seq_len=64, initializer_range=0.2)
    torch.manual_seed(0)
    whole = tf.Pix2StructForConditionalGeneration(tf.Pix2StructConfig(
        vision_config=vision, text_config=dict(hidden_size=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8,
                                               vocab_size=64))).eval()
    whole.save_pretrained(tmp_path / "p2s")
    whole.encoder.save_pretrained(tmp_path / "p2s_vision")
    cfg = EncoderConfig(kind="pix2struct", patch_size=16, num_layers=2, num_heads=HEADS, max_patches=48)
    rng = np.random.default_rng(0)
    batch = Pix2StructPreprocessor(cfg)([Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8))
                                         for s in ((60, 100, 3), (90, 40, 3))])
    with torch.no_grad():
        ref = whole.encoder(**batch).last_hidden_state
    for folder in ("p2s", "p2s_vision"):
        pix = build_encoder(EncoderConfig(**{**cfg.__dict__, "path": str(tmp_path / folder)}))
        assert pix.report.format == "hf_pix2struct"
        assert bool(pix.unused_keys) == (folder == "p2s") and all(k.startswith("decoder.") for k in pix.unused_keys)
        out = pix(**batch)
        for b, (h, w) in enumerate(out.sizes.tolist()):
            own = out.features[b].view(*out.grid, -1)[:h, :w].reshape(h * w, -1)
            torch.testing.assert_close(own, ref[b, : h * w], atol=1e-6, rtol=1e-6)


def test_transformers_clip_folder(tmp_path):
    import transformers as tf

    hf = tf.CLIPVisionModel(tf.CLIPVisionConfig(hidden_size=C, num_hidden_layers=2, num_attention_heads=HEADS,
                                                intermediate_size=64, image_size=SIDE, patch_size=PATCH)).eval()
    hf.save_pretrained(tmp_path / "clip")
    cfg = EncoderConfig(kind="clip", path=str(tmp_path / "clip"), image_size=SIDE, patch_size=PATCH, num_layers=2,
                        num_heads=HEADS, feature_layer=-2)
    enc = build_encoder(cfg)
    x = _pixels()
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True).hidden_states[-2]
    out = enc(pixel_values=x)
    torch.testing.assert_close(torch.cat([out.cls[:, None], out.features], 1), ref, atol=1e-6, rtol=1e-6)


def test_bad_files_fail_naming_the_tensor(tmp_path):
    good = _lavis_state(blocks=2)
    cfg = _eva_cfg(2)
    with pytest.raises(EncoderWeightsError, match="no eva_clip encoder checkpoint format"):
        encoder_from_state_dict(cfg, {"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(EncoderWeightsError, match="no dinov2 encoder"):  # an EVA file where DINOv2 is configured
        encoder_from_state_dict(_dino_cfg(), good)
    missing = {k: v for k, v in good.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(EncoderWeightsError, match=r"missing tensor 'blocks\.1\.norm2\.bias'"):
        encoder_from_state_dict(cfg, missing)
    with pytest.raises(EncoderWeightsError, match=r"missing tensor 'patch_embed\.proj\.weight'"):
        encoder_from_state_dict(cfg, {k: v for k, v in good.items() if k != "patch_embed.proj.weight"})
    bent = dict(good, **{"blocks.0.mlp.fc2.weight": torch.zeros(C, 7)})
    with pytest.raises(EncoderWeightsError, match=r"'blocks\.0\.mlp\.fc2\.weight' has shape \(32, 7\)"):
        encoder_from_state_dict(cfg, bent)
    with pytest.raises(EncoderWeightsError, match="not divisible by num_heads 5"):
        encoder_from_state_dict(EncoderConfig(**{**cfg.__dict__, "num_heads": 5}), good)
    meta = _meta_state(blocks=2, pos_side=SIDE)
    with pytest.raises(EncoderWeightsError, match=r"missing tensor 'norm\.weight'"):
        encoder_from_state_dict(_dino_cfg(), {k: v for k, v in meta.items() if k != "norm.weight"})
    with pytest.raises(EncoderWeightsError, match="register_tokens"):
        encoder_from_state_dict(_dino_cfg(), dict(meta, register_tokens=torch.zeros(1, 4, C)))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EncoderWeightsError, match="unknown weight file type"):
        read_encoder_checkpoint(tmp_path / "notes.txt")
    torch.save({"blocks.0.attn.q_bias": torch.zeros(2), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(EncoderWeightsError, match="'step' is not a tensor"):
        read_encoder_checkpoint(tmp_path / "mixed.pth")


class Payload:
    """Any object that is not a tensor or a container: unpickling it would run arbitrary code paths."""


def test_files_needing_pickle_globals_are_refused(tmp_path):
    state = _lavis_state(blocks=1)
    torch.save({**state, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(EncoderWeightsError, match="refused"):
        build_encoder(_eva_cfg(1, tmp_path / "evil.pth"))


def test_format_detection_with_prefixes():
    eva, dino = _lavis_state(1), _meta_state(1, SIDE)
    both = {**{"visual_encoder." + k: v for k, v in eva.items()}, **{"dino_encoder." + k: v for k, v in dino.items()}}
    assert detect_format(both, "eva_clip") == ("lavis_eva", "visual_encoder.")
    assert detect_format(both, "dinov2") == ("meta_dinov2", "dino_encoder.")
    enc = encoder_from_state_dict(_eva_cfg(1), both)
    assert enc.report.prefix == "visual_encoder." and all(k.startswith("dino_encoder.") for k in enc.unused_keys)


def test_random_encoders_and_cls():
    torch.manual_seed(0)
    base = dict(patch_size=PATCH, hidden_size=C, num_layers=2, num_heads=HEADS, intermediate_size=64)
    eva = build_encoder(EncoderConfig(kind="eva_clip", image_size=SIDE, **base))
    out = eva(pixel_values=_pixels())
    assert out.cls.shape == (2, C) and out.features.shape == (2, (SIDE // PATCH) ** 2, C)
    dino = build_encoder(EncoderConfig(kind="dinov2", image_size=SIDE, pos_embed_size=SIDE + PATCH, **base))
    out = dino(pixel_values=_pixels())
    assert out.cls is None and out.features.shape == (2, 16, C) and out.features.std() > 0.1
    assert dino.model.pos_embed.shape == (1, 17, C)
