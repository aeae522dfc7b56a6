"""The Python API refuses integrated-gradients step counts below 2 (the command line and the recipe schema already
do), so ``Predictor.explain(..., steps=-1)`` — what a server option would reach — is a one-line ConfigError."""

import numpy as np
import pytest
from PIL import Image

import modelforge
from modelforge.core.errors import ConfigError


@pytest.fixture(scope="module")
def predictor_and_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    run = modelforge.train("digits-cnn", ["model.name=mlp", "model.hidden=[8]", "data.limit=64", "train.max_steps=1",
                                          "train.progress=off"], run_dir=root / "run")
    image = root / "digit.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    return run.load(), image


@pytest.mark.parametrize("steps", [-1, 0, 1, 2.5, True])
def test_explain_refuses_steps_below_two(predictor_and_image, steps):
    predictor, image = predictor_and_image
    assert predictor.explain([str(image)], steps=2)[0]["label"] is not None
    with pytest.raises(ConfigError, match="steps must be a whole number of path points ≥ 2"):
        predictor.explain([str(image)], steps=steps)
