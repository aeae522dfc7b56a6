import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A digits-cnn run trained just long enough to read digits (about 90% test accuracy)."""
    import modelforge

    run_dir = tmp_path_factory.mktemp("serve") / "digits-cnn"
    return modelforge.train("digits-cnn", ["train.max_steps=80", "train.progress=off"], run_dir=run_dir)
