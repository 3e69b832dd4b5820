"""Fine-tuning the authors' released MoME as a user would: their checkpoint (written in the release's format from the
fixtures) converted with `python -m mome.convert official`, then `python -m mome.train --config
configs/finetune_official.yaml` with its /path/to entries replaced, one optimizer step on CPU, evaluated before and
after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .test_convert import _convert, _overrides, release_files  # noqa: F401  (release_files is a fixture)

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "finetune_official.yaml"


def test_the_converted_release_fine_tunes_one_step_end_to_end(release_files, tmp_path):  # noqa: F811
    root, entry, _ = release_files
    model = tmp_path / "mome-official"
    assert _convert(root, model, "stage2.pth", *_overrides(entry)) == 0
    from mome.data import synth

    synth.generate(tmp_path / "synth", n_train=16, n_test=4, seed=0)
    cmd = [sys.executable, "-m", "mome.train", "--config", str(CONFIG),
           # the documented command's replacements of /path/to/...
           f"train.init_from={model}", f"data.train={tmp_path / 'synth' / 'train.jsonl'}",
           f"data.test={tmp_path / 'synth' / 'test.jsonl'}", f"data.image_root={tmp_path / 'synth'}",
           # the fixture's sizes and a CPU: one step, batch 2
           "model.mole.rank=16", "train.device=cpu", "train.precision=fp32", "train.strategy=auto",
           "train.grad_checkpointing=false", "data.num_workers=0", "train.stage2.steps=1",
           "train.stage2.warmup_steps=0", "train.stage2.global_batch_size=2", "train.stage2.micro_batch_size=2",
           "train.tensorboard=false", "data.eval_limit=1", "train.max_new_tokens=4", "train.threads=1",
           f"train.out_dir={tmp_path / 'runs'}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "fine-tuning the stage-2 model" in proc.stderr and "replicating" not in proc.stderr
    run = tmp_path / "runs" / "finetune-official"
    assert (run / "eval" / "before.json").is_file() and (run / "eval" / "final.json").is_file()
    assert "| before fine-tuning |" in proc.stdout
    source, tuned = load_file(str(model / "model.safetensors")), load_file(str(run / "stage2" / "final" /
                                                                              "model.safetensors"))
    assert source.keys() == tuned.keys()
    moved = [k for k in source if not torch.equal(source[k], tuned[k])]
    assert any(".mole." in k for k in moved) and any(k.startswith("move.") for k in moved)
