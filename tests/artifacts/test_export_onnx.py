"""ONNX export: for each image-classification recipe, onnxruntime's outputs equal PyTorch's within 1e-4 at batch
sizes other than the traced one, and the task state travels in the ONNX metadata."""

import json

import numpy as np
import pytest
import torch

from modelforge.artifacts.export import TOLERANCE, export, export_onnx
from modelforge.artifacts.model_dir import load_artifact, save_artifact
from modelforge.core.errors import ArtifactError, ConfigError


def _artifact(recipe_name: str, root):
    """The recipe's model with its initial weights saved as an artifact: parity does not depend on training."""
    from modelforge.core.seed import seed_everything
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    recipe = load_recipe(recipe_name, ["data.limit=64"])
    task = get_task(recipe.task)(recipe)
    splits = task.datasets()
    seed_everything(0)
    model = task.build_model().eval()
    save_artifact(root / "model", recipe, task, model)
    return root, splits


@pytest.mark.parametrize("recipe_name", ["digits-cnn", "mnist-mlp", "mnist-cnn"])
def test_onnx_matches_pytorch(recipe_name, tmp_path):
    import onnx
    import onnxruntime as ort

    run_dir, splits = _artifact(recipe_name, tmp_path / recipe_name)
    result = export_onnx(run_dir)
    assert result.path == run_dir / "model.onnx" and result.path.exists()
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    assert result.outputs == ["output"] and list(result.inputs) == ["image"] and result.inputs["image"][0] == "batch"

    # real test images through the task's preprocessing, at batch sizes 1 and 7 (the graph was traced with 2)
    loaded = load_artifact(run_dir)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    images = splits.test.tensors[0]
    for count in (1, 7):
        x = loaded.task.preprocess(list(images[:count].numpy()))
        with torch.no_grad():
            expected = loaded.model(x).numpy()
        (actual,) = session.run(None, {"image": x.numpy()})
        assert actual.shape == expected.shape == (count, 10)
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)

    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["modelforge.recipe"] == recipe_name and meta["modelforge.task"] == "image_classification"
    state = json.loads(meta["modelforge.task_state"])
    assert state["labels"] == [str(i) for i in range(10)] and len(state["mean"]) == 1


def test_export_through_the_cli(tmp_path, capsys):
    from modelforge.cli import main

    run_dir, _ = _artifact("digits-cnn", tmp_path / "run")
    target = tmp_path / "out" / "digits.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--opset", "18", "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "opset 18" in out and "verified with onnxruntime" in out
    import onnx

    assert onnx.load(str(target)).opset_import[0].version == 18
    assert not list(target.parent.glob(".*tmp*"))  # no temporary file left behind


def test_export_errors_are_one_line(tmp_path, capsys):
    from modelforge.cli import main

    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export(tmp_path, "tflite")
    with pytest.raises(ArtifactError, match="not a run or model directory"):
        export_onnx(tmp_path / "missing")
    with pytest.raises(ConfigError, match="opset 5 is not supported; choose 9…20"):
        export_onnx(tmp_path / "missing", opset=5)
    assert main(["export", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run or model directory" in err


def test_tasks_without_example_inputs_are_not_exportable(tmp_path, monkeypatch):
    from modelforge.tasks.base import Task
    from modelforge.tasks.vision.image_classification import ImageClassification

    run_dir, _ = _artifact("digits-cnn", tmp_path / "run")
    monkeypatch.setattr(ImageClassification, "example_inputs", Task.example_inputs)
    with pytest.raises(ArtifactError, match="does not define example_inputs"):
        export_onnx(run_dir)
    assert not (run_dir / "model.onnx").exists()
