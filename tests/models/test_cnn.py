"""Small CNNs: LeNet-5 and the seed's Keras network, parameter counts worked out from their layer tables."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet5_has_the_papers_61706_parameters() -> None:
    # C1 6·(25+1) + C3 16·(6·25+1) + C5 400·120+120 + F6 120·84+84 + output 84·10+10
    assert n_params(build("model", "lenet5")) == 156 + 2416 + 48120 + 10164 + 850 == 61_706


def test_seed_cnn_matches_the_keras_summary() -> None:
    # Conv(32) 320 + Conv(64) 18,496 + Dense(128) on 5·5·64 = 204,928 + Dense(10) 1,290
    assert n_params(build("model", "seed_cnn")) == 225_034


def test_lenet5_on_rgb_32px_and_relu() -> None:
    model = build("model", "lenet5", in_channels=3, image_size=32, activation="relu").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_lenet5_rejects_tiny_images_and_unknown_activations() -> None:
    with pytest.raises(ConfigError, match="at least 12×12"):
        build("model", "lenet5", image_size=8)
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        build("model", "lenet5", activation="swish")
