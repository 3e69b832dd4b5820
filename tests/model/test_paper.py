"""The paper preset's construction path (the same code as tiny's) and loading base parts from local checkpoints."""

import torch

from mome.model import MoME, MoMEConfig

from .conftest import ANSWERS, PROMPTS, images, tiny_model


def test_paper_preset_builds_at_full_size_on_meta():
    with torch.device("meta"):  # shapes only: the 8.5 B parameters are never allocated
        model = MoME(MoMEConfig.preset("paper"))
    assert {n: e.hidden_size for n, e in model.move.encoders.items()} == {
        "eva_clip": 1408, "dinov2": 1024, "pix2struct": 768}
    assert model.move.encoders["eva_clip"].model.config.num_hidden_layers == 39
    assert sorted(model.move.aggregators) == ["dinov2", "pix2struct"] and list(model.move.norms) == ["eva_clip"]
    for adt in model.move.aggregators.values():
        assert len(adt.layers) == 6 and adt.side == 16 and tuple(adt.reference.shape) == (256, 2)
        dca = adt.layers[0].cross_attn
        assert (dca.heads, dca.points, adt.layers[0].fc1.out_features) == (8, 4, 1024)
    assert model.move.num_output_tokens == 257
    assert model.llm.config.hidden_size == 4096 and model.llm.config.num_hidden_layers == 32
    mole = model.llm.model.layers[0].mlp.mole
    assert (mole.num_experts, mole.rank, mole.router_kind) == (4, 64, "instance")
    assert not any(p.requires_grad for p in model.llm.model.embed_tokens.parameters())  # LLM frozen


def test_base_parts_load_from_local_paths_and_are_not_saved(tmp_path, instruction):
    donor = tiny_model("vision.use=clip", "language.train=false")
    # Write the donor's base parts as ordinary transformers checkpoints (the base LLM without MoLE).
    llm_dir, clip_dir = tmp_path / "llm", tmp_path / "clip"
    base_llm = MoME(MoMEConfig.preset("tiny", ["vision.use=clip", "mole.router=none"])).llm
    base_llm.save_pretrained(llm_dir)
    donor.tokenizer.save(llm_dir)
    donor.move.encoders["clip"].model.save_pretrained(clip_dir)
    cfg = MoMEConfig.preset("tiny", ["vision.use=clip", "language.train=false", f"language.path={llm_dir}",
                                     f"vision.clip.path={clip_dir}"])
    model = MoME(cfg)
    for k, v in base_llm.state_dict().items():
        assert torch.equal(model.llm.state_dict()[k.replace("mlp.", "mlp.ffn.")], v), k
    saved = model.saved_state()
    assert not any(k.startswith("move.encoders.") for k in saved)  # referenced by path, not copied
    assert all(".mole." in k for k in saved if k.startswith("llm."))
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    loaded = MoME.from_pretrained(ckpt)
    pix = model.preprocess(images())
    with torch.no_grad():
        a = model(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
        b = loaded(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
    assert torch.equal(a, b)


def test_bfloat16_frozen_parts_run_forward_backward_and_generate(instruction):
    model = MoME(MoMEConfig.preset("tiny", ["language.dtype=bfloat16", "language.train=false"]))
    assert next(model.llm.parameters()).dtype == torch.bfloat16
    assert model.llm.model.layers[0].mlp.mole.w_down.dtype == torch.float32  # trainable parts stay fp32
    model.train()
    out = model(model.preprocess(images()), PROMPTS, ANSWERS, instruction_embeddings=instruction)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.generate(images()[:1], PROMPTS[:1], max_new_tokens=2)[0].routing["language"] is not None
