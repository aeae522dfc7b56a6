"""Convolutional autoencoders: shapes for even and odd sizes, output ranges, train-only noise, errors."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build


@pytest.mark.parametrize(("size", "channels"), [(28, [8, 16]), (27, [8, 16]), (32, [4, 8, 16])])
def test_reconstruction_has_the_input_shape(size: int, channels: list[int]) -> None:
    model = build("model", "conv_autoencoder", image_size=size, channels=channels, latent_dim=6).eval()
    x = torch.rand(3, 1, size, size)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (3, 6)
        assert model.decode(z).shape == x.shape
        assert torch.equal(model(x), model.decode(z))


@pytest.mark.parametrize(("activation", "low", "high"), [("sigmoid", 0, 1), ("tanh", -1, 1)])
def test_output_activation_bounds_the_pixels(activation: str, low: float, high: float) -> None:
    model = build("model", "conv_autoencoder", output_activation=activation).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28) * 10)
    assert out.min() >= low and out.max() <= high


def test_denoising_adds_noise_only_while_training() -> None:
    torch.manual_seed(0)
    noisy = build("model", "denoising_autoencoder", noise_std=0.5, channels=[4, 8], latent_dim=4)
    plain = build("model", "conv_autoencoder", channels=[4, 8], latent_dim=4)
    plain.load_state_dict(noisy.state_dict())  # same layers: the noise has no parameters
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.equal(noisy.train()(x), noisy(x))
        assert torch.equal(noisy.eval()(x), plain.eval()(x))


def test_bad_configs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="image_size 6 is too small for 3 stride-2 stages"):
        build("model", "conv_autoencoder", image_size=6, channels=[4, 4, 4])
    with pytest.raises(ConfigError, match="output_activation must be one of sigmoid, tanh, none"):
        build("model", "conv_autoencoder", output_activation="relu")
