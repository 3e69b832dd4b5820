"""Fine-tuning a stage-2 model (`train.init_from` on a model with routed experts, `train.trainable`,
`train.resize_experts`): the real CLI on the tiny preset, from a stage-2 model whose every tensor differs from what
a fresh model or a replication would hold."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mome.model import MoME
from mome.model.config import MoMEConfig
from mome.model.mole import mole_modules
from mome.training.finetune import PARTS, part_of
from tests.train import test_train as train_tests

# test_train's tiny run, as stage 2 alone (2 steps, no warm-up) started from `train.init_from`
BASE = [a for a in train_tests.BASE if not a.startswith(("train.stages=", "train.stage1."))] + [
    "train.stages=[2]", "train.stage2.steps=2", "train.stage2.warmup_steps=0"]
_env = train_tests._env


def _train(tmp_path, synth_dir, name, *extra, check=True):
    cmd = [sys.executable, "-m", "mome.train", *BASE, f"train.name={name}", f"train.out_dir={tmp_path}",
           f"data.synth_dir={synth_dir}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def stage2_model(tmp_path_factory):
    """A tiny stage-2 model (MoLE-I, K = 4) with every saved tensor randomised: distinct experts, a trained-looking
    router. A replication or a re-initialisation anywhere would show as a changed tensor."""
    model = MoME(MoMEConfig.preset("tiny"))  # the preset is the stage-2 model: MoLE-I, K = 4
    assert model.config.mole.router == "instance" and model.config.mole.num_experts == 4
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    folder = tmp_path_factory.mktemp("source") / "stage2"
    model.save_pretrained(folder)
    return folder


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_every_trainable_parameter_has_a_part():
    model = MoME(MoMEConfig.preset("tiny", {"language.train": True}))
    parts = {part_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert parts == set(PARTS)  # with the LLM training, every part is present
    with pytest.raises(KeyError):
        part_of("move.encoders.dinov2.embeddings.cls_token")


def test_vanishing_lr_step_keeps_every_tensor_of_the_source(tmp_path, synth_dir, stage2_model):
    # lr 1e-60: AdamW's update and decay round to exactly 0 in float32, so any difference would come from the way
    # the model was built from its source (a replication, a fresh router, a re-initialised part).
    proc = _train(tmp_path, synth_dir, "still", f"train.init_from={stage2_model}", "train.stage2.lr=1e-60",
                  "train.stage2.steps=1")
    assert "fine-tuning the stage-2 model" in proc.stderr and "replicating" not in proc.stderr
    source, tuned = _weights(stage2_model), _weights(tmp_path / "still" / "stage2" / "final")
    assert source.keys() == tuned.keys()
    for k in source:
        assert torch.equal(source[k], tuned[k]), k
    cfg = MoMEConfig.load(tmp_path / "still" / "stage2" / "final" / "config.yaml")
    assert cfg.to_dict() == MoMEConfig.load(stage2_model / "config.yaml").to_dict()


def test_real_lr_moves_the_trainable_parts_only_and_evaluates_before_and_after(tmp_path, synth_dir, stage2_model):
    proc = _train(tmp_path, synth_dir, "moles", f"train.init_from={stage2_model}", "train.stage2.lr=1e-2",
                  "train.trainable=[adapters,mole_router]", "train.evaluate=true", "data.eval_limit=1",
                  "train.max_new_tokens=4")
    run = tmp_path / "moles"
    source, tuned = _weights(stage2_model), _weights(run / "stage2" / "final")
    assert source.keys() == tuned.keys()  # frozen parts are still saved: the folder loads like any model
    moved = {k for k in source if not torch.equal(source[k], tuned[k])}
    trained = {k for k in source if k.startswith("llm.") and ".mole." in k}
    assert moved == trained, sorted(moved ^ trained)[:5]
    MoME.from_pretrained(run / "stage2" / "final")
    assert (run / "eval" / "before.json").is_file() and not (run / "eval" / "untrained.json").exists()
    assert "== constant-answer baseline vs before fine-tuning vs trained ==" in proc.stdout
    assert "| before fine-tuning |" in proc.stdout and "| trained |" in proc.stdout
    assert "train.trainable = ['adapters', 'mole_router']" in proc.stderr


def test_resume_mid_finetune_is_bit_exact(tmp_path, synth_dir, stage2_model):
    extra = [f"train.init_from={stage2_model}", "train.stage2.lr=1e-2", "train.stage2.steps=3",
             "train.trainable=[adapters,mole_router,projectors]"]
    _train(tmp_path, synth_dir, "straight", *extra)
    first = _train(tmp_path, synth_dir, "resumed", *extra, "--stop-after", "1")
    assert "stopped after 1 steps" in first.stderr
    second = _train(tmp_path, synth_dir, "resumed", *extra)
    assert "resumed from" in second.stderr

    def losses(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["stage"] == 2]

    assert len(losses("straight")) == 3 and losses("straight") == losses("resumed")
    a, b = _weights(tmp_path / "straight" / "stage2" / "final"), _weights(tmp_path / "resumed" / "stage2" / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_source_that_does_not_fit_is_refused_before_any_data(tmp_path, stage2_model):
    synth = tmp_path / "never"
    proc = _train(tmp_path, synth, "k8", f"train.init_from={stage2_model}", "model.mole.num_experts=8", check=False)
    assert proc.returncode == 2
    assert "mole.num_experts = 4 in the source, 8 in the run's config" in proc.stderr
    assert "train.resize_experts" in proc.stderr
    proc = _train(tmp_path, synth, "r8", f"train.init_from={stage2_model}", "model.mole.rank=8", check=False)
    assert proc.returncode == 2 and "mole.rank = 16 in the source, 8 in the run's config" in proc.stderr
    proc = _train(tmp_path, synth, "tok", f"train.init_from={stage2_model}", "model.mole.router=token", check=False)
    assert proc.returncode == 2 and "mole.router = 'instance' in the source, 'token'" in proc.stderr
    assert not synth.exists() and not (tmp_path / "k8").exists()  # no data generated, no run folder


def test_trainable_parts_are_checked(tmp_path, synth_dir):
    proc = _train(tmp_path, synth_dir, "bad", "train.trainable=[adapters,encoders]", check=False)
    assert proc.returncode == 2 and "train.trainable" in proc.stderr and "encoders" in proc.stderr
    from mome.configtree import ConfigError
    from mome.training.finetune import select_trainable

    frozen_llm = MoME(MoMEConfig.preset("tiny", ["language.train=false"]))
    with pytest.raises(ConfigError, match=r"\['llm'\] has no trainable parameter"):
        select_trainable(frozen_llm, ["llm"], print)
    model = MoME(MoMEConfig.preset("tiny"))
    before = set(model.saved_state())
    select_trainable(model, ["vision_router"], print)
    assert {part_of(n) for n, p in model.named_parameters() if p.requires_grad} == {"vision_router"}
    assert set(model.saved_state()) == before  # frozen by choice, still saved


def test_resize_experts_from_the_cli(tmp_path, synth_dir, stage2_model):
    _train(tmp_path, synth_dir, "k6", f"train.init_from={stage2_model}", "model.mole.num_experts=6",
           "train.resize_experts=true", "train.stage2.lr=1e-60", "train.stage2.steps=1")
    tuned = MoME.from_pretrained(tmp_path / "k6" / "stage2" / "final")
    source = MoME.from_pretrained(stage2_model)
    assert tuned.config.mole.num_experts == 6
    for old, new in zip(mole_modules(source.llm), mole_modules(tuned.llm)):
        for j in range(6):
            assert torch.equal(new.w_up[j], old.w_up[j % 4]) and torch.equal(new.w_down[j], old.w_down[j % 4])


def test_the_before_row_says_what_the_run_starts_from(tmp_path, stage2_model):
    from mome.train import before_training, resolve_config

    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    MoMEConfig.preset("tiny", ["mole.router=single"]).save(stage1 / "config.yaml")
    (stage1 / "model.safetensors").touch()
    cases = {(): ("untrained", "untrained"),
             ("train.stages=[2]", f"train.init_from={stage2_model}"): ("before", "before fine-tuning"),
             ("train.stages=[2]", f"train.init_from={stage1}"): ("before", "before stage 2")}
    for overrides, want in cases.items():
        run, _ = resolve_config(None, list(overrides))
        assert before_training(run, run.train.stages) == want, overrides


@pytest.mark.slow
def test_fsdp_fine_tune_with_frozen_parts_equals_one_process(tmp_path, synth_dir, stage2_model):
    # Some parameters of MoVE frozen by train.trainable, others trained, all sharded: 2 gloo processes under FSDP
    # give 1 process's run (ADT dropout off: each process draws its own masks).
    extra = [f"train.init_from={stage2_model}", "train.stage2.lr=1e-2", "train.trainable=[adapters,projectors]",
             "model.vision.adt_dropout=0.0", "train.device=cpu", "train.timeout_s=60"]
    _train(tmp_path, synth_dir, "one", *extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mome.train",
           *BASE, "train.name=two", f"train.out_dir={tmp_path}", f"data.synth_dir={synth_dir}", *extra,
           "train.strategy=fsdp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = _weights(tmp_path / "one" / "stage2" / "final"), _weights(tmp_path / "two" / "stage2" / "final")
    assert a.keys() == b.keys() == _weights(stage2_model).keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=lambda m: f"{k}: {m}")  # all-reduce order
    source = _weights(stage2_model)
    assert all(torch.equal(b[k], source[k]) for k in b if k.startswith("move.aggregators."))  # frozen stays put


def test_a_run_sets_only_what_changes_training_on_a_trained_source():
    from mome.training.finetune import RUN_SETTABLE, run_overrides

    src = MoMEConfig.preset("tiny", {"language.path": None, "language.train": True})
    run = src.override({"vision.adt_dropout": 0.0, "mole.load_balance": 0.01, "language.hidden_size": 64,
                        "mole.num_experts": 6, "name": "other"})
    settable, kept = run_overrides(src, run)
    assert settable == {"vision.adt_dropout": 0.0, "mole.load_balance": 0.01}
    assert kept == ["language.hidden_size"]
    assert set(RUN_SETTABLE) <= {f"{a}.{b}" for a, sub in src.to_dict().items() if isinstance(sub, dict)
                                 for b in sub}  # every settable key exists


def test_init_from_with_stage_1_is_refused(tmp_path, stage2_model):
    proc = _train(tmp_path, tmp_path / "never", "s12", f"train.init_from={stage2_model}", "train.stages=[1,2]",
                  check=False)
    assert proc.returncode == 2 and "train.init_from" in proc.stderr and "train.stages=[2]" in proc.stderr
