"""`python -m mome.train` on a tiny config: config handling, bit-exact resume, 2 processes = 1 process, NaN stop.

Each test runs the real CLI in a subprocess (as a user would) on a small synthetic benchmark shared by the module.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mome import checkpoint as ckpt

# A very small run: stage 1 only (stage 2 has its own test), 4 samples per optimizer step.
BASE = [
    "train.stages=[1]",
    "train.evaluate=false",
    "train.tensorboard=false",
    "train.stage1.steps=4",
    "train.stage1.warmup_steps=1",
    "train.global_batch_size=4",
    "train.micro_batch_size=2",
    "train.log_every=1",
    "train.save_every=100",
    "train.threads=1",
    "data.synth_train=48",
    "data.synth_test=16",
]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _train(tmp_path, synth_dir, name, *extra, launcher=None, check=True):
    args = [*BASE, f"train.name={name}", f"train.out_dir={tmp_path}", f"data.synth_dir={synth_dir}", *extra]
    cmd = (launcher or [sys.executable, "-m", "mome.train"]) + args
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _losses(run_dir: Path, stage: int = 1) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["stage"] == stage]


def test_unknown_key_and_bad_value_fail_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mome.train", "train.nope=1"], capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 2 and "unknown config key 'train.nope'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mome.train", "model.mole.rnak=3"], capture_output=True,
                          text=True, env=_env())
    assert proc.returncode == 2 and "rnak" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mome.train", "train.precision=fp8"], capture_output=True,
                          text=True, env=_env())
    assert proc.returncode == 2 and "train.precision" in proc.stderr


def test_print_config_is_complete_and_reloads(tmp_path):
    from mome.train import resolve_config, run_config_yaml

    proc = subprocess.run([sys.executable, "-m", "mome.train", "--print-config", "model.mole.num_experts=8",
                           "train.stage1.steps=7"], capture_output=True, text=True, env=_env(), check=True)
    saved = tmp_path / "run.yaml"
    saved.write_text(proc.stdout)
    run, model_cfg = resolve_config(str(saved), [])
    assert model_cfg.mole.num_experts == 8 and run.train.stage1.steps == 7
    assert run_config_yaml(run, model_cfg) == proc.stdout.rstrip("\n") + "\n"


def test_resume_is_bit_exact(tmp_path, synth_dir):
    _train(tmp_path, synth_dir, "straight")
    first = _train(tmp_path, synth_dir, "resumed", "--stop-after", "2")
    assert "stopped after 2 steps" in first.stderr
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "resumed" / "stage1" / "checkpoints")] == ["step-00000002"]
    second = _train(tmp_path, synth_dir, "resumed")
    assert "resumed from" in second.stderr
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert len(straight) == 4 and straight == resumed  # same floats, not just close
    a = load_file(tmp_path / "straight" / "stage1" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "stage1" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight[-1] < straight[0]


def test_resume_skips_a_corrupted_checkpoint(tmp_path, synth_dir):
    _train(tmp_path, synth_dir, "corrupt", "train.save_every=1", "--stop-after", "3")
    root = tmp_path / "corrupt" / "stage1" / "checkpoints"
    newest = ckpt.list_checkpoints(root)[-1]
    assert newest.name == "step-00000003"
    (newest / "weights.safetensors").write_bytes(b"garbage")
    proc = _train(tmp_path, synth_dir, "corrupt", "train.save_every=1")
    assert "skipping checkpoint" in proc.stderr and "step-00000003" in proc.stderr
    assert "at step 2" in proc.stderr


def test_two_processes_equal_one_process(tmp_path, synth_dir):
    # Same global batch (4): one process accumulating 2 micro-batches of 2, two gloo processes with 2 each.
    # ADT's dropout (0.1, as released) draws its masks from each process's own generator, as in any data-parallel
    # run, so the equality is checked with it off.
    no_dropout = "model.vision.adt_dropout=0.0"
    _train(tmp_path, synth_dir, "one", no_dropout)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "mome.train"]
    _train(tmp_path, synth_dir, "two", "train.device=cpu", no_dropout, launcher=launcher)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-6, atol=0)
    a = load_file(tmp_path / "one" / "stage1" / "final" / "model.safetensors")
    b = load_file(tmp_path / "two" / "stage1" / "final" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_non_finite_loss_stops_with_a_usable_checkpoint(tmp_path, synth_dir):
    proc = _train(tmp_path, synth_dir, "nan", "train.stage1.lr=1e30", "train.grad_clip=0", check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "the loss became" in proc.stderr
    latest = ckpt.latest_checkpoint(tmp_path / "nan" / "stage1" / "checkpoints")
    assert latest is not None and latest.step >= 1


def test_two_stages_and_stage2_from_a_stage1_checkpoint(tmp_path, synth_dir):
    _train(tmp_path, synth_dir, "both", "train.stages=[1,2]", "train.stage2.steps=2", "train.stage2.warmup_steps=1")
    final = tmp_path / "both" / "stage2" / "final"
    cfg = (final / "config.yaml").read_text()
    assert "router: instance" in cfg and "num_experts: 4" in cfg
    # Stage 2 alone, initialised from a stage-1 *checkpoint* folder.
    stage1_ckpt = ckpt.list_checkpoints(tmp_path / "both" / "stage1" / "checkpoints")[-1]
    _train(tmp_path, synth_dir, "from_ckpt", "train.stages=[2]", "train.stage2.steps=1",
           "train.stage2.warmup_steps=0", f"train.init_from={stage1_ckpt}")
    assert (tmp_path / "from_ckpt" / "stage2" / "final" / "model.safetensors").is_file()


def test_bf16_autocast_and_gradient_checkpointing_run(tmp_path, synth_dir):
    _train(tmp_path, synth_dir, "bf16", "train.precision=bf16", "train.grad_checkpointing=true",
           "train.stage1.steps=2", "model.language.train=false")
    losses = _losses(tmp_path / "bf16")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
