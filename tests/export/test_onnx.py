"""ONNX export of every part on the tiny preset: onnx.checker, onnxruntime vs PyTorch (≤ 1e-4) on shapes other than
the export example, the graph is standard ONNX (deformable attention as GridSample), and generation with the ONNX
vision backend equals the PyTorch one."""

import contextlib
import io
import json
import re
import sys

import onnx
import pytest
import torch

from mome.export import onnx as ox
from mome.export.runtime import OnnxVisionTower, vision_backend

from .conftest import PROMPTS, images

ENCODER_PARTS = {"eva": ("eva_clip", 1), "clip": ("clip", 1), "dino": ("dinov2", 3), "pix2struct": ("pix2struct", 2)}


def _ops(path) -> set[tuple[str, str]]:
    m = onnx.load(str(path))
    ops = {(n.domain or "ai.onnx", n.op_type) for n in m.graph.node}
    for f in m.functions:
        ops |= {(n.domain or "ai.onnx", n.op_type) for n in f.node}
    return ops


@pytest.mark.parametrize("part", list(ENCODER_PARTS))
def test_encoder_part(model, part, tmp_path):
    out = tmp_path / f"{part}.onnx"
    notes = []
    report = ox.export(model, part, out, log=notes.append)
    assert report.ok, report.summary()
    assert report.max_abs_diff <= ox.TOLERANCE
    assert len(report.checks) == 2
    onnx.checker.check_model(str(out), full_check=True)
    assert all(domain == "ai.onnx" for domain, _ in _ops(out)), _ops(out)
    # Dynamic axes: batch everywhere; height and width for DINOv2; the patch count for Pix2Struct.
    axes = report.dynamic_axes
    first = next(iter(axes.values()))
    assert "0: batch" in first
    if part == "dino":
        assert "2: 8*image_h" in first and "3: 8*image_w" in first
    if part == "pix2struct":
        assert axes["flattened_patches"] == axes["attention_mask"] == "0: batch, 1: patches"
    if part in ("eva", "clip"):
        assert first == "0: batch"
    # clip is not in the tiny preset's vision.use: built from its config, with a note saying so.
    assert bool(notes) == (part == "clip")
    # The check inputs really have new shapes: batch 3 and 1 (the example has 2).
    assert re.search(r"\(3, ", report.checks[0]) and re.search(r"\(1, ", report.checks[1])


def test_encoder_features_are_moves(model):
    """What the encoder parts export is the feature map MoVE consumes (square inputs: VisionEncoder's own check)."""
    with torch.no_grad():
        for part in ("eva", "dino"):
            enc = model.move.encoders[ENCODER_PARTS[part][0]]
            S = enc.cfg.image_size
            x = torch.randn(2, 3, S, S)
            torch.testing.assert_close(ox.part_module(model, part)(x), enc(pixel_values=x).features)
        enc = model.move.encoders["pix2struct"]
        inputs = enc.preprocess(images())
        feats = ox.part_module(model, "pix2struct")(**inputs)  # (B, N, C) per patch, row-major
        grid = enc(**inputs)
        for b, (h, w) in enumerate(grid.sizes.tolist()):
            own = grid.features[b].view(*grid.grid, -1)[:h, :w].reshape(h * w, -1)
            torch.testing.assert_close(feats[b, : h * w], own)


def test_vision_tower_cli(tower):
    path, text = tower
    assert "onnx.checker.check_model: passed" in text
    assert re.search(r"max abs diff \S+ \(tolerance 0.0001\): OK", text), text
    diffs = [float(d) for d in re.findall(r"→ max abs diff (\S+)", text)]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
    ops = _ops(path)
    assert ("ai.onnx", "GridSample") in ops
    assert all(domain == "ai.onnx" for domain, _ in ops), ops  # no mome:: custom op left
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta == {"mome.part": "vision-tower", "mome.encoders": "eva_clip,dinov2,pix2struct"}
    assert "dinov2.pixel_values: {0: batch}" in text  # at its image_size, as MoVE's preprocessing gives it
    assert "pix2struct.flattened_patches: {0: batch, 1: patches}" in text


def test_tower_runtime_matches_move(model, tower):
    """OnnxVisionTower on real preprocessed images (other sizes and batch than the export's) equals MoVE."""
    runtime = OnnxVisionTower(tower[0])
    assert runtime.providers == ["CPUExecutionProvider"]  # no GPU here (torch.cuda.is_available() is False)
    pix = model.preprocess(images(((40, 200), (90, 30), (64, 64)), seed=5))
    instr = torch.randn(3, 384, generator=torch.Generator().manual_seed(4))
    got = runtime(pix, instr)
    with torch.no_grad():
        want = model.move(pix, instr)
    for name in ("tokens", "weights", "importance"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-4, name


def test_generate_onnx_backend_equals_torch(model, tower):
    imgs = images()
    ref = model.generate(imgs, PROMPTS, max_new_tokens=8)
    forward = model.move.forward
    with OnnxVisionTower(tower[0]).attached(model):
        got = model.generate(imgs, PROMPTS, max_new_tokens=8)
    assert model.move.forward == forward and "forward" not in model.move.__dict__  # restored
    assert [g.text for g in got] == [r.text for r in ref]
    assert any(r.text for r in ref)
    for g, r in zip(got, ref):
        for n, w in r.routing["vision"].items():
            assert g.routing["vision"][n] == pytest.approx(w, abs=1e-5)


def test_generate_cli_vision_backend(model_dir, tower, tmp_path):
    from mome.generate import main

    image = tmp_path / "x.png"
    images(((48, 80),), seed=7)[0].save(image)
    outputs = {}
    for backend in ("torch", "onnx"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            args = ["--model", str(model_dir), "--image", str(image), "--prompt", "What is shown?", "--json",
                    "--max-new-tokens", "6", "--vision-backend", backend]
            assert main(args + (["--onnx", str(tower[0])] if backend == "onnx" else [])) == 0
        outputs[backend] = json.loads(buf.getvalue())
    assert outputs["onnx"]["text"] == outputs["torch"]["text"]
    assert outputs["onnx"]["routing"]["language"] == outputs["torch"]["routing"]["language"]


def test_tower_for_another_model_is_refused(tower):
    from mome.model import MoME, MoMEConfig

    other = MoME(MoMEConfig.preset("tiny", ["vision.use=[dinov2]"]))
    with pytest.raises(ValueError, match="exported for encoders"):
        with vision_backend(other, "onnx", tower[0]):
            pass


def test_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(ox.MissingDependency, match=r"pip install 'mome\[onnx\]'"):
        ox.require_onnx()
    from mome.export.__main__ import main

    from mome.cli import run

    assert run(main, "python -m mome.export", ["onnx", "--preset", "tiny", "--part", "dino", "--out", "x.onnx"]) == 2


def test_unknown_part(model):
    with pytest.raises(ValueError, match="unknown part"):
        ox.part_module(model, "sam")
