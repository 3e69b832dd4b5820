"""The authors' state-dict names ↔ mome's (OFFICIAL.md § "State-dict names").

`MoME_ckpt.pth` (and their trainer's ``checkpoint_N.pth``) holds the trainable parts of their ``MoMEModel`` under
its own attribute names; `official_to_mome` maps every key to a tensor of our `MoME`, `mome_to_official` is the
inverse (used to write files in their format for tests). Nothing is dropped silently: an unknown key, a missing
tensor or a shape that does not fit is an error naming it.

    theirs                                                   ours
    dino_selector. / pix_selector.                           move.aggregators.dinov2. / .pix2struct.
      reference_points (1, L, 2), position_embeddings (1, L, C)   reference (L, 2), query_pos (L, C)
      layers.N.self_attn.{q,k,v,out}_proj                       layers.N.self_attn.{q,k,v,out}_proj
      layers.N.self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm   layers.N.norm1 / norm2 / norm3
      layers.N.encoder_attn.{sampling_offsets, attention_weights, value_proj, output_proj}
                                                                layers.N.cross_attn.{offset_proj, weight_proj,
                                                                value_proj, out_proj}
      layers.N.fc1 / fc2                                        layers.N.fc1 / fc2
    dino_llm_proj. / pix_llm_proj. / clip_proj.              move.projectors.dinov2. / .pix2struct. / .eva_clip.
    clip_ln.                                                 move.norms.eva_clip.
    move_router.router.{0,2}.                                move.router.net.{0,2}.
    llm_model.model.layers.N.mlp.adapter.adapters.E.        llm.model.layers.N.mlp.mole.
      down_proj.weight (R, D) / .bias, up_proj.weight (D, R) / .bias, scale (1,)
                                                                w_down[E] (D, R) = Wᵀ, b_down[E], w_up[E] (R, D) = Wᵀ,
                                                                b_up[E], scale[E]
      router_mlp.{0,2}.                                         router.{0,2}.
    llm_model.model.layers.N.mlp.adapter.{down_proj, up_proj, scale}   (stage 1) the same, copied into every expert
    llm_model.<other>  (base LLM weights, when present)      llm.<other>, with .mlp.{gate,up,down}_proj → .mlp.ffn.…
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch

__all__ = ["OfficialCheckpointError", "read_official_checkpoint", "official_to_mome", "mome_to_official",
           "ENCODER_PREFIXES"]

# The release's attribute of each encoder, and ours.
ENCODER_PREFIXES = {"visual_encoder.": "eva_clip", "dino_encoder.": "dinov2", "pix2struct_encoder.": "pix2struct"}
_BRANCHES = {"dino": "dinov2", "pix": "pix2struct"}
_ADT_RENAMES = [
    ("self_attn_layer_norm.", "norm1."), ("encoder_attn_layer_norm.", "norm2."), ("final_layer_norm.", "norm3."),
    ("encoder_attn.sampling_offsets.", "cross_attn.offset_proj."),
    ("encoder_attn.attention_weights.", "cross_attn.weight_proj."),
    ("encoder_attn.value_proj.", "cross_attn.value_proj."), ("encoder_attn.output_proj.", "cross_attn.out_proj."),
]
_MOLE = re.compile(r"^llm_model\.(.*\.mlp)\.adapter\.(?:adapters\.(\d+)\.)?(down_proj\.weight|down_proj\.bias|"
                   r"up_proj\.weight|up_proj\.bias|scale)$")
_MOLE_ROUTER = re.compile(r"^llm_model\.(.*\.mlp)\.adapter\.router_mlp\.(\d+\.(?:weight|bias))$")
_MOLE_PARAM = {"down_proj.weight": "w_down", "down_proj.bias": "b_down", "up_proj.weight": "w_up",
               "up_proj.bias": "b_up", "scale": "scale"}


class OfficialCheckpointError(ValueError):
    """A checkpoint in the authors' format does not fit the model it is loaded into."""


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of ``MoME_ckpt.pth`` / ``checkpoint_N.pth`` (a flat dict or ``{"model": ...}``), read with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling), or of a ``.safetensors`` file."""
    from mome.model.encoder_files import read_state_dict
    from mome.model.encoder_weights import EncoderWeightsError

    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return read_state_dict(path)
    except EncoderWeightsError as e:
        raise OfficialCheckpointError(f"{path}: not a weights-only torch checkpoint: "
                                      f"{str(e).removeprefix(f'{path}: ')}") from None
    except Exception as e:  # not a torch checkpoint at all
        raise OfficialCheckpointError(f"{path}: not a weights-only torch checkpoint ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _rename_move(key: str) -> str | None:
    """A non-LLM, non-encoder key of theirs → ours, or None if it is not one of MoVE's."""
    m = re.match(r"^(dino|pix)_selector\.(.*)$", key)
    if m:
        rest = m.group(2)
        rest = {"reference_points": "reference", "position_embeddings": "query_pos"}.get(rest, rest)
        for old, new in _ADT_RENAMES:
            rest = rest.replace(old, new)
        return f"move.aggregators.{_BRANCHES[m.group(1)]}.{rest}"
    m = re.match(r"^(dino|pix)_llm_proj\.(.*)$", key)
    if m:
        return f"move.projectors.{_BRANCHES[m.group(1)]}.{m.group(2)}"
    for theirs, ours in (("clip_proj.", "move.projectors.eva_clip."), ("clip_ln.", "move.norms.eva_clip."),
                         ("move_router.router.", "move.router.net.")):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def official_to_mome(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                     source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a release state dict onto our names.

    Args:
        state: the release's tensors (trainable parts; base-LLM weights are mapped too when present; encoder
            weights (``visual_encoder.`` …) are returned in the report, they load through the encoder loaders).
        expected: our model's tensors of the same parts (names → tensors or meta tensors: only shapes are read),
            e.g. ``model.state_dict()``; the number of experts K is read from it.
        source: named in error messages.

    Returns:
        (mapped state under our names, notes: one line per source key that was not loaded here, e.g. the encoders,
        and one for a stage-1 → stage-2 replication).

    A stage-1 checkpoint (one adapter per MLP) loaded into a K-expert model is copied into every expert, the
    release's rule; the routers then keep their fresh initialisation (reported). Raises `OfficialCheckpointError`
    for unknown keys, shape mismatches, and model tensors of these parts that the checkpoint does not provide.
    """
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    unknown: list[str] = []
    experts: dict[tuple[str, str], dict[int | None, torch.Tensor]] = defaultdict(dict)
    for key, value in state.items():
        if any(key.startswith(p) for p in ENCODER_PREFIXES):
            continue
        mole = _MOLE.match(key)
        if mole:
            experts[(mole.group(1), _MOLE_PARAM[mole.group(3)])][None if mole.group(2) is None
                                                                 else int(mole.group(2))] = value
            continue
        router = _MOLE_ROUTER.match(key)
        if router:
            out[f"llm.{router.group(1)}.mole.router.{router.group(2)}"] = value
            continue
        ours = _rename_move(key)
        if ours is None and key.startswith("llm_model."):
            ours = "llm." + re.sub(r"\.mlp\.(gate_proj|up_proj|down_proj)\.", r".mlp.ffn.\1.", key[len("llm_model."):])
        if ours is None:
            unknown.append(key)
            continue
        if ours.endswith((".reference", ".query_pos")):
            value = value.reshape(value.shape[-2:])  # (1, L, ·) → (L, ·)
        out[ours] = value
    encoders = sorted({p for p in ENCODER_PREFIXES for k in state if k.startswith(p)})
    for p in encoders:
        n = sum(k.startswith(p) for k in state)
        notes.append(f"{n} tensors under {p!r} ({ENCODER_PREFIXES[p]}) are encoder weights: load them with the "
                     "encoder loaders (python -m mome.convert official does)")
    if unknown:
        raise OfficialCheckpointError(f"{source}: {len(unknown)} keys of no MoME part: {_show(unknown)}")

    replicated = False
    for (layer, param), by_expert in sorted(experts.items()):
        target = f"llm.{layer}.mole.{param}"
        if target not in expected:
            raise OfficialCheckpointError(f"{source}: {layer}.adapter.* has no MoLE in this model ({target})")
        K = expected[target].shape[0]
        if None in by_expert:  # stage 1: one adapter → every expert
            if len(by_expert) > 1:
                raise OfficialCheckpointError(f"{source}: {layer}.adapter holds both a single adapter and experts")
            tensors = [by_expert[None]] * K
            replicated = replicated or K > 1
        else:
            if sorted(by_expert) != list(range(K)):
                raise OfficialCheckpointError(f"{source}: {layer}.adapter.adapters has experts {sorted(by_expert)}, "
                                              f"the model has {K}")
            tensors = [by_expert[e] for e in range(K)]
        if param in ("w_down", "w_up"):
            tensors = [t.t() for t in tensors]
        elif param == "scale":
            tensors = [t.reshape(()) for t in tensors]
        out[target] = torch.stack(tensors).contiguous()
    if replicated:
        routers = sorted(k for k in expected if ".mole.router." in k and k not in out)
        notes.append(f"stage-1 checkpoint: each adapter copied into every expert; {len(routers)} MoLE router tensors "
                     "keep their fresh initialisation")
        expected = {k: v for k, v in expected.items() if k not in routers}

    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in out.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    extra = sorted(k for k in out if k not in expected)
    if shapes or extra:
        parts = ([f"shape mismatches: {_show(shapes)}"] if shapes else []) + (
            [f"tensors the model does not have: {_show(extra)}"] if extra else [])
        raise OfficialCheckpointError(f"{source}: " + "; ".join(parts))
    return out, notes


def mome_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors (MoVE's trainable parts and MoLE) under the release's names: the inverse of `official_to_mome`."""
    inverse_adt = [(new, old) for old, new in _ADT_RENAMES]
    out = {}
    for key, value in state.items():
        m = re.match(r"^move\.aggregators\.(dinov2|pix2struct)\.(.*)$", key)
        if m:
            rest = m.group(2)
            if rest in ("reference", "query_pos"):
                rest, value = {"reference": "reference_points", "query_pos": "position_embeddings"}[rest], value[None]
            for new, old in inverse_adt:
                rest = rest.replace(new, old)
            out[f"{'dino' if m.group(1) == 'dinov2' else 'pix'}_selector.{rest}"] = value
            continue
        m = re.match(r"^move\.projectors\.(dinov2|pix2struct|eva_clip)\.(.*)$", key)
        if m:
            out[{"dinov2": "dino_llm_proj.", "pix2struct": "pix_llm_proj.", "eva_clip": "clip_proj."}[m.group(1)]
                + m.group(2)] = value
            continue
        if key.startswith("move.norms.eva_clip."):
            out["clip_ln." + key[len("move.norms.eva_clip."):]] = value
            continue
        if key.startswith("move.router.net."):
            out["move_router.router." + key[len("move.router.net."):]] = value
            continue
        m = re.match(r"^llm\.(.*\.mlp)\.mole\.(w_down|b_down|w_up|b_up|scale|router\.\d+\.(?:weight|bias))$", key)
        if m:
            layer, param = m.groups()
            if param.startswith("router."):
                out[f"llm_model.{layer}.adapter.router_mlp.{param[len('router.'):]}"] = value
                continue
            name = {v: k for k, v in _MOLE_PARAM.items()}[param]
            for e in range(value.shape[0]):
                t = value[e].t() if param in ("w_down", "w_up") else value[e].reshape(1) if param == "scale" \
                    else value[e]
                out[f"llm_model.{layer}.adapter.adapters.{e}.{name}"] = t.contiguous()
    return out


def _show(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items)} in all)" if len(items) > n else "")
