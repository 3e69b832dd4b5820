"""The embedded default run's result format: what `python -m mome.train` with no config writes and prints.

The run itself is cut to a couple of steps here (its scores are measured in README / docs/reproduce.md, not in
tests); what is checked is the layout a user and `python -m mome.reproduce` read back."""

import json
import subprocess
import sys

from mome.train import DEFAULT_RUN, resolve_config

GROUPS = {"general", "rec", "reg", "document", "avg"}


def test_default_run_config_uses_the_specialists_and_fits_a_box_answer():
    run, model = resolve_config(None, [])
    assert run.preset == "tiny" and DEFAULT_RUN["preset"] == "tiny"
    assert run.train.threads == 1  # the same numbers on any core count (docs/reproduce.md § The default run)
    assert run.train.seed == 0 and run.data.synth_seed == 0
    for kind in ("eva_clip", "dinov2", "pix2struct"):
        assert model.encoders()[kind].path == f"mome:tiny-{kind}"
    # a box answer "[0.123, 0.456, 0.789, 0.012]" is 28 tiny-tokenizer pieces + EOS: it must fit in generation
    from mome.model.tokenizer import Tokenizer

    assert len(Tokenizer.tiny().encode("[0.123, 0.456, 0.789, 0.012]")) + 1 <= run.train.max_new_tokens


def test_default_run_writes_untrained_trained_and_baseline_results(tmp_path, synth_dir):
    cmd = [sys.executable, "-m", "mome.train", f"train.out_dir={tmp_path}", "train.name=d", f"data.synth_dir={synth_dir}",
           "data.synth_train=48", "data.synth_test=16", "data.eval_limit=1", "train.stage1.steps=2",
           "train.stage1.warmup_steps=1", "train.stage2.steps=1", "train.stage2.warmup_steps=0",
           "train.global_batch_size=4", "train.micro_batch_size=4", "train.max_new_tokens=4", "train.threads=1",
           "train.tensorboard=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = tmp_path / "d" / "eval"
    for tag in ("untrained", "final", "baseline"):
        data = json.loads((ev / f"{tag}.json").read_text())
        assert set(data["summary"]) == GROUPS, tag
        assert (ev / f"{tag}.md").is_file()
    final = json.loads((ev / "final.json").read_text())
    assert set(final["routing"]["datasets"]["synth-rec (REC)"]["vision_importance"]) == {"eva_clip", "dinov2",
                                                                                        "pix2struct"}
    out = proc.stdout
    assert "== constant-answer baseline vs untrained vs trained ==" in out
    for label in ("| constant answer |", "| untrained |", "| trained |"):
        assert label in out
