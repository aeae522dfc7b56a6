"""image_generation (DCGAN): a tiny run through the real CLI, `modelforge sample`, the judge's quality figures."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import modelforge
from modelforge.api import sample
from modelforge.core.errors import DataError
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.vision.image_generation import image_grid, judge_scores

TINY = ["data.limit=64", "data.val_size=32", "data.eval_samples=16", "model.width=4", "model.latent_dim=8",
        "train.batch_size=16", "train.max_steps=2", "train.progress=off"]


def test_tiny_dcgan_trains_through_the_cli_and_samples_a_png_grid(cli, tmp_path):
    run_dir = tmp_path / "gan"
    result = cli("train", "mnist-dcgan", *TINY, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "test_d_real_accuracy:" in result.stdout and "steps: 2" in result.stdout
    assert (run_dir / "checkpoints" / "step-0000002" / "optimizer-generator.safetensors").exists()

    grid = tmp_path / "grid.png"
    sampled = cli("sample", str(run_dir), "--n", "10", "--seed", "5", "--output", str(grid))
    assert sampled.returncode == 0, sampled.stderr
    assert "seed 5" in sampled.stdout
    with Image.open(grid) as img:
        assert img.mode == "L" and img.size == (4 * 30 + 2, 3 * 30 + 2)  # 10 tiles → 4 columns × 3 rows
        pixels = np.asarray(img)
    again, _ = sample(run_dir, 10, seed=5, output=tmp_path / "again.png")  # same seed → same images
    assert np.array_equal(np.asarray(Image.open(again)), pixels)
    other, _ = sample(run_dir, 10, seed=6, output=tmp_path / "other.png")
    assert not np.array_equal(np.asarray(Image.open(other)), pixels)

    # `modelforge predict RUN SEED...` writes each seed's image under RUN/predictions instead of printing base64
    predicted = cli("predict", str(run_dir), "5", "6")
    assert predicted.returncode == 0, predicted.stderr
    assert "image_png" not in predicted.stdout and "5.image.png" in predicted.stdout
    with Image.open(run_dir / "predictions" / "5.image.png") as img:
        assert img.size == (28, 28)
    assert (run_dir / "predictions" / "6.image.png").is_file()

    # predict: one image per integer seed, the same seed giving the same image; a file name is refused
    predictor = modelforge.load(run_dir)
    first, same, other_seed = predictor.predict([3, "3", 4])
    assert first == same and first != other_seed and (first["width"], first["height"]) == (28, 28)
    with pytest.raises(DataError, match="integer seeds .*modelforge sample"):
        predictor.predict(["x.png"])


def test_image_grid_places_tiles_row_by_row() -> None:
    images = torch.full((3, 1, 2, 2), -1.0)
    images[1] = 1.0  # the second tile is white
    grid = image_grid(images, columns=2, padding=1)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3)
    assert (grid[1:3, 4:6] == 255).all() and (grid[1:3, 1:3] == 0).all() and grid[4:6, 1:3].max() == 0


class _FixedClassifier(torch.nn.Module):
    """Logits decided by each image's mean brightness: a stand-in for a trained judge."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean(dim=(1, 2, 3))
        logits = torch.zeros(len(x), 10)
        logits[bright > 0.5, 3] = 10.0  # confident "3"
        logits[bright <= 0.5, 7] = 1.0  # a hesitant "7": softmax ≈ 0.23
        return logits


def test_judge_scores_confidence_and_class_entropy() -> None:
    judge = SimpleNamespace(recipe=SimpleNamespace(task="image_classification"), directory="judge",
                            model=_FixedClassifier(),
                            task=SimpleNamespace(state_dict_={"channels": 1, "image_size": 28},
                                                 normalize=lambda x: x / 255))
    images = torch.cat([torch.ones(3, 1, 32, 32), -torch.ones(1, 1, 32, 32)])  # resized to the judge's 28 px
    scores = judge_scores(images, judge, threshold=0.9)
    assert scores["judge_confident"] == 0.75
    assert scores["judge_classes_present"] == 2
    assert scores["judge_class_entropy"] == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))


def test_a_missing_judge_run_fails_before_training(tmp_path) -> None:
    recipe = load_recipe("mnist-dcgan", [*TINY, f"data.judge={tmp_path / 'nowhere'}"])
    from modelforge.artifacts.predictor import Predictor

    task = get_task(recipe.task)(recipe)
    task.run_loader = Predictor  # as modelforge.api builds tasks
    with pytest.raises(DataError, match="data.judge: .*nowhere"):
        task.datasets()


def test_the_generator_exports_to_onnx_alone_and_matches_pytorch(tmp_path) -> None:
    import json

    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import save_artifact

    recipe = load_recipe("mnist-dcgan", ["model.width=4", "model.latent_dim=8"])
    task = get_task(recipe.task)(recipe, state={"channels": 1, "image_size": 28})
    torch.manual_seed(0)
    model = task.build_model().eval()
    save_artifact(tmp_path / "model", recipe, task, model)
    result = export_onnx(tmp_path)
    assert result.files == [tmp_path / "model.generator.onnx"] and result.max_abs_diff <= 1e-4
    assert result.inputs == {"latent": ["batch", 8]}
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    contract = json.loads(session.get_modelmeta().custom_metadata_map["modelforge.generator"])
    assert contract["latent_dim"] == 8 and contract["output_range"] == [-1.0, 1.0]
    latents = torch.randn(7, 8)
    (images,) = session.run(None, {"latent": latents.numpy()})
    with torch.no_grad():
        expected = model.generator(latents).numpy()
    assert images.shape == (7, 1, 28, 28)
    np.testing.assert_allclose(images, expected, atol=1e-4, rtol=0)
