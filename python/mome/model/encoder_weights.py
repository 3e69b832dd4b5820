"""The frozen encoders' modules and the weight files users hold (OFFICIAL.md § Files a user of the release holds).

Formats, recognised by their key names (after an optional prefix such as ``vision_model.``), never by file name:

    format         kind        recognised by                                  file
    lavis_eva      eva_clip    blocks.0.attn.q_bias                           LAVIS / BLIP-2 `eva_vit_g.pth`
    meta_dinov2    dinov2      blocks.0.attn.qkv.bias                         Meta `dinov2_vitl14_pretrain.pth`
    hf_blip2       eva_clip    embeddings.class_embedding and                 transformers Blip2VisionModel, or a whole
                               encoder.layers.0.self_attn.qkv.weight          BLIP-2 / InstructBLIP (vision_model.)
    hf_clip        clip        embeddings.class_embedding and                 CLIPVisionModel, CLIPModel
                               encoder.layers.0.self_attn.q_proj.weight
    hf_dinov2      dinov2      embeddings.mask_token                          Dinov2Model (either attention naming)
    hf_pix2struct  pix2struct  embeddings.patch_projection.weight             Pix2StructVisionModel, or a whole
                                                                              Pix2Struct (encoder.)

The modules: EVA is transformers' `Blip2VisionModel` (LAVIS's ViT-g: q and v biases, no k bias, i.e.
``qkv.bias = cat(q_bias, 0, v_bias)``; no final norm, so its ``post_layernorm`` is an identity); DINOv2 is
`mome.model.dinov2.DINOv2` under Meta's names; Pix2Struct and CLIP are transformers' vision models.

Rules (the release loads with ``strict=False``; we don't):
- files are read with ``torch.load(weights_only=True)`` or safetensors, never plain unpickling (`encoder_files`);
- sizes come from the tensors' shapes; the head count cannot, so it is the folder's ``config.json`` value or else
  ``EncoderConfig.num_heads``; ``num_layers`` blocks are used (the release builds EVA with 39 of LAVIS's 40): a
  checkpoint with more reports the rest as unused, one with fewer is an error;
- a tensor the module needs that is missing or mis-shaped is an error naming it; every source tensor not used is
  reported (`LoadReport.unused`, and a logged warning);
- position tables are refitted to ``image_size`` as each release does: LAVIS's rule for EVA (bicubic to the new size),
  Meta's for DINOv2 (`meta_interpolate_pos_embed`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mome.model.config import EncoderConfig
from mome.model.dinov2 import DINOv2, meta_interpolate_pos_embed

__all__ = ["FORMATS", "EncoderWeightsError", "LoadReport", "detect_format", "model_from_state_dict", "random_model",
           "lavis_interpolate_pos_embed"]

log = logging.getLogger(__name__)


class EncoderWeightsError(ValueError):
    """An encoder checkpoint that cannot be loaded as asked; the message names the file and the tensor."""


# format → (encoder kind, keys that identify it, relative to the prefix)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lavis_eva": ("eva_clip", ("blocks.0.attn.q_bias", "cls_token")),
    "meta_dinov2": ("dinov2", ("blocks.0.attn.qkv.bias", "cls_token")),
    "hf_blip2": ("eva_clip", ("embeddings.class_embedding", "encoder.layers.0.self_attn.qkv.weight")),
    "hf_clip": ("clip", ("embeddings.class_embedding", "encoder.layers.0.self_attn.q_proj.weight")),
    "hf_dinov2": ("dinov2", ("embeddings.mask_token", "embeddings.position_embeddings")),
    "hf_pix2struct": ("pix2struct", ("embeddings.patch_projection.weight", "embeddings.row_embedder.weight")),
}

# Source keys that would change the maths if ignored: refuse rather than report them as unused.
_UNSUPPORTED = {
    "lavis_eva": r"rel_pos_bias\.|blocks\.\d+\.(gamma_1|gamma_2|attn\.relative_position_bias_table)$",
    "meta_dinov2": r"register_tokens$|blocks\.\d+\.mlp\.w12\.",
    "hf_dinov2": r"embeddings\.register_tokens$|mlp\.weights_in\.",
}

# Per format: (source pattern, target name) renames, relative to the prefix. ``(?P<n>\d+)`` is a block index: blocks
# at or past ``num_layers`` are left unused. Blip2's and Dinov2's names follow transformers 5.x, with 4.x's accepted.
_L = r"(?P<n>\d+)"
_WB = r"(weight|bias)"
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "lavis_eva": [
        (r"cls_token", "embeddings.class_embedding"),
        (r"pos_embed", "embeddings.position_embedding"),
        (rf"patch_embed\.proj\.{_WB}", r"embeddings.patch_embedding.\1"),
        (rf"blocks\.{_L}\.norm1\.{_WB}", r"encoder.layers.\g<n>.layer_norm1.\2"),
        (rf"blocks\.{_L}\.attn\.qkv\.weight", r"encoder.layers.\g<n>.self_attn.qkv.weight"),
        (rf"blocks\.{_L}\.attn\.(q_bias|v_bias)", r"encoder.layers.\g<n>.self_attn.\2"),
        (rf"blocks\.{_L}\.attn\.proj\.{_WB}", r"encoder.layers.\g<n>.self_attn.projection.\2"),
        (rf"blocks\.{_L}\.norm2\.{_WB}", r"encoder.layers.\g<n>.layer_norm2.\2"),
        (rf"blocks\.{_L}\.mlp\.(fc1|fc2)\.{_WB}", r"encoder.layers.\g<n>.mlp.\2.\3"),
    ],
    "hf_blip2": [
        (r"embeddings\.(class_embedding|position_embedding|patch_embedding\.weight|patch_embedding\.bias)",
         r"embeddings.\1"),
        (rf"encoder\.layers\.{_L}\.(layer_norm[12]\.{_WB}|self_attn\.(qkv|projection)\.{_WB}|self_attn\.[qv]_bias"
         rf"|mlp\.fc[12]\.{_WB})", r"encoder.layers.\g<n>.\2"),
    ],
    "meta_dinov2": [
        (r"(cls_token|pos_embed|mask_token)", r"\1"),
        (rf"patch_embed\.proj\.{_WB}", r"patch_embed.proj.\1"),
        (rf"blocks\.{_L}\.((norm[12]|attn\.qkv|attn\.proj|mlp\.fc[12])\.{_WB}|ls[12]\.gamma)", r"blocks.\g<n>.\2"),
        (rf"norm\.{_WB}", r"norm.\1"),
    ],
    "hf_dinov2": [
        (r"embeddings\.(cls_token|mask_token)", r"\1"),
        (r"embeddings\.position_embeddings", "pos_embed"),
        (rf"embeddings\.patch_embeddings\.projection\.{_WB}", r"patch_embed.proj.\1"),
        (rf"encoder\.layer\.{_L}\.((norm[12]|mlp\.fc[12])\.{_WB})", r"blocks.\g<n>.\2"),
        (rf"encoder\.layer\.{_L}\.attention\.attention\.(q|k|v)\w*\.{_WB}", r"blocks.\g<n>.attn.\2.\3"),  # 4.x
        (rf"encoder\.layer\.{_L}\.attention\.(q|k|v)_proj\.{_WB}", r"blocks.\g<n>.attn.\2.\3"),  # 5.x
        (rf"encoder\.layer\.{_L}\.attention\.(output\.dense|o_proj)\.{_WB}", r"blocks.\g<n>.attn.proj.\3"),
        (rf"encoder\.layer\.{_L}\.layer_scale([12])\.lambda1", r"blocks.\g<n>.ls\2.gamma"),
        (rf"layernorm\.{_WB}", r"norm.\1"),
    ],
    "hf_pix2struct": [
        (r"embeddings\.(patch_projection\.weight|patch_projection\.bias|row_embedder\.weight|column_embedder\.weight)",
         r"embeddings.\1"),
        (rf"encoder\.layer\.{_L}\.(attention\.(query|key|value|output)\.weight|mlp\.(wi_0|wi_1|wo)\.weight"
         r"|pre_mlp_layer_norm\.weight|pre_attention_layer_norm\.weight)", r"encoder.layer.\g<n>.\2"),
        (r"layernorm\.weight", "layernorm.weight"),
    ],
    "hf_clip": [  # transformers 4.x nests CLIPVisionModel's names under vision_model. (added back after building)
        (r"(embeddings\.(class_embedding|patch_embedding\.weight|position_embedding\.weight)"
         rf"|(pre_layrnorm|post_layernorm)\.{_WB})", r"\1"),
        (rf"encoder\.layers\.{_L}\.(.+)", r"encoder.layers.\g<n>.\2"),
    ],
}
_BLOCK_COUNT = {"lavis_eva": r"blocks\.(\d+)\.", "meta_dinov2": r"blocks\.(\d+)\.",
                "hf_blip2": r"encoder\.layers\.(\d+)\.", "hf_clip": r"encoder\.layers\.(\d+)\.",
                "hf_dinov2": r"encoder\.layer\.(\d+)\.", "hf_pix2struct": r"encoder\.layer\.(\d+)\."}


@dataclass
class LoadReport:
    """How a checkpoint was read: its format, the key prefix its encoder sat under, the source keys not used."""

    format: str
    prefix: str
    unused: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


# ---- format detection and key mapping -----------------------------------------------------------------------------


def detect_format(keys, kind: str | None = None) -> tuple[str, str]:
    """(format, prefix) of a state dict's key names; with ``kind``, only that encoder kind's formats are tried (a
    whole-model state dict may hold several encoders, each under its own prefix)."""
    keys = list(keys)
    key_set = set(keys)
    found = []
    for fmt, (fmt_kind, signature) in FORMATS.items():
        if kind is not None and fmt_kind != kind:
            continue
        for k in keys:
            if k.endswith(signature[0]):
                prefix = k[: len(k) - len(signature[0])]
                if (prefix == "" or prefix.endswith(".")) and all(prefix + s in key_set for s in signature[1:]):
                    found.append((fmt, prefix))
    if not found:
        what = f"{kind} encoder" if kind else "encoder"
        raise EncoderWeightsError(f"no {what} checkpoint format recognised in these {len(keys)} keys "
                                  f"(first: {keys[:3]}); known formats: {', '.join(FORMATS)}")
    if len(found) > 1:
        raise EncoderWeightsError(f"ambiguous encoder checkpoint: {found} (strip the prefix of the one to load)")
    return found[0]


def _map_keys(fmt: str, names: list[str], num_layers: int) -> tuple[dict[str, str], list[str]]:
    """{target name: source name} for the names this format maps within ``num_layers`` blocks, and the rest."""
    bad = _UNSUPPORTED.get(fmt)
    mapped, unused = {}, []
    for name in names:
        if bad and re.search(bad, name):
            raise EncoderWeightsError(f"{name!r}: this {fmt} variant is not supported (the module has no such part)")
        for pattern, target in _RENAMES[fmt]:
            m = re.fullmatch(pattern, name)
            if m:
                if "n" in m.groupdict() and int(m["n"]) >= num_layers:
                    m = None
                break
        if m:
            mapped[m.expand(target)] = name
        else:
            unused.append(name)
    return mapped, unused


def _need(state: dict[str, torch.Tensor], key: str, fmt: str, prefix: str = "") -> torch.Tensor:
    if key not in state:
        raise EncoderWeightsError(f"missing tensor {_source_name(fmt, prefix, key)!r} ({fmt})")
    return state[key]


def _fuse(state: dict[str, torch.Tensor], parts: list[str], out: str, fmt: str, fill_zero: set[int] = frozenset()):
    """``state[out] = cat(parts)`` (dim 0), popping the parts; parts listed in ``fill_zero`` may be absent (zeros)."""
    tensors = []
    for i, p in enumerate(parts):
        if p in state:
            tensors.append(state.pop(p))
        elif i not in fill_zero:
            raise EncoderWeightsError(f"missing tensor {p!r} ({fmt})")
        else:
            tensors.append(None)
    ref = next(t for t in tensors if t is not None)
    state[out] = torch.cat([torch.zeros_like(ref) if t is None else t for t in tensors])


def lavis_interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """LAVIS's `interpolate_pos_embed` for EVA: the patch part of a (1, 1 + N, C) table resized bicubically to
    ``grid`` × ``grid`` (``size=``, align_corners False), the CLS entry kept; float32."""
    pos = pos_embed.float()
    n, C = pos.shape[1] - 1, pos.shape[-1]
    side = math.isqrt(n)
    if side == grid:
        return pos
    patch = pos[:, 1:].reshape(1, side, side, C).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, C)], dim=1)


# ---- the modules --------------------------------------------------------------------------------------------------


def _grid_of(table: torch.Tensor, what: str) -> int:
    n = table.shape[-2] - 1
    side = math.isqrt(n)
    if side * side != n:
        raise EncoderWeightsError(f"{what}: {n} patch positions is not a square grid")
    return side


_CONFIG_META = {"model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "name_or_path"}


def _build(kind: str, arch: dict, config: dict | None) -> tuple[nn.Module, int]:
    """The module of ``kind`` with the sizes in ``arch`` (a folder's config supplies the rest) and its width."""
    import transformers as tf

    base = {k: v for k, v in (config or {}).items() if not k.startswith("_") and k not in _CONFIG_META}
    if kind == "eva_clip":
        conf = tf.Blip2VisionConfig(**{**dict(layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True), **base, **arch})
        model = tf.Blip2VisionModel(conf)
        model.post_layernorm = nn.Identity()  # LAVIS's EVA has no final norm (features: the last block's output)
    elif kind == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**{**base, **arch}))
    elif kind == "pix2struct":
        model = tf.Pix2StructVisionModel(tf.Pix2StructVisionConfig(**{**base, **arch}))
    elif kind == "dinov2":
        if base.get("use_swiglu_ffn") or base.get("num_register_tokens") or base.get("hidden_act", "gelu") != "gelu":
            raise EncoderWeightsError("dinov2: only the plain-MLP, register-free DINOv2 (ViT-S/B/L) is supported")
        model = DINOv2(arch["hidden_size"], arch["num_hidden_layers"], arch["num_attention_heads"],
                       arch["intermediate_size"], arch["patch_size"], arch["image_size"] // arch["patch_size"],
                       layer_scale=arch["layer_scale"], eps=base.get("layer_norm_eps", 1e-6))
        return model, arch["hidden_size"]
    else:
        raise ValueError(f"unknown encoder kind {kind!r}")
    return model, model.config.hidden_size


