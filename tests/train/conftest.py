import pytest


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """The small synthetic benchmark every training test reads (48 train, 16 test records)."""
    out = tmp_path_factory.mktemp("synth")
    from mome.data import synth

    synth.generate(out, n_train=48, n_test=16, seed=0)
    return out
