"""Every program on its bad inputs: exit status 2, one or two lines naming the bad argument or file and what was
expected, no traceback, nothing written; and flags mixed with key=value overrides in any order.

Most cases call each program's ``main`` through `mome.cli.run` (what ``python -m`` does) in-process; one case per
program runs the real ``python -m`` to check the wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mome.cli import run

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _main(program: str):
    import importlib

    module = {"eval": "mome.eval.__main__", "export": "mome.export.__main__", "data": "mome.data.__main__"}.get(
        program, f"mome.{program}")
    return importlib.import_module(module).main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(root / "img.png")
    (root / "notimage.png").write_text("this is text, not a PNG")
    (root / "bad.jsonl").write_text('{"id": "a", "image": "img.png"\n')  # a brace is missing
    (root / "bad.json").write_text('[{"id": 1},\n {"id": 2,}]\n')
    (root / "notamodel").mkdir()
    (root / "notamodel" / "weights.bin").write_bytes(b"\0")
    broken = root / "broken_model"
    broken.mkdir()
    (broken / "config.yaml").write_text("vision:\n  use: [eva_clip\n  router: soft\n")  # unclosed bracket
    (broken / "model.safetensors").write_bytes(b"\0")
    (root / "bad_run.yaml").write_text("train:\n  name: x\n  stages: [1\n")
    (root / "list_run.yaml").write_text("- 1\n- 2\n")
    return root


def _case(id_, program, argv, *expected):
    return pytest.param(program, argv, expected, id=id_)


CASES = [
    _case("generate-missing-image", "generate", ["--preset", "tiny", "--image", "{r}/missing.png", "--prompt", "hi"],
          "--image", "missing.png", "no such file"),
    _case("generate-not-an-image", "generate", ["--preset", "tiny", "--image", "{r}/notimage.png", "--prompt", "hi"],
          "--image", "not an image"),
    _case("generate-empty-prompt", "generate", ["--preset", "tiny", "--image", "{r}/img.png", "--prompt", "  "],
          "--prompt is empty"),
    _case("generate-not-a-model", "generate", ["--model", "{r}/notamodel", "--image", "{r}/img.png", "--prompt", "x"],
          "--model", "not a MoME model folder"),
    _case("generate-bad-yaml", "generate", ["--model", "{r}/broken_model", "--image", "{r}/img.png", "--prompt", "x"],
          "line", "column"),
    _case("generate-unknown-key", "generate", ["--preset", "tiny", "mole.nope=1", "--image", "{r}/img.png",
                                               "--prompt", "x"], "unknown config key 'mole.nope'"),
    _case("generate-bad-value", "generate", ["--preset", "tiny", "--image", "{r}/img.png", "--prompt", "x",
                                             "mole.num_experts=0"], "mole.num_experts must be > 0"),
    _case("generate-top-p", "generate", ["--preset", "tiny", "--image", "{r}/img.png", "--prompt", "x", "--top-p", "2"],
          "--top-p must be in (0, 1]"),
    _case("eval-not-a-model", "eval", ["--model", "{r}/notamodel", "--data", "synth", "--out", "{o}"],
          "--model", "not a MoME model folder"),
    _case("eval-missing-data", "eval", ["--preset", "tiny", "--data", "{r}/nothing.jsonl", "--out", "{o}"],
          "--data", "no such records file"),
    _case("eval-bad-jsonl", "eval", ["--preset", "tiny", "--data", "{r}/bad.jsonl", "--out", "{o}"],
          "bad.jsonl:1", "not valid JSON", "column"),
    _case("eval-bad-json", "eval", ["--preset", "tiny", "--data", "{r}/bad.json", "--out", "{o}"],
          "bad.json", "line 2", "column"),
    _case("eval-batch-size", "eval", ["--preset", "tiny", "--data", "synth", "--out", "{o}", "--batch-size", "0"],
          "--batch-size must be > 0"),
    _case("eval-unknown-key", "eval", ["vision.nope=1", "--preset", "tiny", "--data", "synth", "--out", "{o}"],
          "unknown config key 'vision.nope'"),
    _case("analyze-missing-data", "analyze", ["--preset", "tiny", "--data", "{r}/x.jsonl", "--out", "{o}"],
          "--data", "no such records file"),
    _case("analyze-cards", "analyze", ["--preset", "tiny", "--data", "synth", "--out", "{o}", "--cards", "-1"],
          "--cards must be >= 0"),
    _case("export-suffix", "export", ["onnx", "--preset", "tiny", "--part", "dino", "--out", "{o}/x.txt"],
          "--out", "must end in .onnx"),
    _case("export-not-a-model", "export", ["onnx", "--model", "{r}/notamodel", "--part", "dino", "--out", "{o}.onnx"],
          "--model", "not a MoME model folder"),
    _case("data-missing-src", "data", ["convert", "vqav2", "--src", "{r}/nothing", "--out", "{o}/x.jsonl"],
          "--src", "no such folder"),
    _case("data-out-suffix", "data", ["convert", "vqav2", "--src", "{r}", "--out", "{o}/x.csv"],
          "--out", "must end in .jsonl or .json"),
    _case("train-unknown-key", "train", ["train.nope=1", "--print-config"], "unknown config key 'train.nope'"),
    _case("train-bad-value", "train", ["--print-config", "model.mole.rank=0"], "mole.rank must be > 0"),
    _case("train-missing-config", "train", ["--config", "{r}/nothing.yaml"], "--config", "no such file"),
    _case("train-bad-yaml", "train", ["--config", "{r}/bad_run.yaml"], "bad_run.yaml", "line 4", "column"),
    _case("train-not-a-mapping", "train", ["--config", "{r}/list_run.yaml"], "list_run.yaml", "mapping"),
    _case("train-missing-resume", "train", ["--resume", "{r}/nothing", "train.out_dir={o}"], "--resume",
          "no such folder"),
    _case("train-missing-data", "train", ["data.train={r}/nothing.jsonl", "train.out_dir={o}"], "data.train",
          "no such records file"),
    # a records file that is not JSON: refused before the synthetic benchmark of data.test=synth is generated
    # (data.synth_dir is inside the output folder, which must not exist afterwards)
    _case("train-bad-json", "train", ["data.train={r}/bad.json", "data.synth_dir={o}/synth", "train.out_dir={o}"],
          "data.train", "bad.json", "not valid JSON"),
    _case("train-bad-record", "train", ["data.test={r}/bad.jsonl", "data.synth_dir={o}/synth", "train.out_dir={o}"],
          "data.test", "bad.jsonl:1"),
    _case("train-no-stage-2", "train", ["train.stages=[2]", "model.mole.router=single", "data.synth_dir={o}/synth",
                                        "train.out_dir={o}"], "train.stages = [2]", "mole.router = 'single'"),
    _case("train-stop-after", "train", ["--stop-after", "0", "train.out_dir={o}"], "--stop-after must be > 0"),
    _case("convert-missing-ckpt", "convert", ["official", "--ckpt", "{r}/MoME_ckpt.pth", "--eva", "{r}/e.pth",
                                              "--dinov2", "{r}/d.pth", "--pix2struct", "{r}", "--llm", "{r}",
                                              "--out", "{o}"], "--ckpt", "no such file"),
]


@pytest.mark.parametrize("program, argv, expected", CASES)
def test_bad_input_exits_2_with_a_message(program, argv, expected, files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.format(r=files, o=out) for a in argv]
    assert run(_main(program), f"python -m mome.{program}", argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"python -m mome.{program}: error: ") and len(lines) <= 3, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "Traceback" not in err
    assert not out.exists() and not Path(f"{out}.onnx").exists(), "a failed run wrote its output"


@pytest.mark.parametrize("program, argv, expected", [
    ("generate", ["--preset", "tiny", "--image", "/nonexistent/a.png", "--prompt", "x"], "--image"),
    ("eval", ["--model", "/nonexistent", "--data", "synth", "--out", "/tmp/never"], "--model"),
    ("analyze", ["--model", "/nonexistent", "--data", "synth", "--out", "/tmp/never"], "--model"),
    ("export", ["onnx", "--model", "/nonexistent", "--part", "dino", "--out", "x.onnx"], "--model"),
    ("data", ["convert", "vqav2", "--src", "/nonexistent", "--out", "x.jsonl"], "--src"),
    ("convert", ["official", "--ckpt", "/nonexistent.pth", "--eva", "e", "--dinov2", "d", "--pix2struct", "p",
                 "--llm", "l", "--out", "o"], "--ckpt"),
    ("info", ["--bogus"], "unrecognized arguments: --bogus"),
    ("train", ["train.nope=1"], "unknown config key 'train.nope'"),
    ("demo", ["--model", "/nonexistent"], "/nonexistent"),
])
def test_as_a_program(program, argv, expected):
    proc = subprocess.run([sys.executable, "-m", f"mome.{program}", *argv], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", f"mome.{program}", *argv], capture_output=True, text=True,
                           timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1", "MOME_DEBUG": "1"})
    assert debug.returncode == 2 and ("Traceback" in debug.stderr or program in ("info", "demo"))


def test_flags_and_overrides_mix_in_any_order(files, capsys):
    argv = ["mole.num_experts=2", "--preset", "tiny", "--image", str(files / "img.png"), "vision.router=add",
            "--prompt", "What is it?", "--max-new-tokens", "2", "--json", "language.num_layers=2",
            "language.path=null"]
    assert run(_main("generate"), "python -m mome.generate", argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["routing"]["language"]) == 2 and set(out["routing"]["vision"].values()) == {1.0}


def test_train_takes_flags_and_overrides_in_any_order(capsys):
    argv = ["train.name=x", "--resume", "auto", "train.stages=[1]", "--print-config", "model.mole.rank=8"]
    assert run(_main("train"), "python -m mome.train", argv) == 0
    text = capsys.readouterr().out
    assert "name: x" in text and "stages:\n  - 1\n" in text and "rank: 8" in text
