"""`data.datasets`: train and evaluate on some datasets of the records only (e.g. the REC diagnosis in
docs/reproduce.md); unknown names and empty lists are refused with the key's name."""

import types

import pytest

from mome.configtree import ConfigError
from mome.train import prepare_data, resolve_config, select_datasets

ENV = types.SimpleNamespace(is_main=True, barrier=lambda: None)


def test_prepare_data_keeps_only_the_named_datasets(synth_dir):
    run, _ = resolve_config(None, [f"data.synth_dir={synth_dir}", "data.synth_train=48", "data.synth_test=16",
                                   "data.datasets=[synth-rec, synth-table]"])
    train, _, test, _ = prepare_data(run, ENV, log=lambda m: None)
    assert {r["dataset"] for r in train} == {"synth-rec", "synth-table"}
    assert {r["dataset"] for r in test} == {"synth-rec", "synth-table"}
    run_all, _ = resolve_config(None, [f"data.synth_dir={synth_dir}", "data.synth_train=48", "data.synth_test=16"])
    all_train, _, _, _ = prepare_data(run_all, ENV, log=lambda m: None)
    assert [r for r in all_train if r["dataset"] in ("synth-rec", "synth-table")] == train  # order kept
    assert len(all_train) > len(train)


def test_unknown_dataset_names_the_key_and_what_exists():
    records = [{"dataset": "synth-rec"}, {"dataset": "synth-vqa"}]
    with pytest.raises(ConfigError, match=r"data.datasets: no test record of \['synth-rc'\].*synth-vqa"):
        select_datasets(records, ["synth-rc"], "test")


@pytest.mark.parametrize("bad", ["[]", "[1]", "['']"])
def test_bad_datasets_value_is_refused(bad):
    with pytest.raises(ConfigError, match="data.datasets"):
        resolve_config(None, [f"data.datasets={bad}"])


def test_one_name_is_a_one_item_list():
    run, _ = resolve_config(None, ["data.datasets=synth-rec"])
    assert run.data.datasets == ["synth-rec"]
