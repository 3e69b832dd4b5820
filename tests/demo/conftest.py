import pytest


@pytest.fixture(scope="session")
def tiny_demo():
    """One untrained tiny model for every demo test (building it is most of their time)."""
    from mome.demo import Demo, load_model

    model, label = load_model(preset="tiny")
    return Demo(model, label)


@pytest.fixture(scope="session")
def example_rows(tmp_path_factory):
    from mome.demo import examples

    return examples(tmp_path_factory.mktemp("demo-examples"))
