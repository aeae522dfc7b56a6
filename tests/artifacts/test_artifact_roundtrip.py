import json

import numpy as np
import pytest
import torch

import modelforge
from modelforge.core.errors import ArtifactError


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return modelforge.train("digits-cnn", ["train.max_steps=20", "train.progress=off"], run_dir=run_dir)


def _digit_pngs(tmp_path, n=4):
    from PIL import Image
    from sklearn.datasets import load_digits

    paths = []
    for i, image in enumerate(load_digits().images[:n]):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.uint8(image * 255 / 16)).save(path)
        paths.append(str(path))
    return paths


def test_artifact_files_and_no_pickle(digits_run):
    model_dir = digits_run.model_dir
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "task.json"}
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"]["name"] == "seed_cnn" and config["recipe"]["name"] == "digits-cnn"
    assert json.loads((model_dir / "task.json").read_text())["labels"] == [str(i) for i in range(10)]


def test_loaded_model_predicts_like_the_trained_one(digits_run, tmp_path):
    predictor = modelforge.load(digits_run.directory)
    paths = _digit_pngs(tmp_path)
    first = predictor.predict(paths)
    again = modelforge.load(digits_run.model_dir).predict(paths)
    assert first == again and len(first) == 4
    assert {"label", "probability", "top"} <= set(first[0])
    assert abs(sum(t["probability"] for t in first[0]["top"]) - 1) < 0.2  # top-5 of 10 classes

    # same outputs as the in-memory model that was trained
    from modelforge.tasks import get_task

    task = get_task("image_classification")(predictor.recipe)
    splits = task.datasets()
    model = task.build_model()
    from safetensors.torch import load_model

    load_model(model, str(digits_run.model_dir / "model.safetensors"))
    x = splits.test.tensors[0][:8]
    with torch.no_grad():
        expected = model.eval()(task.normalize(x))
        actual = predictor.model(predictor.task.normalize(x))
    assert torch.equal(expected, actual)


def test_reported_test_accuracy_matches_eval(digits_run):
    metrics = modelforge.evaluate(digits_run.directory)
    assert metrics["test_accuracy"] == pytest.approx(digits_run.metrics["test_accuracy"])


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "task.json"])
def test_corrupt_files_name_the_file(digits_run, tmp_path, name):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run.model_dir, copy)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError) as info:
        modelforge.load(copy)
    assert str(copy / name) in str(info.value) and "\n" not in str(info.value)


def test_missing_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not a run or model directory"):
        modelforge.load(tmp_path / "nothing")
    (tmp_path / "model").mkdir()
    with pytest.raises(ArtifactError, match="config.json is missing"):
        modelforge.load(tmp_path)
