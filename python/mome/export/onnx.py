"""ONNX export of MoME's vision side, each export checked against PyTorch with onnxruntime.

Parts (``PARTS``):

    eva, clip    the encoder's feature map: hidden state ``feature_layer`` without CLS, (B, h·w, C); dynamic batch
                 (H, W fixed: their position embeddings are not interpolated)
    dino         DINOv2's last hidden state without CLS, (B, h·w, C); dynamic batch, height and width (multiples of
                 the patch size: DINOv2 interpolates its position embeddings)
    pix2struct   the hidden state ``feature_layer`` of each flattened patch, (B, N, C), padded patches zero;
                 dynamic batch and patch count N
    vision-tower the whole of MoVE (encoders → ADT/AvgPool or LayerNorm → projectors → soft router/addition →
                 EVA's CLS prepended): inputs ``<encoder>.<input>`` for every encoder's preprocessed inputs
                 (+ ``instruction`` (B, 384) with the soft router), outputs ``tokens`` (B, L + 1, D_llm),
                 ``weights`` and ``importance`` (B, N_enc)

Lowering. MoVE calls the compiled ops `mome.ops.deform_attn` / `router_mix`, which ONNX does not know, and ADT reads
its map size through a host-side ``spatial_shapes`` tensor. The export therefore traces `ExportableMoVE`, which runs
MoVE's own `branch` and `mix` with two functions swapped for the ops' reference math written for a single level
whose (h, w) are symbolic: deformable attention is one ``grid_sample`` (ONNX GridSample, bilinear, zeros,
align_corners=0, opset ≥ 16) per layer (`grid_sample_sampler`), the router mix an einsum. Pix2Struct's common grid (the largest rows × cols of the batch) is read from the
patches' row/col ids, so it is data-dependent in the graph. Nothing in `mome.ops` or `mome.model` changes; every
export is compared with `MoVE` itself, so a drift between the two forwards fails the check.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mome.model.encoders import EncoderOutput, VisionEncoder, build_encoder, build_preprocessor

__all__ = ["PARTS", "OPSET", "TOLERANCE", "MissingDependency", "ExportReport", "require_onnx", "default_providers",
           "session", "export", "part_module", "ExportableMoVE", "EncoderFeatures", "Pix2StructFeatures", "check",
           "check_inputs", "grid_sample_sampler"]

# CLI part name → encoder kind in `vision.use` (None: the whole tower).
PARTS = {"eva": "eva_clip", "clip": "clip", "dino": "dinov2", "pix2struct": "pix2struct", "vision-tower": None}
OPSET = 18  # GridSample needs ≥ 16; 18 is the newest opset every onnxruntime ≥ 1.14 runs in full
TOLERANCE = 1e-4  # max |ORT − PyTorch| in float32; measured values on the tiny preset are ~1e-6
# Upper bounds torch.export needs for the symbolic sizes (far above any real input).
_MAX_BATCH, _MAX_SIDE, _MAX_PATCHES = 4096, 1024, 65536


class MissingDependency(ImportError):
    """onnx / onnxscript / onnxruntime is not installed."""


def require_onnx(runtime_only: bool = False):
    """Import onnx, onnxscript and onnxruntime (only onnxruntime with ``runtime_only``), or say how to get them."""
    names = ("onnxruntime",) if runtime_only else ("onnx", "onnxscript", "onnxruntime")
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependency(
            f"ONNX export/runtime needs {', '.join(missing)}: pip install 'mome[onnx]' "
            "(or 'mome[onnx-gpu]' for onnxruntime-gpu; never both onnxruntime and onnxruntime-gpu in one env)")


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu is installed and torch sees a GPU, else CPU. onnxruntime-gpu lists the CUDA
    provider even on a machine without a GPU, so its list alone does not decide."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: str | Path, providers: list[str] | None = None):
    require_onnx(runtime_only=True)
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=providers or default_providers())


# ---- the traced modules -------------------------------------------------------------------------------------------


def _square_features(enc: VisionEncoder, pixels: torch.Tensor) -> torch.Tensor:
    """EVA-CLIP / CLIP / DINOv2 features as `VisionEncoder.forward` computes them, without the square-grid check
    (so DINOv2 may take any multiple of its patch size): (B, 3, H, W) → (B, h·w, C)."""
    return enc.tokens(pixels)[:, 1:]


def _pix2struct_features(enc: VisionEncoder, patches: torch.Tensor, mask: torch.Tensor):
    """Pix2Struct's per-patch features (padding zeroed) and the 0-based (row, col) of each patch; (B, N, ·)."""
    out = enc.model(flattened_patches=patches, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[enc.cfg.feature_layer] if enc.cfg.feature_layer != -1 else out.last_hidden_state
    row = patches[..., 0].round().long()  # (B, N), 1-based; 0 = padding
    col = patches[..., 1].round().long()
    valid = (mask > 0) & (row > 0)
    return hidden * valid[..., None].to(hidden.dtype), row, col, valid


class EncoderFeatures(nn.Module):
    """EVA-CLIP / CLIP / DINOv2 features for export: ``forward(pixel_values)`` → (B, h·w, C)."""

    def __init__(self, encoder: VisionEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _square_features(self.encoder, pixel_values)


class Pix2StructFeatures(EncoderFeatures):
    """Pix2Struct features for export: ``forward(flattened_patches, attention_mask)`` → (B, N, C)."""

    def forward(self, flattened_patches: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _pix2struct_features(self.encoder, flattened_patches, attention_mask)[0]


def grid_sample_sampler(value: torch.Tensor, grid, loc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`mome.adt.Sampler` for export: `reference.deform_attn` inlined for its single level, the level's (Hm, Wm)
    being symbolic ints instead of a ``spatial_shapes`` tensor read on the host. value (B, Hm·Wm, H, D), loc
    (B, L, H, P, 2), weights (B, L, H, P) → (B, L, H·D)."""
    B, _, H, D = value.shape
    L, P = loc.shape[1], loc.shape[3]
    Hm, Wm = grid
    v = value.permute(0, 2, 3, 1).reshape(B * H, D, Hm, Wm)
    g = (2 * loc - 1).transpose(1, 2).reshape(B * H, L, P, 2)
    sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B·H, D, L, P)
    a = weights.transpose(1, 2).reshape(B * H, 1, L, P)
    out = (sampled * a).sum(-1)  # (B·H, D, L)
    return out.view(B, H, D, L).permute(0, 3, 1, 2).reshape(B, L, H * D)


def _einsum_mix(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nbld,bn->bld", stacked, weights)  # mome.ops.reference.router_mix


class ExportableMoVE(nn.Module):
    """`MoVE.forward` on flat inputs, traceable by torch.export with symbolic map sizes.

    ``forward(inputs)``: ``inputs`` maps ``"<encoder>.<input>"`` (e.g. ``"dinov2.pixel_values"``) and, with the soft
    router, ``"instruction"`` to tensors. Returns (tokens (B, L, D), weights (B, N), importance (B, N))."""

    def __init__(self, move: nn.Module):
        super().__init__()
        self.move = move
        self.input_names = [f"{n}.{k}" for n in move.names for k in _encoder_input_keys(move.encoders[n].kind)]
        if move.router is not None:
            self.input_names.append("instruction")

    def forward(self, inputs: dict[str, torch.Tensor]):
        move = self.move
        experts, cls = [], None
        for n in move.names:
            enc = move.encoders[n]
            if enc.kind == "pix2struct":
                feats, sizes, grid = self._pix2struct(enc, inputs[f"{n}.flattened_patches"],
                                                      inputs[f"{n}.attention_mask"])
                head = None
            else:
                pixels = inputs[f"{n}.pixel_values"]
                hidden = enc.tokens(pixels)  # (B, 1 + h·w, C), CLS first
                feats, head = hidden[:, 1:], (hidden[:, 0] if enc.kind in ("eva_clip", "clip") else None)
                p = enc.cfg.patch_size
                grid = (pixels.shape[2] // p, pixels.shape[3] // p)
                B = pixels.shape[0]
                sizes = torch.stack([pixels.new_full((B,), grid[0], dtype=torch.long),
                                     pixels.new_full((B,), grid[1], dtype=torch.long)], dim=1)
            tokens, c = move.branch(n, EncoderOutput(feats, sizes, grid, head), sampler=grid_sample_sampler)
            experts.append(tokens)
            if n == move.cls_from:
                cls = c
        out = move.mix(experts, cls, inputs.get("instruction"), mix_fn=_einsum_mix)
        return out.tokens, out.weights, out.importance

    @staticmethod
    def _pix2struct(enc: VisionEncoder, patches: torch.Tensor, mask: torch.Tensor):
        """`VisionEncoder._pix2struct`: the patches scattered row-major onto the batch's common Hm × Wm grid."""
        hidden, row, col, valid = _pix2struct_features(enc, patches, mask)
        B, N, C = hidden.shape
        rows = row.amax(dim=1).clamp(min=1)
        cols = col.amax(dim=1).clamp(min=1)
        Hm, Wm = rows.max().item(), cols.max().item()  # data-dependent: unbacked sizes in the exported graph
        torch._check(Hm >= 1)
        torch._check(Wm >= 1)
        torch._check(Hm <= _MAX_PATCHES)
        torch._check(Wm <= _MAX_PATCHES)
        index = (row - 1).clamp(min=0) * Wm + (col - 1).clamp(min=0)
        index = torch.where(valid, index, torch.full_like(index, Hm * Wm))  # padding → a dropped extra slot
        grid = hidden.new_zeros(B, Hm * Wm + 1, C).scatter(1, index[..., None].expand(B, N, C), hidden)
        return grid[:, : Hm * Wm], torch.stack([rows, cols], dim=1), (Hm, Wm)


def _encoder_input_keys(kind: str) -> tuple[str, ...]:
    return ("flattened_patches", "attention_mask") if kind == "pix2struct" else ("pixel_values",)


# ---- example and check inputs ---------------------------------------------------------------------------------------


def _images(sizes, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _pix2struct_inputs(enc: VisionEncoder, image_sizes, max_patches: int, seed: int) -> dict[str, torch.Tensor]:
    cfg = dataclasses.replace(enc.cfg, max_patches=max_patches)
    return build_preprocessor(cfg)(_images(image_sizes, seed))


def _square_input(enc: VisionEncoder, batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _sizes_for(enc: VisionEncoder, step: int) -> tuple[int, int]:
    """The (H, W) of step ``step``: the encoder's own size, or for DINOv2 other (also non-square) multiples of p."""
    S, p = enc.cfg.image_size, enc.cfg.patch_size
    if enc.kind != "dinov2":
        return S, S
    return [(S, S + 2 * p), (S + p, S + p), (S - p, S + 3 * p) if S > p else (S + 2 * p, S)][step % 3]


def example_inputs(module: nn.Module, part: str) -> dict[str, torch.Tensor]:
    """The export example: batch 2, non-square DINOv2 images and unequal sizes everywhere, so that torch.export
    does not tie or specialise dimensions that happen to be equal (ENVIRONMENT.md § ONNX)."""
    return _inputs(module, part, batch=2, step=0, seed=0)


def check_inputs(module: nn.Module, part: str) -> list[dict[str, torch.Tensor]]:
    """Fresh inputs whose shapes differ from the example: other batch sizes, image sizes and patch counts. For the
    tower the square encoders keep their own image_size (what MoVE's preprocessing gives them)."""
    return [_inputs(module, part, batch=b, step=s, seed=10 + s) for b, s in ((3, 1), (1, 2))]


def _inputs(module: nn.Module, part: str, batch: int, step: int, seed: int) -> dict[str, torch.Tensor]:
    shapes = [(64, 96), (120, 40), (50, 50), (33, 100)]
    image_sizes = [shapes[(i + step) % len(shapes)] for i in range(batch)]
    if isinstance(module, EncoderFeatures):
        enc = module.encoder
        if enc.kind == "pix2struct":
            return dict(_pix2struct_inputs(enc, image_sizes, enc.cfg.max_patches + 8 * step - 8, seed))
        h, w = _sizes_for(enc, step)
        return {"pixel_values": _square_input(enc, batch, h, w, seed)}
    out = {}
    for n in module.move.names:
        enc = module.move.encoders[n]
        if enc.kind == "pix2struct":
            for k, v in _pix2struct_inputs(enc, image_sizes, enc.cfg.max_patches + 8 * step - 8, seed).items():
                out[f"{n}.{k}"] = v
        else:  # MoVE's preprocessing always gives the square encoders their own image_size
            S = enc.cfg.image_size
            out[f"{n}.pixel_values"] = _square_input(enc, batch, S, S, seed)
    if "instruction" in module.input_names:
        out["instruction"] = torch.randn(batch, module.move.router.net[0].in_features,
                                         generator=torch.Generator().manual_seed(seed))
    return out


def _dynamic_shapes(module: nn.Module, names: list[str]) -> dict:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=_MAX_BATCH)
    patches = Dim("patches", min=1, max=_MAX_PATCHES)
    shapes = {}
    for name in names:
        enc_name, _, key = name.rpartition(".")
        if key == "instruction" or name == "instruction":
            shapes[name] = {0: batch}
        elif key in ("flattened_patches", "attention_mask"):
            shapes[name] = {0: batch, 1: patches}
        else:
            enc = module.encoder if isinstance(module, EncoderFeatures) else module.move.encoders[enc_name]
            spec = {0: batch}
            if enc.kind == "dinov2" and isinstance(module, EncoderFeatures):  # the tower: DINOv2 at image_size
                p, tag = enc.cfg.patch_size, enc_name.replace(".", "_") or "image"
                spec[2] = p * Dim(f"{tag}_h", min=1, max=_MAX_SIDE)
                spec[3] = p * Dim(f"{tag}_w", min=1, max=_MAX_SIDE)
            shapes[name] = spec
    return shapes


def _dynamic_axes_text(module: nn.Module, names: list[str]) -> dict[str, str]:
    text = {}
    for name, spec in _dynamic_shapes(module, names).items():
        text[name] = ", ".join(f"{axis}: {getattr(d, '__name__', str(d))}" for axis, d in spec.items())
    return text


# ---- export and check -----------------------------------------------------------------------------------------------


def part_module(model, part: str, log=print) -> nn.Module:
    """The float32 module to export for ``part`` of a MoME ``model`` (a deep copy: the model is left as it was).

    An encoder that ``vision.use`` lacks is built from the model's config (its ``path`` if set, else random weights
    seeded as MoME seeds its encoders) — handy for exporting CLIP from a preset that mixes other encoders."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
    kind = PARTS[part]
    if kind is None:
        return ExportableMoVE(copy.deepcopy(model.move).float()).eval()
    if kind in model.move.encoders:
        encoder = copy.deepcopy(model.move.encoders[kind])
    else:
        cfg = getattr(model.config.vision, kind)
        log(f"note: {kind} is not in vision.use {model.config.vision.use}; building it from the config's "
            f"vision.{kind} ({'weights from ' + cfg.path if cfg.path else 'random weights'})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model.config.seed * 1000 + 1 + 4 + list(PARTS.values()).index(kind))
            encoder = build_encoder(cfg, "float32")
    encoder = encoder.float()
    return (Pix2StructFeatures(encoder) if kind == "pix2struct" else EncoderFeatures(encoder)).eval()


@dataclass
class ExportReport:
    part: str
    path: Path
    inputs: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, str]
    max_abs_diff: float  # over every check input and output
    checks: list[str]  # one line per check input: its shapes and max |ORT − PyTorch|
    providers: list[str]
    export_seconds: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE

    def summary(self) -> str:
        lines = [f"exported {self.part} → {self.path} (opset {OPSET}, {self.export_seconds:.1f} s)",
                 f"  inputs:  {', '.join(self.inputs)}", f"  outputs: {', '.join(self.outputs)}",
                 "  dynamic axes:"]
        lines += [f"    {k}: {{{v}}}" for k, v in self.dynamic_axes.items()]
        lines.append("  onnx.checker.check_model: passed")
        lines.append(f"  onnxruntime ({', '.join(self.providers)}) vs PyTorch on new shapes:")
        lines += [f"    {c}" for c in self.checks]
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"  max abs diff {self.max_abs_diff:.3g} (tolerance {TOLERANCE:g}): {verdict}")
        return "\n".join(lines)


def export(model, part: str, out: str | Path, log=print) -> ExportReport:
    """Export ``part`` of ``model`` to ``out``, then check it (see `check`). Returns the report; raises nothing on a
    failed comparison (``report.ok`` says), but does on a failed export or checker."""
    require_onnx()
    import onnx

    module = part_module(model, part, log)
    example = example_inputs(module, part)
    names = list(example)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if isinstance(module, EncoderFeatures):
        kwargs, dynamic = example, _dynamic_shapes(module, names)
        output_names = ["features"]
    else:
        kwargs, dynamic = {"inputs": example}, {"inputs": _dynamic_shapes(module, names)}
        output_names = ["tokens", "weights", "importance"]
    with torch.no_grad():
        program = torch.onnx.export(module, (), kwargs=kwargs, dynamo=True, dynamic_shapes=dynamic, input_names=names,
                                    output_names=output_names, opset_version=OPSET, optimize=True, verbose=False)
    program.save(str(out))
    seconds = time.perf_counter() - start
    proto = onnx.load(str(out))
    meta = {"mome.part": part, "mome.encoders": ",".join(module.move.names) if part == "vision-tower"
            else module.encoder.kind}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    diff, lines, providers = check(module, part, out, model=model)
    return ExportReport(part, out, names, output_names, _dynamic_axes_text(module, names), diff, lines, providers,
                        seconds)


def check(module: nn.Module, part: str, path: str | Path, model=None) -> tuple[float, list[str], list[str]]:
    """Run the ONNX file with onnxruntime on `check_inputs` and compare with PyTorch: for the tower with ``model.move``
    itself (MoVE, with its ops), else with the part's module. Returns (max abs diff, per-input lines, providers)."""
    sess = session(path)
    worst, lines = 0.0, []
    for inputs in check_inputs(module, part):
        feeds = {k: v.numpy() for k, v in inputs.items()}
        got = [torch.from_numpy(o) for o in sess.run(None, feeds)]
        with torch.no_grad():
            if part == "vision-tower" and model is not None:
                expected = _move_reference(model, inputs)
            else:
                res = module(inputs) if part == "vision-tower" else module(*inputs.values())
                expected = list(res) if isinstance(res, tuple) else [res]
        diffs = [(g - e.float()).abs().max().item() if g.numel() else 0.0 for g, e in zip(got, expected)]
        if any(g.shape != e.shape for g, e in zip(got, expected)):
            raise AssertionError(f"{part}: ONNX output shapes {[tuple(g.shape) for g in got]} differ from "
                                 f"PyTorch's {[tuple(e.shape) for e in expected]}")
        worst = max(worst, *diffs)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())
        scale = max(e.abs().max().item() if e.numel() else 0.0 for e in expected)
        lines.append(f"{shapes} → max abs diff {max(diffs):.3g} (max |PyTorch| {scale:.3g})")
    return worst, lines, list(sess.get_providers())


def _move_reference(model, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """MoVE's own output (float32) for flat inputs."""
    move = model.move
    pixel_inputs: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in inputs.items():
        if name != "instruction":
            enc, _, key = name.rpartition(".")
            pixel_inputs.setdefault(enc, {})[key] = value
    dtype = next(move.projectors.parameters()).dtype
    if dtype != torch.float32:
        move = copy.deepcopy(move).float()
    out = move(pixel_inputs, inputs.get("instruction"))
    return [out.tokens.float(), out.weights.float(), out.importance.float()]
