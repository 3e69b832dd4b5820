"""`python -m mome.eval` on the tiny preset: the JSON and markdown it writes hold exactly `tables.aggregate` of the
per-dataset scores, `--data synth` generates the benchmark on first use, a seed fixes sampled results, and missing
inputs fail with a clear message."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mome.data import load_records, synth
from mome.eval import metrics, tables
from mome.eval.__main__ import main
from mome.eval.harness import dataset_key

FAST = ["--preset", "tiny", "--max-new-tokens", "3", "--batch-size", "6", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, n_train=0, n_test=12)
    return root


def _read(out, tag="eval"):
    return json.loads((out / f"{tag}.json").read_text()), (out / f"{tag}.md").read_text()


def test_cli_writes_the_papers_tables(bench, tmp_path):
    out = tmp_path / "out"
    assert main(FAST + ["--data", str(bench), "--out", str(out)]) == 0
    result, md = _read(out)
    records = {r["id"]: r for r in load_records(bench / "test.jsonl")}
    assert [p["id"] for p in result["predictions"]] == list(records)
    # per-dataset scores = each dataset's metric over the written predictions
    per = {}
    for p in result["predictions"]:
        per.setdefault(dataset_key(records[p["id"]]), []).append((p["prediction"], records[p["id"]]))
    groups, names, evaluators = {}, {}, {}
    for key, pairs in per.items():
        recs = [r for _, r in pairs]
        assert result["scores"][key] == pytest.approx(metrics.score(recs[0]["metric"], [p for p, _ in pairs], recs))
        groups[key], names[key] = recs[0]["group"], recs[0]["metric"]
        evaluators[key] = metrics.describe(recs[0]["metric"], recs[0]["dataset"])
    # table, summary and markdown = tables.aggregate of those scores, each named with the evaluator behind it
    table = tables.aggregate(result["scores"], groups, names, evaluators)
    assert result["table"] == table
    assert result["summary"] == {**table["groups"], "avg": table["avg"]}
    assert tables.markdown_table(table) in md
    assert "routing (per dataset)" in md
    meta = result["meta"]
    assert meta["records"] == meta["predicted"] == 12 and meta["world_size"] == 1 and meta["model"] == "preset:tiny"
    assert meta["metric_protocol"] == "official"
    assert "| evaluator |" in md and "pycocoevalcap CIDEr-D" in md        # which evaluator each score comes from


def test_cli_synth_on_first_use_limit_and_seed(tmp_path):
    cache = tmp_path / "cache"
    common = FAST + ["--data", "synth", "--synth-dir", str(cache), "--synth-n", "60", "--limit", "1", "--sample"]
    assert main(common + ["--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert (cache / "test.jsonl").is_file() and len(load_records(cache / "test.jsonl")) == 12
    first = (cache / "test.jsonl").stat().st_mtime_ns
    assert main(common + ["--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    assert (cache / "test.jsonl").stat().st_mtime_ns == first  # generated once, then reused
    a, md_a = _read(tmp_path / "a")
    b, md_b = _read(tmp_path / "b")
    assert len(a["predictions"]) == 7  # --limit 1: one record of each of the 7 datasets
    assert {p["dataset"] for p in a["predictions"]} == set(synth.DATASETS)
    del a["meta"]["seconds"], b["meta"]["seconds"]
    assert a == b and md_a == md_b  # the same seed gives identical files
    assert main(common + ["--out", str(tmp_path / "c"), "--seed", "8", "--tag", "other"]) == 0
    c, _ = _read(tmp_path / "c", "other")
    assert [p["prediction"] for p in c["predictions"]] != [p["prediction"] for p in a["predictions"]]


def test_cli_clear_errors(bench, tmp_path):
    from mome.cli import UsageError

    with pytest.raises(UsageError, match="--model .*no such folder"):
        main(["--model", str(tmp_path / "nope"), "--data", str(bench), "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="--data .*no such records file"):
        main(FAST + ["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="--image-root .*no such folder"):
        main(FAST + ["--data", str(bench), "--image-root", str(tmp_path / "nope"), "--out", str(tmp_path)])
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(UsageError, match="not a MoME model folder"):
        main(["--model", str(tmp_path / "empty_model"), "--data", str(bench), "--out", str(tmp_path)])
    # as a program: exit status 2 and a message naming the flag on stderr, no traceback
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mome.eval", "--model", str(tmp_path / "nope"), "--data", str(bench),
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m mome.eval: error: --model") and "Traceback" not in proc.stderr


def test_cli_model_folder_equals_preset(bench, tmp_path):
    from mome.model import MoME, MoMEConfig

    MoME(MoMEConfig.preset("tiny")).save_pretrained(tmp_path / "model")
    args = ["--data", str(bench), "--limit", "1", "--max-new-tokens", "3", "--quiet"]
    assert main(["--model", str(tmp_path / "model"), "--out", str(tmp_path / "a")] + args) == 0
    assert main(["--preset", "tiny", "--out", str(tmp_path / "b")] + args) == 0
    a, _ = _read(tmp_path / "a")
    b, _ = _read(tmp_path / "b")
    assert a["meta"]["model"] == str(tmp_path / "model")
    assert a["predictions"] == b["predictions"] and a["table"] == b["table"]
