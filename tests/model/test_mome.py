"""The assembled MoME: loss on answers only, gradients, save/load, checkpoint errors, every ablation switch, stage 2,
generation and the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F

from mome.generate import main as generate_main
from mome.model import MoME, MoMEConfig
from mome.model.mome import IGNORE, CheckpointError, build_prompt

from .conftest import ANSWERS, PROMPTS, images, randomize_adapters, tiny_model


def test_prompt_template_and_answer_only_labels():
    assert build_prompt("<image>\nWhat color?") == ("USER: <Img>", "What color? ASSISTANT: ")  # the release's
    before, after = build_prompt("What color?", "vicuna_v1")
    assert before.endswith("USER: ") and after == "\nWhat color? ASSISTANT:"  # <image> prepended, Vicuna v1
    with pytest.raises(ValueError, match="one <image>"):
        build_prompt("<image><image>")
    model = tiny_model()
    tk = model.tokenizer
    ids, img, labels, att = model.tokenize(PROMPTS, ANSWERS)
    assert (img.sum(1) == 17).all()  # CLS + L
    # [BOS] "USER: <Img>" [17 visual] "</Img>" "{question} ASSISTANT: " answer [EOS], each piece on its own
    q = "What color is the circle?"
    want = ([tk.bos_id] + tk.encode("USER: <Img>") + [tk.pad_id] * 17 + tk.encode("</Img>")
            + tk.encode(q + " ASSISTANT: ") + tk.encode(ANSWERS[0]) + [tk.eos_id])
    assert ids[0, att[0].bool()].tolist() == want
    for b, ans in enumerate(ANSWERS):
        want = tk.encode(ans) + [tk.eos_id]
        assert labels[b][labels[b] != IGNORE].tolist() == want
        assert ids[b, att[b].bool()][-len(want):].tolist() == want  # the answer ends the row


def test_loss_is_cross_entropy_on_answer_tokens(instruction):
    model = tiny_model()
    with torch.no_grad():
        out = model(model.preprocess(images()), PROMPTS, ANSWERS, instruction_embeddings=instruction)
    _, _, labels, _ = model.tokenize(PROMPTS, ANSWERS)
    want = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, want)
    assert out.aux_loss is None and torch.isfinite(out.loss)
    assert len(out.language_experts) == model.config.language.num_layers


def test_trainable_params_get_finite_grads_frozen_get_none(instruction):
    model = MoME(MoMEConfig.preset("tiny", ["mole.load_balance=0.01"]))
    model.train()
    out = model(model.preprocess(images()), PROMPTS, ANSWERS, instruction_embeddings=instruction)
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("move.aggregators.") for n in trainable)
    assert any(".mole.router." in n for n in trainable) and any(".mole.w_down" in n for n in trainable)
    assert not any(n.startswith("move.encoders.") for n in trainable)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{n} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{n} has a non-finite gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    # the zero-initialised up-projections are what learns first
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("mole.w_up"))


def test_frozen_llm_when_not_training_it():
    model = tiny_model("language.train=false")
    llm_trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert llm_trainable and all(".mole." in n for n in llm_trainable)


def test_save_load_round_trips_bit_exactly(tmp_path, instruction):
    model = MoME(MoMEConfig.preset("tiny")).eval()  # eval: ADT's dropout off
    randomize_adapters(model.llm)
    with torch.no_grad():
        for p in model.move.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MoME.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pix = model.preprocess(images())
    with torch.no_grad():
        x = model(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
        y = loaded(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
    assert torch.equal(x, y)


def test_mismatched_checkpoints_give_clear_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*mole\.w_down"):
        MoME.from_pretrained(ckpt, ["mole.num_experts=2"])
    stage1 = _with_config(tmp_path, ckpt, ["mole.router=single"])
    with pytest.raises(CheckpointError, match=r"missing tensors: .*mole\.router"):
        MoME.from_pretrained(stage1, ["mole.router=instance"])
    with pytest.raises(CheckpointError, match="unexpected tensors: .*move.aggregators"):
        MoME.from_pretrained(ckpt, ["vision.aggregator=avgpool"])
    state = load_file(str(ckpt / "model.safetensors"))
    state.pop(next(iter(state)))
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "mome-1"})
    with pytest.raises(CheckpointError, match="missing tensors"):
        MoME.from_pretrained(ckpt)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="format None"):
        MoME.from_pretrained(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        MoME.from_pretrained(ckpt)


def _with_config(tmp_path, ckpt, overrides):
    """A checkpoint saved from a model built with ``overrides`` (so its tensors differ from ``ckpt``'s)."""
    return MoME(MoMEConfig.load(ckpt / "config.yaml", overrides)).save_pretrained(tmp_path / "other")


ABLATIONS = [
    # Table 1: which encoders, AvgPool vs ADT, addition vs soft router
    ["vision.use=clip", "mole.router=single"],
    ["vision.use=dinov2", "mole.router=single"],
    ["vision.use=pix2struct", "mole.router=single"],
    ["vision.aggregator=avgpool", "vision.router=add", "mole.router=single"],
    ["vision.aggregator=adt", "vision.router=add", "mole.router=single"],
    ["mole.router=single"],
    # Table 2: no adapter / single adapter / MoLE-I / MoLE-T / MoLE-IT, Gumbel, load balance, K
    ["vision.use=clip", "mole.router=none"],
    ["mole.router=instance"],
    ["mole.router=token"],
    ["mole.router=instance_token"],
    ["mole.router=instance", "mole.gumbel=true"],
    ["mole.router=instance", "mole.load_balance=0.01"],
    ["mole.router=instance", "mole.num_experts=2"],
    ["mole.router=instance", "mole.gate=switch"],
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: " ".join(o))
def test_every_ablation_builds_and_runs(overrides, instruction):
    model = MoME(MoMEConfig.preset("tiny", overrides))
    model.train()
    pix = model.preprocess(images())
    out = model(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction)
    assert torch.isfinite(out.loss)
    cfg = model.config
    assert out.vision_weights.shape == (4, len(cfg.vision.use))
    if cfg.mole.router == "none":
        assert out.language_experts is None
    else:
        assert all(e.max() < cfg.num_experts for e in out.language_experts)
    if cfg.mole.load_balance:
        assert out.aux_loss is not None and out.aux_loss > 0
    out.loss.backward()


def test_stage2_from_stage1_model_is_unchanged(instruction):
    model = MoME(MoMEConfig.preset("tiny", ["mole.router=single"]))
    randomize_adapters(model.llm)
    pix = model.preprocess(images())
    with torch.no_grad():
        before = model(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
        model.replicate_adapter(4, router="instance")
        after = model(pix, PROMPTS, ANSWERS, instruction_embeddings=instruction).logits
    assert model.config.mole.router == "instance" and model.config.num_experts == 4
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_generate_batched_left_padding_equals_alone():
    model = tiny_model()
    imgs = images()
    batch = model.generate(imgs, PROMPTS, max_new_tokens=6)
    for i in (0, 3):
        alone = model.generate([imgs[i]], [PROMPTS[i]], max_new_tokens=6)[0]
        assert alone.text == batch[i].text
        assert alone.routing["language"] == batch[i].routing["language"]
    r = batch[0].routing
    assert set(r) == {"vision", "vision_importance", "language"}
    assert abs(sum(r["vision"].values()) - 1) < 1e-5
    assert len(r["language"]) == model.config.language.num_layers
    sampled = model.generate(imgs[:2], PROMPTS[:2], max_new_tokens=6, do_sample=True, top_p=0.9, seed=0)
    assert sampled[0].text == model.generate(imgs[:2], PROMPTS[:2], max_new_tokens=6, do_sample=True,
                                             top_p=0.9, seed=0)[0].text


def test_sentence_embeddings_are_cached_and_gradless():
    model = tiny_model()
    enc = model.sentence_encoder
    e = model.instruction_embeddings(PROMPTS + PROMPTS[:1])
    assert e.shape == (5, 384) and not e.requires_grad
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    assert torch.equal(e[0], e[4])
    assert "What color is the circle?" in enc._cache  # keyed by the instruction without <image>


def test_generate_cli_json(tmp_path, capsys):
    images(((40, 70),))[0].save(tmp_path / "img.png")
    assert generate_main(["--preset", "tiny", "--image", str(tmp_path / "img.png"), "--prompt",
                          "What shape is it?", "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"text", "routing"} and isinstance(out["text"], str)
    assert set(out["routing"]) == {"vision", "vision_importance", "language"}
    assert set(out["routing"]["vision"]) == {"eva_clip", "dinov2", "pix2struct"}
    assert set(out["routing"]["vision_importance"]) == {"eva_clip", "dinov2", "pix2struct"}
    assert isinstance(out["routing"]["language"], list)


def test_sentence_embeddings_do_not_depend_on_their_batch():
    """A resumed run starts with an empty cache and meets the instructions in other groupings: each embedding must
    be the same bits whichever texts were encoded with it (a padded batch would change the last bits)."""
    from mome.model.sentence import SentenceEncoder

    texts = ["What color is the circle?", "Where is the small red star located? Give its box.", "hi", "Read it."]
    together = SentenceEncoder().encode(texts)
    alone = []
    for t in reversed(texts):
        enc = SentenceEncoder()  # a fresh cache each time
        alone.append(enc.encode([t])[0])
    assert torch.equal(together, torch.stack(alone[::-1]))
