"""Parity with the authors' code: their tensors (under their names) loaded through `mome.model.official` into our
modules reproduce the outputs their code produced (float32, CPU). ADT and MoLE run through `mome.ops`."""

from __future__ import annotations

import re

import pytest
import torch

from mome.model import MoME, MoMEConfig
from mome.model.adt import ADT, adaptive_pool
from mome.model.mole import attach_mole, mole_modules, routing_context
from mome.model.move import SoftRouter, importance
from mome.model.official import OfficialCheckpointError, mome_to_official, official_to_mome
from mome.ops._library import has_kernel

from .conftest import assert_close, fixture, manifest, prefixed

_BRANCH = {"dino_selector.": "dinov2", "pix_selector.": "pix2struct"}


def test_the_compiled_kernels_are_the_ones_tested():
    for op in ("deform_attn", "router_mix", "grouped_adapter"):
        assert has_kernel(op, "cpu"), f"mome::{op} has no compiled CPU kernel: these tests would run the reference"


def _detr_default(entry: dict, name: str) -> int:
    """A DeformableDetrConfig default as the manifest states it (``decoder_attention_heads=8``)."""
    m = re.search(rf"{name}=(\d+)", entry["constructor"]["DeformableDetrConfig"])
    assert m, f"the manifest does not state {name}"
    return int(m.group(1))


def _adt(entry: dict, tensors: dict) -> ADT:
    """Our ADT built from the manifest's constructor, with the fixture's weights mapped from the release's names."""
    c = entry["constructor"]["ADT"]
    prefix = entry["state_dict_prefix"]
    adt = ADT(c["dim"], num_tokens=c["num_queries"], layers=c["num_layers"],
              heads=_detr_default(entry, "decoder_attention_heads"), points=_detr_default(entry, "decoder_n_points"),
              ffn_dim=_detr_default(entry, "decoder_ffn_dim")).eval()
    ours = f"move.aggregators.{_BRANCH[prefix]}."
    expected = {ours + k: v for k, v in adt.state_dict().items()}
    mapped, _ = official_to_mome(prefixed(tensors, prefix), expected, source=entry["file"])
    assert set(mapped) == set(expected), "every ADT tensor must come from the fixture"
    adt.load_state_dict({k[len(ours):]: v for k, v in mapped.items()}, strict=True)
    return adt


