"""Encoders, ADT and MoVE: per-image true maps (alone == batched), pooling, router semantics."""

import pytest
import torch
import torch.nn.functional as F

from mome.model import MoME
from mome.model.adt import ADT, DeformableCrossAttention, adaptive_pool
from mome.model.move import Projector

from .conftest import ANSWERS, PROMPTS, images, tiny_model


def test_adaptive_pool_matches_torch_per_image():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(h, w, 8, generator=g) for h, w in ((5, 7), (3, 4), (2, 9))]  # includes h < l
    Hm, Wm = 5, 9
    padded = torch.zeros(3, Hm, Wm, 8)
    for b, m in enumerate(maps):
        padded[b, : m.shape[0], : m.shape[1]] = m
    sizes = torch.tensor([m.shape[:2] for m in maps])
    got = adaptive_pool(padded.view(3, Hm * Wm, 8), sizes, (Hm, Wm), 4)
    for b, m in enumerate(maps):
        want = F.adaptive_avg_pool2d(m.permute(2, 0, 1), 4).permute(1, 2, 0).reshape(16, 8)
        torch.testing.assert_close(got[b], want, rtol=1e-5, atol=1e-6)


def randomize_adt(adt: ADT) -> ADT:
    """Random values for the zero-initialised parts (output projections, fc2, offsets, weights, position
    embeddings), so points move off the grid and every branch contributes."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in adt.named_parameters():
            if "norm" not in name and name != "reference":
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "offset_proj" in name else 0.3))
    return adt.eval()


def test_adt_samples_each_true_map_alone_equals_padded_batch():
    torch.manual_seed(0)
    adt = randomize_adt(ADT(16, num_tokens=16, layers=2, heads=4, points=4, ffn_dim=32))
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(h, w, 16, generator=g) for h, w in ((6, 3), (2, 8), (5, 5))]
    Hm, Wm = 6, 8
    padded = torch.zeros(3, Hm, Wm, 16)
    for b, m in enumerate(maps):
        padded[b, : m.shape[0], : m.shape[1]] = m
    sizes = torch.tensor([m.shape[:2] for m in maps])
    batched = adt(padded.view(3, Hm * Wm, 16), sizes, (Hm, Wm))
    for b, m in enumerate(maps):
        h, w = m.shape[:2]
        alone = adt(m.reshape(1, h * w, 16), sizes[b:b + 1], (h, w))
        torch.testing.assert_close(batched[b], alone[0], rtol=1e-5, atol=1e-5)
    # The padding really is read as "outside": changing it changes nothing.
    assert batched.std() > 0.1
    padded[0, 0, 3:] = 100.0
    torch.testing.assert_close(adt(padded.view(3, Hm * Wm, 16), sizes, (Hm, Wm))[0], batched[0])


def test_pix2struct_aspect_ratios_alone_equal_batched():
    model = tiny_model("vision.use=pix2struct", "vision.router=add")
    enc = model.move.encoders["pix2struct"]
    imgs = images()
    inputs = enc.preprocess(imgs)
    out = enc(**inputs)
    sizes = out.sizes.tolist()
    assert len({tuple(s) for s in sizes}) == len(imgs)  # every image has its own grid
    for (h, w), im in zip(sizes, imgs):
        assert h * w <= model.config.vision.pix2struct.max_patches
        assert (h > w) == (im.height > im.width) or h == w  # aspect ratio kept
    with torch.no_grad():
        batched = model.move({"pix2struct": inputs}).tokens
        for b, im in enumerate(imgs):
            alone = model.move({"pix2struct": enc.preprocess([im])}).tokens
            torch.testing.assert_close(batched[b], alone[0], rtol=1e-4, atol=1e-5)


def test_deformable_cross_attention_geometry_on_a_non_square_map():
    """By value, independently of the fixtures: a map whose features are (row, col) of each pixel, read back by one
    head and one point. Locations are (x, y) normalised to the map (x along the width), offsets are in pixels,
    divided by (w, h), and align_corners=False puts pixel centres at (c + 0.5) / w."""
    h, w = 3, 5
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    fmap = torch.stack([rows, cols, torch.ones(h, w), torch.zeros(h, w)], -1).view(1, h * w, 4)
    dca = DeformableCrossAttention(4, heads=1, points=1)
    with torch.no_grad():
        dca.value_proj.weight.copy_(torch.eye(4))
        dca.out_proj.weight.copy_(torch.eye(4))
        dca.offset_proj.weight.zero_()
    sizes = torch.tensor([[h, w]])
    query = torch.zeros(1, 1, 4)

    def read(ref_xy, offset_px):
        with torch.no_grad():
            dca.offset_proj.bias.copy_(torch.tensor(offset_px, dtype=torch.float32))
            return dca(query, torch.tensor([ref_xy]), fmap, sizes, (h, w))[0, 0]

    torch.testing.assert_close(read((0.1, 0.5), (0.0, 0.0)), torch.tensor([1.0, 0.0, 1.0, 0.0]))  # the manifest's
    torch.testing.assert_close(read((0.1, 0.5), (1.0, 0.0)), torch.tensor([1.0, 1.0, 1.0, 0.0]))  # +1 px in x: col
    torch.testing.assert_close(read((0.1, 0.5), (0.0, 1.0)), torch.tensor([2.0, 0.0, 1.0, 0.0]))  # +1 px in y: row
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # bilinear sampling of a linear map is exact inside it
        y_px, x_px = torch.rand(2, generator=g) * torch.tensor([h - 1.0, w - 1.0])
        ref = ((x_px.item() + 0.5) / w, (y_px.item() + 0.5) / h)
        torch.testing.assert_close(read(ref, (0.0, 0.0))[:2], torch.stack([y_px, x_px]), atol=1e-5, rtol=0)
    # half a pixel beyond the last column only half the pixel is there (zeros padding)
    torch.testing.assert_close(read((1.0, 0.5), (0.0, 0.0))[2], torch.tensor(0.5))


def test_encoders_report_true_sizes():
    model = tiny_model()
    pix = model.preprocess(images())
    outs = model.move.encode(pix)
    eva = outs["eva_clip"]  # its own 4 × 4 tokens = L, plus the CLS token
    assert eva.grid == (4, 4) and eva.features.shape == (4, 16, 64) and eva.cls.shape == (4, 64)
    dino = outs["dinov2"]  # 64 px / 8 = 8 × 8, pooled to 4 × 4 by ADT
    assert dino.grid == (8, 8) and dino.features.shape == (4, 64, 64) and (dino.sizes == 8).all()
    o = outs["pix2struct"]
    assert o.features.shape[1] == o.grid[0] * o.grid[1]


def test_soft_weights_sum_to_one_and_importance(instruction):
    model = tiny_model()
    with torch.no_grad():
        out = model.move(model.preprocess(images()), instruction)
    assert out.weights.shape == (4, 3)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(4))
    assert (out.weights > 0).all() and (out.importance > 0).all()
    assert out.tokens.shape[1] == 17  # the EVA CLS token, then the L = 16 mixed tokens
    add = tiny_model("vision.router=add")
    with torch.no_grad():
        assert torch.equal(add.move(add.preprocess(images())).weights, torch.ones(4, 3))


def test_one_hot_vision_router_equals_single_encoder_model(instruction):
    pair = MoME(pair_cfg := tiny_model("vision.use=eva_clip,dinov2").config)
    single = MoME(pair_cfg.override(["vision.use=eva_clip", "vision.router=add"]))
    # The single-encoder model takes every shared weight from the pair: LLM + MoLE, EVA, its ADT and projector.
    missing, _ = single.load_state_dict(pair.state_dict(), strict=False)
    assert missing == []
    with torch.no_grad():  # router → exactly (1, 0): zero weights, bias (0, -inf)
        last = pair.move.router.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, float("-inf")]))
    pix = pair.preprocess(images())
    with torch.no_grad():
        a = pair(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction)
        b = single(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction)
    assert torch.equal(a.vision_weights, torch.tensor([[1.0, 0.0]] * 4))
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)
    # and the other encoder does matter when the router lets it in
    with torch.no_grad():
        pair.move.router.net[-1].bias.copy_(torch.tensor([0.0, 0.0]))
        c = pair(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction)
    assert not torch.allclose(c.logits, b.logits, atol=1e-4)


@pytest.mark.parametrize("aggregator", ["adt", "avgpool"])
def test_aggregator_output_shape(aggregator):
    model = tiny_model(f"vision.aggregator={aggregator}", "vision.router=add")
    with torch.no_grad():
        out = model.move(model.preprocess(images()))
    assert out.tokens.shape == (4, 17, model.config.language.hidden_size)


def test_the_cls_token_is_the_projected_eva_cls(instruction):
    model = tiny_model()
    pix = model.preprocess(images())
    with torch.no_grad():
        out = model.move(pix, instruction)
        eva = model.move.encoders["eva_clip"](**pix["eva_clip"])
        want = model.move.projectors["eva_clip"](model.move.norms["eva_clip"](eva.cls))
    torch.testing.assert_close(out.tokens[:, 0], want)
    off = tiny_model("vision.cls_token=false")
    with torch.no_grad():
        assert off.move(off.preprocess(images()), instruction).tokens.shape[1] == 16


@pytest.mark.parametrize("switch, check", [
    ("vision.adt_encoders=[eva_clip,dinov2,pix2struct]", lambda m: set(m.move.aggregators) == {
        "eva_clip", "dinov2", "pix2struct"} and not m.move.norms),
    ("vision.projector=mlp", lambda m: all(isinstance(p, Projector) for p in m.move.projectors.values())),
])
def test_our_switches_are_off_by_default_and_work(switch, check, instruction):
    assert not check(tiny_model())
    model = tiny_model(switch)
    assert check(model)
    with torch.no_grad():
        assert torch.isfinite(model.move(model.preprocess(images()), instruction).tokens).all()
