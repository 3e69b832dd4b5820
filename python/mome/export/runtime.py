"""Run an exported vision tower with onnxruntime in place of a MoME model's `MoVE`.

    tower = OnnxVisionTower("tower.onnx")       # CUDA provider with onnxruntime-gpu and a GPU, else CPU
    out = tower(model.preprocess(images), model.instruction_embeddings(prompts))   # a MoVEOutput
    with tower.attached(model):                  # model.generate / the eval harness now use ONNX for vision
        model.generate(images, prompts)

`attached` swaps the ``forward`` of this one ``model.move`` instance for the tower's (preprocessing, names and the
rest of the model stay), and restores it on exit. This module uses the exporter (`mome.export.onnx`: its onnxruntime
session and, for `vision_backend`, an export on the fly); the exporter does not import it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from mome.export.onnx import default_providers, export, session
from mome.model.move import MoVEOutput

__all__ = ["OnnxVisionTower", "default_providers", "session", "vision_backend", "BACKENDS"]

BACKENDS = ("torch", "onnx")


class OnnxVisionTower:
    """``__call__(pixel_inputs, instruction)`` → `MoVEOutput`, like `MoVE.forward`, from a ``vision-tower`` export."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.session = session(self.path, providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("mome.part") != "vision-tower":
            raise ValueError(f"{self.path} is not a MoME vision-tower export (mome.part = {meta.get('mome.part')!r})")
        self.names = meta["mome.encoders"].split(",")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = torch.device(device)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def __call__(self, pixel_inputs: dict[str, dict[str, torch.Tensor]],
                 instruction: torch.Tensor | None = None) -> MoVEOutput:
        feeds = {}
        for name in self.input_names:
            if name == "instruction":
                if instruction is None:
                    raise ValueError("the soft router needs the instruction embedding")
                value = instruction
            else:
                enc, _, key = name.rpartition(".")
                if enc not in pixel_inputs:
                    raise KeyError(f"pixel_inputs lacks the inputs of encoder {enc!r}; it has {sorted(pixel_inputs)}")
                value = pixel_inputs[enc][key]
            feeds[name] = value.detach().to("cpu", torch.float32).contiguous().numpy()
        tokens, weights, importance = (torch.from_numpy(o).to(self.device) for o in self.session.run(None, feeds))
        return MoVEOutput(tokens, weights, importance)

    def check_compatible(self, model) -> None:
        if list(model.move.names) != self.names:
            raise ValueError(f"{self.path} was exported for encoders {self.names}, the model uses {model.move.names}")

    @contextlib.contextmanager
    def attached(self, model):
        """Within the block, ``model.move(...)`` runs this tower (outputs on the model's device)."""
        self.check_compatible(model)
        move, previous, device = model.move, model.move.__dict__.get("forward"), self.device
        self.device = model.device
        move.forward = self
        try:
            yield model
        finally:
            self.device = device
            if previous is None:
                del move.forward
            else:
                move.forward = previous


@contextlib.contextmanager
def vision_backend(model, backend: str, onnx_path: str | Path | None = None):
    """Within the block ``model.move`` runs on ``backend`` (the ``--vision-backend`` of the CLIs): "torch" (as built)
    or "onnx" (onnxruntime, from ``onnx_path`` or, without one, from a vision-tower export of ``model`` written to a
    temporary directory and checked first)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown vision backend {backend!r}; backends: {', '.join(BACKENDS)}")
    if backend == "torch":
        yield model
        return
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = os.path.join(tmp, "vision-tower.onnx")
            report = export(model, "vision-tower", onnx_path, log=lambda msg: print(msg, file=sys.stderr))
            if not report.ok:
                raise RuntimeError("the vision-tower export does not match PyTorch:\n" + report.summary())
        with OnnxVisionTower(onnx_path).attached(model):
            yield model
