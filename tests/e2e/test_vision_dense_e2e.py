"""The detection and segmentation recipes train for a few steps on tiny generated data through the real CLI, and
`modelforge predict` saves the annotated picture."""

import json
from pathlib import Path

import pytest
from PIL import Image

COMMON = ["train.max_steps=2", "train.batch_size=8", "train.progress=off"]
RECIPES = {
    "scenes-detector": ["data.num_train=16", "data.num_val=4", "data.num_test=4", "data.image_size=64",
                        "model.width=8", "model.neck_channels=8", "model.head_channels=8"],
    "medical-phantoms": ["data.num_train=8", "data.num_val=2", "data.num_test=2", "data.image_size=32",
                         "model.width=4", "model.depth=2"],
    "road-scenes": ["data.num_train=8", "data.num_val=2", "data.num_test=2", "data.image_size=32",
                    "model.width=4", "model.depth=2"],
}  # fmt: skip
METRIC = {"scenes-detector": "test_map50:", "medical-phantoms": "test_dice:", "road-scenes": "test_miou:"}


def _test_input(recipe: str) -> Path:
    """A held-out picture of the recipe's generated data (already in the cache after training)."""
    from modelforge.data.cache import cache_dir

    if recipe == "scenes-detector":
        return sorted(cache_dir("scenes-digits").glob("64px-*/test/images/000000.jpg"))[0]
    return sorted(cache_dir("medical-phantoms").glob("32px-*/test/case_00000.dcm"))[0]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_trains_and_predicts_through_the_cli(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    # plots/sample_predictions.png is the task's report_samples picture
    result = train_cli(recipe, run_dir, [*RECIPES[recipe], *COMMON],
                       files=("model/model.safetensors", "report.html", "plots/sample_predictions.png"))
    assert METRIC[recipe] in result.stdout
    if recipe == "road-scenes":
        return  # the same task as medical-phantoms; predicting once per task keeps the suite fast
    picture = _test_input(recipe)
    predicted = cli("predict", str(run_dir), str(picture), "--output", str(tmp_path / "out"))
    assert predicted.returncode == 0, predicted.stderr
    (out,) = json.loads(predicted.stdout)
    saved = tmp_path / "out" / f"{picture.stem}.pred.png"
    assert out["picture"] == str(saved)
    with Image.open(saved) as img:
        assert img.mode == "RGB" and min(img.size) >= 32
    if recipe == "scenes-detector":
        assert isinstance(out["boxes"], list)
        assert all(set(b) == {"label", "score", "box"} and len(b["box"]) == 4 for b in out["boxes"])
    else:
        assert out["size"] == [32, 32] and set(out["classes"]) == {"background", "lesion"}

