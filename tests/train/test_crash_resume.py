"""A two-stage run SIGKILLed again and again — during the untrained evaluation, during steps, during a checkpoint
write, in stage 2 after stage 1 finished, during the final evaluation — and resumed with ``--resume auto`` each time
ends bit for bit where the uninterrupted run ends: every final trainable tensor, every optimizer and scheduler
tensor of the last checkpoint, and every logged loss (`torch.equal`, not close). On one machine with the same
thread count (docs/distributed.md § Resuming)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mome import checkpoint as ckpt

pytestmark = pytest.mark.slow

RUN = [
    "train.stages=[1,2]",
    "train.evaluate=true",
    "train.tensorboard=false",
    "train.stage1.steps=6",
    "train.stage1.warmup_steps=2",
    "train.stage2.steps=4",
    "train.stage2.warmup_steps=1",
    "train.global_batch_size=4",
    "train.micro_batch_size=2",
    "train.log_every=1",
    "train.save_every=1",
    "train.keep_last=2",
    "train.threads=1",
    "train.eval_batch_size=8",
    "train.max_new_tokens=4",
    "data.synth_train=48",
    "data.synth_test=16",
]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")


def _cmd(tmp_path, synth_dir, name):
    return [sys.executable, "-m", "mome.train", *RUN, f"train.name={name}", f"train.out_dir={tmp_path}",
            f"data.synth_dir={synth_dir}"]


def _stage_losses(run_dir: Path) -> dict[tuple[int, int], float]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows if "loss" in r}


def _staging(run_dir: Path) -> bool:
    return any(p.name.startswith(".staging") for d in run_dir.glob("stage*/checkpoints") for p in d.iterdir())


def _run_until(cmd, log: Path, condition, timeout: float = 240) -> str:
    """Start the run; SIGKILL it the moment ``condition(stderr so far)`` holds. Returns what it had printed;
    'finished' if it exited on its own first."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(), start_new_session=True)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None:
            if condition(log.read_text(errors="replace")):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return "killed"
            assert time.time() < deadline, f"the run neither reached the kill point nor ended:\n{log.read_text()}"
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-4000:]
    return "finished"


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final weights of both stages and every tensor of the newest stage-2 checkpoint (weights, optimizer,
    scheduler, RNG)."""
    out = {}
    for stage in (1, 2):
        for k, v in load_file(run_dir / f"stage{stage}" / "final" / "model.safetensors").items():
            out[f"final{stage}/{k}"] = v
    newest = ckpt.list_checkpoints(run_dir / "stage2" / "checkpoints")[-1]
    for f in sorted(newest.glob("*.safetensors")):
        for k, v in load_file(f).items():
            out[f"{newest.name}/{f.name}/{k}"] = v
    return out


def test_sigkill_anywhere_then_resume_is_bit_exact(tmp_path, synth_dir):
    straight = tmp_path / "straight"
    assert _run_until(_cmd(tmp_path, synth_dir, "straight"), tmp_path / "straight.log", lambda _: False) == "finished"

    rng = random.Random(20261202)  # the kill points are random draws, reproducibly
    killed = tmp_path / "killed"
    n1, n2 = rng.randint(1, 4), rng.randint(1, 3)
    points = [
        ("the untrained evaluation", lambda text: "evaluating the untrained model" in text),
        (f"stage-1 step {n1}", lambda text: sum(k[0] == 1 for k in _stage_losses(killed)) >= n1),
        ("a checkpoint write", lambda text: _staging(killed)),
        (f"stage-2 step {n2}", lambda text: sum(k[0] == 2 for k in _stage_losses(killed)) >= n2),
        ("the final evaluation", lambda text: "evaluating the final model" in text),
    ]
    outcomes = []
    for i, (where, condition) in enumerate(points):
        outcomes.append((where, _run_until(_cmd(tmp_path, synth_dir, "killed"), tmp_path / f"kill{i}.log",
                                           condition)))
    assert _run_until(_cmd(tmp_path, synth_dir, "killed"), tmp_path / "last.log", lambda _: False) == "finished"
    assert [o for _, o in outcomes].count("killed") >= 4, outcomes  # the kills landed where they were aimed
    assert "resumed from" in (tmp_path / "last.log").read_text() or any(
        "resumed from" in (tmp_path / f"kill{i}.log").read_text() for i in range(len(points)))

    assert _stage_losses(killed) == _stage_losses(straight)
    a, b = _tensors(straight), _tensors(killed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    assert (killed / "eval" / "final.json").is_file()