def random_model(cfg: EncoderConfig) -> tuple[nn.Module, int]:
    """A randomly initialised encoder of ``cfg``'s sizes (the caller seeds the RNG); float32."""
    arch = dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads)
    if cfg.kind in ("eva_clip", "clip"):
        # initializer_range: BLIP-2's default (1e-10) would leave a random EVA's features at ~1e-9, i.e. blind.
        extra = dict(initializer_range=0.02) if cfg.kind == "eva_clip" else {}
        arch.update(intermediate_size=cfg.intermediate_size, image_size=cfg.image_size, patch_size=cfg.patch_size,
                    **extra)
    elif cfg.kind == "pix2struct":
        # initializer_range: transformers' default (1e-10) leaves a random model's embeddings at ~0.
        arch.update(d_ff=cfg.intermediate_size, d_kv=cfg.hidden_size // cfg.num_heads,
                    patch_embed_hidden_size=cfg.patch_size * cfg.patch_size * 3,
                    seq_len=max(4096, cfg.max_patches), initializer_range=0.02)
    elif cfg.kind == "dinov2":
        arch.update(intermediate_size=cfg.intermediate_size, image_size=cfg.image_size, patch_size=cfg.patch_size,
                    layer_scale=1.0)
    model, hidden = _build(cfg.kind, arch, None)
    if cfg.kind == "dinov2":
        model.reset_parameters()
        if cfg.pos_embed_size and cfg.pos_embed_size != cfg.image_size:
            # The table as trained (pos_embed_size), refitted by Meta's rule, as a loaded checkpoint's would be.
            table = torch.empty(1, 1 + (cfg.pos_embed_size // cfg.patch_size) ** 2, cfg.hidden_size)
            nn.init.trunc_normal_(table, std=0.02)
            with torch.no_grad():
                model.pos_embed.copy_(meta_interpolate_pos_embed(table, cfg.image_size // cfg.patch_size))
    return model, hidden


def _architecture(cfg: EncoderConfig, fmt: str, prefix: str, state: dict[str, torch.Tensor], heads: int) -> dict:
    """The module sizes implied by the (mapped) tensors; refits the position table in ``state`` to ``image_size``."""
    kind = cfg.kind
    arch = dict(num_hidden_layers=cfg.num_layers, num_attention_heads=heads)
    if kind in ("eva_clip", "clip"):
        clip = kind == "clip"
        pos_key = "embeddings.position_embedding.weight" if clip else "embeddings.position_embedding"
        patch = _need(state, "embeddings.patch_embedding.weight", fmt, prefix)
        grid = cfg.image_size // patch.shape[-1]
        side = _grid_of(_need(state, pos_key, fmt, prefix), f"{fmt} position table")
        if side != grid:
            if clip:
                raise EncoderWeightsError(f"{fmt}: position table for {side}×{side} patches, config image_size "
                                          f"{cfg.image_size} needs {grid}×{grid}")
            state[pos_key] = lavis_interpolate_pos_embed(state[pos_key], grid)
        arch.update(hidden_size=patch.shape[0], patch_size=patch.shape[-1], image_size=cfg.image_size,
                    intermediate_size=_need(state, "encoder.layers.0.mlp.fc1.weight", fmt, prefix).shape[0])
        width = patch.shape[0]
    elif kind == "dinov2":
        patch = _need(state, "patch_embed.proj.weight", fmt, prefix)
        grid = cfg.image_size // patch.shape[-1]
        side = _grid_of(_need(state, "pos_embed", fmt, prefix), f"{fmt} pos_embed")
        if cfg.pos_embed_size and cfg.pos_embed_size // patch.shape[-1] != side:
            raise EncoderWeightsError(f"{fmt}: pos_embed is for {side}×{side} patches ({side * patch.shape[-1]} px), "
                                      f"the config says pos_embed_size={cfg.pos_embed_size}")
        state["pos_embed"] = meta_interpolate_pos_embed(state["pos_embed"], grid)
        arch.update(hidden_size=patch.shape[0], patch_size=patch.shape[-1], image_size=cfg.image_size,
                    intermediate_size=_need(state, "blocks.0.mlp.fc1.weight", fmt, prefix).shape[0],
                    layer_scale=1.0 if "blocks.0.ls1.gamma" in state else None)
        width = patch.shape[0]
    else:  # pix2struct
        proj = _need(state, "embeddings.patch_projection.weight", fmt, prefix)
        inner = _need(state, "encoder.layer.0.attention.query.weight", fmt, prefix).shape[0]
        if inner % heads:
            raise EncoderWeightsError(f"{fmt}: attention width {inner} is not divisible by num_heads {heads}")
        if proj.shape[1] != 3 * cfg.patch_size ** 2:
            raise EncoderWeightsError(f"{fmt}: patches of {proj.shape[1]} values, config patch_size "
                                      f"{cfg.patch_size} gives {3 * cfg.patch_size ** 2}")
        arch.update(hidden_size=proj.shape[0], patch_embed_hidden_size=proj.shape[1], d_kv=inner // heads,
                    d_ff=_need(state, "encoder.layer.0.mlp.wi_0.weight", fmt, prefix).shape[0],
                    seq_len=_need(state, "embeddings.row_embedder.weight", fmt, prefix).shape[0])
        width = inner
    if kind != "pix2struct" and arch["patch_size"] != cfg.patch_size:
        raise EncoderWeightsError(f"{fmt}: the checkpoint's patch size is {arch['patch_size']}, the config says "
                                  f"patch_size={cfg.patch_size}")
    if width % heads:
        raise EncoderWeightsError(f"{fmt}: width {width} is not divisible by num_heads {heads}")
    return arch


# Module name → source name, for naming a missing tensor as the file would hold it (hf_* keep the module's names).
_INVERSE = {
    "lavis_eva": [("embeddings.class_embedding", "cls_token"), ("embeddings.position_embedding", "pos_embed"),
                  ("embeddings.patch_embedding.", "patch_embed.proj."), ("encoder.layers.", "blocks."),
                  (".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".self_attn.qkv.bias", ".attn.q_bias"),
                  (".self_attn.projection.", ".attn.proj."), (".self_attn.", ".attn.")],
    "hf_dinov2": [("blocks.", "encoder.layer."), ("cls_token", "embeddings.cls_token"),
                  ("mask_token", "embeddings.mask_token"), ("pos_embed", "embeddings.position_embeddings"),
                  ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
                  (".ls1.gamma", ".layer_scale1.lambda1"),
                  (".ls2.gamma", ".layer_scale2.lambda1"), (".attn.qkv.", ".attention.(q|k|v)_proj."),
                  (".attn.proj.", ".attention.o_proj."), ("norm.", "layernorm.")],
}


def _source_name(fmt: str, prefix: str, name: str) -> str:
    for a, b in _INVERSE.get(fmt, []):
        if fmt == "hf_dinov2" and a == "norm." and not name.startswith("norm."):
            continue
        name = name.replace(a, b)
    return prefix + name


def _fit_eva_bias(state: dict[str, torch.Tensor], model_keys, fmt: str, layers: int) -> None:
    """LAVIS (and transformers 4.x) store the q and v biases apart and no k bias; transformers 5.x holds one
    ``qkv.bias = cat(q_bias, 0, v_bias)``. Bring ``state`` to the layout the built module has."""
    for i in range(layers):
        pre = f"encoder.layers.{i}.self_attn."
        if pre + "qkv.bias" in model_keys and pre + "q_bias" in state:
            _fuse(state, [pre + "q_bias", pre + "k_bias", pre + "v_bias"], pre + "qkv.bias", fmt, fill_zero={1})
        elif pre + "q_bias" in model_keys and pre + "qkv.bias" in state:
            q, k, v = state.pop(pre + "qkv.bias").chunk(3)
            if k.abs().max() > 0:
                raise EncoderWeightsError(f"{pre}qkv.bias: a non-zero k bias, which this transformers' Blip2 lacks")
            state[pre + "q_bias"], state[pre + "v_bias"] = q, v


def model_from_state_dict(cfg: EncoderConfig, state: Mapping[str, torch.Tensor], config: dict | None = None,
                          source: str = "state dict") -> tuple[nn.Module, int, LoadReport]:
    """The encoder module of ``cfg.kind`` holding the tensors of ``state`` (any format above, detected from the keys),
    its width, and the report of what was read. ``config``: a transformers folder's (vision) config, for the head
    count, norm eps and activation; without one, ``cfg.num_heads`` and each release's defaults. float32."""
    fmt, prefix = detect_format(state.keys(), cfg.kind)
    names = [k[len(prefix):] for k in state if k.startswith(prefix)]
    count = re.compile(_BLOCK_COUNT[fmt])
    stored = 1 + max((int(m[1]) for n in names if (m := count.match(n))), default=-1)
    if stored < cfg.num_layers:
        raise EncoderWeightsError(f"{source}: {stored} blocks stored ({fmt}), config num_layers={cfg.num_layers}")
    where, unused = _map_keys(fmt, names, cfg.num_layers)
    mapped = {t: state[prefix + s] for t, s in where.items()}
    if fmt == "hf_dinov2":
        for i in range(cfg.num_layers):
            for wb in ("weight", "bias"):
                _fuse(mapped, [f"blocks.{i}.attn.{c}.{wb}" for c in "qkv"], f"blocks.{i}.attn.qkv.{wb}", fmt)
    heads = cfg.num_heads
    if config and config.get("num_attention_heads"):
        heads = config["num_attention_heads"]
        if heads != cfg.num_heads:
            log.warning("%s: %d attention heads (its config.json), not the config's num_heads=%d", source, heads,
                        cfg.num_heads)
    arch = _architecture(cfg, fmt, prefix, mapped, heads)
    model, width = _build(cfg.kind, arch, config if fmt.startswith("hf_") else None)
    own = model.state_dict()
    if fmt == "hf_clip" and next(iter(own)).startswith("vision_model."):
        mapped = {"vision_model." + k: v for k, v in mapped.items()}
        where = {"vision_model." + k: v for k, v in where.items()}
    if cfg.kind == "eva_clip":
        _fit_eva_bias(mapped, own, fmt, cfg.num_layers)
    missing = [_source_name(fmt, prefix, k) for k in own if k not in mapped]
    if missing:
        raise EncoderWeightsError(f"{source}: missing tensor{'s' * (len(missing) > 1)} "
                                  f"{', '.join(map(repr, missing[:8]))}{' …' * (len(missing) > 8)} "
                                  f"({fmt}, {len(missing)} in all)")
    extra = [k for k in mapped if k not in own]
    if extra:
        raise EncoderWeightsError(f"{source}: {', '.join(where.get(k, k) for k in extra[:8])}: no place for "
                                  f"{'them' if len(extra) > 1 else 'it'} in the {fmt} module")
    for k, v in own.items():
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise EncoderWeightsError(f"{source}: tensor {prefix + where.get(k, k)!r} has shape "
                                      f"{tuple(mapped[k].shape)}, the module needs {tuple(v.shape)} ({fmt})")
    model.load_state_dict(mapped, strict=True)
    unused_full = tuple(prefix + n for n in unused) + tuple(k for k in state if not k.startswith(prefix))
    report = LoadReport(fmt, prefix, unused_full)
    if unused_full:
        groups: dict[str, int] = {}
        for k in unused_full:
            head = re.sub(r"\.\d+\..*", ".N.*", k) if count.match(k[len(prefix):]) else k.split(".")[0] + ".*"
            groups[head] = groups.get(head, 0) + 1
        note = f"{source}: {len(unused_full)} source tensors not used ({fmt}): " + ", ".join(
            f"{g} ({n})" if n > 1 else g for g, n in list(groups.items())[:10])
        report.notes.append(note)
        log.warning(note)
    return model, width, report
