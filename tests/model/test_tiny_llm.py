"""The tiny preset's shipped LLM, pretrained on text (`mome.training.llm_pretrain`), and its corpus."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mome.data import corpus, synth
from mome.model import specialists
from mome.model.config import MoMEConfig
from mome.model.mome import MoME
from mome.training import llm_pretrain


def _ours(key: str) -> str:
    """A transformers LLaMA key as MoME names it once MoLE wraps each FFN (``mlp.`` → ``mlp.ffn.``)."""
    return key.replace(".mlp.", ".mlp.ffn.")


def _manifest():
    return json.loads((specialists.WEIGHTS_DIR / llm_pretrain.MANIFEST).read_text())


def test_shipped_llm_is_the_one_the_manifest_records():
    man = _manifest()
    assert man["schema"] == "mome.tiny-llm/1"
    assert man["command"] == "python -m mome.data pretrain-llm"
    folder = specialists.resolve_path("mome:tiny-llm")
    assert folder == specialists.WEIGHTS_DIR / specialists.LLM
    assert (folder / "model.safetensors").stat().st_size < 6_000_000
    assert specialists.sha256(folder / "model.safetensors") == man["sha256"], "the shipped LLM is not the recorded one"
    assert man["steps"] >= 100 and set(man["heldout"]) == set(synth.DATASETS)


def test_tiny_preset_uses_the_shipped_llm():
    cfg = MoMEConfig.preset("tiny")
    assert cfg.language.path == "mome:tiny-llm"
    model = MoME(cfg)
    shipped = load_file(str(specialists.resolve_path(cfg.language.path) / "model.safetensors"))
    state = model.llm.state_dict()
    for key, value in shipped.items():
        assert torch.equal(state[_ours(key)], value), key
    # the tokenizer folded into the shipped folder is the tiny one
    assert model.tokenizer.model_proto == type(model.tokenizer).tiny().model_proto


def test_tiny_preset_is_the_papers_recipe_and_the_default_run_its_measured_fallback():
    from mome.train import DEFAULT_RUN, resolve_config

    model = MoME(MoMEConfig.preset("tiny"))
    assert model.config.language.train is False  # the preset: frozen, as in the paper
    llm_trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert llm_trainable and all(".mole." in n for n in llm_trainable)  # only the adapters beside the FFNs
    assert not any(k.startswith("llm.") and ".mole." not in k for k in model.saved_state())
    # the default run fine-tunes the pretrained LLM at a lower lr than the rest (docs/reproduce.md § The tiny LLM)
    run, model_cfg = resolve_config(None, [])
    assert model_cfg.language.path == "mome:tiny-llm" and model_cfg.language.train is True
    for stage in (run.train.stage1, run.train.stage2):
        assert stage.llm_lr is not None and stage.llm_lr < stage.lr
    assert DEFAULT_RUN["model"] == {"language": {"train": True}}


def test_encode_lays_a_sample_out_as_mome_does():
    model = MoME(MoMEConfig.preset("tiny"))
    tk = model.tokenizer
    instruction = "What is the second word?\nAnswer the question using a single word or phrase."
    ids, image_mask, labels, _ = model.tokenize([instruction], ["river"])
    ours, start = llm_pretrain.encode(tk, "", instruction, "river")
    assert ids[0][~image_mask[0]].tolist() == ours  # the same pieces around the image slots
    assert tk.decode(ours[start:-1]) == "river" and ours[-1] == tk.eos_id
    with_text, _ = llm_pretrain.encode(tk, "apple river", instruction)
    text_ids = tk.encode("apple river")
    before = len(tk.encode("USER: <Img>")) + 1
    assert with_text[before:before + len(text_ids)] == text_ids  # the text stands where the visual tokens stand


def test_corpus_is_deterministic_and_never_holds_a_test_record():
    a = corpus.samples(140, seed=0)
    assert a == corpus.samples(140, seed=0) and a != corpus.samples(140, seed=1)
    assert {s[0] for s in a} == set(synth.DATASETS)
    keys = corpus.test_keys()
    assert len(keys) > 300
    # every test record of the default benchmark is a key: its text is drawn as the benchmark draws it
    rec = next(s for s in a if s[0] == "synth-rec")
    assert rec[1].count("[") >= 1 and rec[3].startswith("[")
    # an excluded sample is skipped and the next index taken
    first = corpus.samples(7, seed=0)
    skip = {first[0][1:]}
    again = corpus.samples(7, seed=0, exclude=skip)
    assert first[0] not in again and len(again) == 7
    # the samples the pretraining draws never equal a test record
    drawn = corpus.samples(3000, seed=0, exclude=keys)
    assert not [s for s in drawn if s[1:] in keys]


def test_test_keys_are_the_benchmarks_test_records(tmp_path):
    synth.generate(tmp_path / "b", n_train=0, n_test=14, seed=0)
    records = [json.loads(line) for line in (tmp_path / "b" / "test.jsonl").read_text().splitlines()]
    keys = corpus.test_keys(n_test=14, seed=0)
    pairs = {(r["conversations"][0]["value"].removeprefix("<image>\n"), r["conversations"][1]["value"])
             for r in records}
    assert len(keys) == len(records) == 14
    assert pairs == {(k[1], k[2]) for k in keys}


def test_pretraining_is_deterministic_and_loads_as_language_path(tmp_path):
    kw = dict(steps=2, train_samples=32, eval_samples=14, progress=False, log=lambda m: None)
    a = llm_pretrain.pretrain(tmp_path / "a", **kw)
    b = llm_pretrain.pretrain(tmp_path / "b", **kw)
    assert a["sha256"] == b["sha256"]
    c = llm_pretrain.pretrain(tmp_path / "c", seed=1, **kw)
    assert c["sha256"] != a["sha256"]
    assert set(a["heldout"]) == set(synth.DATASETS) and a["steps"] == 2
    cfg = MoMEConfig.preset("tiny", {"language.path": str(tmp_path / "a" / "tiny-llm")})
    model = MoME(cfg)
    shipped = load_file(str(tmp_path / "a" / "tiny-llm" / "model.safetensors"))
    assert all(torch.equal(model.llm.state_dict()[_ours(k)], v) for k, v in shipped.items())


def test_cli_rejects_bad_steps():
    from mome.cli import UsageError
    from mome.data.__main__ import main

    with pytest.raises((UsageError, SystemExit)):
        main(["pretrain-llm", "--steps", "0"])


def test_other_sizes_with_the_shipped_llm_are_refused():
    from mome.configtree import ConfigError

    with pytest.raises(ConfigError, match="language.num_layers = 2 does not match the shipped LLM"):
        MoMEConfig.preset("tiny", {"language.num_layers": 2})
    cfg = MoMEConfig.preset("tiny", {"language.num_layers": 2, "language.path": None})
    assert cfg.language.num_layers == 2