def _on_grid(embeds: torch.Tensor, hw: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Maps stored as the release stores them (sample i's h_i·w_i rows first) → our padded (B, Hm·Wm, C) grid."""
    B, _, C = embeds.shape
    Hm, Wm = max(h for h, _ in hw), max(w for _, w in hw)
    grid = embeds.new_zeros(B, Hm, Wm, C)
    for i, (h, w) in enumerate(hw):
        grid[i, :h, :w] = embeds[i, : h * w].view(h, w, C)
    return grid.view(B, Hm * Wm, C), torch.tensor(hw), (Hm, Wm)


def test_adt_initial_reference_points_are_the_releases():
    for name in ("adt_shared_shape", "adt_per_image_shapes"):
        entry, t = fixture(name)
        c = entry["constructor"]["ADT"]
        assert torch.equal(ADT(c["dim"], c["num_queries"], layers=0).reference.detach(), t["init.reference_points"][0])


def test_adt_shared_shape():
    entry, t = fixture("adt_shared_shape")
    adt = _adt(entry, t)
    h, w = entry["inputs"]["h"], entry["inputs"]["w"]
    feats, sizes = t["inputs_embeds"], torch.tensor([[h, w]] * entry["inputs"]["B"])
    assert torch.equal(t["spatial_shapes"], torch.tensor([[h, w]]))
    with torch.no_grad():
        assert_close(adaptive_pool(feats, sizes, (h, w), adt.side), t["hidden_states"], "pooled queries")
        assert_close(adt(feats, sizes, (h, w)), t["output"], "ADT output")


def test_adt_per_image_shapes_on_a_padded_grid():
    entry, t = fixture("adt_per_image_shapes")
    adt = _adt(entry, t)
    hw = entry["inputs"]["per_sample_hw"]
    assert t["spatial_shapes"].tolist() == hw
    feats, sizes, grid = _on_grid(t["inputs_embeds"], hw)
    with torch.no_grad():
        assert_close(adaptive_pool(feats, sizes, grid, adt.side), t["hidden_states"], "pooled queries")
        out = adt(feats, sizes, grid)
        assert_close(out, t["output"], "ADT output")
        # each image alone gives the same tokens as inside the mixed batch
        for i, (h, w) in enumerate(hw):
            alone = adt(t["inputs_embeds"][i : i + 1, : h * w], sizes[i : i + 1], (h, w))
            assert_close(alone[0], t["output"][i], f"ADT output of sample {i} alone")


def test_move_router_soft_and_add():
    entry, t = fixture("move_router")
    c = entry["constructor"]["mlp"]
    experts = [t[f"inputs_embeds.{i}"] for i in range(c["num_experts"])]
    router = SoftRouter(c["seq_dim"], t["move_router.router.0.weight"].shape[0], c["num_experts"])
    expected = {"move.router." + k: v for k, v in router.state_dict().items()}
    mapped, _ = official_to_mome(prefixed(t, entry["state_dict_prefix"]), expected)
    router.load_state_dict({k[len("move.router."):]: v for k, v in mapped.items()}, strict=True)
    stacked = torch.stack(experts)
    with torch.no_grad():
        weights = router(t["seq_embeds"])
        assert_close(weights, t["router_probs"], "router probabilities")
        assert_close(torch.ops.mome.router_mix(stacked, weights), t["hidden_states"], "soft-router mix")
        assert_close(importance(stacked, weights), t["routing_outcome"], "importance (routing_outcome)")
        ones = torch.ones_like(weights)
        assert_close(torch.ops.mome.router_mix(stacked, ones), t["add.hidden_states"], "addition")
        assert_close(importance(stacked, ones), t["add.routing_outcome"], "addition importance")


def _llama(entry: dict):
    import transformers as tf

    cfg = tf.LlamaConfig(**entry["llama_config"])
    return tf.LlamaForCausalLM._from_config(cfg, attn_implementation=entry.get("attn_implementation", "sdpa")).eval()


def _load_llm(llm, state: dict, source: str) -> list[str]:
    expected = {"llm." + k: v for k, v in llm.state_dict().items()}
    mapped, notes = official_to_mome(state, expected, source=source)
    missing = sorted(set(expected) - set(mapped))
    result = llm.load_state_dict({k[len("llm."):]: v for k, v in mapped.items()}, strict=False)
    assert not result.unexpected_keys
    return [k for k in missing]


def _mole_llm(entry: dict, num_experts: int, rank: int, router: str = "instance"):
    llm = _llama(entry)
    attach_mole(llm, num_experts, rank, router, instruction_dim=384, router_hidden=384)
    return llm.eval()


def test_mole_llama_stage2():
    entry, t = fixture("mole_llama")
    c = entry["constructor"]["set_moe_mlp_adapter_llama"]
    llm = _mole_llm(entry, c["num_adapters"], c["bottleneck"])
    assert _load_llm(llm, prefixed(t, "llm_model."), entry["file"]) == []  # every tensor from the fixture
    with torch.no_grad(), routing_context(llm, t["router_embedding"]):
        logits = llm(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
    assert_close(logits, t["logits"], "logits")
    moles = mole_modules(llm)
    chosen = [m.last_expert[:, 0].tolist() for m in moles]
    assert chosen == entry["selected_adapter_per_layer_and_sample"]
    for layer, m in enumerate(moles):
        assert_close(m.last_probs[:, 0], torch.softmax(t["routing_logits"][layer], -1), f"layer {layer} router")
        hard = torch.nn.functional.one_hot(m.last_expert[:, 0], c["num_adapters"]).float()
        assert_close(hard, t["routing_outcome"][layer], f"layer {layer} gate")


def test_mole_llama_stage1_and_its_replication():
    entry, t = fixture("mole_llama_stage1")
    c = entry["constructor"]["set_adapter_llama"]
    single = _mole_llm(entry, 1, c["bottleneck"], router="single")
    assert _load_llm(single, prefixed(t, "llm_model."), entry["file"]) == []
    with torch.no_grad():
        assert_close(single(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits, t["logits"],
                     "stage-1 logits")
    # the release's rule: every adapter copied into each of the stage-2 experts; routers from elsewhere
    entry2, t2 = fixture("mole_llama")
    K = entry2["constructor"]["set_moe_mlp_adapter_llama"]["num_adapters"]
    multi = _mole_llm(entry, K, c["bottleneck"])
    missing = _load_llm(multi, prefixed(t, "llm_model."), entry["file"])
    assert len(missing) == len(entry["replication_missing_keys_after_load"])  # the fresh routers, nothing else
    assert all(".mole.router." in k for k in missing)
    routers = {k: v for k, v in t2.items() if ".router_mlp." in k}
    mapped, _ = official_to_mome(routers, {"llm." + k: v for k, v in multi.state_dict().items()})
    multi.load_state_dict({k[len("llm."):]: v for k, v in mapped.items()}, strict=False)
    with torch.no_grad(), routing_context(multi, t2["router_embedding"]):
        logits = multi(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
    assert_close(logits, t["logits_stage2_replicated"], "replicated stage-2 logits")


def _paper_trainable() -> tuple[MoME, dict[str, torch.Tensor]]:
    with torch.device("meta"):
        model = MoME(MoMEConfig.preset("paper"))
    return model, {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_the_paper_preset_has_exactly_the_releases_trainable_tensors():
    keys = manifest()["fixtures"]["checkpoint_keys"]
    from .conftest import FIXTURES
    import json

    listing = json.loads((FIXTURES / keys["file"]).read_text())
    model, trainable = _paper_trainable()
    for stage, expected_params in (("stage2", "stage2_num_params"), ("stage1", "stage1_num_params")):
        names = listing[f"{stage}_trainable_checkpoint_keys"]
        fake = {k: torch.empty(v["shape"], device="meta") for k, v in names.items()}
        if stage == "stage1":
            with torch.device("meta"):
                model = MoME(MoMEConfig.preset("paper", ["mole.router=single"]))
            trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        mapped, _ = official_to_mome(fake, trainable, source=keys["file"])
        assert sorted(mapped) == sorted(trainable), stage
        assert sum(p.numel() for p in trainable.values()) == listing[expected_params], stage


def test_official_mapping_round_trips_and_rejects_what_does_not_fit():
    _, trainable = _paper_trainable()
    fake = {k: torch.empty(v.shape, device="meta") for k, v in trainable.items()}
    theirs = mome_to_official(fake)
    mapped, _ = official_to_mome(theirs, trainable)
    assert sorted(mapped) == sorted(trainable)
    assert all(mapped[k].shape == trainable[k].shape for k in mapped)
    bad = dict(theirs)
    bad["dino_llm_proj.weight"] = torch.empty(3, 3, device="meta")
    with pytest.raises(OfficialCheckpointError, match=r"shape mismatches: move\.projectors\.dinov2\.weight"):
        official_to_mome(bad, trainable)
    with pytest.raises(OfficialCheckpointError, match="keys of no MoME part: mystery.weight"):
        official_to_mome({**theirs, "mystery.weight": torch.empty(1, device="meta")}, trainable)
    no_expert = {k: v for k, v in theirs.items() if ".adapters.3." not in k or "layers.5." not in k}
    with pytest.raises(OfficialCheckpointError, match=r"layers\.5\.mlp\.adapter\.adapters has experts \[0, 1, 2\]"):
        official_to_mome(no_expert, trainable)
