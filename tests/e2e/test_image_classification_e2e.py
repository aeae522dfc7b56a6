import json

import pytest

TINY = ["data.limit=128", "train.max_steps=3", "train.batch_size=16", "train.progress=off"]


@pytest.mark.parametrize("recipe", ["mnist-cnn", "mnist-mlp", "digits-cnn"])
def test_recipe_trains_through_cli_and_predicts(cli, train_cli, tmp_path, recipe):
    run_dir = tmp_path / recipe
    result = train_cli(recipe, run_dir, TINY,
                       files=("recipe.yaml", "metrics.jsonl", "results.json", "model/model.safetensors"))
    assert "test_accuracy:" in result.stdout and str(run_dir) in result.stdout

    import numpy as np
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    predicted = cli("predict", str(run_dir), str(image))
    assert predicted.returncode == 0, predicted.stderr
    out = json.loads(predicted.stdout)
    assert out[0]["input"] == str(image) and out[0]["label"] in [str(i) for i in range(10)]
