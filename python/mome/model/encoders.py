"""The frozen vision experts of MoVE behind one interface (OFFICIAL.md § Architecture, PAPER.md § MoVE).

Every encoder has
    preprocess(images: list[PIL.Image]) -> dict[str, Tensor]   # what the data collate calls, per encoder
    forward(**that dict) -> EncoderOutput                       # the feature map with each image's true size

`EncoderOutput.features` is (B, Hm·Wm, C): each image's h × w patch map laid out row-major on a common Hm × Wm grid,
zero where an image is smaller (only Pix2Struct's maps differ in size), and `sizes` (B, 2) holds each true (h, w).
`EncoderOutput.cls` is the CLS token (B, C) of the same hidden state for EVA and CLIP (MoVE prepends EVA's), else None.

    eva_clip    LAVIS's EVA ViT-g as transformers' `Blip2VisionModel` (BLIP-2 / InstructBLIP): hidden state
                `feature_layer` (-1: the last of its `num_layers` blocks, before any final norm: the release)
    clip        `CLIPVisionModel`, hidden state `feature_layer` (LLaVA: -2)
    dinov2      Meta's DINOv2 (`mome.model.dinov2`): the final-norm patch tokens (x_norm_patchtokens)
    pix2struct  `Pix2StructVisionModel`: aspect-ratio-preserving resize to at most `max_patches` patches; the map
                is each image's own rows × cols, recovered from the 1-based row/col ids of its flattened patches

Preprocessing is implemented here rather than through torchvision / transformers' image processors, reproducing the
release's numbers (OFFICIAL.md: square bicubic resize through PIL, ToTensor, mean/std; Pix2Struct's per-image
standardisation before its resize). Weights: `build_encoder` reads ``cfg.path`` (LAVIS / Meta ``.pth``, safetensors,
transformers folders; `mome.model.encoder_weights`), `encoder_from_state_dict` the same from tensors in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mome.model.config import EncoderConfig
from mome.model.encoder_files import read_encoder_checkpoint, save_encoder_safetensors
from mome.model.encoder_weights import LoadReport, model_from_state_dict, random_model

__all__ = ["EncoderOutput", "VisionEncoder", "build_encoder", "encoder_from_state_dict", "save_encoder_safetensors",
           "Preprocessor", "Pix2StructPreprocessor", "build_preprocessor", "resize_bicubic"]


@dataclass
class EncoderOutput:
    features: torch.Tensor  # (B, Hm·Wm, C), zero outside each image's true map; patch tokens only
    sizes: torch.Tensor  # (B, 2) int64, each image's true (h, w)
    grid: tuple[int, int]  # (Hm, Wm)
    cls: torch.Tensor | None = None  # (B, C): the CLS token beside `features` (eva_clip, clip), else None


# ---- preprocessing ------------------------------------------------------------------------------------------------


def resize_bicubic(image, width: int, height: int):
    """PIL bicubic resize to ``width`` × ``height`` in two passes, width first: what one ``image.resize`` call does in
    Pillow ≤ 10 (the release's, through torchvision's ``Resize`` on a PIL image). Pillow ≥ 11 may run the passes the
    other way round, which moves pixels by up to 15/255 on an image shrunk in one side and enlarged in the other."""
    from PIL import Image

    image = image.convert("RGB")
    if image.width != width:
        image = image.resize((width, image.height), Image.BICUBIC)
    if image.height != height:
        image = image.resize((width, height), Image.BICUBIC)
    return image


class Preprocessor:
    """Square encoders: PIL bicubic resize ("squash" to S×S, or the shorter side to S·crop_scale + centre crop),
    ToTensor (u8 / 255), then ``(x − mean) / std``, all in float32 as torchvision does. Returns
    ``{"pixel_values": (B, 3, S, S)}``."""

    def __init__(self, cfg: EncoderConfig):
        self.cfg = cfg
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, images) -> dict[str, torch.Tensor]:
        return self.preprocess(images)

    def preprocess(self, images) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.normalize(self.resize(im)) for im in images])}

    def resize(self, image) -> np.ndarray:
        """The resized image as (S, S, 3) uint8."""
        S = self.cfg.image_size
        if self.cfg.resize == "squash":
            return np.asarray(resize_bicubic(image, S, S))
        W, H = image.size
        short = round(S * self.cfg.crop_scale)
        w, h = (short, max(short, round(H * short / W))) if W <= H else (max(short, round(W * short / H)), short)
        x = np.asarray(resize_bicubic(image, w, h))
        top, left = (h - S) // 2, (w - S) // 2
        return x[top:top + S, left:left + S]

    def normalize(self, u8: np.ndarray) -> torch.Tensor:
        """(S, S, 3) uint8 → (3, S, S) float32 ``(u8 / 255 − mean) / std``."""
        x = torch.from_numpy(np.array(u8)).permute(2, 0, 1).float() / 255
        return (x - self.mean) / self.std


class Pix2StructPreprocessor(Preprocessor):
    """Pix2Struct's variable-resolution input (Lee et al., 2023) as transformers' `Pix2StructImageProcessor` makes it:
    the ORIGINAL image (float 0..255) standardised by its own mean and std over all pixels and channels (std floored
    at 1/√N), then resized (bilinear, antialiased) to the largest rows × cols patch grid with rows·cols ≤ max_patches
    at its aspect ratio, ``scale = √(max_patches · p² / (H·W))``, rows = ⌊scale·H/p⌋, cols = ⌊scale·W/p⌋ (each in
    [1, max_patches]). Returns ``{"flattened_patches": (B, max_patches, 2 + p·p·3), "attention_mask": (B,
    max_patches)}``; columns 0/1 are the 1-based row/col of each patch, patch values ordered (ph, pw, C), padded
    patches all zero. The mean and std are float32 and summed in the order of the release's numpy (`_np_sum_f32`)."""

    def preprocess(self, images) -> dict[str, torch.Tensor]:
        patches = torch.stack([self._one(im) for im in images])
        return {"flattened_patches": patches, "attention_mask": (patches.sum(-1) != 0).float()}

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The (rows, cols) patch grid an image of ``height`` × ``width`` pixels is resized to."""
        p, n_max = self.cfg.patch_size, self.cfg.max_patches
        scale = math.sqrt(n_max * (p / height) * (p / width))
        return (max(min(math.floor(scale * height / p), n_max), 1),
                max(min(math.floor(scale * width / p), n_max), 1))

    def _one(self, image) -> torch.Tensor:
        p, n_max = self.cfg.patch_size, self.cfg.max_patches
        hwc = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3), 0..255
        n = np.float32(hwc.size)
        mean = _np_sum_f32(hwc) / n
        std = max(np.sqrt(_np_sum_f32(np.square(hwc - mean)) / n), 1.0 / math.sqrt(hwc.size))
        x = torch.from_numpy((hwc - mean) / np.float32(std)).permute(2, 0, 1)  # (3, H, W)
        H, W = x.shape[-2:]
        rows, cols = self.grid(H, W)
        x = F.interpolate(x[None], size=(rows * p, cols * p), mode="bilinear", align_corners=False, antialias=True)[0]
        x = x.view(3, rows, p, cols, p).permute(1, 3, 2, 4, 0).reshape(rows * cols, p * p * 3)  # (rows·cols, p·p·3)
        r = torch.arange(1, rows + 1, dtype=x.dtype).repeat_interleave(cols)
        c = torch.arange(1, cols + 1, dtype=x.dtype).repeat(rows)
        out = torch.zeros(n_max, 2 + p * p * 3)
        out[: rows * cols] = torch.cat([r[:, None], c[:, None], x], dim=1)
        return out


def _np_sum_f32(x: np.ndarray) -> np.float32:
    """``np.sum`` of a float32 array in the order numpy ≤ 2.2 adds (the release's numpy 1.26): pairwise summation
    within consecutive blocks of 8192 elements (its iterator's buffer), the block sums added one after another.
    numpy ≥ 2.3 sums the array as one block, which can differ in the last bit (it does on the release's fixtures)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    full = flat.size // 8192
    total = np.float32(0)
    if full:
        # A block of 8192 is a perfect tree of 64 leaves of 128; a leaf runs 8 accumulators over its 16 rows of 8.
        rows = flat[: full * 8192].reshape(full, 64, 16, 8)
        r = rows[:, :, 0].copy()
        for j in range(1, 16):
            r += rows[:, :, j]
        leaf = ((r[..., 0] + r[..., 1]) + (r[..., 2] + r[..., 3])) + ((r[..., 4] + r[..., 5]) + (r[..., 6] + r[..., 7]))
        while leaf.shape[1] > 1:
            leaf = leaf[:, 0::2] + leaf[:, 1::2]
        for b in leaf[:, 0]:
            total = np.float32(total + b)
    rest = flat[full * 8192:]
    return np.float32(total + _pairwise_f32(rest)) if rest.size else total


def _pairwise_f32(a: np.ndarray) -> np.float32:
    """numpy's ``pairwise_sum`` of one float32 block (umath/loops_utils.h)."""
    n = a.size
    if n < 8:
        res = np.float32(0)
        for v in a:
            res = np.float32(res + v)
        return res
    if n <= 128:
        m = n - n % 8
        r = a[:8].copy()
        for i in range(8, m, 8):
            r += a[i:i + 8]
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for v in a[m:]:
            res = np.float32(res + v)
        return res
    half = n // 2
    half -= half % 8
    return np.float32(_pairwise_f32(a[:half]) + _pairwise_f32(a[half:]))


def build_preprocessor(cfg: EncoderConfig) -> Preprocessor:
    return Pix2StructPreprocessor(cfg) if cfg.kind == "pix2struct" else Preprocessor(cfg)


# ---- encoders -----------------------------------------------------------------------------------------------------


class VisionEncoder(nn.Module):
    """A frozen vision model plus its preprocessing; see the module docstring for the interface. ``report`` says
    which checkpoint format it was read from and which source tensors went unused (None for a random encoder)."""

    def __init__(self, cfg: EncoderConfig, model: nn.Module, hidden_size: int, report: LoadReport | None = None):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.model = model
        self.hidden_size = hidden_size
        self.report = report
        self.preprocessor = build_preprocessor(cfg)
        self.requires_grad_(False)

    @property
    def unused_keys(self) -> tuple[str, ...]:
        return self.report.unused if self.report else ()

    def preprocess(self, images) -> dict[str, torch.Tensor]:
        return self.preprocessor(images)

    def train(self, mode: bool = True):
        # Frozen: dropout and the like stay off even while the rest of MoME trains.
        return super().train(False)

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Square encoders: the feature hidden state, CLS first: (B, 1 + h·w, C)."""
        pixels = pixel_values.to(next(self.model.parameters()).dtype)
        if self.kind == "dinov2":
            return self.model(pixels)
        return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[self.cfg.feature_layer]

    @torch.no_grad()
    def forward(self, **inputs: torch.Tensor) -> EncoderOutput:
        return self.features(**inputs)

    def features(self, **inputs: torch.Tensor) -> EncoderOutput:
        """`forward` without its ``no_grad``: what the encoders' own pretraining (`mome.pretrain`) trains through."""
        if self.kind == "pix2struct":
            dtype = next(self.model.parameters()).dtype
            return self._pix2struct(inputs["flattened_patches"].to(dtype), inputs["attention_mask"])
        hidden = self.tokens(inputs["pixel_values"])
        tokens = hidden[:, 1:]  # (B, h·w, C)
        B, N, _ = tokens.shape
        side = math.isqrt(N)
        if side * side != N:
            raise ValueError(f"{self.kind}: expected a square patch grid, got {N} patch tokens")
        sizes = torch.tensor([[side, side]], device=tokens.device).expand(B, 2)
        cls = hidden[:, 0] if self.kind in ("eva_clip", "clip") else None
        return EncoderOutput(tokens, sizes, (side, side), cls)

    def _pix2struct(self, patches: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        out = self.model(flattened_patches=patches, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[self.cfg.feature_layer] if self.cfg.feature_layer != -1 else out.last_hidden_state
        B, N, C = hidden.shape
        row = patches[..., 0].round().long()  # (B, N), 1-based; 0 = padding
        col = patches[..., 1].round().long()
        valid = mask.bool() & (row > 0)
        rows = row.amax(dim=1).clamp(min=1)  # each image's own grid
        cols = col.amax(dim=1).clamp(min=1)
        Hm, Wm = int(rows.max()), int(cols.max())
        # Scatter each image's patch sequence onto the common Hm × Wm grid (row-major), zero elsewhere.
        grid = hidden.new_zeros(B, Hm * Wm, C)
        index = ((row - 1).clamp(min=0) * Wm + (col - 1).clamp(min=0))  # (B, N)
        src = hidden * valid[..., None]
        index = torch.where(valid, index, torch.full_like(index, Hm * Wm))  # padding → a dropped extra slot
        grid = torch.cat([grid, grid.new_zeros(B, 1, C)], dim=1)
        grid.scatter_(1, index[..., None].expand(B, N, C), src)
        return EncoderOutput(grid[:, :-1], torch.stack([rows, cols], dim=1), (Hm, Wm))


def _dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def encoder_from_state_dict(cfg: EncoderConfig, state: Mapping[str, torch.Tensor],
                            dtype: str | torch.dtype = torch.float32, config: dict | None = None,
                            source: str = "state dict") -> VisionEncoder:
    """The encoder of ``cfg.kind`` from tensors in memory, in any format of `mome.model.encoder_weights` (LAVIS EVA,
    Meta DINOv2, transformers Blip2 / CLIP / Dinov2 / Pix2Struct, with or without a prefix), detected from the keys.
    Sizes come from the shapes, the head count from ``config`` (a transformers vision config) or ``cfg.num_heads``,
    the block count from ``cfg.num_layers``. Missing or mis-shaped tensors raise `EncoderWeightsError` naming them;
    unused ones are listed in ``encoder.unused_keys`` (and logged)."""
    model, hidden, report = model_from_state_dict(cfg, state, config, source)
    return VisionEncoder(cfg, model.to(_dtype(dtype)).eval(), hidden, report)


def build_encoder(cfg: EncoderConfig, dtype: str = "float32") -> VisionEncoder:
    """The encoder of ``cfg.kind``: from ``cfg.path`` (a ``.pth`` / ``.safetensors`` file or a transformers folder,
    see `encoder_from_state_dict`; ``mome:tiny-<kind>`` is a shipped specialist, `mome.model.specialists`) or, without one, randomly initialised at the configured sizes (the caller seeds
    the RNG)."""
    if cfg.path:
        from mome.model.specialists import resolve_path

        state, config = read_encoder_checkpoint(resolve_path(cfg.path))
        return encoder_from_state_dict(cfg, state, dtype, config, source=str(cfg.path))
    model, hidden = random_model(cfg)
    return VisionEncoder(cfg, model.to(_dtype(dtype)).eval(), hidden)
