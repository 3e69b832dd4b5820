"""Fixtures for the ONNX export tests: one tiny model whose weights make every path of the export matter, saved once,
and its vision tower exported once through the CLI (the export is the slow step: ~30-60 s on 2 shared cores)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from mome.model import MoME, MoMEConfig  # noqa: E402

torch.set_num_threads(1)

PROMPTS = ["<image>\nWhat color is the circle?", "How many squares are there?",
           "<image>\nWhere is the red star? Give the box.", "What is the title of the chart?"]


def images(sizes=((64, 96), (120, 40), (50, 50), (33, 100)), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _perturb(model: MoME) -> MoME:
    """A fresh tiny model is too gentle a test: BLIP-2's EVA initialises at std 1e-10 (features ~1e-9, so any
    absolute tolerance passes) and ADT's residual branches start at zero (every layer is LN of its input). Give them
    real values: offsets of several pixels, reaching past the map's edge, non-zero output projections and query
    position embeddings."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.move.encoders["eva_clip"].parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for adt in model.move.aggregators.values():
            adt.reference.add_(torch.randn(adt.reference.shape, generator=g) * 0.1)
            adt.query_pos.copy_(torch.randn(adt.query_pos.shape, generator=g) * 0.3)
            for layer in adt.layers:
                ca = layer.cross_attn
                ca.offset_proj.weight.copy_(torch.randn(ca.offset_proj.weight.shape, generator=g) * 0.5)
                ca.offset_proj.bias.copy_(torch.randn(ca.offset_proj.bias.shape, generator=g) * 2.0)
                for lin in (layer.self_attn.out_proj, ca.out_proj, ca.weight_proj, layer.fc2):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def model() -> MoME:
    # Random encoders (path null), perturbed below: save_pretrained keeps a path-less encoder's weights, so the
    # exported folder holds exactly these (the shipped specialists would be read back from their files instead).
    no_paths = {f"vision.{k}.path": None for k in ("eva_clip", "dinov2", "pix2struct")}
    return _perturb(MoME(MoMEConfig.preset("tiny", no_paths))).eval()


@pytest.fixture(scope="session")
def model_dir(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tower(model_dir, tmp_path_factory):
    """(path, printed report) of `python -m mome.export onnx --model DIR --part vision-tower`, run in-process."""
    import contextlib
    import io

    from mome.export.__main__ import main

    out = tmp_path_factory.mktemp("onnx") / "vision-tower.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["onnx", "--model", str(model_dir), "--part", "vision-tower", "--out", str(out)])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()
